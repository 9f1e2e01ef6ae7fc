"""Empty and degenerate predictions (issue 17, bugs 1, 6, 9): a model that finds nothing, or boxes that lie
in the letterbox padding, must flow through every path — unletterbox, Results/Masks, COCO rows, metrics,
overlays, plots, predictions.json — without a crash and without wasting ``max_det`` slots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from optik import Model
from optik.config import build_config

DET = "synthetic:shapes-det?n=8&size=64&classes=2&max_objects=2&seed=0"
INST = "synthetic:shapes-inst?n=6&size=64&classes=2&max_objects=2&seed=0"
PAN = "synthetic:shapes-pan?n=6&size=64&classes=2&seed=0"
NOTHING = 1.0  # scores are kept when > conf: conf=1 keeps none, whatever the weights


# --- bug 1: zero instances / segments --------------------------------------------------------------
@pytest.mark.parametrize("dtype, mode", [(torch.float32, "bilinear"), (torch.uint8, "nearest-exact")])
def test_unletterbox_keeps_an_empty_stack(dtype, mode):
    from optik.tasks.segment_strategies import unletterbox

    out = unletterbox(torch.zeros(0, 64, 64, dtype=dtype), (24, 300), 64, mode=mode)
    assert out.shape == (0, 24, 300) and out.dtype == dtype


def _segment_task(subtask: str) -> Any:
    from optik.tasks.segment import SegmentTask

    task = SegmentTask(build_config("segment", "val", {"task": subtask, "imgsz": 64}))
    task.meta.update(classes=["circle", "square"], isthing=[True, False])
    return task


def _no_instances(masks_dtype: torch.dtype, s: int = 64) -> list[dict[str, Tensor]]:
    return [{"masks": torch.zeros(0, s, s, dtype=masks_dtype), "boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}]  # fmt: skip


@pytest.mark.parametrize("subtask, masks_dtype", [("instance", torch.float32), ("panoptic", torch.bool)])
def test_mask_strategies_take_zero_instances(subtask, masks_dtype, tmp_path):
    """Every step after the model with N=0 (instance: mask probabilities; panoptic: bool segments), on an
    image that needs a resize back (30×300 letterboxed to 64): original pixels, Results (summary, plot,
    save_txt, to_coco), the metric and the COCO rows."""
    from optik.tasks.coco import coco_rows

    task = _segment_task(subtask)
    hw = (30, 300)
    p = task.strategy.to_original(_no_instances(masks_dtype), 0, hw)
    assert p["masks"].shape == (0, *hw) and p["masks"].dtype == torch.bool and p["boxes"].shape == (0, 4)

    img = np.zeros((*hw, 3), np.uint8)
    r = task.postprocess(_no_instances(masks_dtype), [{"orig_img": img, "path": "a.png"}])[0]
    assert r.summary() == [] and json.loads(r.to_json())["predictions"] == [] and r.to_coco(1) == []
    assert r.plot().ndim == 3 and r.save_txt(tmp_path / "a.txt").read_text() == ""
    if subtask == "panoptic":
        assert r.segments == [] and not r.panoptic.any() and r.verbose() == "no segments"
    else:
        assert len(r.masks) == 0 and len(r.boxes) == 0 and r.verbose() == "no masks"

    gt = {"masks": torch.zeros(1, *hw, dtype=torch.bool), "labels": torch.tensor([0]), "iscrowd": torch.tensor([0]),
          "image_id": 1, "orig_size": hw}  # fmt: skip
    gt["masks"][0, 5:20, 10:40] = True
    metric = task.metric()
    metric.update(*map(list, zip(task.strategy.metric_pair(p, gt, 1))))
    result = metric.compute()
    assert result[task.fitness_key] == 0.0
    assert coco_rows([{**p, "image_id": 1}], [0, 1]) == []


@pytest.mark.slow
def test_instance_segmentation_without_predictions(tmp_path):
    """An untrained Mask R-CNN that predicts nothing: train (per-epoch val + final plots), val (an empty
    predictions.json, bug 9) and predict (overlay, text, JSON) all run."""
    m = Model("tv:maskrcnn", task="segment")
    metrics = m.train(task="instance", data=INST, epochs=1, imgsz=64, batch=3, project=str(tmp_path), conf=NOTHING,
                      max_det=5)  # fmt: skip
    assert metrics["AP"] == 0.0 and (m.run_dir / "plots" / "val_predictions.png").is_file()
    val = m.val(project=str(tmp_path), conf=NOTHING)
    assert json.loads((Path(val["run_dir"]) / "predictions.json").read_text()) == []
    img = np.zeros((30, 300, 3), np.uint8)
    r = m.predict(img, conf=NOTHING, save=True, save_txt=True, project=str(tmp_path))[0]
    assert len(r.masks) == 0 and len(r.boxes) == 0 and r.masks.data.shape == (0, 30, 300)


@pytest.mark.slow
def test_panoptic_segmentation_without_segments(tmp_path):
    """`segment train task=panoptic model=mask2former` used to crash at its first validation when a segment
    list came back empty; train, val and predict with nothing kept."""
    m = Model("mask2former", task="segment")
    metrics = m.train(task="panoptic", data=PAN, epochs=1, imgsz=64, batch=3, project=str(tmp_path), conf=NOTHING)
    assert metrics["PQ"] == 0.0 and (m.run_dir / "plots" / "val_predictions.png").is_file()
    val = m.val(project=str(tmp_path), conf=NOTHING)
    assert not (Path(val["run_dir"]) / "predictions.json").exists()  # panoptic val writes no COCO results
    r = m.predict(np.zeros((30, 300, 3), np.uint8), conf=NOTHING, save=True, project=str(tmp_path))[0]
    assert r.segments == [] and r.panoptic.shape == (30, 300) and not r.panoptic.any()


# --- bug 6: boxes in the letterbox padding -----------------------------------------------------------
class PaddingDetector(nn.Module):
    """A Detector-protocol stub: its best boxes lie in the padding below a 24×300 image letterboxed to 64
    (content rows 0–5), the rest inside; it honours ``max_det`` as every detector does."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        pad = torch.tensor([[0.0, 10.0, 40.0, 30.0]]).repeat(5, 1)  # y ≥ 5.12: nothing of the image
        inside = torch.tensor([[0.0, 0.0, 10.0, 4.0], [20.0, 1.0, 30.0, 5.0], [40.0, 0.0, 60.0, 3.0]])
        self.boxes = torch.cat([pad, inside])
        self.scores = torch.linspace(0.9, 0.5, len(self.boxes))
        self.asked: list[int] = []

    def forward_detect(self, images: Tensor, *, conf: float, iou: float, max_det: int, agnostic: bool) -> list[dict]:
        self.asked.append(max_det)
        keep = (self.scores > conf).nonzero().squeeze(1)[:max_det]
        return [{"boxes": self.boxes[keep], "scores": self.scores[keep], "labels": torch.zeros(len(keep), dtype=torch.int64)}
                for _ in images]  # fmt: skip


