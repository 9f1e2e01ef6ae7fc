"""The eager inference fast path (optik/engine/fastpath.py): the optimised copy computes what the original
computes (reference: the original eager model), BatchNorm is really folded, the original model and the weights
file are untouched, and val / predict run through it with the same results as without it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from optik.engine.fastpath import (
    FusedConv2d,
    find_chains,
    optimize_for_inference,
    outputs_match,
)


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so folding them is visible in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch, size", [("efficientnet_lite0", 64), ("tf_efficientnet_lite0", 65), ("mobilenetv3_small_050", 64)])
def test_outputs_equal_and_batchnorm_folded(arch, size):
    torch.manual_seed(0)
    model = _random_bn(timm.create_model(arch, num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = _bn_count(model)
    fast = optimize_for_inference(model)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = model(x), fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # Every BatchNorm of these nets follows a convolution: all folded, none left to run.
    assert fast.optik_fastpath["folded_bn"] == n_bn > 0 and _bn_count(fast) == 0
    assert all(not isinstance(m, nn.Conv2d) for m in fast.modules())  # every convolution replaced by FusedConv2d
    assert any(isinstance(m, FusedConv2d) and m.post_op != "none" for m in fast.modules())  # activations fused
    # The original is the model it was: same class of modules, same tensors.
    assert _bn_count(model) == n_bn and not any(isinstance(m, FusedConv2d) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_conv_output_used_twice_is_not_folded():
    """Folding BN into a conv whose output also feeds something else would change that other use."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.act(self.bn(y)) + y

    model = _random_bn(Net())
    assert find_chains(model) == [("conv", None, None)]
    fast = optimize_for_inference(model)
    assert fast.optik_fastpath == {"convs": 1, "folded_bn": 0, "fused_act": 0} and isinstance(fast.bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_model_the_rewrite_breaks_runs_unoptimised():
    """A forward that ``view``s a convolution's output assumes NCHW strides; the channels-last fast path breaks
    it — the check on a probe input catches that and the original model is returned."""

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 3, padding=1)  # large enough (0.9M MACs) for the packed kernel

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).view(x.shape[0], -1)

    model = Flat().eval()
    probe = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError):  # what the unchecked copy does
        optimize_for_inference(model)(probe)
    assert optimize_for_inference(model, check=lambda m: m(probe)) is model


def test_bf16_autocast_and_gradients_fall_back_correctly():
    model = _random_bn(timm.create_model("mobilenetv3_small_050", num_classes=10))
    fast = optimize_for_inference(model)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = model(x), fast(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(out.float().argmax(1), ref.float().argmax(1))
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05 * float(ref.float().abs().max()))
    # With gradients wanted it computes through F.conv2d (the packed kernel has none): same values, a graph.
    xg = x.clone().requires_grad_()
    fast(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_refuses_a_training_model_and_leaves_conv_free_models_alone():
    with pytest.raises(ValueError, match="eval mode"):
        optimize_for_inference(nn.Conv2d(3, 3, 1).train())
    mlp = nn.Sequential(nn.Linear(4, 4)).eval()
    assert optimize_for_inference(mlp) is mlp


def test_outputs_match_structure():
    a = {"boxes": torch.ones(2, 4), "labels": torch.tensor([1, 2])}
    assert outputs_match(a, {"boxes": torch.ones(2, 4) + 1e-6, "labels": torch.tensor([1, 2])})
    assert not outputs_match(a, {"boxes": torch.ones(2, 4), "labels": torch.tensor([1, 3])})
    assert not outputs_match(a, {"boxes": torch.ones(3, 4), "labels": torch.tensor([1, 2])})
    assert not outputs_match([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)])


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_predict_uses_it_same_results_weights_file_untouched(weights, monkeypatch):
    from optik import Model

    digest = _sha(weights)
    g = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=g).permute(1, 2, 0).numpy() for _ in range(5)]
    fast_model = Model(weights)
    fast = fast_model.predict(images, amp=False, batch=5)
    loaded = fast_model._loaded[2]
    assert loaded.optik_fastpath["folded_bn"] > 0 and any(isinstance(m, FusedConv2d) for m in loaded.modules())
    monkeypatch.setenv("OPTIK_FASTPATH", "0")
    plain_model = Model(weights)
    plain = plain_model.predict(images, amp=False, batch=5)
    assert not any(isinstance(m, FusedConv2d) for m in plain_model._loaded[2].modules())
    for a, b in zip(fast, plain):
        torch.testing.assert_close(torch.as_tensor(a.probs.data), torch.as_tensor(b.probs.data), rtol=1e-4, atol=1e-5)
    assert _sha(weights) == digest


def test_val_same_metrics_with_and_without(tiny_run, tmp_path, monkeypatch):
    from optik.config import build_config
    from optik.engine import inference
    from optik.engine.inference import validate

    used = []
    real = inference.optimize_loaded
    monkeypatch.setattr(inference, "optimize_loaded", lambda task, model: used.append(real(task, model)) or used[-1])
    keys = {"model": tiny_run["run_dir"], "project": str(tmp_path), "plots": False, "amp": False}
    fast = validate(build_config("classify", "val", keys))
    assert used and used[0].optik_fastpath["folded_bn"] > 0  # val ran the optimised copy
    monkeypatch.setenv("OPTIK_FASTPATH", "0")
    plain = validate(build_config("classify", "val", keys))
    assert fast["top1"] == plain["top1"]
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-4)


def test_detector_is_optimised_and_checked_on_raw_outputs(tmp_path):
    """A random-init detector's scores tie to ~1e-8, so NMS order differs on any rounding; the check compares
    the model's own outputs (before NMS) instead, and the fast path stays on."""
    from optik import models
    from optik.config import build_config
    from optik.engine.fastpath import optimize_loaded
    from optik.engine.inference import load_trained
    from optik.weights import save_weights

    torch.manual_seed(0)
    model = _random_bn(models.create("house_s", task="detect", num_classes=3))
    path = save_weights(model.state_dict(), tmp_path / "det.safetensors",
                        {"task": "detect", "model": "house_s", "classes": ["a", "b", "c"], "imgsz": 64})  # fmt: skip
    task, loaded, _ = load_trained(build_config("detect", "predict", {"model": str(path), "amp": False}))
    fast = optimize_loaded(task, loaded)
    assert fast is not loaded and fast.optik_fastpath["folded_bn"] > 0
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        for ref, out in zip(loaded(x), fast(x)):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
        boxes = fast.forward_detect(x, conf=0.25, iou=0.7, max_det=10, agnostic=False)
    assert len(boxes) == 2  # the task's path runs on the copy
