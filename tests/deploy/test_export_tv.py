"""Export of torchvision detectors (``tv:fasterrcnn`` / ``retinanet`` / ``fcos`` / ``ssdlite``) and Mask R-CNN:
torchvision's own one-image inference graph (NMS inside, thresholds baked at export) as ONNX / TorchScript,
checked by matching detections against eager; ``Model(path)`` predicts and validates like the eager model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model

DET = "synthetic:shapes-det?n=16&size=64&classes=2&max_objects=3&seed=0"
INST = "synthetic:shapes-inst?n=10&size=64&classes=2&max_objects=3&seed=0"
FORMATS = ("onnx", "torchscript")
BAKED = {"conf": 0.001, "iou": 0.7}  # export defaults: val's conf, the config's iou; max_det: the task's (300 / 100)


@pytest.fixture(scope="module")
def frcnn(tmp_path_factory) -> tuple[Model, dict[str, Path]]:
    """tv:fasterrcnn (MobileNetV3-FPN: the small one) untrained — 300 detections per image to compare (trained 1
    epoch it keeps only a handful at conf 0.001) — exported to both formats."""
    w, _ = _detector(tmp_path_factory.mktemp("frcnn") / "w.safetensors", "tv:fasterrcnn", train=False, backbone="mobilenet_v3_large")
    m = Model(w)
    return m, {f: m.export(format=f, data=DET, parity=3) for f in FORMATS}


@pytest.fixture(scope="module")
def mrcnn(tmp_path_factory) -> tuple[Model, dict[str, Path]]:
    """tv:maskrcnn (MobileNetV3-FPN, random init) trained 1 epoch on 8 tiny instance scenes, exported to both formats."""
    m = Model("tv:maskrcnn", task="segment")
    m.train(task="instance", data=INST, epochs=1, imgsz=64, batch=4, project=str(tmp_path_factory.mktemp("mrcnn")), plots=False,
            backbone="mobilenet_v3_large")  # fmt: skip
    return m, {f: m.export(format=f, parity=2) for f in FORMATS}


def _detector(path: Path, name: str, train: bool, **config) -> tuple[Path, torch.nn.Module]:
    """An optik weights file of ``name`` and the eager model: untrained (hundreds of detections per image to
    compare), or — ``tv:ssdlite``, whose fresh head scores every anchor exactly 1/3, so NMS order would be a
    coin flip — trained 1 epoch (≈4 s)."""
    from optik import models
    from optik.weights import load_state_dict, save_weights

    if train:
        m = Model(name, task="detect")
        m.train(data=DET, epochs=1, imgsz=64, batch=8, mosaic=0.0, project=str(path.parent), plots=False, **config)
        model = models.create(name, task="detect", num_classes=2, img_size=64, **config)
        models.load_weights(model, load_state_dict(m.weights))
        return m.weights, model.eval()
    torch.manual_seed(0)
    model = models.create(name, task="detect", num_classes=2, img_size=64, **config)
    meta = {"task": "detect", "model": name, "classes": ["circle", "square"], "imgsz": 64, "data": DET,
            "model_config": model.config_dict()}  # fmt: skip
    return save_weights(model.state_dict(), path, meta), model.eval()


def _image(seed: int = 5) -> np.ndarray:
    """A non-square scene (letterbox padding and the boxes' way back to original pixels both matter)."""
    from optik.data.sources import load_detection_data

    img = load_detection_data(DET.replace("seed=0", f"seed={seed}")).train.load(0)[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(img[:, :48])


def _matched(a, b) -> float:
    """Fraction of detections in ``a`` with one in ``b`` of the same class, every box coordinate within 0.05 px and
    the score within 1e-4 (coordinates, not IoU: an untrained FCOS emits near-degenerate boxes). ``a``/``b``:
    :class:`optik.results.Boxes` or ``forward_detect`` dicts (the order of tied scores may differ)."""
    (ba, sa, la), (bb, sb, lb) = (
        (d["boxes"], d["scores"], d["labels"]) if isinstance(d, dict) else (d.xyxy, d.conf, d.cls) for d in (a, b)
    )
    if len(ba) == 0:
        return float(len(bb) == 0)
    gap = (ba[:, None] - bb[None]).abs().amax(-1)
    same = (la[:, None] == lb[None]) & ((sa[:, None] - sb[None]).abs() <= 1e-4)
    return float(((gap <= 0.05) & same).any(1).float().mean())


def _check_meta(meta: dict, fmt: str, outputs: list[str], max_det: int = 300) -> None:
    e = meta["export"]
    assert e["format"] == fmt and e["outputs"] == outputs and e["input"]["shape"] == [1, 3, 64, 64] and not e["dynamic"]
    pp = e["postprocess"]
    assert pp["type"] == "in_graph_nms" and pp["baked"] == {**BAKED, "max_det": max_det} and "fixed" in pp["nms"]
    p = e["parity"]
    assert p["passed"] and p["agreement"]["kind"] == "matched" and p["agreement"]["value"] >= 0.98
    assert p["detections"]["matched"] >= 0.98 * p["detections"]["eager"]
    assert {r["name"] for r in p["outputs"]} == set(outputs) and all(r["ok"] for r in p["outputs"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tv_detector_export_equals_eager(frcnn, fmt, tmp_path):
    eager, paths = frcnn
    exported = Model(paths[fmt])
    assert exported.task == "detect" and exported.names == eager.names
    _check_meta(exported.meta, fmt, ["boxes", "scores", "labels"])
    img = _image()
    r_e, r_x = eager.predict(img, conf=0.001)[0], exported.predict(img, conf=0.001)[0]
    assert r_x.boxes.orig_shape == (64, 48) and len(r_x.boxes) == len(r_e.boxes)
    assert len(r_e.boxes) > 20 and _matched(r_e.boxes, r_x.boxes) == 1.0
    if fmt == "torchscript":  # the same graph as ONNX, bit-identical to eager here: predict is enough
        return
    m_e, m_x = (m.val(project=str(tmp_path), plots=False) for m in (eager, exported))
    for k in ("AP", "AP50", "AR100"):
        assert m_x[k] == pytest.approx(m_e[k], abs=1e-4), k


@pytest.mark.parametrize(("name", "train"), [("tv:retinanet", False), ("tv:fcos", False), ("tv:ssdlite", True)])
def test_every_tv_detector_family_exports(tmp_path, caplog, name, train):
    """ONNX passes parity, and the runtime's run-time filters (conf, max_det, agnostic NMS) give what eager
    ``forward_detect`` gives with the same arguments."""
    from optik.deploy.runtime import ExportedTVDetector, load_exported

    w, det = _detector(tmp_path / "w.safetensors", name, train)
    path = Model(w).export(format="onnx", data=DET, parity=3)
    runtime = load_exported(path)
    assert isinstance(runtime, ExportedTVDetector)
    _check_meta(runtime.meta, "onnx", ["boxes", "scores", "labels"])
    eager = Model(w)
    img = _image()
    r_e, r_x = eager.predict(img, conf=0.001)[0], Model(path).predict(img, conf=0.001)[0]
    assert len(r_e.boxes) > 20 and abs(len(r_x.boxes) - len(r_e.boxes)) <= 0.02 * len(r_e.boxes)
    assert _matched(r_e.boxes, r_x.boxes) >= 0.98
    x = torch.from_numpy(np.stack([_image(s) for s in (6, 7)])).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.pad(x, (0, 16))  # letterboxed 64×64 (48 wide + right padding)
    for kw in ({"conf": 0.2, "max_det": 5}, {"conf": 0.05, "max_det": 50, "agnostic": True}):
        for a, b in zip(det.forward_detect(x, iou=0.7, **kw), runtime.forward_detect(x, iou=0.7, **kw)):
            assert len(b["boxes"]) <= kw["max_det"] and (b["scores"] > kw["conf"]).all()
            assert len(a["boxes"]) == len(b["boxes"]) and _matched(a, b) == 1.0
    with caplog.at_level(logging.WARNING):  # what the graph cannot give back: once per model, in the log
        runtime.forward_detect(x[:1], conf=0.0, iou=0.5)
    assert "below the exported score threshold 0.001" in caplog.text and "fixed in the graph" in caplog.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_maskrcnn_export_equals_eager(mrcnn, fmt, tmp_path):
    from optik.deploy.runtime import ExportedInstanceSegmenter, load_exported

    eager, paths = mrcnn
    exported = Model(paths[fmt])
    assert exported.task == "segment" and exported.meta["subtask"] == "instance"
    runtime = load_exported(paths[fmt])
    assert isinstance(runtime, ExportedInstanceSegmenter)
    _check_meta(exported.meta, fmt, ["boxes", "scores", "labels", "masks"], max_det=100)
    mask_row = next(r for r in exported.meta["export"]["parity"]["outputs"] if r["name"] == "masks")
    assert mask_row["max_abs_diff"] <= 1e-3
    img = _image()
    r_e, r_x = eager.predict(img, conf=0.001)[0], exported.predict(img, conf=0.001)[0]
    assert len(r_e.boxes) > 0 and len(r_x.boxes) == len(r_e.boxes) and _matched(r_e.boxes, r_x.boxes) == 1.0
    assert r_x.masks.data.shape == r_e.masks.data.shape == (len(r_e.boxes), 64, 48)
    order = [int(i) for i in torch.argsort(r_e.boxes.conf, descending=True)]
    order_x = [int(i) for i in torch.argsort(r_x.boxes.conf, descending=True)]
    diff = (r_e.masks.data[order] != r_x.masks.data[order_x]).float().mean()
    assert diff <= 1e-3  # thresholded masks: a pixel at exactly 0.5 may flip
    with pytest.raises(Exception, match="inference only"):
        runtime.forward_loss(torch.zeros(1, 3, 64, 64), [])
    if fmt == "torchscript":
        return
    m_e, m_x = (m.val(project=str(tmp_path), plots=False) for m in (eager, exported))
    for k in ("AP", "AP50", "box_AP"):
        assert m_x[k] == pytest.approx(m_e[k], abs=1e-4), k


def test_int8_tv_detector(tmp_path):
    """onnxruntime quantizes the torchvision graph (QDQ convolutions; NMS, RoI ops stay float); parity is the
    matched-detection agreement against its int8 floor."""
    import onnx

    from optik.deploy.export import INT8_FLOORS

    w, _ = _detector(tmp_path / "w.safetensors", "tv:retinanet", train=False)
    path = Model(w).export(format="onnx-int8", data=DET, parity=2, calib=4)
    meta = Model(path).meta["export"]
    p = meta["parity"]
    assert meta["int8"] == "static" and p["passed"] and p["agreement"]["floor"] == INT8_FLOORS["matched"]
    assert p["agreement"]["value"] >= 0.8  # ≈0.95 measured: int8 moves few of an untrained RetinaNet's detections
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    r = Model(path).predict(_image(), conf=0.001)[0]
    assert len(r.boxes) > 20 and set(r.boxes.cls.tolist()) <= {0, 1}
