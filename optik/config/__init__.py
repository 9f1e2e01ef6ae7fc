"""Run configuration: one pydantic model per (task, mode), filled from CLI ``key=value`` pairs, a YAML
file (``cfg=run.yaml``) or keyword arguments. Unknown keys and bad values raise :class:`ConfigError`
naming the key and what it accepts.

Layout: :mod:`optik.config.base` (the keys every task shares and the engine's training keys),
:mod:`optik.config.parse` (CLI strings and YAML), and one module per task with its own keys
(``optik/config/classify.py``, ``detect.py`` …). Which class serves a (task, mode) is the task
catalog's business (:mod:`optik.catalog`).

>>> cfg = build_config("classify", "train", {"data": "digits", "epochs": "3"})
>>> cfg.epochs, cfg.optimizer
(3, 'adamw')
"""

from __future__ import annotations

import difflib
import logging
import typing
from typing import Any

import yaml
from pydantic import ValidationError

from optik.config.base import (
    BenchmarkConfig,
    CommonConfig,
    ExportConfig,
    PredictConfig,
    TrainConfig,
    ValConfig,
)
from optik.config.parse import ParsedDict, ParsedList, load_yaml_config, parse_cli_args, parse_cli_value
from optik.errors import ConfigError

log = logging.getLogger(__name__)

# Ultralytics spellings users type from habit, mapped to optik's keys.
ALIASES = {"lr0": "lr", "img_size": "imgsz", "batch_size": "batch", "weights": "model"}

# Keys whose change is legitimate when resuming; everything else must match the run being resumed.
RESUME_MUTABLE = {"epochs", "time", "patience", "workers", "device", "verbose", "resume", "plots", "save_period"}


def config_class(task: str, mode: str) -> type[CommonConfig]:
    """The config class of ``task``'s ``mode`` from the catalog; :class:`ConfigError` listing the task's
    modes when it does not offer ``mode``.

    >>> config_class("detect", "train").__name__
    'DetectTrainConfig'
    """
    from optik import catalog

    return catalog.load(catalog.mode(task, mode).config)


def _renamed(cls: type[CommonConfig], values: dict[str, Any]) -> dict[str, Any]:
    """Old key spellings → current ones, with a one-line deprecation note each."""
    out = {}
    for key, value in values.items():
        new = cls.renamed.get(key)
        if new is not None and new not in values:
            log.warning("key '%s' is now '%s' (the old spelling still works, for now)", key, new)
            key = new
        out[key] = value
    return out


def _text_only(cls: type[CommonConfig], key: str) -> bool:
    """Whether ``cls.key`` takes only text (``str`` or ``str | None``)."""
    ann = cls.model_fields[key].annotation
    return ann is str or (bool(typing.get_args(ann)) and set(typing.get_args(ann)) <= {str, type(None)})


def _unknown_key(key: str, task: str, mode: str, cls: type[CommonConfig]) -> ConfigError:
    from optik import catalog

    fields = set(cls.model_fields) - {"task", "mode"}
    hint = difflib.get_close_matches(key, sorted(fields), n=1)
    did = f"; did you mean '{hint[0]}'?" if hint else ""
    owners = [t for t in catalog.tasks_with_mode(mode) if t != task and key in config_class(t, mode).model_fields]
    if owners and not hint:
        did = f"; '{key}' is a {' / '.join(owners)} {mode} key"
    return ConfigError(f"unknown key '{key}' for {task} {mode}{did} (valid keys: {', '.join(sorted(fields))})")


def build_config(task: str, mode: str, overrides: dict[str, Any] | None = None) -> CommonConfig:
    """Validate ``overrides`` (CLI strings, YAML values or kwargs) into the (task, mode) config class.

    Precedence: explicit overrides > ``cfg=`` YAML file > defaults. A mode the task does not offer is a
    :class:`ConfigError` listing the task's modes.

    >>> build_config("detect", "predict", {"conf": "0.5"}).conf
    0.5
    """
    cls = config_class(task, mode)
    values: dict[str, Any] = {}
    overrides = {ALIASES.get(k, k): v for k, v in (overrides or {}).items()}
    if overrides.get("cfg") is not None:
        values.update({ALIASES.get(k, k): v for k, v in load_yaml_config(overrides.pop("cfg")).items()})
    overrides.pop("cfg", None)
    values.update(overrides)
    values = _renamed(cls, values)
    if cls.task_key and values.get("task") is not None:
        values.setdefault(cls.task_key, values.pop("task"))  # segment `task=instance`: the flavour
    values.pop("task", None)
    values.pop("mode", None)
    for key, value in values.items():
        if key not in cls.model_fields:
            raise _unknown_key(key, task, mode, cls)
        if isinstance(value, (ParsedList, ParsedDict)):  # typed on the CLI: plain values from here on
            # `name=[draft]`: a str key keeps what was typed
            values[key] = value.text if _text_only(cls, key) else (list if isinstance(value, list) else dict)(value)
    try:
        return cls(task=task, mode=mode, **values)
    except ValidationError as e:
        raise config_error_from(e, values, cls) from None


def config_error_from(e: ValidationError, values: dict[str, Any], cls: type[CommonConfig] | None = None) -> ConfigError:
    """Pydantic's multi-line report → one line naming the first bad key, its value and what is allowed."""
    err = e.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    msg = err["msg"].removeprefix("Value error, ")
    shown = values.get(key, err.get("input"))
    if cls is not None and key == cls.task_key:  # users type it as task=…
        key = "task"
    return ConfigError(f"bad value for '{key}': {shown!r} ({msg})")


def update_config(cfg: CommonConfig, **changes: Any) -> CommonConfig:
    """Return a validated copy of ``cfg`` with ``changes`` applied."""
    # The values themselves, not model_dump(): a dump turns an in-memory data source that is a dataclass
    # (DataSplits) into a dict, which no data resolver accepts.
    data = {k: getattr(cfg, k) for k in type(cfg).model_fields}
    data.update(changes)
    task, mode = data.pop("task"), data.pop("mode")
    try:
        new = type(cfg)(task=task, mode=mode, **data)
    except ValidationError as e:
        raise config_error_from(e, data, type(cfg)) from None
    # What the user set stays distinguishable from defaults (load_trained fills defaults from weights).
    object.__setattr__(new, "__pydantic_fields_set__", set(cfg.model_fields_set) | set(changes))
    return new


def config_to_yaml(cfg: CommonConfig) -> str:
    """YAML for the run directory; non-string data sources (in-memory datasets) are recorded by type."""
    data = cfg.model_dump(mode="json", fallback=lambda v: f"<{type(v).__name__}>")
    return yaml.safe_dump(data, sort_keys=False)


__all__ = [
    "ALIASES", "RESUME_MUTABLE", "BenchmarkConfig", "CommonConfig", "ExportConfig", "PredictConfig", "TrainConfig",
    "ValConfig", "build_config", "config_class", "config_error_from", "config_to_yaml", "load_yaml_config",
    "parse_cli_args", "parse_cli_value", "update_config",
]  # fmt: skip
