"""Run configuration: one pydantic model per mode, filled from CLI ``key=value`` pairs, a YAML file
(``cfg=run.yaml``) or keyword arguments. Unknown keys and bad values raise :class:`ConfigError`
naming the key and what it accepts.

>>> cfg = build_config("classify", "train", {"data": "digits", "epochs": "3"})
>>> cfg.epochs, cfg.optimizer
(3, 'adamw')
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optik.errors import ConfigError

# Ultralytics spellings users type from habit, mapped to optik's keys.
ALIASES = {"lr0": "lr", "imgsz": "imgsz", "img_size": "imgsz", "batch_size": "batch", "weights": "model"}


class CommonConfig(BaseModel):
    """Keys every mode understands."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    task: str = "classify"
    mode: str = "train"
    model: str | None = Field(None, description="native name, timm:<name>, hf:<id|dir>, or a .safetensors / run dir")
    data: Any = Field(None, description="digits | synthetic:shapes[?n=..] | folder | file.csv | datasets.Dataset")
    imgsz: int = Field(64, ge=8, le=4096, description="square input size in pixels")
    batch: int = Field(32, ge=1, description="batch size (per process under torchrun)")
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = load in the main process)")
    device: str = Field("cpu", description="cpu | cuda | cuda:N | N | auto")
    seed: int = 0
    project: str = Field("runs", description="root folder for run directories")
    name: str | None = Field(None, description="run name; a taken name gets a numeric suffix unless exist_ok")
    exist_ok: bool = False
    save: bool = True
    verbose: bool = False
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction when data has no val split")
    skip_bad: bool = Field(False, description="skip (and count) unreadable images instead of failing")
    amp: bool = Field(False, description="bf16 autocast (opt-in: slow on CPUs without bf16 units)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v.isdigit():
            return f"cuda:{v}"
        if v in ("cpu", "cuda", "auto", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("expected cpu, cuda, cuda:N, N or auto")


class TrainConfig(CommonConfig):
    epochs: int = Field(10, ge=1)
    time: float | None = Field(None, gt=0, description="training budget in hours; overrides epochs")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 1e-3 adamw, 0.01 sgd)")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between decays for scheduler=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for scheduler=step")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr / peak lr for cosine")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    clip_grad: float | None = Field(None, gt=0, description="max gradient norm")
    ema: bool = False
    ema_decay: float = Field(0.999, gt=0, lt=1)
    patience: int = Field(100, ge=0, description="epochs without improvement before stopping (0 = never)")
    resume: bool | str = Field(False, description="true (latest/named run) or a run dir / state.pt path")
    pretrained: bool | str | None = Field(None, description="true (hub weights) or a weights file / hub id")
    freeze: Literal["none", "backbone"] = "none"
    freeze_epochs: int = Field(0, ge=0, description="two-phase fine-tune: head only for N epochs, then all")
    finetune_lr: float = Field(0.1, gt=0, le=1, description="lr factor for phase 2 of a two-phase fine-tune")
    val: bool = True
    save_period: int = Field(-1, description="also keep weights/epochN.safetensors every N epochs")
    # augmentation (classification presets on torchvision.transforms.v2)
    augment: Literal["none", "randaugment", "trivialaugment", "autoaugment", "augmix"] = "none"
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] = (0.6, 1.0)
    color_jitter: float = Field(0.0, ge=0)
    erasing: float = Field(0.0, ge=0, le=1)
    mixup: float = Field(0.0, ge=0, description="MixUp alpha (0 = off)")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off)")
    # class imbalance
    class_weights: bool = Field(False, description="inverse-frequency ('balanced') weights in the loss")
    sampler: Literal["none", "weighted"] = Field("none", description="weighted = class-balanced sampling")
    # loggers
    mlflow: bool = False
    plots: bool = True

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("expected two numbers 0 < min <= max <= 1, e.g. [0.6, 1.0]")
        return v


class ValConfig(CommonConfig):
    mode: str = "val"
    split: Literal["val", "train"] = "val"
    plots: bool = True


class PredictConfig(CommonConfig):
    mode: str = "predict"
    source: Any = Field(None, description="image file, folder, glob, or (Python) arrays / PIL images")
    topk: int = Field(5, ge=1)
    save: bool = False


