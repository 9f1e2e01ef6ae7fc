"""Segmentation end to end, all three flavours through one grammar: train → artifacts → val (== the
reference computation on the exported predictions) → predict in original pixels; bad input → one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model
from optik.cli import main
from optik.data.segmentation_dataset import IGNORE_INDEX
from optik.data.sources import load_segmentation_data

SEM = "synthetic:shapes-seg?n=24&size=64&classes=2&seed=0"
INST = "synthetic:shapes-inst?n=10&size=64&classes=2&max_objects=3&seed=0"
PAN = "synthetic:shapes-pan?n=12&size=64&classes=2&seed=0"


@pytest.fixture(scope="module")
def sem_run(tmp_path_factory) -> Model:
    project = tmp_path_factory.mktemp("seg")
    m = Model("unet_s", task="segment")
    m.train(data=SEM, epochs=2, imgsz=64, batch=8, project=str(project))
    return m


def test_semantic_train_artifacts(sem_run):
    run = sem_run.run_dir
    for f in ["metrics.csv", "report.md", "weights/best.safetensors", "plots/per_class_iou.png",
              "plots/confusion_matrix.png", "plots/val_predictions.png", "plots/training_curves.png"]:
        assert (run / f).is_file(), f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and {"train/loss", "val/mIoU", "val/pixel_acc"} <= set(rows[0])
    assert sem_run.meta["subtask"] == "semantic" and sem_run.names[0] == "background"
    assert "mIoU" in (run / "report.md").read_text()


def test_semantic_val_equals_sklearn_on_predicted_maps(sem_run, tmp_path):
    """`segment val` mIoU == scikit-learn's IoU of `predict`'s maps against the original masks."""
    from sklearn.metrics import confusion_matrix

    metrics = sem_run.val(project=str(tmp_path))
    val = load_segmentation_data(SEM).val
    preds, gts = [], []
    for i in range(len(val)):
        img, target = val.load(i)
        preds.append(sem_run.predict(img.permute(1, 2, 0).numpy())[0].semantic.numpy().ravel())
        gts.append(target["semantic"].numpy().ravel())
    p, g = np.concatenate(preds), np.concatenate(gts)
    keep = g != IGNORE_INDEX
    k = len(sem_run.names)
    cm = confusion_matrix(g[keep], p[keep], labels=list(range(k)))
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter[union > 0] / union[union > 0]
    assert metrics["mIoU"] == pytest.approx(iou.mean(), abs=1e-9)
    assert metrics["pixel_acc"] == pytest.approx(inter.sum() / cm.sum(), abs=1e-9)


def test_semantic_predict_in_original_pixels(sem_run, tmp_path):
    from optik.data.synthetic import shapes_segmentation

    images = shapes_segmentation(n=2, size=64, classes=2, seed=7, kind="semantic")[0]
    wide = np.concatenate([images[0], images[1]], axis=1)  # 64×128: letterboxed, mapped back
    r = sem_run.predict([wide], save=True, project=str(tmp_path))[0]
    assert r.semantic.shape == (64, 128) and r.semantic.dtype == torch.int64
    assert set(r.semantic.unique().tolist()) <= set(range(len(sem_run.names)))
    assert r.plot().ndim == 3
    js = json.loads(r.to_json())
    assert js["predictions"] and "rle" in js["predictions"][0]
    assert (tmp_path / "segment" / "predict" / "predictions.jsonl").is_file()


def test_instance_mask_ap_equals_pycocotools(tmp_path):
    """Mask R-CNN trains one epoch; `val` mask AP equals pycocotools on its own predictions.json."""
    from faster_coco_eval.core import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    m = Model("tv:maskrcnn", task="segment")
    m.train(task="instance", data=INST, epochs=1, imgsz=64, batch=4, project=str(tmp_path), plots=False, max_det=10)
    metrics = m.val(project=str(tmp_path), conf=0.0, max_det=10)
    assert {"AP", "AP50", "box_AP"} <= set(metrics)
    rows = json.loads((Path(metrics["run_dir"]) / "predictions.json").read_text())
    val = load_segmentation_data(INST).val
    images, anns = [], []
    for i in range(len(val)):
        t = val.load_target(i)
        h, w = t["orig_size"]
        images.append({"id": t["image_id"], "height": h, "width": w})
        for mask, label, crowd in zip(t["masks"].numpy(), t["labels"].tolist(), t["iscrowd"].tolist()):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
            anns.append({"id": len(anns) + 1, "image_id": t["image_id"], "category_id": label, "segmentation": rle,
                         "area": float(mask.sum()), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": crowd})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k} for k in range(2)]}
    gt.createIndex()
    assert rows, "conf=0 keeps every detection: there must be some"
    for r in rows:  # pycocotools takes the mask area only without a bbox in the result
        r.pop("bbox", None)
    ev = COCOeval(gt, gt.loadRes(rows), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for name, ref in zip(["AP", "AP50", "AP75"], ev.stats):
        assert metrics[name] == pytest.approx(ref, abs=1e-12), name


def test_panoptic_trains_validates_predicts(tmp_path):
    m = Model("mask2former", task="segment")
    metrics = m.train(task="panoptic", data=PAN, epochs=1, imgsz=64, batch=4, project=str(tmp_path), plots=False)
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(metrics)
    data = load_segmentation_data(PAN)
    img = data.val.load(0)[0].permute(1, 2, 0).numpy()
    r = m.predict(img, conf=0.0)[0]
    assert r.panoptic.shape == img.shape[:2]
    ids = set(r.panoptic.unique().tolist()) - {0}
    assert ids == {s["id"] for s in r.segments if s["area"] > 0}
    assert all(s["isthing"] == data.isthing[s["label"]] for s in r.segments)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["segment", "train", "task=bogus", f"data={SEM}"], "task"),
        (["segment", "train", "task=instance", f"data={SEM}"], "instance"),
        (["segment", "train", "data=synthetic:shapes-segg"], "shapes-seg"),
        (["sam", "train"], "predict"),
    ],
)
def test_bad_segment_input_is_one_line(args, needle, tmp_path, capsys):
    assert main([*args, f"project={tmp_path}", "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optik: error:") and needle in err and "\n" not in err


def test_class_weights_are_sklearn_balanced_pixel_weights(tmp_path):
    """class_weights=true: inverse pixel frequencies over the train masks, as scikit-learn's 'balanced'."""
    from sklearn.utils.class_weight import compute_class_weight

    from optik.config import build_config
    from optik.tasks.segment import SegmentTask

    cfg = build_config("segment", "train", {"data": SEM, "imgsz": 64, "class_weights": True, "project": str(tmp_path)})
    task = SegmentTask(cfg)
    data = task.datasets()
    pixels = np.concatenate([data.train.load_target(i)["semantic"].numpy().ravel() for i in range(len(data.train))])
    pixels = pixels[pixels != IGNORE_INDEX]
    ref = compute_class_weight("balanced", classes=np.arange(len(task.meta["classes"])), y=pixels)
    np.testing.assert_allclose(task._class_weights.numpy(), ref, rtol=1e-6)
    assert task._loss_fn().class_weights is task._class_weights
    with pytest.raises(Exception, match="task=semantic"):
        inst = SegmentTask(build_config("segment", "train", {"data": INST, "task": "instance", "class_weights": True}))
        inst.datasets()


