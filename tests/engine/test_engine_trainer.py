"""Trainer options: early stopping, time budgets, save_period, bf16 autocast, loggers, LR schedules."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from optik.config import build_config
from optik.engine.optim import StepSchedule
from optik.engine.trainer import Trainer
from optik.errors import ConfigError, OptikError

DATA = "synthetic:shapes?n=24&size=16&classes=2"


def train(tmp_path, **kw):
    base = {"data": DATA, "model": "mlp", "imgsz": 16, "batch": 8, "project": str(tmp_path), "plots": False}
    return Trainer(build_config("classify", "train", {**base, **kw})).fit()


def epochs_logged(result) -> int:
    return len(list(csv.DictReader(open(Path(result["run_dir"]) / "metrics.csv"))))


def test_early_stopping_when_nothing_improves(tmp_path):
    # lr tiny and constant: val accuracy cannot improve after epoch 1, so patience=2 stops at epoch 3.
    r = train(tmp_path, epochs=10, patience=2, lr=1e-12, scheduler="constant")
    assert r["epochs_run"] == 3 and epochs_logged(r) == 3


def test_time_budget_stops_training(tmp_path):
    r = train(tmp_path, epochs=1000, time=1e-6)
    assert r["epochs_run"] == 1


def test_save_period_keeps_epoch_weights(tmp_path):
    r = train(tmp_path, epochs=2, save_period=1)
    w = Path(r["run_dir"]) / "weights"
    assert (w / "epoch1.safetensors").is_file() and (w / "epoch2.safetensors").is_file()


def test_amp_true_and_false_force_the_precision(tmp_path):
    # amp=auto (the default) is resolved from the hardware (tests/engine/test_precision.py); true / false force it.
    for amp, dtype in ((True, torch.bfloat16), (False, None)):
        t = Trainer(build_config("classify", "train", {"data": DATA, "model": "mlp", "imgsz": 16, "batch": 8, "epochs": 1,
                                                       "project": str(tmp_path), "plots": False, "amp": amp}))  # fmt: skip
        r = t.fit()
        assert t.amp_dtype is dtype and 0 <= r["metrics"]["top1"] <= 1


def test_mlflow_missing_is_a_config_error(tmp_path):
    # mlflow is optional; when a user has it installed the logger is used instead of this error.
    try:
        import mlflow  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="mlflow"):
            train(tmp_path, epochs=1, mlflow=True)
        assert not list((tmp_path / "classify").glob("*"))  # the failed run left no empty dir
    else:
        pytest.skip("mlflow installed")


def test_no_val_split_tracks_train_loss(tmp_path):
    r = train(tmp_path, epochs=1, val=False)
    assert Path(r["best"]).is_file()


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle", "constant"])
def test_schedules_warm_up_and_decay(scheduler):
    cfg = build_config("classify", "train", {"scheduler": scheduler, "warmup_epochs": 1, "epochs": 10, "step_size": 3})
    s = StepSchedule(cfg, steps_per_epoch=10, total_epochs=10)
    f = [s(i) for i in range(100)]
    assert all(0 < v <= 1.0 + 1e-9 for v in f)
    assert f[0] < f[9] or scheduler == "onecycle" and f[0] < f[29]  # warmup rises
    if scheduler != "constant":
        assert f[-1] < 0.5 * max(f)  # and decays
    else:
        assert f[-1] == 1.0


def test_two_phase_schedule_lowers_lr_after_head_phase():
    cfg = build_config("classify", "train", {"scheduler": "constant", "freeze": "backbone", "freeze_epochs": 2, "finetune_lr": 0.1})
    s = StepSchedule(cfg, steps_per_epoch=5, total_epochs=4)
    assert s(9) == 1.0 and s(10) == pytest.approx(0.1)


def test_training_from_weights_keeps_the_architecture_name(tiny_run, tmp_path):
    """Fine-tuning from a weights file records the architecture ("cnn"), not the file path, so the
    new weights rebuild without the old file."""
    from optik import Model
    from optik.engine.checkpoint import read_meta
    import numpy as np

    m = Model(tiny_run["best"])
    m.train(data="synthetic:shapes?n=96&size=32&classes=3&seed=0", epochs=1, imgsz=32, batch=32, project=str(tmp_path), plots=False)
    assert read_meta(m.model)["model"] == "cnn"
    assert Model(m.model).predict(np.zeros((32, 32, 3), np.uint8))[0].probs is not None


class Raise:
    """Raises ``exc`` at trainer event ``event`` (a failure before the first checkpoint)."""

    def __init__(self, event: str, exc: BaseException) -> None:
        setattr(self, event, self._raise)
        self.exc = exc

    def _raise(self, *args):
        raise self.exc


@pytest.mark.parametrize(("event", "exc"), [("on_train_start", RuntimeError("boom")), ("on_epoch_start", KeyboardInterrupt())])
def test_a_run_that_dies_before_its_first_checkpoint_leaves_no_dir(tmp_path, event, exc):
    """Any failure (not only optik's own errors) before the first checkpoint removes the new run dir, so the
    next run is `train` again, not `train2`, and `model=runs/classify/train` never points at an empty dir."""
    base = {"data": DATA, "model": "mlp", "imgsz": 16, "batch": 8, "project": str(tmp_path), "plots": False, "epochs": 1}
    with pytest.raises(type(exc)):
        Trainer(build_config("classify", "train", base), callbacks=[Raise(event, exc)]).fit()
    assert list((tmp_path / "classify").iterdir()) == []
    assert Path(train(tmp_path, epochs=1)["run_dir"]).name == "train"


def test_a_failed_run_keeps_an_existing_dir_it_reused(tmp_path):
    """exist_ok=true on a dir that holds other files: a failure must not delete what was there."""
    old = tmp_path / "classify" / "keep"
    old.mkdir(parents=True)
    (old / "notes.txt").write_text("mine")
    with pytest.raises(OptikError):
        train(tmp_path, epochs=1, name="keep", exist_ok=True, data=str(tmp_path / "nowhere"))
    assert (old / "notes.txt").read_text() == "mine"
