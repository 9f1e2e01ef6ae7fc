"""Checkpoint files: atomic writes, self-describing safetensors, weights_only-loadable state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from optik.engine.checkpoint import atomic_write, load_state_dict, read_meta, resolve_model_arg, save_weights
from optik.errors import ModelError


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")

    def fails(tmp):
        open(tmp, "wb").write(b"half-writt")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]  # no temp file left behind


def test_safetensors_roundtrip_with_tied_weights_and_meta(tmp_path):
    w = torch.randn(4, 3)
    sd = {"a.weight": w, "b.weight": w, "c": torch.arange(3)}  # a and b share storage (tied)
    p = save_weights(sd, tmp_path / "m.safetensors", {"model": "cnn", "classes": ["x", "y"]})
    assert read_meta(p) == {"model": "cnn", "classes": ["x", "y"]}
    back = load_state_dict(p)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert resolve_model_arg(str(p))[0] == "cnn"


def test_run_state_is_weights_only_loadable(tiny_run):

    state = torch.load(Path(tiny_run["run_dir"]) / "weights" / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and "optimizer" in state and "rng" in state
    meta = read_meta(tiny_run["best"])
    assert meta["task"] == "classify" and meta["model"] == "cnn" and len(meta["classes"]) == 3


def test_bad_weight_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="junk.safetensors"):
        read_meta(junk)
    pickle = tmp_path / "evil.pt"
    torch.save({"f": print}, pickle)  # arbitrary pickled callables must be refused
    with pytest.raises(ModelError, match="weights_only"):
        load_state_dict(pickle)


# -- a full disk, however the writer reports it (no training: tests/engine/test_fault_injection.py trains) --
class _FullFile:
    """A file object whose disk fills after ``room`` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if len(memoryview(b)) > self.room:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(memoryview(b))
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def _full_disk_writers():
    import errno

    from safetensors import SafetensorError

    def raw_oserror(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    def safetensors_rust(tmp):  # what safetensors.torch.save_file raises on a full disk
        Path(tmp).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def quota(tmp):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    return {"oserror": raw_oserror, "safetensors": safetensors_rust, "quota": quota}


@pytest.mark.parametrize("writer", ["oserror", "safetensors", "quota"])
def test_full_disk_is_a_one_line_error_naming_the_file(tmp_path, writer):
    import errno

    from optik.errors import DiskFullError

    target = tmp_path / "w.bin"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError) as e:
        atomic_write(target, _full_disk_writers()[writer])
    msg = str(e.value)
    assert msg.startswith(f"no space left on device writing '{target}'") and "unchanged" in msg and "\n" not in msg
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target) and isinstance(e.value, OSError)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]


class _Closing:
    """An opened file (context manager) whose writes go through ``inner``."""

    def __init__(self, inner, f):
        self.inner, self.f = inner, f

    def write(self, b):
        return self.inner.write(b)

    def flush(self):
        self.f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_torch_save_on_a_full_disk_is_named_as_one(tmp_path, monkeypatch):
    """torch.save reports a full disk as "unexpected pos …"; save_state writes through a file that keeps
    the OSError, so the error says what happened."""
    from optik.engine import checkpoint
    from optik.errors import DiskFullError

    real_open = open

    def filling_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return _Closing(_FullFile(f, 1000), f) if "w" in mode and str(path).endswith(".tmp") else f

    monkeypatch.setattr("builtins.open", filling_open)
    with pytest.raises(DiskFullError, match="state.pt"):
        checkpoint.save_state({"x": torch.zeros(10_000)}, tmp_path / "state.pt")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

    def bug(tmp):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):  # any other failure is left as it is
        atomic_write(tmp_path / "x", bug)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    p = atomic_write(tmp_path / "m.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_resume_restores_the_metrics_row_a_kill_kept_out(tmp_path):
    """state.pt (committed) carries every epoch's row; the CSV row of its last epoch may be missing."""
    import csv

    from optik.engine.checkpoint import remove_stale_temps, repair_metrics_csv

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train/loss,lr\n1,0.5,0.1\n")
    history = [{"epoch": 1, "train/loss": 0.5, "lr": 0.1}, {"epoch": 2, "train/loss": 0.25, "lr": 0.05, "val/top1": 0.75}]
    assert repair_metrics_csv(path, history, 2)
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [(r["epoch"], r["train/loss"], r["val/top1"]) for r in rows] == [("1", "0.5", ""), ("2", "0.25", "0.75")]
    assert not repair_metrics_csv(path, history, 2)  # complete: left alone
    assert not repair_metrics_csv(tmp_path / "none.csv", [], 0)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / ".state.pt.abc123.tmp").write_bytes(b"half")
    (weights / "last.safetensors").write_bytes(b"keep")
    (tmp_path / "metrics.csv.tmp").write_text("half")
    assert sorted(p.name for p in remove_stale_temps(weights)) == [".state.pt.abc123.tmp", "metrics.csv.tmp"]
    assert [p.name for p in weights.iterdir()] == ["last.safetensors"]
