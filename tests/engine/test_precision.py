"""Precision and memory format: ``amp=auto`` resolves from the hardware (bf16 units on the CPU, bf16 or fp16 +
a gradient scaler on CUDA), config.yaml and the report record what was used, bf16 / fp16 / channels-last runs
keep exact resume and save standard weights, and ``compile=true`` trains and saves plain keys."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

import optik.device as device_mod
from optik.config import build_config
from optik.device import autocast, float_outputs, grad_scaler, input_memory_format, precision_name, resolve_amp
from optik.device import to_device, use_channels_last
from optik.engine.report import precision_line
from optik.engine.trainer import Trainer
from optik.errors import ConfigError
from optik.models import create

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
DATA = "synthetic:shapes?n=48&size=24&classes=3&seed=2"


def cfg(project, **kw):
    base = {"data": DATA, "model": "cnn", "epochs": 2, "imgsz": 24, "batch": 16, "project": str(project), "plots": False}
    return build_config("classify", "train", {**base, **kw})


@pytest.fixture()
def cpu_flags(monkeypatch):
    """Set the CPU flags optik.device reads (instead of /proc/cpuinfo)."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(device_mod, "cpu_flags", lambda: frozenset(flags))

    device_mod._warn_emulated.cache_clear()
    return set_flags


# -- amp=auto resolution -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [("avx2", "avx512f", "avx512_bf16"), ("avx512f", "amx_tile", "amx_bf16")])
def test_auto_is_bf16_on_a_cpu_with_bf16_units(cpu_flags, flags):
    cpu_flags(*flags)
    assert resolve_amp("auto", CPU) is torch.bfloat16
    assert resolve_amp(True, CPU) is torch.bfloat16
    assert resolve_amp(False, CPU) is None


def test_auto_is_fp32_without_bf16_units_and_true_warns(cpu_flags, caplog):
    cpu_flags("avx2", "fma", "avx512f", "avx512_vnni")
    assert resolve_amp("auto", CPU) is None
    with caplog.at_level(logging.WARNING, logger="optik.device"):
        assert resolve_amp(True, CPU) is torch.bfloat16  # forced: allowed, but said to be emulated
        resolve_amp("true", CPU)
    warnings = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == 1  # once per process, not per batch


def test_without_cpuinfo_flags_torch_is_asked(monkeypatch, cpu_flags):
    cpu_flags()  # no /proc/cpuinfo (macOS, Windows)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_amp("auto", CPU) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_amp("auto", CPU) is None


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_cuda_without_bf16_is_fp16_with_a_gradient_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_amp("auto", CUDA) is torch.float16 and resolve_amp(True, CUDA) is torch.float16
    assert isinstance(grad_scaler(CUDA, torch.float16), torch.amp.GradScaler)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_amp("auto", CUDA) is torch.bfloat16
    assert grad_scaler(CUDA, torch.bfloat16) is None and grad_scaler(CPU, None) is None


def test_auto_trains_depthwise_models_in_fp32_on_cpu_and_predicts_in_bf16(cpu_flags, monkeypatch):
    # CPU bf16 depthwise-convolution backward is slower than fp32 (benchmarks/amp_parity.py): auto trains such
    # models in fp32 there, but still evaluates them in bf16; dense models and GPUs keep bf16 for training.
    cpu_flags("avx512f", "avx512_bf16")
    dw, dense = create("mobilenet", num_classes=3), create("resnet", num_classes=3)
    assert resolve_amp("auto", CPU, dw, train=True) is None and resolve_amp("auto", CPU, dw) is torch.bfloat16
    assert resolve_amp("auto", CPU, dense, train=True) is torch.bfloat16
    assert resolve_amp(True, CPU, dw, train=True) is torch.bfloat16  # forced
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_amp("auto", CUDA, dw, train=True) is torch.bfloat16


def test_exported_models_keep_their_own_precision():
    class Exported(nn.Module):  # what optik.deploy.runtime.ExportedModel carries
        meta = {"task": "classify", "export": {"format": "torchscript"}}

    assert resolve_amp(True, CPU, Exported()) is None and resolve_amp(torch.bfloat16, CPU, Exported()) is None
    assert resolve_amp(True, CPU, nn.Linear(2, 2)) is torch.bfloat16


