"""Checkpoints: self-describing ``.safetensors`` weights plus a ``state.pt`` for exact resume.

Every file is written to a temporary file in the same directory and then renamed over the
target, so a crash mid-write never leaves a truncated checkpoint (``os.replace`` is atomic on
POSIX and Windows). ``state.pt`` holds only tensors and plain Python values so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from optik.errors import ModelError

META_KEY = "optik"


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then atomically move the temp file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a state dict as safetensors with optik's metadata (model name, classes, imgsz…).

    Tensors sharing storage (tied weights) are cloned, which safetensors requires.
    """
    seen: set[int] = set()
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        tensors[k] = v.clone().contiguous() if ptr in seen else v.contiguous()
        seen.add(ptr)
    metadata = {META_KEY: json.dumps(meta or {}, default=str)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The optik metadata of a ``.safetensors`` file ({} if it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelError(f"'{path}' is not a readable safetensors file: {e}") from None
    return json.loads(raw) if raw else {}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors`` or a torch file (``weights_only=True``); see
    :func:`optik.models.transfer.read_state_dict`, which this is."""
    from optik.models.transfer import read_state_dict

    return read_state_dict(path)


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


def resolve_model_arg(model: str) -> tuple[str, Path | None, dict[str, Any]]:
    """``model=`` value → (architecture name, optik weights file or None, its metadata).

    Accepts a registry/timm/hf name, an optik ``.safetensors`` file, a run directory
    (its ``weights/best.safetensors``), or an exported ``.onnx`` / ``.torchscript`` file (its embedded
    metadata, which has an ``"export"`` block).
    """
    p = Path(model)
    if p.suffix.lower() in (".onnx", ".torchscript"):
        from optik.deploy.runtime import read_exported_meta

        meta = read_exported_meta(p)  # ModelError naming the file when missing / not optik's
        return str(meta["model"]), p, meta
    if p.is_dir() and (p / "weights" / "best.safetensors").is_file():
        p = p / "weights" / "best.safetensors"
    if p.suffix == ".safetensors":
        if not p.is_file():
            raise ModelError(f"model: weights file '{p}' not found")
        meta = read_meta(p)
        if not meta.get("model"):
            raise ModelError(f"model: '{p}' has no optik metadata (architecture unknown); use pretrained={p} with model=<arch>")
        return str(meta["model"]), p, meta
    if p.suffix in (".pt", ".pth") and p.is_file():
        raise ModelError(f"model: '{p}' is a torch file without architecture info; use model=<arch> pretrained={p}")
    return model, None, {}
