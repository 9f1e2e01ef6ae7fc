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


class ParsedList(list):
    """A list typed on the command line; ``text`` keeps what was typed (a ``str`` key gets it back)."""

    text: str = ""


class ParsedDict(dict):
    """A dict typed on the command line; ``text`` keeps what was typed (a ``str`` key gets it back)."""

    text: str = ""


def parse_cli_value(raw: str) -> Any:
    """A CLI value string → a Python value. Scalars stay strings (pydantic coerces them against
    the field's type, so ``name=001`` stays ``"001"``); a value that *is* a YAML list or dict
    (``[0.5,1]``, ``(0.5, 1)``, ``{a: 1}``) is parsed. Anything else beginning with a bracket stays the
    string it is (``source=(3).png``, ``name="(v2) run"``, ``name=[draft]`` for a ``str`` key).

    >>> parse_cli_value("(0.5, 1)"), parse_cli_value("(3).png")
    ([0.5, 1], '(3).png')
    """
    s = raw.strip()
    if s.lower() in ("none", "null", ""):  # `key=`: unset (the default)
        return None
    if s[0] in "[{(":
        # Tuples are written as lists: first with every ( ) as [ ] (`[(1,2),(3,4)]`), then only the outer
        # pair (`[a(1).png, b.png]`); what parses to neither a list nor a dict stays the string it is.
        outer = "[" + s[1:-1] + "]" if s[0] == "(" and s[-1] == ")" else s
        for text in (s.replace("(", "[").replace(")", "]"), outer):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(value, (list, dict)):
                out: Any = ParsedList(value) if isinstance(value, list) else ParsedDict(value)
                out.text = s
                return out
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


def text_list(v: Any) -> Any:
    """``cat,dog`` / ``[cat, dog]`` / a list → a list of stripped, non-empty strings; None stays None (the grammar of
    list keys such as zeroshot ``labels=`` and detect ``prompts=``; a pydantic ``mode="before"`` validator's body).

    >>> text_list("[a cat, a dog]")
    ['a cat', 'a dog']
    """
    if v is None:
        return None
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        v = text.split(",")
    if not isinstance(v, (list, tuple)):
        raise ValueError("expected a comma-separated list of texts")
    out = [str(x).strip().strip("'\"") for x in v]
    out = [x for x in out if x]
    if not out:
        raise ValueError("expected at least one text")
    if len(set(out)) != len(out):
        raise ValueError(f"repeated entries in {out}")
    return out
