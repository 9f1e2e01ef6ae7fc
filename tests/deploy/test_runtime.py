"""Exported detection and semantic segmentation models through the runtime: ``Model(path).predict`` /
``.val`` equal the eager model's (fp32) or stay close (int8); the runtime's own API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model

DET = "synthetic:shapes-det?n=24&size=64&classes=2&max_objects=3&seed=0"
SEM = "synthetic:shapes-seg?n=24&size=64&classes=2&seed=0"
FORMATS = ("torchscript", "onnx", "onnx-int8")
FP32 = {"amp": False}  # the eager side in fp32, as exported files compute (amp=auto would be bf16 on bf16 CPUs)


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> tuple[Model, dict[str, Path]]:
    m = Model("house_s", task="detect")
    m.train(data=DET, epochs=1, imgsz=64, batch=8, mosaic=0.0, project=str(tmp_path_factory.mktemp("det")), plots=False)
    return m, {f: m.export(format=f) for f in FORMATS}


@pytest.fixture(scope="module")
def sem(tmp_path_factory) -> tuple[Model, dict[str, Path]]:
    m = Model("unet_s", task="segment")
    m.train(data=SEM, epochs=1, imgsz=64, batch=8, project=str(tmp_path_factory.mktemp("sem")), plots=False)
    return m, {f: m.export(format=f) for f in FORMATS}


def _image(seed: int) -> np.ndarray:
    """A non-square scene (letterbox padding and the resize back to original pixels both matter)."""
    from optik.data.sources import load_detection_data

    img = load_detection_data(DET.replace("seed=0", f"seed={seed}")).train.load(0)[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(img[:, :48])


@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_export_equals_eager(det, fmt, tmp_path):
    eager, paths = det
    exported = Model(paths[fmt])
    assert exported.task == "detect" and exported.names == eager.names
    img = _image(5)
    r_e, r_x = eager.predict(img, conf=0.001, **FP32)[0], exported.predict(img, conf=0.001)[0]
    assert r_e.boxes.orig_shape == r_x.boxes.orig_shape == (64, 48)
    assert len(r_e.boxes) > 0 and set(r_x.boxes.cls.tolist()) <= {0, 1}
    if fmt != "onnx-int8":
        # NMS sees the same candidates: the same detections, up to the order of (near-)tied scores of a
        # 1-epoch model, which may also flip a few NMS decisions
        assert abs(len(r_x.boxes) - len(r_e.boxes)) <= 0.05 * len(r_e.boxes)
        assert _matched(r_e.boxes, r_x.boxes) >= 0.95
    m_e, m_x = (m.val(project=str(tmp_path), plots=False, **FP32) for m in (eager, exported))
    tol = 0.05 if fmt == "onnx-int8" else 1e-3
    for k in ("AP", "AP50", "AR100"):
        assert abs(m_x[k] - m_e[k]) <= tol, k
    meta = exported.meta["export"]
    assert meta["outputs"] == ["boxes", "scores"] and meta["postprocess"]["type"] == "nms"
    assert meta["parity"]["agreement"]["kind"] == "detections" and meta["parity"]["passed"]


def _matched(a, b) -> float:
    """Fraction of detections in ``a`` with one in ``b`` of the same class, IoU ≥ 0.99 and score within 1e-4."""
    from torchvision.ops import box_iou

    if len(a) == 0:
        return 1.0
    iou = box_iou(a.xyxy, b.xyxy)
    same = (a.cls[:, None] == b.cls[None]) & ((a.conf[:, None] - b.conf[None]).abs() <= 1e-4)
    return float(((iou >= 0.99) & same).any(1).float().mean())


@pytest.mark.parametrize("fmt", FORMATS)
def test_semantic_export_equals_eager(sem, fmt, tmp_path):
    eager, paths = sem
    exported = Model(paths[fmt])
    assert exported.task == "segment" and exported.meta["subtask"] == "semantic"
    img = _image(6)
    s_e, s_x = eager.predict(img, **FP32)[0].semantic, exported.predict(img)[0].semantic
    assert s_e.shape == s_x.shape == (64, 48)
    agree = float((s_e == s_x).float().mean())
    assert agree >= (0.9 if fmt == "onnx-int8" else 0.999)  # fp32: argmax ties at most
    m_e, m_x = (m.val(project=str(tmp_path), plots=fmt == "onnx", **FP32) for m in (eager, exported))
    tol = 0.05 if fmt == "onnx-int8" else 1e-4
    for k in ("mIoU", "pixel_acc"):
        assert abs(m_x[k] - m_e[k]) <= tol, k
    if fmt != "onnx-int8":
        np.testing.assert_allclose(m_x["loss"], m_e["loss"], rtol=1e-4)
    assert exported.meta["export"]["postprocess"]["type"] == "argmax"


def test_runtime_api(det, sem):
    from optik.deploy.runtime import ExportedDetector, is_exported, load_exported, read_exported_meta
    from optik.weights import resolve_model_arg
    from optik.device import model_device

    _, dpaths = det
    assert is_exported(dpaths["onnx"]) and is_exported("x.torchscript") and not is_exported("x.safetensors")
    arch, path, meta = resolve_model_arg(str(dpaths["onnx"]))
    assert (arch, path) == ("house_s", dpaths["onnx"]) and meta == read_exported_meta(path)
    x = torch.rand(3, 3, 64, 64)
    onnx_model, ts_model = load_exported(dpaths["onnx"]), load_exported(dpaths["torchscript"])
    assert isinstance(onnx_model, ExportedDetector) and model_device(onnx_model) == torch.device("cpu")
    assert list(onnx_model.parameters())[0].numel() == 0  # nothing trainable, but a device to ask
    boxes, scores = onnx_model.run(x)
    assert boxes.shape[:2] == scores.shape[:2] and scores.shape == (3, boxes.shape[1], 2)
    d_onnx, d_ts = onnx_model.forward_detect(x, conf=0.001), ts_model.forward_detect(x, conf=0.001)
    assert len(d_onnx) == 3 and all(a["boxes"].shape == b["boxes"].shape for a, b in zip(d_onnx, d_ts))
    seg = load_exported(sem[1]["onnx"])
    assert not hasattr(seg, "forward_detect") and not hasattr(seg, "forward_loss")
    assert seg(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_cli_export(det, tmp_path, capsys):
    from optik.cli import main
    from optik.deploy.runtime import read_exported_meta

    eager, _ = det
    out = tmp_path / "cli.onnx"
    assert main(["detect", "export", f"model={eager.weights}", f"out={out}", "parity=4", "opset=13"]) == 0
    assert read_exported_meta(out)["export"]["opset"] == 13 and "parity vs eager" in capsys.readouterr().err


def test_hf_classifier_exports(tmp_path):
    """A Hugging Face classifier (tiny local ViT, offline) exports and validates like its eager self."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=3)  # fmt: skip
    AutoModelForImageClassification.from_config(cfg).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3, size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    m = Model(f"hf:{tmp_path / 'vit'}", task="classify")
    m.train(data="synthetic:shapes?n=30&size=32&classes=3&seed=1", epochs=1, imgsz=32, batch=16, project=str(tmp_path), plots=False)
    path = m.export(format="onnx")
    eager, exported = (x.val(project=str(tmp_path), plots=False, **FP32) for x in (m, Model(path)))
    assert exported["top1"] == eager["top1"] and abs(exported["loss"] - eager["loss"]) < 1e-4
    assert Model(path).meta["model"].startswith("hf:") and Model(path).meta["mean"] == [0.5] * 3