def _detect_task(mode: str, **overrides: Any) -> Any:
    from optik.tasks.detect import DetectTask

    task = DetectTask(build_config("detect", mode, {"imgsz": 64, **overrides}))
    task.meta.update(classes=["circle", "square"], cat_ids=[0, 1])
    return task


def _nondegenerate(xyxy: Tensor) -> bool:
    return bool(((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])).all())


def test_padding_boxes_are_dropped_before_max_det():
    """predict: max_det=3 keeps the three real boxes, not three zero-height slivers of the padding."""
    task, model = _detect_task("predict", max_det=3, conf=0.0), PaddingDetector()
    img = np.zeros((24, 300, 3), np.uint8)
    r = task.postprocess(task.forward(model, torch.zeros(1, 3, 64, 64)), [{"orig_img": img, "path": "a.png"}])[0]
    assert len(r.boxes) == 3 and _nondegenerate(r.boxes.xyxy)
    assert r.boxes.conf.tolist() == sorted(r.boxes.conf.tolist(), reverse=True)


def test_padding_boxes_are_dropped_in_val_and_predictions_json(tmp_path):
    """val: the metric and predictions.json see the same non-degenerate, max_det-capped boxes."""
    task, model = _detect_task("val", max_det=2, conf=0.0), PaddingDetector()
    out, _ = task.eval_step(model, torch.zeros(1, 3, 64, 64), [])
    target = {"image_id": 1, "orig_size": torch.tensor([24, 300]), "boxes": torch.tensor([[0.0, 0.0, 50.0, 20.0]]),
              "labels": torch.tensor([0])}  # fmt: skip
    metric = task.metric()
    task.update_metric(metric, out, [target])
    task.write_val_artifacts(tmp_path)
    rows = json.loads((tmp_path / "predictions.json").read_text())
    assert len(rows) == 2 and all(r["bbox"][2] > 0 and r["bbox"][3] > 0 for r in rows)


