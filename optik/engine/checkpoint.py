"""Checkpoints: self-describing ``.safetensors`` weights plus a ``state.pt`` for exact resume.

Every file is written to a temporary file in the same directory and then renamed over the
target, so a crash mid-write never leaves a truncated checkpoint (``os.replace`` is atomic on
POSIX and Windows). ``state.pt`` holds only tensors and plain Python values so it loads with
``torch.load(weights_only=True)``.

An epoch's checkpoint is committed by ``state.pt``, written last: the weights files are written
first, ``metrics.csv`` after. A process killed in between (``kill -9``, power loss) resumes from the
previous ``state.pt`` and re-trains the epoch, which rewrites the same weights; ``state.pt`` carries
every epoch's logged row so a row the kill kept out of ``metrics.csv`` is restored
(:func:`repair_metrics_csv`), and the temp files a kill leaves behind are removed on resume
(:func:`remove_stale_temps`). A full disk raises :class:`~optik.errors.DiskFullError` naming the file,
with the previous checkpoint intact.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optik.errors import ModelError
from optik.weights import META_KEY, atomic_write, load_state_dict, read_meta, resolve_model_arg, save_weights  # noqa: F401  (the engine's names)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Sink:
    """A file torch.save writes through, keeping the OSError (ENOSPC…) that torch's zip writer would
    turn into "RuntimeError: unexpected pos …"."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, b: Any) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(obj: Any, tmp: str) -> None:
    with open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            torch.save(obj, sink)
        except Exception as e:
            if sink.error is not None:
                raise sink.error from e
            raise


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: _torch_save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"resume: '{path}' not found (the run has no training state to resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"resume: cannot read '{path}': {e}") from None


def remove_stale_temps(weights_dir: str | Path) -> list[Path]:
    """Delete the temp files a killed writer left (``.<name>.<random>.tmp`` from :func:`atomic_write`,
    ``metrics.csv.tmp``); they are never read, only in the way. Returns what was removed."""
    weights_dir = Path(weights_dir)
    stale = [*weights_dir.glob(".*.tmp"), *weights_dir.parent.glob("metrics.csv.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def repair_metrics_csv(path: str | Path, history: list[dict[str, float]] | None, epochs: int) -> bool:
    """Give ``metrics.csv`` the rows of epochs ``1..epochs`` it lacks, from ``state.pt``'s ``history``
    (one ``{"epoch": n, <logged key>: value…}`` per epoch).

    A run killed after ``state.pt`` was committed but before the epoch's row reached ``metrics.csv``
    resumes after that epoch; without this its row would be missing for good. Rows already there are
    kept as they are; returns whether the file was rewritten.
    """
    path = Path(path)
    rows: list[dict[str, str]] = []
    keys: list[str] = []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("epoch") not in ("", None)]
    have = {int(float(r["epoch"])) for r in rows}
    missing = [h for h in history or [] if int(h["epoch"]) <= epochs and int(h["epoch"]) not in have]
    if not missing:
        return False
    for h in missing:  # written as the CSV logger writes them (repr of each float)
        rows.append({"epoch": str(int(h["epoch"])), **{k: repr(float(v)) for k, v in h.items() if k != "epoch"}})
    rows.sort(key=lambda r: int(float(r["epoch"])))
    for r in rows:
        keys += [k for k in r if k not in keys]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in keys})

    atomic_write(path, write)
    return True
