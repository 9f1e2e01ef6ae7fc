"""Models that arrive already trained, with their own head and class names (no optik weights file).

``val`` and ``predict`` need trained weights. An optik ``.safetensors`` file (or a run directory)
describes itself; a model named ``<prefix>:<ref>`` whose prefix is listed in :data:`PRETRAINED` can
describe itself too (today: ``hf:<hub id or local dir>``, class names from its ``id2label``). The engine
asks :func:`builtin_meta` and never names a prefix or imports the library behind it.

>>> builtin_meta("runs/classify/train", "classify") is None   # not a self-describing pretrained name
True
>>> builtin_meta("hf:google/vit-base-patch16-224", "classify")["classes"][:2]   # doctest: +SKIP
['tench, Tinca tinca', 'goldfish, Carassius auratus']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# prefix -> "module:function" returning ``{"task", "classes", …}`` for ``function(ref, task)``;
# imported on first use, so naming a prefix here costs nothing until a model with it is used.
PRETRAINED: dict[str, str | Callable[[str, str], dict[str, Any]]] = {
    "hf": "optik.models.adapters.hf:hf_label_meta",
}


def pretrained_forms() -> str:
    """How the pretrained names are written, for error messages (``"hf:<id|dir>"``)."""
    return ", ".join(f"{p}:<id|dir>" for p in PRETRAINED)


def builtin_meta(name: str, task: str) -> dict[str, Any] | None:
    """Weights metadata (``task``, ``classes``) of the pretrained model ``name``, or None when ``name``
    has no registered prefix (then the caller needs an optik weights file).

    Raises:
        ConfigError: the prefix is known but the model cannot be read or has no class names.
    """
    prefix, sep, ref = name.partition(":")
    if not sep or prefix not in PRETRAINED:
        return None
    target = PRETRAINED[prefix]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = PRETRAINED[prefix] = getattr(importlib.import_module(module), attr)
    return target(ref, task)