@pytest.mark.parametrize(("subtask", "key", "controls", "conf"), [
    ("semantic", "mIoU", [], None), ("instance", "AP", ["conf", "iou"], 0.25), ("panoptic", "PQ", ["conf", "iou"], 0.5),
])  # fmt: skip
def test_one_strategy_per_flavour(subtask, key, controls, conf):
    """The flavour's strategy, chosen once, gives the fitness key, the serve controls and their defaults."""
    from optik.config import build_config
    from optik.tasks.segment import SegmentTask
    from optik.tasks.segment_strategies import STRATEGIES

    task = SegmentTask(build_config("segment", "predict", {"task": subtask}), {"classes": ["background", "circle"]})
    assert type(task.strategy) is STRATEGIES[subtask] and task.fitness_key == key
    ctl = task.predict_controls()
    assert list(ctl) == controls and (conf is None or ctl["conf"].default == conf)
    about = task.describe()
    assert about["subtask"] == subtask and len(about["colors"]) == 2
    assert (about["colors"][0] is None) == (subtask == "semantic")  # a semantic "background" is drawn untinted


def test_the_model_protocol_is_declared_not_guessed():
    """Segmenter models declare the protocol; a semantic logits model does not, and cannot serve instance/panoptic."""
    from torch import nn

    from optik import models
    from optik.config import build_config
    from optik.errors import ConfigError
    from optik.models.segment.protocol import Segmenter, is_segmenter
    from optik.tasks.segment import SegmentTask

    unet = models.create("unet_s", task="semantic", num_classes=2)
    m2f = models.create("mask2former", task="semantic", num_classes=2, img_size=64)
    assert not is_segmenter(unet) and is_segmenter(m2f) and isinstance(m2f, Segmenter)

    class Duck(nn.Module):  # has the methods, does not declare the protocol: a logits model to the task
        def forward(self, x):
            return torch.zeros(len(x), 2, *x.shape[-2:])

        def forward_loss(self, images, targets):
            raise AssertionError("never called")

    task = SegmentTask(build_config("segment", "predict", {}), {"classes": ["a", "b"]})
    assert task.forward(Duck(), torch.zeros(1, 3, 8, 8)).shape == (1, 2, 8, 8)
    inst = SegmentTask(build_config("segment", "predict", {"task": "instance"}), {"classes": ["a", "b"], "model": "unet_s"})
    with pytest.raises(ConfigError, match="'unet_s' is a semantic model; task=instance"):
        inst.strategy.bind(unet)


