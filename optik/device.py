"""Devices and precision: which device a ``device=`` string means, where a model runs, moving
batches, and the autocast context. A neutral module: tasks, models, metrics and the engine use it.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from optik.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``cpu | cuda | cuda:N | mps | auto`` → a :class:`torch.device`; a device that is not there is a
    :class:`ConfigError` naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"bad value for 'device': '{name}' (CUDA is not available here; use device=cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("bad value for 'device': 'mps' (MPS is not available here; use device=cpu)")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its ``device`` attribute (exported runtimes), else its first parameter or
    buffer, else the CPU — never an error for a module without parameters.

    >>> model_device(nn.Identity())
    device(type='cpu')
    """
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def to_device(x: Any, device: torch.device) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to ``device``; anything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast when ``amp=true`` (opt-in: on CPUs without bf16 units it is far slower)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()
