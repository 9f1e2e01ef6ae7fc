"""Checkpoint files: atomic writes, self-describing safetensors, weights_only-loadable state."""

from __future__ import annotations

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
    from pathlib import Path

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
