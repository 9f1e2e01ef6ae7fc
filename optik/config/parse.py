"""Turning what users type into Python values: CLI ``key=value`` strings, ``cfg=`` YAML files, coordinate lists.

>>> parse_cli_args(["epochs=3", "scale=[0.5,1]", "name=001"])
{'epochs': '3', 'scale': [0.5, 1], 'name': '001'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from optik.errors import ConfigError


def parse_cli_value(raw: str) -> Any:
    """A CLI value string → a Python value. Scalars stay strings (pydantic coerces them against
    the field's type, so ``name=001`` stays ``"001"``); lists/dicts are parsed as YAML."""
    s = raw.strip()
    if s.lower() in ("none", "null"):
        return None
    if s[:1] in "[{(":
        try:
            return yaml.safe_load(s.replace("(", "[").replace(")", "]"))
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse value {raw!r}: {e}") from None
    return s


def parse_cli_args(args: list[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.01"]`` → ``{"epochs": "3", "lr": "0.01"}``; ``cfg=file.yaml`` is expanded."""
    out: dict[str, Any] = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"argument {a!r} is not key=value (e.g. epochs=3)")
        key, value = a.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"argument {a!r} has an empty key")
        out[key] = parse_cli_value(value)
    return out


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cfg: file '{p}' not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cfg: '{p}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cfg: '{p}' must contain a mapping of key: value")
    return data


def coordinate_rows(value: Any, width: int, example: str) -> list[list[float]] | None:
    """``[x, y]`` / ``[[x, y], …]`` (lists, arrays, tensors, YAML strings) → list of float rows."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_cli_value(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected {example}") from None
    if a.size == 0:
        return None
    if a.ndim == 1 and a.size == width:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width or not np.isfinite(a).all():
        raise ValueError(f"expected {example}")
    return a.tolist()
