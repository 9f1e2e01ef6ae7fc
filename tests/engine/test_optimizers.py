"""rmsprop / adagrad / lion / lamb (timm's factory): they train, keep their settings, and resume exactly."""

from __future__ import annotations

import io

import pytest
import timm.optim
import torch
from safetensors.torch import load_file
from torch import nn

from optik.config import TrainConfig, build_config
from optik.engine.optim import DEFAULT_LR, build_optimizer, peak_lr
from optik.engine.trainer import Trainer
from optik.errors import ConfigError

NEW = ("rmsprop", "adagrad", "lion", "lamb")
# The per-parameter state each one keeps: what must survive the checkpoint.
STATE_KEYS = {"rmsprop": {"square_avg", "momentum_buffer"}, "adagrad": {"sum"}, "lion": {"exp_avg"}, "lamb": {"exp_avg", "exp_avg_sq"}}
CLASSES = {"rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "lion": timm.optim.Lion, "lamb": timm.optim.Lamb}


def groups(model: nn.Module) -> list[dict]:
    """The engine's default groups: no weight decay on biases / norms."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny MLP and a fixed 3-class batch that it can fit."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3)), x, y


def steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", NEW)
def test_builds_timms_optimizer_with_the_configs_settings(name):
    cfg = TrainConfig(optimizer=name, momentum=0.8, weight_decay=0.01)
    model, _, _ = problem()
    opt = build_optimizer(groups(model), cfg)
    assert type(opt) is CLASSES[name]
    assert peak_lr(cfg) == DEFAULT_LR[name] and all(g["lr"] == DEFAULT_LR[name] for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # the no-decay group is kept
    if name == "rmsprop":
        assert all(g["momentum"] == 0.8 and g["alpha"] == 0.9 and g["eps"] == 1e-8 for g in opt.param_groups)
    assert build_optimizer(groups(model), TrainConfig(optimizer=name, lr=0.123)).param_groups[0]["lr"] == 0.123


@pytest.mark.parametrize("name", NEW)
def test_default_lr_decreases_the_loss(name):
    model, x, y = problem()
    losses = torch.tensor(steps(model, build_optimizer(groups(model), TrainConfig(optimizer=name)), x, y, 60))
    # Lion / LAMB move slowly at their default lr: "decreasing" is judged by the trend, not a fixed gain.
    assert losses[-10:].mean() < 0.95 * losses[:10].mean(), losses[::10]
    assert (losses.diff() < 0).float().mean() >= 0.9, losses[::10]


@pytest.mark.parametrize("name", NEW)
def test_state_round_trips_through_a_weights_only_checkpoint(name):
    """Save after 5 steps, load with weights_only=True (as state.pt is loaded) into a fresh optimizer,
    step on: identical to 10 uninterrupted steps, bit for bit."""
    cfg = TrainConfig(optimizer=name)
    a, x, y = problem()
    opt_a = build_optimizer(groups(a), cfg)
    steps(a, opt_a, x, y, 10)

    b, _, _ = problem()
    opt_b = build_optimizer(groups(b), cfg)
    steps(b, opt_b, x, y, 5)
    buf = io.BytesIO()
    torch.save({"model": b.state_dict(), "optimizer": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert STATE_KEYS[name] <= set(saved["optimizer"]["state"][0])
    c, _, _ = problem(seed=1)  # other initial weights: everything must come from the checkpoint
    c.load_state_dict(saved["model"])
    opt_c = build_optimizer(groups(c), cfg)
    opt_c.load_state_dict(saved["optimizer"])
    steps(c, opt_c, x, y, 5)
    for (k, pa), pc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(pa, pc), k



@pytest.mark.parametrize("name", NEW)
def test_trainer_resume_is_exact(name, tmp_path, interrupt_after):
    """2 epochs straight == 1 epoch, Ctrl-C, resume=true: the optimizer's state comes back from state.pt."""
    data = "synthetic:shapes?n=48&size=16&classes=3&seed=2"

    def cfg(project, **kw):
        return build_config("classify", "train", {"data": data, "model": "cnn", "epochs": 2, "imgsz": 16, "batch": 16,
                                                  "optimizer": name, "project": str(project), "plots": False, **kw})  # fmt: skip

    straight = Trainer(cfg(tmp_path / "a", name="s")).fit()
    interrupt_after(cfg(tmp_path / "b", name="r"), 1)
    state = torch.load(tmp_path / "b" / "classify" / "r" / "weights" / "state.pt", weights_only=True)
    assert STATE_KEYS[name] <= set(next(iter(state["optimizer"]["state"].values())))
    resumed = Trainer(build_config("classify", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    assert resumed["epochs_run"] == 1
    a, b = load_file(straight["last"]), load_file(resumed["last"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer"):
        build_config("classify", "train", {"data": "digits", "optimizer": "lbfgs"})