def test_amp_values_and_names():
    assert resolve_amp(torch.float16, CPU) is torch.float16  # already resolved: passes through
    with pytest.raises(ConfigError, match="amp"):
        resolve_amp("bf16", CPU)
    with pytest.raises(ConfigError, match="'amp'.*expected auto, true or false"):
        build_config("classify", "train", {"amp": "bf16"})
    assert build_config("classify", "train", {}).amp == "auto"
    assert build_config("classify", "train", {"amp": "auto (bf16)"}).amp == "auto"  # what config.yaml records
    assert build_config("classify", "predict", {"amp": "false"}).amp is False
    assert [precision_name(d) for d in (torch.bfloat16, torch.float16, None)] == ["bf16", "fp16", "fp32"]


def test_autocast_and_fp32_outputs():
    lin = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast(CPU, torch.bfloat16):
        y = lin(x)
    with autocast(CPU, None):
        ref = lin(x)
    assert y.dtype is torch.bfloat16 and ref.dtype is torch.float32
    out = float_outputs({"logits": y, "boxes": [y, torch.ones(1, dtype=torch.long)], "n": 3})
    assert out["logits"].dtype is torch.float32 and out["boxes"][1].dtype is torch.long and out["n"] == 3
    torch.testing.assert_close(out["logits"], ref, atol=0.05, rtol=0.02)  # bf16: ~3 significant digits


# -- channels_last ---------------------------------------------------------------------------------


def test_channels_last_auto_picks_conv_models_and_keeps_outputs():
    assert use_channels_last("auto", create("cnn", num_classes=3), CPU)
    assert not use_channels_last("auto", create("mlp", num_classes=3, img_size=16), CPU)
    assert not use_channels_last("auto", create("cnn", num_classes=3), torch.device("mps"))
    assert use_channels_last(True, nn.Linear(2, 2), CPU) and not use_channels_last(False, create("cnn"), CPU)
    torch.manual_seed(0)
    for name, task, kw in (("resnet", "classify", {}), ("unet_s", "semantic", {})):
        ref = create(name, task=task, num_classes=3, **kw).eval()
        cl = create(name, task=task, num_classes=3, **kw).eval()
        cl.load_state_dict(ref.state_dict())
        cl.to(memory_format=torch.channels_last)
        assert input_memory_format(cl) == torch.channels_last and input_memory_format(ref) is None
        x = torch.rand(2, 3, 32, 32)
        xcl = to_device(x, CPU, input_memory_format(cl))
        assert xcl.is_contiguous(memory_format=torch.channels_last) and not xcl.is_contiguous()
        with torch.no_grad():
            torch.testing.assert_close(cl(xcl), ref(x), atol=1e-4, rtol=1e-4)
        # its state_dict loads into a plain model, strict, and gives the same outputs
        plain = create(name, task=task, num_classes=3, **kw).eval()
        plain.load_state_dict(cl.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), ref(x), atol=1e-4, rtol=1e-4)


# -- the trainer -----------------------------------------------------------------------------------


def test_config_yaml_and_report_record_the_resolved_precision(tmp_path, cpu_flags):
    cpu_flags("avx512f")  # no bf16 units: auto is fp32
    t = Trainer(cfg(tmp_path, name="fp32", epochs=1))
    r = t.fit()
    saved = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
    assert t.amp_dtype is None and saved["amp"] == "auto (fp32)" and saved["channels_last"] == "auto (on)"
    assert precision_line(t.cfg, t.resolved) == "- precision: fp32 (amp=auto), channels-last memory format (channels_last=auto)"

    cpu_flags("avx512f", "avx512_bf16")
    t = Trainer(cfg(tmp_path, name="bf16", epochs=1, channels_last=False))
    r = t.fit()
    saved = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
    assert t.amp_dtype is torch.bfloat16 and saved["amp"] == "auto (bf16 train, fp32 val)" and saved["channels_last"] == "false (off)"
    # The file reads back as the keys it was given (a resume / cfg= re-run resolves auto again).
    again = build_config("classify", "train", {k: v for k, v in saved.items() if k not in ("task", "mode")})
    assert again.amp == "auto" and again.channels_last is False
    assert torch.load(Path(r["run_dir"]) / "weights" / "state.pt", weights_only=True)["scaler"] is None
    assert precision_line(t.cfg, t.resolved).startswith("- precision: bf16 autocast training, fp32 validation (amp=auto), contiguous (NCHW)")