def test_pretrained_timm_file_sets_the_backbone(lite0_weights, tmp_path):
    """``model=fpn pretrained=<optik file of a timm classifier>`` (``optik models convert`` output) builds the
    model on that architecture with its weights; the trained file rebuilds it without the pretrained file."""
    from safetensors.torch import load_file

    from optik.config import build_config
    from optik.errors import ConfigError
    from optik.tasks.base import get_task

    m = Model("fpn", task="segment")
    m.train(data=SEM, epochs=1, imgsz=64, batch=8, pretrained=str(lite0_weights), project=str(tmp_path), plots=False)
    assert m.meta["model_config"]["backbone"] == "timm:tf_efficientnet_lite0"
    trained = Model(m.run_dir / "weights" / "best.safetensors")
    assert trained.predict(np.zeros((40, 56, 3), np.uint8))[0].semantic.shape == (40, 56)
    # the encoder is built from the file's ImageNet weights (unet_timm the same way)
    cfg = build_config("segment", "train", {"data": SEM, "model": "unet_timm", "pretrained": str(lite0_weights)})
    task = get_task("segment")(cfg)
    task.meta["classes"] = ["background", "circle", "square"]
    stem = task.build_model().backbone.conv_stem.weight
    torch.testing.assert_close(stem, load_file(str(lite0_weights))["conv_stem.weight"])
    cfg = build_config("segment", "train", {"data": SEM, "model": "fpn", "backbone": "timm:resnet18", "pretrained": str(lite0_weights)})
    task = get_task("segment")(cfg)
    task.meta["classes"] = ["background", "circle", "square"]
    with pytest.raises(ConfigError, match="holds timm:tf_efficientnet_lite0 weights"):
        task.build_model()
