"""Checkpoints: self-describing ``.safetensors`` weights plus a ``state.pt`` for exact resume.

Every file is written to a temporary file in the same directory and then renamed over the
target, so a crash mid-write never leaves a truncated checkpoint (``os.replace`` is atomic on
POSIX and Windows). ``state.pt`` holds only tensors and plain Python values so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

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


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"resume: '{path}' not found (the run has no training state to resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"resume: cannot read '{path}': {e}") from None
