"""Detection end to end: train → artifacts → val (== pycocotools) → predict, data convert, bad annotations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from optik import Model
from optik.cli import main
from optik.data.sources import load_detection_data

DATA = "synthetic:shapes-det?n=24&size=64&classes=2&max_objects=3&seed=0"


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> Model:
    project = tmp_path_factory.mktemp("det")
    m = Model("house", task="detect")
    m.train(data=DATA, epochs=2, imgsz=64, batch=8, project=str(project), mosaic=0.5, close_mosaic=1)
    return m


def test_train_artifacts_and_metrics(det_run):
    run = det_run.run_dir
    for f in ["metrics.csv", "report.md", "weights/best.safetensors", "weights/state.pt", "plots/pr_curve.png",
              "plots/confusion_matrix.png", "plots/val_predictions.png", "plots/training_curves.png"]:
        assert (run / f).is_file(), f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and {"train/loss", "val/AP", "val/AP50"} <= set(rows[0])
    assert det_run.names == ["circle", "square"]
    assert "mAP@[.50:.95]" in (run / "report.md").read_text()


def test_val_equals_pycocotools_on_exported_predictions(det_run, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    metrics = det_run.val(project=str(tmp_path))
    run = Path(metrics["run_dir"])
    gt = COCO()
    gt.dataset = load_detection_data(DATA).val.to_coco()
    gt.createIndex()
    rows = json.loads((run / "predictions.json").read_text())
    assert rows, "the tiny model should produce some detections at conf 0.001"
    ev = COCOeval(gt, gt.loadRes(rows), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for name, ref in zip(names, ev.stats):
        assert metrics[name] == pytest.approx(ref, abs=1e-12), name
    assert json.loads((run / "metrics.json").read_text())["AP"] == pytest.approx(metrics["AP"])


def test_predict_boxes_in_original_pixels(det_run, tmp_path):
    from optik.data.synthetic import shapes_detection

    images, anns, _ = shapes_detection(n=2, size=64, classes=2, max_objects=3, seed=5)
    wide = np.concatenate([images[0], images[1]], axis=1)  # 64×128: letterbox pads, boxes map back
    res = det_run.predict([wide], conf=0.0, max_det=7, save=True, project=str(tmp_path))
    b = res[0].boxes
    assert res[0].orig_shape == (64, 128) and 0 < len(b) <= 7
    assert (b.xyxy[:, 0] >= 0).all() and (b.xyxy[:, 2] <= 128).all() and (b.xyxy[:, 3] <= 64).all()
    assert set(b.cls.tolist()) <= {0, 1} and (b.xywhn <= 1).all()
    js = json.loads(res[0].to_json())
    assert len(js["predictions"]) == len(b) and "box" in js["predictions"][0]
    assert (tmp_path / "detect" / "predict" / "predictions.jsonl").is_file()
    # A square image (no letterbox padding): NMS runs in input pixels, and a box reaching into the padding is
    # clipped to the image only afterwards, which can raise its IoU with a neighbour past the threshold.
    agn = det_run.predict([images[0]], conf=0.0, agnostic_nms=True, iou=0.1)[0].boxes
    from torchvision.ops import box_iou

    iou = box_iou(agn.xyxy, agn.xyxy).fill_diagonal_(0)
    assert len(agn) == 0 or iou.max() <= 0.1 + 1e-6  # class-agnostic NMS leaves no overlapping pair


def test_data_convert_cli_round_trip(tmp_path, capsys):
    out = tmp_path / "yolo"
    assert main(["data", "convert", f"src={DATA}", "to=yolo", f"out={out}"]) == 0
    back = load_detection_data(str(out / "data.yaml"))
    orig = load_detection_data(DATA)
    assert back.classes == orig.classes and len(back.train) == len(orig.train)
    assert main(["data", "convert", f"src={DATA}", "to=json", f"out={out}"]) == 2
    assert "'to'" in capsys.readouterr().err


def test_malformed_annotations_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5, 5]}],
                               "categories": [{"id": 1, "name": "x"}]}))
    assert main(["detect", "train", f"data={bad}", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "ann.json" in err and "category" in err and "Traceback" not in err


@pytest.mark.slow
def test_torchvision_detector_trains_and_validates(tmp_path):
    m = Model("tv:fcos", task="detect")
    m.train(data=DATA, epochs=1, imgsz=64, batch=8, project=str(tmp_path), mosaic=0.0)
    assert 0.0 <= m.val(project=str(tmp_path))["AP"] <= 1.0


def test_hf_detr_trains_from_local_tiny_config(tmp_path):
    from transformers import AutoModelForObjectDetection, DetrConfig, ResNetConfig

    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                     backbone_config=ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16],
                                                  depths=[1, 1, 1, 1], layer_type="basic"),
                     d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                     encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_labels=2)
    AutoModelForObjectDetection.from_config(cfg).save_pretrained(tmp_path / "detr")
    m = Model(f"hf:{tmp_path / 'detr'}", task="detect")
    m.train(data=DATA, epochs=1, imgsz=64, batch=8, project=str(tmp_path), mosaic=0.0)
    r = m.predict(np.zeros((64, 64, 3), np.uint8), conf=0.0)[0]  # rebuilt from the weights file's HF config
    assert r.boxes is not None and set(r.boxes.cls.tolist()) <= {0, 1}


def test_close_mosaic_follows_the_current_epoch_total():
    """With a time= budget the trainer re-estimates the epoch count; close_mosaic must follow it."""
    from optik.config import build_config
    from optik.tasks.detect import DetectTask

    task = DetectTask(build_config("detect", "train", {"data": DATA, "model": "house_s", "imgsz": 64, "epochs": 100,
                                                       "mosaic": 1.0, "close_mosaic": 2}))
    task.datasets()
    model = task.build_model()
    task.on_epoch_start(model, 2, 5)
    assert task._mosaic.enabled
    task.on_epoch_start(model, 3, 5)  # last 2 of 5 epochs: mosaic off
    assert not task._mosaic.enabled
    task.on_epoch_start(model, 3, 10)
    assert task._mosaic.enabled
