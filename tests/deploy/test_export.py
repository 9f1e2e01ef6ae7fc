"""Export (classification): TorchScript / ONNX / int8 ONNX files that describe themselves, pass the parity
check against eager, and give the same predictions and metrics through ``Model(path)``; bad exports fail
with one-line errors naming the model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model
from optik.errors import ConfigError, ExportError, ModelError

FORMATS = ("torchscript", "onnx", "onnx-int8")
SUFFIX = {"torchscript": "best.torchscript", "onnx": "best.onnx", "onnx-int8": "best-int8.onnx"}


@pytest.fixture(scope="module")
def timm_model(tmp_path_factory) -> Model:
    """timm:resnet18 (random init, offline) trained 1 epoch on 48 tiny shapes."""
    m = Model("timm:resnet18", task="classify")
    m.train(data="synthetic:shapes?n=48&size=32&classes=3&seed=1", epochs=1, imgsz=32, batch=16,
            project=str(tmp_path_factory.mktemp("timm")), plots=False)  # fmt: skip
    return m


@pytest.fixture(scope="module")
def cnn_exports(tiny_run, tmp_path_factory) -> dict[str, Path]:
    m = Model(tiny_run["best"])
    out = tmp_path_factory.mktemp("cnn_exports")
    return {f: m.export(format=f, out=str(out / SUFFIX[f])) for f in FORMATS}


def _check_same_as_eager(eager: Model, path: Path, tmp_path: Path, int8: bool) -> None:
    exported = Model(path)
    assert exported.task == "classify" and exported.names == eager.names
    val_img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)  # not square: resize + crop
    # The eager side in fp32, as the exported file computes (amp=auto would be bf16 on a CPU with bf16 units).
    r_e, r_x = eager.predict(val_img, amp=False)[0], exported.predict(val_img)[0]
    atol = 0.05 if int8 else 1e-4
    np.testing.assert_allclose(r_x.probs.data.numpy(), r_e.probs.data.numpy(), atol=atol)
    if not int8:
        assert r_x.probs.top5 == r_e.probs.top5
    m_e = eager.val(project=str(tmp_path), plots=False, amp=False)
    m_x = exported.val(project=str(tmp_path), plots=True)  # plots: the prediction grid runs through the runtime too
    # int8 may flip a near-tied 1-epoch model on 1-2 of ~10 val images; fp32 must not flip any
    assert abs(m_x["top1"] - m_e["top1"]) <= (0.2 + 1e-9 if int8 else 1e-9)
    if not int8:
        np.testing.assert_allclose(m_x["loss"], m_e["loss"], rtol=1e-4)
        assert (np.asarray(m_x["confusion_matrix"]) == np.asarray(m_e["confusion_matrix"])).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_cnn_export_equals_eager(tiny_run, cnn_exports, fmt, tmp_path):
    _check_same_as_eager(Model(tiny_run["best"]), cnn_exports[fmt], tmp_path, int8=fmt == "onnx-int8")


@pytest.mark.parametrize("fmt", FORMATS)
def test_timm_export_equals_eager(timm_model, fmt, tmp_path):
    path = timm_model.export(format=fmt)
    assert path == timm_model.weights.with_name(SUFFIX[fmt])  # default: next to the weights
    _check_same_as_eager(timm_model, path, tmp_path, int8=fmt == "onnx-int8")


def test_metadata_is_self_describing(tiny_run, cnn_exports):
    import onnx

    from optik.deploy.runtime import read_exported_meta
    from optik.weights import read_meta

    wmeta = read_meta(tiny_run["best"])
    for fmt, path in cnn_exports.items():
        meta = read_exported_meta(path)
        for k in ("task", "model", "classes", "mean", "std", "data"):
            assert meta[k] == wmeta[k], k
        e = meta["export"]
        assert e["format"] == fmt and e["input"]["name"] == "images" and e["input"]["dtype"] == "float32"
        assert e["input"]["shape"] == ["batch", 3, 32, 32] and e["outputs"] == ["logits"]
        assert e["postprocess"]["type"] == "softmax" and e["preprocess"]["normalize"]["mean"] == wmeta["mean"]
        assert e["parity"]["passed"] and e["parity"]["images"] == 16 and e["optik_version"]
        assert ("opset" in e) == (fmt != "torchscript")
    # where it lives: ONNX metadata_props["optik"], TorchScript extra file optik.json
    props = {kv.key: kv.value for kv in onnx.load(str(cnn_exports["onnx"])).metadata_props}
    assert json.loads(props["optik"])["export"]["opset"] == 17
    with zipfile.ZipFile(cnn_exports["torchscript"]) as z:
        assert any(n.endswith("extra/optik.json") for n in z.namelist())
    int8 = read_exported_meta(cnn_exports["onnx-int8"])["export"]
    assert int8["int8"] == "static" and 0.8 <= int8["parity"]["agreement"]["value"] <= 1.0
    assert cnn_exports["onnx-int8"].stat().st_size < cnn_exports["onnx"].stat().st_size


def test_int8_graph_is_quantized(cnn_exports):
    import onnx

    ops = {n.op_type for n in onnx.load(str(cnn_exports["onnx-int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ static quantization


def test_parity_failure_raises_and_writes_nothing(tiny_run, tmp_path, monkeypatch):
    from optik.deploy import runtime

    run = runtime.ExportedModel.run
    monkeypatch.setattr(runtime.ExportedModel, "run", lambda self, x: [o + 0.5 for o in run(self, x)])  # a broken export
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match="parity") as e:
        Model(tiny_run["best"]).export(format="onnx", out=str(out))
    assert "logits" in str(e.value) and not out.exists() and not list(tmp_path.iterdir())


def test_parity_skip_and_fixed_batch(tiny_run, tmp_path, caplog):
    from optik.deploy.runtime import load_exported, read_exported_meta

    out = tmp_path / "fixed.onnx"
    Model(tiny_run["best"]).export(format="onnx", out=str(out), parity=0, dynamic=False, batch=4)
    meta = read_exported_meta(out)
    assert meta["export"]["parity"] == {"skipped": True} and "parity check skipped" in caplog.text
    assert meta["export"]["input"]["shape"][0] == 4
    model = load_exported(out)
    x = torch.randn(6, 3, 32, 32)  # not a multiple of the fixed batch: padded, chunked, trimmed
    assert model(x).shape == (6, 3)
    np.testing.assert_allclose(model(x[:1]).numpy(), model(x)[:1].numpy(), atol=1e-5)


def test_bad_keys_are_one_line_errors(tiny_run, cnn_exports, tmp_path):
    with pytest.raises(ConfigError, match="'out'"):
        Model(tiny_run["best"]).export(format="onnx", out="model.torchscript")
    with pytest.raises(ConfigError, match="'imgsz'.*exported for 32x32"):
        Model(cnn_exports["onnx"]).predict(np.zeros((32, 32, 3), np.uint8), imgsz=64)
    with pytest.raises(ConfigError, match="already exported"):
        Model(cnn_exports["onnx"]).export(format="onnx")
    with pytest.raises(ConfigError, match="exported model"):
        Model(cnn_exports["onnx"]).train(data="synthetic:shapes?n=12&size=32&classes=3", epochs=1, project=str(tmp_path))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script/save deprecation notices
def test_file_without_optik_metadata(tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), str(plain), dynamo=False)
    with pytest.raises(ModelError, match="plain.onnx.*no optik metadata"):
        Model(plain)
    ts = tmp_path / "plain.torchscript"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(ts))
    with pytest.raises(ModelError, match="plain.torchscript.*no optik metadata"):
        Model(ts)
    with pytest.raises(ModelError, match="missing.onnx.*not found"):
        Model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx"):
        Model(tmp_path / "junk.onnx")


def _weights(path: Path, model_name: str, task: str, **meta) -> Path:
    """An untrained optik weights file (export refuses these models before it needs data)."""
    from optik import models
    from optik.weights import save_weights

    model = models.create(model_name, task=meta.get("subtask", task), num_classes=2, img_size=64)
    meta = {"task": task, "model": model_name, "classes": ["a", "b"], "imgsz": 64, **meta}
    if hasattr(model, "config_dict"):
        meta["model_config"] = model.config_dict()
    return save_weights(model.state_dict(), path, meta)


def _detr_dir(tmp_path: Path) -> str:
    """A tiny local Hugging Face DETR (offline)."""
    from transformers import AutoModelForObjectDetection, DetrConfig, ResNetConfig

    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                     backbone_config=ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16],
                                                  depths=[1, 1, 1, 1], layer_type="basic"),
                     d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                     encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_labels=2)  # fmt: skip
    AutoModelForObjectDetection.from_config(cfg).save_pretrained(tmp_path / "detr")
    return f"hf:{tmp_path / 'detr'}"


@pytest.mark.parametrize(("name", "task", "extra", "why"), [
    # torchvision detectors and tv:maskrcnn export since (tests/deploy/test_export_tv.py); HF DETR still does not
    ("hf-detr", "detect", {}, "Hugging Face detectors"),
])  # fmt: skip
def test_unsupported_models_raise_export_error(tmp_path, name, task, extra, why):
    name = _detr_dir(tmp_path) if name == "hf-detr" else name
    w = _weights(tmp_path / "w.safetensors", name, task, **extra)
    with pytest.raises(ExportError, match=why) as e:
        Model(w).export(format="onnx", parity=0)
    assert repr(name) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "w.onnx").exists()


def test_quantize_onnx_static_and_dynamic(cnn_exports, tmp_path):
    import onnx

    from optik.deploy.quantize import calibration_batches, quantize_onnx
    from optik.deploy.runtime import ort_session

    calib = calibration_batches(torch.randn(10, 3, 32, 32), 4)
    s = quantize_onnx(cnn_exports["onnx"], tmp_path / "s.onnx", mode="static", calib=calib)
    d = quantize_onnx(cnn_exports["onnx"], tmp_path / "d.onnx", mode="dynamic")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(s)).graph.node}
    assert {"ConvInteger", "DynamicQuantizeLinear"} & {n.op_type for n in onnx.load(str(d)).graph.node}
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    ref = ort_session(cnn_exports["onnx"]).run(None, {"images": x})[0]
    for q in (s, d):  # runs, and stays near the fp32 logits
        out = ort_session(q).run(None, {"images": x})[0]
        assert out.shape == ref.shape and np.abs(out - ref).max() < 0.1 * max(1.0, np.abs(ref).max())
    with pytest.raises(ExportError, match="calibration"):
        quantize_onnx(cnn_exports["onnx"], tmp_path / "x.onnx", mode="static", calib=None)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(("task", "subtask", "model_name", "kind"), [
    ("classify", None, "cnn", "top1"),
    ("detect", None, "house_s", "detections"),
    ("detect", None, "tv:fasterrcnn", "matched"),
    ("segment", "semantic", "unet_s", "miou"),
    ("segment", "instance", "tv:maskrcnn", "matched"),
])  # fmt: skip
def test_export_agreement_is_the_tasks(task, subtask, model_name, kind):
    """Each task names how export judges its exported model (export itself knows no task)."""
    from optik import models
    from optik.config import build_config
    from optik.deploy.parity import INT8_FLOORS, Agreement
    from optik.tasks.base import get_task

    keys = {"model": model_name, **({"task": subtask} if subtask else {})}
    t = get_task(task)(build_config(task, "export", keys), {"classes": ["a", "b"]})
    model = models.create(model_name, task=t.model_task, num_classes=2, img_size=64)
    agreement = t.export_agreement(model)
    assert isinstance(agreement, Agreement) and agreement.kind == kind and agreement.floor == INT8_FLOORS[kind]


def test_export_agreement_refuses_what_cannot_be_exported():
    from optik import models
    from optik.config import build_config
    from optik.tasks.segment import SegmentTask

    t = SegmentTask(build_config("segment", "export", {"task": "panoptic"}), {"classes": ["a", "b"], "isthing": [True, False]})
    model = models.create("mask2former", task="panoptic", num_classes=2, img_size=64, isthing=[True, False])
    t.strategy.bind(model)
    with pytest.raises(ExportError, match="task=panoptic.*cannot be exported"):
        t.export_agreement(model)


def test_agreement_scores_measure_real_disagreement():
    """Top-1 counts flipped classes; mIoU compares argmax maps; detection candidates overlap of the top scores."""
    from optik.deploy.parity import DETECTIONS, MIOU, TOP1

    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    flipped = logits.clone()
    flipped[0] = torch.tensor([0.0, 2.0, 1.0])
    assert TOP1.score([logits], [logits]) == 1.0 and TOP1.score([logits], [flipped]) == 0.75

    a = torch.zeros(1, 2, 4, 4)
    a[:, 1, :, :2] = 1  # class 1 on the left half
    b = torch.zeros(1, 2, 4, 4)
    b[:, 1, :, :1] = 1  # … on the first column only
    # class 0: 8 / 12 pixels shared; class 1: 4 / 8 → mean 7/12
    assert MIOU.score([a], [a]) == 1.0 and MIOU.score([a], [b]) == pytest.approx((8 / 12 + 4 / 8) / 2)

    scores = torch.rand(2, 300, 2, generator=torch.Generator().manual_seed(0))
    assert DETECTIONS.score([None, scores], [None, scores]) == 1.0
    assert DETECTIONS.score([None, scores], [None, -scores]) < 0.05  # reversed ranking: no shared top-100