def _resume_equals_straight(tmp_path, interrupt_after, **kw):
    straight = Trainer(cfg(tmp_path / "a", name="s", epochs=3, **kw)).fit()
    interrupt_after(cfg(tmp_path / "b", name="r", epochs=3, **kw), 1)
    resumed = Trainer(build_config("classify", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    a, b = load_file(straight["last"]), load_file(resumed["last"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert b[k].is_contiguous()  # standard (NCHW) tensors in the weights file whatever the training layout
    return straight, resumed


def test_bf16_channels_last_resume_is_exact(tmp_path, interrupt_after):
    # amp=true: bf16 autocast even on a CPU without bf16 units, so this runs everywhere.
    straight, _ = _resume_equals_straight(tmp_path, interrupt_after, amp=True, channels_last=True)
    plain = create("cnn", num_classes=3)
    plain.load_state_dict(load_file(straight["last"]))  # strict: the keys of a plain model


def test_fp16_with_gradient_scaler_trains_and_resumes_exactly(tmp_path, monkeypatch, interrupt_after):
    # A CUDA GPU without bf16 trains in fp16 with a GradScaler; CPU autocast runs fp16 too, so the scaler's
    # path (scale, unscale for clipping, step, update, its state in state.pt) is exercised here without a GPU.
    monkeypatch.setattr("optik.engine.trainer.resolve_amp", lambda *a, **kw: torch.float16)
    _, resumed = _resume_equals_straight(tmp_path, interrupt_after, clip_grad=1.0)
    state = torch.load(Path(resumed["run_dir"]) / "weights" / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0


def test_predict_and_val_outputs_are_fp32_and_agree_across_precisions(tiny_run, tmp_path):
    from optik.engine.inference import predict, validate

    imgs = [torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(3)]
    probs = {}
    for amp in (True, False):
        res = list(predict(build_config("classify", "predict", {"model": tiny_run["run_dir"], "amp": amp}), source=imgs))
        probs[amp] = torch.stack([torch.as_tensor(r.probs.data) for r in res])
    assert probs[True].dtype == probs[False].dtype == torch.float32
    torch.testing.assert_close(probs[True], probs[False], atol=0.02, rtol=0.05)
    val = {amp: validate(build_config("classify", "val", {"model": tiny_run["run_dir"], "amp": amp, "plots": False,
                                                          "project": str(tmp_path)})) for amp in (True, False)}  # fmt: skip
    assert abs(val[True]["top1"] - val[False]["top1"]) <= 0.1 and abs(val[True]["loss"] - val[False]["loss"]) < 0.05


# -- compile ---------------------------------------------------------------------------------------


def _compile_with(monkeypatch, backend: str) -> list[nn.Module]:
    compiled: list[nn.Module] = []
    real = torch.compile

    def spy(fn, *args, **kw):
        compiled.append(fn)
        return real(fn, *args, **{**kw, "backend": backend})

    monkeypatch.setattr(torch, "compile", spy)
    return compiled


def _check_compiled_run(r, compiled):
    assert len(compiled) == 1 and getattr(compiled[0], "__name__", "") == "_call_impl"  # the model, in place
    weights = load_file(r["last"])
    assert not any("_orig_mod" in k for k in weights)
    plain = create("cnn", num_classes=3)
    plain.load_state_dict(weights)  # strict
    state = torch.load(Path(r["run_dir"]) / "weights" / "state.pt", weights_only=True)
    assert state["model"].keys() == weights.keys()


def test_compile_wraps_the_step_and_saves_plain_keys(tmp_path, monkeypatch):
    # Dynamo's eager backend: the trainer's wiring without inductor's code generation (minutes on 2 cores).
    compiled = _compile_with(monkeypatch, "eager")
    _check_compiled_run(Trainer(cfg(tmp_path, epochs=1, compile=True, data=DATA.replace("n=48", "n=20"))).fit(), compiled)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="inductor's CPU backend needs a C compiler")
def test_compile_with_inductor_trains_one_step_and_saves_loadable_weights(tmp_path, monkeypatch):
    pytest.importorskip("torch._inductor")
    compiled = _compile_with(monkeypatch, "inductor")
    r = Trainer(cfg(tmp_path, epochs=1, compile=True, data=DATA.replace("n=48", "n=20"), batch=16, val=False)).fit()
    _check_compiled_run(r, compiled)