class DetectOptions(BaseModel):
    """Keys shared by every detection mode (mixed into the detect configs below)."""

    conf: float | None = Field(None, ge=0, le=1, description="score threshold (default: 0.001 val, 0.25 predict)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="detections kept per image")
    agnostic_nms: bool = Field(False, description="NMS across classes")
    strict: bool = Field(False, description="boxes outside the image: error (true) or clip (false)")


class DetectTrainConfig(TrainConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096, description="square (letterboxed) input size in pixels")
    batch: int = Field(16, ge=1, description="batch size (per process under torchrun)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 2e-3 adamw, 0.01 sgd)")
    weight_decay: float = Field(0.0005, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    mosaic: float = Field(0.5, ge=0, le=1, description="probability of a 4-image mosaic (house detector)")
    close_mosaic: int = Field(2, ge=0, description="turn mosaic off for the last N epochs")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="random rescale range")
    iou_crop: bool = Field(False, description="SSD-style random IoU crop")
    photometric: bool = True
    clip_grad: float | None = Field(10.0, gt=0, description="max gradient norm")
    backbone: str | None = Field(None, description="house detector backbone: native (default) or timm:<name>")


class DetectValConfig(ValConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(16, ge=1)
    save_json: bool = Field(True, description="write COCO-format predictions.json")


class DetectPredictConfig(PredictConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(8, ge=1)


MODE_CONFIGS: dict[str, type[CommonConfig]] = {"train": TrainConfig, "val": ValConfig, "predict": PredictConfig}
# Tasks with keys of their own override the mode's config class.
TASK_CONFIGS: dict[tuple[str, str], type[CommonConfig]] = {
    ("detect", "train"): DetectTrainConfig,
    ("detect", "val"): DetectValConfig,
    ("detect", "predict"): DetectPredictConfig,
}

# Keys whose change is legitimate when resuming; everything else must match the run being resumed.
RESUME_MUTABLE = {"epochs", "time", "patience", "workers", "device", "verbose", "resume", "plots", "save_period"}


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


def build_config(task: str, mode: str, overrides: dict[str, Any] | None = None) -> CommonConfig:
    """Validate ``overrides`` (CLI strings, YAML values or kwargs) into the mode's config model.

    Precedence: explicit overrides > ``cfg=`` YAML file > defaults.
    """
    if mode not in MODE_CONFIGS:
        raise ConfigError(f"unknown mode '{mode}' for {task}; expected one of: {', '.join(MODE_CONFIGS)}")
    cls = TASK_CONFIGS.get((task, mode), MODE_CONFIGS[mode])
    values: dict[str, Any] = {}
    overrides = {ALIASES.get(k, k): v for k, v in (overrides or {}).items()}
    if overrides.get("cfg") is not None:
        values.update({ALIASES.get(k, k): v for k, v in load_yaml_config(overrides.pop("cfg")).items()})
    overrides.pop("cfg", None)
    values.update(overrides)
    values.pop("task", None)
    values.pop("mode", None)
    fields = set(cls.model_fields)
    for key in values:
        if key not in fields:
            hint = difflib.get_close_matches(key, sorted(fields), n=1)
            did = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"unknown key '{key}' for {task} {mode}{did} (valid keys: {', '.join(sorted(fields - {'task', 'mode'}))})"
            )
    try:
        return cls(task=task, mode=mode, **values)
    except ValidationError as e:
        raise config_error_from(e, values) from None


def config_error_from(e: ValidationError, values: dict[str, Any]) -> ConfigError:
    """Pydantic's multi-line report → one line naming the first bad key, its value and what is allowed."""
    err = e.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    msg = err["msg"].removeprefix("Value error, ")
    shown = values.get(key, err.get("input"))
    return ConfigError(f"bad value for '{key}': {shown!r} ({msg})")


def update_config(cfg: CommonConfig, **changes: Any) -> CommonConfig:
    """Return a validated copy of ``cfg`` with ``changes`` applied."""
    data = cfg.model_dump()
    data.update(changes)
    task, mode = data.pop("task"), data.pop("mode")
    try:
        return type(cfg)(task=task, mode=mode, **data)
    except ValidationError as e:
        raise config_error_from(e, data) from None


def config_to_yaml(cfg: CommonConfig) -> str:
    """YAML for the run directory; non-string data sources (in-memory datasets) are recorded by type."""
    data = cfg.model_dump(mode="json", fallback=lambda v: f"<{type(v).__name__}>")
    return yaml.safe_dump(data, sort_keys=False)