def test_detectors_are_asked_for_every_box_an_exported_graph_for_what_it_holds():
    """The task applies max_det itself, so eager detectors return every NMS survivor; an exported torchvision
    graph (max_det baked in) is asked for its baked count, which logs no "above the exported" warning."""
    from optik.tasks.detect import FETCH_ALL, detector_max_det

    class Graph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.baked = {"conf": 0.001, "iou": 0.7, "max_det": 300}

    assert detector_max_det(PaddingDetector(), 100) == FETCH_ALL
    assert detector_max_det(Graph(), 100) == 300 and detector_max_det(Graph(), 500) == 500


def _coco_strips(root: Path, heights: tuple[int, ...] = (30, 150, 30, 150), width: int = 300) -> Path:
    """A COCO set of wide images (most of a square letterbox is padding: 30×300 keeps 6 of 64 rows)."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i, h in enumerate(heights):
        Image.fromarray(rng.integers(0, 255, (h, width, 3), dtype=np.uint8)).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": width})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 5, 60, 20], "area": 1200, "iscrowd": 0})
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "strip"}]}))
    return path


def _hf_tiny_detr(root: Path) -> str:
    from transformers import AutoModelForObjectDetection, DetrConfig, ResNetConfig

    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                     backbone_config=ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16],
                                                  depths=[1, 1, 1, 1], layer_type="basic"),
                     d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                     encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=40, num_labels=1)  # fmt: skip
    AutoModelForObjectDetection.from_config(cfg).save_pretrained(root / "detr")
    return f"hf:{root / 'detr'}"


def _val_rows(task: Any, model: nn.Module, data: Any, root: Path) -> list[dict]:
    """predictions.json of a val pass over both splits (every image, whichever split it fell in)."""
    from optik.engine.evaluate import evaluate

    task.coco_rows = []
    for split in (data.train.with_transform(task.transforms(train=False)), data.val):
        evaluate(task, model, torch.utils.data.DataLoader(split, batch_size=2, collate_fn=task.collate), torch.device("cpu"), False)
    task.write_val_artifacts(root)
    return json.loads((root / "predictions.json").read_text())


@pytest.mark.parametrize("arch", ["house_s", "tv:fasterrcnn", "hf"])
def test_untrained_detectors_return_no_zero_area_boxes(arch, tmp_path):
    """Real detectors (house, tv:, hf:) on wide images at conf 0.001: every box kept lies in the image, and
    max_det is applied after the padding boxes are gone (the house detector used to fill 119 of 300 slots
    with slivers). An untrained DETR puts every query's box around the input's centre: nothing of a 30×300
    image, inside a 150×300 one."""
    from optik.tasks.detect import DetectTask

    torch.manual_seed(0)
    model_ref = _hf_tiny_detr(tmp_path) if arch == "hf" else arch
    cfg = build_config("detect", "val", {"model": model_ref, "data": str(_coco_strips(tmp_path)), "imgsz": 64,
                                         "conf": 0.001, "max_det": 50, "val_fraction": 0.5})  # fmt: skip
    task = DetectTask(cfg)
    data = task.datasets()
    model = task.build_model().eval()
    rows = _val_rows(task, model, data, tmp_path)
    assert rows and all(r["bbox"][2] > 0 and r["bbox"][3] > 0 for r in rows)
    per_image = Counter(r["image_id"] for r in rows)
    assert max(per_image.values()) <= 50
    # A smaller max_det keeps the best of the same real boxes: it is applied after the drop, not before.
    task.cfg = cfg.model_copy(update={"max_det": 5})
    top5 = _val_rows(task, model, data, tmp_path)
    assert Counter(r["image_id"] for r in top5) == {k: min(n, 5) for k, n in per_image.items()}
    for image_id in per_image:
        best = sorted((r["score"] for r in rows if r["image_id"] == image_id), reverse=True)[:5]
        assert sorted((r["score"] for r in top5 if r["image_id"] == image_id), reverse=True) == pytest.approx(best)


# --- bug 9: an empty predictions.json ------------------------------------------------------------------
def test_detect_val_without_detections_writes_an_empty_predictions_json(tmp_path):
    m = Model("house_s", task="detect")
    m.train(data=DET, epochs=1, imgsz=64, batch=4, project=str(tmp_path), plots=False, mosaic=0.0)
    metrics = m.val(project=str(tmp_path), conf=NOTHING)
    assert json.loads((Path(metrics["run_dir"]) / "predictions.json").read_text()) == []
    metrics = m.val(project=str(tmp_path), conf=NOTHING, save_json=False)
    assert not (Path(metrics["run_dir"]) / "predictions.json").exists()
