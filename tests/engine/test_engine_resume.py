"""Exact resume: 2 epochs + resume 2 epochs == 4 epochs straight, bit for bit."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from optik.config import build_config
from optik.engine.trainer import Trainer
from optik.errors import ConfigError

DATA = "synthetic:shapes?n=64&size=24&classes=3&seed=1"


def cfg(project, **kw):
    base = {"data": DATA, "model": "cnn", "epochs": 4, "imgsz": 24, "batch": 16, "project": str(project),
            "ema": True, "warmup_epochs": 1, "hflip": 0.5, "mixup": 0.2}
    base.update(kw)
    return build_config("classify", "train", base)



@pytest.mark.slow
def test_interrupted_then_resumed_equals_straight_run(tmp_path, interrupt_after):
    straight = Trainer(cfg(tmp_path / "a", name="straight")).fit()

    interrupt_after(cfg(tmp_path / "b", name="split"), 2)
    run = tmp_path / "b" / "classify" / "split"
    assert torch.load(run / "weights" / "state.pt", weights_only=True)["epoch"] == 2
    resumed = Trainer(build_config("classify", "train", {"resume": True, "name": "split", "project": str(tmp_path / "b")})).fit()

    assert resumed["run_dir"] == str(run) and resumed["epochs_run"] == 2
    a, b = load_file(straight["last"]), load_file(resumed["last"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(straight["run_dir"] + "/weights/state.pt", weights_only=True)
    sb = torch.load(run / "weights" / "state.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]  # no epoch skipped or repeated, and integers


def test_resume_rejects_changed_keys_and_finished_runs(tiny_run, tmp_path):
    run_dir = tiny_run["run_dir"]
    project, name = str(tmp_path), "x"
    import shutil
    from pathlib import Path

    shutil.copytree(run_dir, Path(project) / "classify" / name)
    with pytest.raises(ConfigError, match=r"'model' differs"):
        Trainer(build_config("classify", "train", {"resume": True, "name": name, "project": project, "model": "resnet"})).fit()
    with pytest.raises(ConfigError, match="already finished 2 epochs"):
        Trainer(build_config("classify", "train", {"resume": True, "name": name, "project": project})).fit()
    # A new `epochs` is honoured (not silently ignored): train 1 more epoch.
    out = Trainer(build_config("classify", "train", {"resume": True, "name": name, "project": project, "epochs": 3})).fit()
    assert out["epochs_run"] == 1
    assert torch.load(Path(out["run_dir"]) / "weights" / "state.pt", weights_only=True)["epoch"] == 3


def test_resume_without_runs_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="no run with weights/state.pt"):
        Trainer(build_config("classify", "train", {"resume": True, "project": str(tmp_path)})).fit()


def test_resume_after_two_phase_switch_comes_back_unfrozen(tmp_path, interrupt_after):
    """A run resumed after its head-only phase must train the backbone, like the straight run."""
    kw = {"freeze": "backbone", "freeze_epochs": 1, "ema": False, "mixup": 0.0, "epochs": 3}
    straight = Trainer(cfg(tmp_path / "a", name="s", **kw)).fit()
    interrupt_after(cfg(tmp_path / "b", name="r", **kw), 2)
    resumed = Trainer(build_config("classify", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    a, b = load_file(straight["last"]), load_file(resumed["last"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_from_another_tasks_run_names_the_mismatch(tmp_path):
    """`classify train resume=runs/detect/X` said "unknown key 'conf'"; it names the task instead."""
    run = tmp_path / "detect" / "train"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "state.pt").write_bytes(b"")
    (run / "config.yaml").write_text("task: detect\nmode: train\nmodel: house_s\nconf: 0.25\nimgsz: 128\n")
    with pytest.raises(ConfigError, match=r"resume: .*detect run.*not classify.*optik detect train"):
        Trainer(build_config("classify", "train", {"resume": str(run), "project": str(tmp_path)})).fit()


def test_metrics_csv_epoch_stays_an_integer_after_resume(tmp_path):
    """CSVLogger re-read the earlier rows as floats, so a resumed metrics.csv had epochs 1.0, 2.0, 3."""
    from types import SimpleNamespace

    from optik.engine.callbacks import CSVLogger

    path = tmp_path / "metrics.csv"
    first = CSVLogger(path)
    first.on_train_start(SimpleNamespace(start_epoch=0))
    for e in range(3):
        first.on_epoch_end(None, e, {"train/loss": 1.0 / (e + 1)})
    resumed = CSVLogger(path)
    resumed.on_train_start(SimpleNamespace(start_epoch=2))  # resumed from epoch 2: epoch 3's row is redone
    resumed.on_epoch_end(None, 2, {"train/loss": 0.3, "val/top1": 0.5})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["train/loss"]) == 1.0 and rows[0]["val/top1"] == "" and rows[2]["val/top1"] == "0.5"
