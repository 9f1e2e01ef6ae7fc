"""lr=auto: the learning-rate range test (optik.engine.lr_finder) and its place in the trainer."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from optik.config import build_config
from optik.engine import trainer as trainer_mod
from optik.engine.lr_finder import find_lr, pick_lr
from optik.engine.trainer import Trainer
from optik.errors import ConfigError

DIGITS = "digits?size=8"  # 1,797 tiny images: a real problem that trains in seconds at imgsz 8


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
    )


def test_find_lr_restores_weights_buffers_optimizer_and_rng():
    model = small_net()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
    loss_fn = lambda b: torch.nn.functional.cross_entropy(model(b[0]), b[1])
    loss_fn(batches[0]).backward()  # a real optimizer state (moments, step) to restore, not an empty one
    opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
    groups_before = [{k: v for k, v in grp.items() if k != "params"} for grp in opt.state_dict()["param_groups"]]
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    expected_draws = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)

    result = find_lr(model, opt, batches, loss_fn, num_iter=30)

    assert len(result.lrs) >= 5 and result.lrs == sorted(result.lrs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # weights and BatchNorm statistics (running_mean/var, num_batches_tracked)
        assert torch.equal(before[k], after[k]), k
    assert not model.training  # the mode it had
    state = opt.state_dict()
    assert [{k: v for k, v in grp.items() if k != "params"} for grp in state["param_groups"]] == groups_before
    assert state["state"].keys() == opt_before.keys()
    for k, s in opt_before.items():
        for n, t in s.items():
            assert torch.equal(torch.as_tensor(state["state"][k][n]), torch.as_tensor(t)), (k, n)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], expected_draws[0]) and np.array_equal(draws[1], expected_draws[1]) and draws[2] == expected_draws[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [2.0, 6.0])
def test_find_lr_pick_is_stable_on_least_squares(seed, scale):
    """Full-batch gradient descent on least squares diverges above 2 / λmax (λmax: the Hessian's largest
    eigenvalue, from NumPy): the pick must be below that limit and not absurdly far below it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g) * torch.linspace(0.2, 1.0, 8) * scale
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(256, generator=g)
    limit = 2 / np.linalg.eigvalsh((x.T @ x / len(x)).double().numpy()).max()
    model = torch.nn.Linear(8, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = find_lr(model, opt, [(x, y)], lambda b: 0.5 * ((model(b[0]).squeeze(1) - b[1]) ** 2).mean())
    assert result.stopped == "diverged"
    assert 0.05 * limit < result.lr < limit, (result.lr, limit)
    assert result.lr == pytest.approx(result.min_loss_lr / 10)


def test_find_lr_keeps_group_ratios_and_stops_on_nan():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    seen = []

    def loss_fn(_):
        seen.append([grp["lr"] for grp in opt.param_groups])
        return (a.sum() + b.sum()) * (float("nan") if len(seen) > 6 else 1.0)

    result = find_lr(torch.nn.ParameterList([a, b]), opt, [0], loss_fn, num_iter=20)
    assert result.stopped == "diverged" and len(result.lrs) == 6
    assert all(lo == pytest.approx(hi / 10) for hi, lo in seen)  # the second group stays at 0.1 x
    assert [grp["lr"] for grp in opt.param_groups] == [1.0, 0.1]  # restored
    assert torch.equal(a.detach(), torch.ones(2))


def test_find_lr_rejects_bad_arguments():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="start_lr"):
        find_lr(model, opt, [0], lambda b: model.weight.sum(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="no batches"):
        find_lr(model, opt, [], lambda b: model.weight.sum())
    with pytest.raises(ValueError, match="not finite"):
        find_lr(model, opt, [0], lambda b: model.weight.sum() * float("inf"))


def test_pick_rule_min_over_ten_and_steepest():
    lrs = list(np.logspace(-5, 0, 51))
    losses = [2.0 - 1.5 / (1 + np.exp(-(np.log10(lr) + 3) * 4)) for lr in lrs[:41]] + [0.6 + i for i in range(10)]
    pick, min_lr, steepest = pick_lr(lrs, losses)
    assert min_lr == lrs[40] and pick == pytest.approx(lrs[40] / 10)
    assert steepest == pytest.approx(1e-3)  # the sigmoid's inflection, at log10(lr) = -3


def test_find_lr_plot(tmp_path):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    result = find_lr(model, opt, [(x, y)], lambda b: torch.nn.functional.cross_entropy(model(b[0]), b[1]), num_iter=20)
    path = result.plot(tmp_path / "plots" / "lr_find.png")
    with Image.open(path) as im:
        assert im.size == (600, 400)
        assert len(set(im.convert("L").getdata())) > 10  # drawn, not blank
    assert json.loads(json.dumps(result.to_dict()))["lr"] == result.lr


# ---- the trainer ----------------------------------------------------------------------------


def digits_cfg(project, **kw):
    base = {"data": DIGITS, "model": "cnn", "epochs": 1, "imgsz": 8, "batch": 64, "project": str(project), "plots": False}
    return build_config("classify", "train", {**base, **kw})


def test_lr_auto_picks_records_and_trains_as_the_picked_lr(tmp_path):
    auto = Trainer(digits_cfg(tmp_path, name="auto", lr="auto", lr_find_steps=20, plots=True)).fit()
    run = tmp_path / "classify" / "auto"
    found = json.loads((run / "lr_find.json").read_text())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert found["reliable"] and saved["lr"] == found["lr"] == found["used"] and isinstance(saved["lr"], float)
    assert 1e-4 < found["lr"] < 1.0 and found["rule"] == "min_loss/10"
    assert (run / "plots" / "lr_find.png").is_file()
    # The test left weights, RNG and data order as they were: the run equals one given the pick explicitly.
    explicit = Trainer(digits_cfg(tmp_path, name="explicit", lr=found["lr"])).fit()
    a, b = load_file(auto["last"]), load_file(explicit["last"])
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert auto["metrics"]["top1"] > 0.5  # chance: 0.1


def test_lr_auto_is_not_rerun_on_resume(tmp_path, monkeypatch):
    Trainer(digits_cfg(tmp_path, name="r", lr="auto", lr_find_steps=10)).fit()
    run = tmp_path / "classify" / "r"
    lr = yaml.safe_load((run / "config.yaml").read_text())["lr"]

    def fail(*a, **k):
        raise AssertionError("the range test ran again on resume")

    monkeypatch.setattr(trainer_mod, "find_lr", fail)
    for extra in ({}, {"lr": "auto", "lr_find_steps": 7}):  # the same command again with resume=true, lr=auto included
        resumed = Trainer(build_config("classify", "train", {"resume": str(run), "epochs": 2 + bool(extra), **extra})).fit()
        assert resumed["epochs_run"] == 1
        assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == lr
    with pytest.raises(ConfigError, match="'lr' differs"):  # a different explicit number is still refused
        Trainer(build_config("classify", "train", {"resume": str(run), "epochs": 5, "lr": lr * 2})).fit()


def test_lr_auto_detection(tmp_path):
    """Any task that trains through the engine: a detector's forward_loss path."""
    cfg = build_config("detect", "train", {"data": "synthetic:shapes-det?n=12&size=64&classes=2", "model": "house_s",
                                           "epochs": 1, "imgsz": 64, "batch": 4, "lr": "auto", "lr_find_steps": 6,
                                           "project": str(tmp_path), "plots": False})  # fmt: skip
    Trainer(cfg).fit()
    run = tmp_path / "detect" / "train"
    found = json.loads((run / "lr_find.json").read_text())
    assert len(found["lrs"]) >= 2 and yaml.safe_load((run / "config.yaml").read_text())["lr"] == found["used"]


def test_lr_auto_value_errors():
    with pytest.raises(ConfigError, match="positive number or auto"):
        build_config("classify", "train", {"lr": "fastest"})
    assert build_config("segment", "train", {"lr": "AUTO"}).lr == "auto"


@pytest.mark.slow
def test_lr_auto_under_torchrun(tmp_path):
    """Rank 0 runs the test and broadcasts the pick: one lr_find.json, one lr, in config.yaml."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "optik", "classify", "train", "data=digits?size=8", "model=cnn", "epochs=1",
           "imgsz=8", "batch=32", "lr=auto", "lr_find_steps=10", "plots=false", f"project={tmp_path}", "name=ddp"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=400, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("lr=auto: range test") == 1  # rank 0 only
    run = tmp_path / "classify" / "ddp"
    found = json.loads((run / "lr_find.json").read_text())
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == found["used"]
    assert (run / "weights" / "best.safetensors").is_file()


class _StopAfterFirstEpoch:
    def on_epoch_end(self, trainer, epoch, logs):
        raise KeyboardInterrupt


def test_resume_keeps_the_runs_own_default_lr(tmp_path, monkeypatch):
    """A run started with lr unset resumes at the lr it started with, even if the default changed since."""
    from optik.engine import optim

    monkeypatch.setitem(optim.SCRATCH_LR, "adamw", 1e-3)  # "the old default"
    with pytest.raises(KeyboardInterrupt):
        Trainer(digits_cfg(tmp_path, name="split", epochs=2), callbacks=[_StopAfterFirstEpoch()]).fit()
    monkeypatch.setitem(optim.SCRATCH_LR, "adamw", 7e-3)  # the default changed before the resume
    resumed = Trainer(build_config("classify", "train", {"resume": str(tmp_path / "classify" / "split")})).fit()
    straight = Trainer(digits_cfg(tmp_path, name="straight", epochs=2, lr=1e-3)).fit()
    a, b = load_file(resumed["last"]), load_file(straight["last"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_flat_curve_is_unreliable():
    """A loss that does not fall in the test (a task that needs more steps before it learns): no valley to read."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    g = torch.Generator().manual_seed(0)
    result = find_lr(torch.nn.ParameterList([w]), opt, [0], lambda b: w.sum() * 0 + 1.386 + 0.01 * torch.randn((), generator=g))
    assert not result.reliable and "fell only" in result.note


def test_lr_auto_falls_back_to_the_default_without_a_valley(tmp_path, monkeypatch):
    from optik.engine import optim

    def flat(*args, **kwargs):
        result = find_lr(*args, **kwargs)
        result.reliable, result.note = False, "the loss fell only 0.1% during the test"
        return result

    monkeypatch.setattr(trainer_mod, "find_lr", flat)
    Trainer(digits_cfg(tmp_path, name="flat", lr="auto", lr_find_steps=5)).fit()
    run = tmp_path / "classify" / "flat"
    found = json.loads((run / "lr_find.json").read_text())
    assert found["used"] == optim.SCRATCH_LR["adamw"] != found["lr"]
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == optim.SCRATCH_LR["adamw"]
