"""The configs every task shares: common keys, the engine's training keys, val / predict / export /
benchmark. Each task's own keys live in its module (``optik/config/<task>.py``) as explicit subclasses.

>>> TrainConfig(data="digits", epochs=3).optimizer
'adamw'
"""

from __future__ import annotations

import functools
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

#: How a ``bool | str`` key (``pretrained``, ``resume``) reads a CLI / YAML word as a bool; other strings stay strings.
BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@functools.cache
def bool_or_str_fields(cls: type[BaseModel]) -> frozenset[str]:
    """The keys of ``cls`` typed ``bool | str`` (``| None``): a CLI string must be read as a bool first,
    or ``pretrained=false`` is the weights file 'false' (pydantic's union keeps a str a str)."""
    out = set()
    for key, field in cls.model_fields.items():
        args = typing.get_args(field.annotation)
        if bool in args and str in args:
            out.add(key)
    return frozenset(out)


def _auto_or_bool(v: Any) -> Any:
    """``amp=`` / ``channels_last=``: ``auto``, or a bool word. A run's config.yaml records what auto resolved to
    (``auto (bf16)``); read back, the value is the key's word before the parenthesis."""
    if isinstance(v, str):
        word = v.split("(", 1)[0].strip().lower()
        if word != "auto" and word not in BOOL_WORDS:
            raise ValueError("expected auto, true or false")
        return BOOL_WORDS.get(word, word)
    return v


#: The type of ``amp`` and ``channels_last``: True, False or ``"auto"`` (decided by optik.device for the hardware).
AutoBool = typing.Annotated[bool | Literal["auto"], BeforeValidator(_auto_or_bool)]


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
    seed: int = Field(0, ge=0, description="random seed (NumPy seeds are non-negative)")
    project: str = Field("runs", description="root folder for run directories")
    name: str | None = Field(None, description="run name; a taken name gets a numeric suffix unless exist_ok")
    exist_ok: bool = False
    save: bool = True
    verbose: bool = False
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction when data has no val split")
    skip_bad: bool = Field(False, description="skip (and count) unreadable images instead of failing")
    # Inference modes (val, predict, serve, export checks) default to fp32: their outputs are what exports,
    # servers and the reference metrics reproduce, and the fused eager fast path (engine/fastpath.py) already
    # brings fp32 within reach of ONNX Runtime. Training defaults to auto (TrainConfig).
    amp: AutoBool = Field(
        False, description="mixed precision: auto (bf16 where the CPU/GPU runs it natively, fp16 on older GPUs, else fp32) | true | false"
    )

    #: Old key spellings still accepted (``{old: new}``); :func:`build_config` maps them with a one-line
    #: deprecation note. A subclass extends it with ``{**Parent.renamed, …}``.
    renamed: ClassVar[dict[str, str]] = {}
    #: The field a user's ``task=`` key fills (segmentation: ``subtask``); None = ``task`` names the optik task.
    task_key: ClassVar[str | None] = None

    @field_validator("*", mode="before")
    @classmethod
    def _bool_words(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str) and info.field_name in bool_or_str_fields(cls) and v.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[v.strip().lower()]
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        # One folder under <project>/<task>/: `name=../../escape` would write outside the project.
        if v == "":
            return None  # `name=`: the mode's default name
        if v is not None and (not v.strip() or v.strip() in (".", "..") or any(c in v for c in "/\\\0")):
            raise ValueError("a run name is one folder name, without '/', '\\' or '..'; choose where runs go with project=")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v.isdigit():
            return f"cuda:{v}"
        if v in ("cpu", "cuda", "auto", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("expected cpu, cuda, cuda:N, N or auto")


def _learning_rate(v: Any) -> Any:
    """``lr=``: a positive number or ``auto`` (a learning-rate range test before training picks it)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None  # `lr=`: the default
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(v)
    except (TypeError, ValueError):
        raise ValueError("expected a positive number or auto") from None
    if not lr > 0 or lr == float("inf"):
        raise ValueError("expected a positive number or auto")
    return lr


#: The type of every train config's ``lr`` key: a positive float, ``"auto"`` or None (the default).
LearningRate = typing.Annotated[float | Literal["auto"] | None, BeforeValidator(_learning_rate)]


class TrainConfig(CommonConfig):
    """Keys the training engine reads (schedule, optimizer, EMA, checkpoints, loggers); each task's train
    config adds its own (augmentation, loss) on top."""

    epochs: int = Field(10, ge=1)
    time: float | None = Field(None, gt=0, description="training budget in hours; overrides epochs")
    lr: LearningRate = Field(None, description="peak learning rate, or auto (an LR range test picks it); unset: the optimizer's default (adamw 1e-3, sgd 0.01; classification from random weights: adamw 5e-3)")
    lr_find_steps: int = Field(100, ge=5, description="lr=auto: mini-batches of the range test")
    amp: AutoBool = Field(
        "auto",
        description="mixed precision for training: auto (bf16 where the CPU/GPU runs it natively, fp16 + loss scaling on "
        "older GPUs, else fp32; validation stays fp32 so its metrics are what optik val reproduces) | true | false",
    )
    optimizer: Literal["adamw", "adam", "sgd", "rmsprop", "adagrad", "lion", "lamb"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd and rmsprop")
    nesterov: bool = False
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between decays for scheduler=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for scheduler=step")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr / peak lr for cosine")
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
    channels_last: AutoBool = Field(
        "auto", description="NHWC memory format for convolutional models: auto (where it is faster) | true | false"
    )
    compile: bool = Field(False, description="torch.compile the model for training (inductor; pays compile time up front)")
    save_period: int = Field(-1, description="also keep weights/epochN.safetensors every N epochs")
    # loggers
    mlflow: bool = False
    plots: bool = True


#: ``pretrained=`` on the inference modes: the weights of an architecture named by ``model=`` (a model that
#: comes trained, e.g. ``model=timm:tf_efficientnet_lite0 pretrained=lite0.safetensors``; see optik.models.pretrained).
INFERENCE_PRETRAINED = "weights for model=<arch>: true (hub) or a file, e.g. from optik models convert"


class ValConfig(CommonConfig):
    mode: str = "val"
    split: Literal["val", "train"] = "val"
    plots: bool = True
    pretrained: bool | str | None = Field(None, description=INFERENCE_PRETRAINED)


class PredictConfig(CommonConfig):
    mode: str = "predict"
    pretrained: bool | str | None = Field(None, description=INFERENCE_PRETRAINED)
    source: Any = Field(None, description="image file, folder, glob, or (Python) arrays / PIL images")
    topk: int = Field(5, ge=1)
    save: bool = False
    save_txt: bool = Field(False, description="with save=true: labels/<image>.txt (YOLO boxes / YOLO-seg polygons / top-k)")


EXPORT_FORMATS = ("torchscript", "onnx", "onnx-int8")


class ExportConfig(ValConfig):
    """``optik TASK export``: a self-describing TorchScript / ONNX file next to the weights, checked
    against eager on real validation images (``data`` defaults to what the weights were trained on)."""

    mode: str = "export"
    format: Literal["torchscript", "onnx", "onnx-int8"] = Field("onnx", description="torchscript | onnx | onnx-int8")
    out: str | None = Field(None, description="output file (default: next to the weights, e.g. weights/best.onnx)")
    batch: int = Field(8, ge=1, description="images per parity / calibration batch")
    dynamic: bool = Field(True, description="dynamic batch axis")
    opset: int = Field(17, ge=11, le=23, description="ONNX opset")
    int8: Literal["static", "dynamic"] = Field("static", description="onnx-int8: static (calibrated QDQ) or dynamic quantization")
    calib: int = Field(64, ge=1, description="onnx-int8 static: training images used for calibration")
    parity: int = Field(16, ge=0, description="validation images for the eager-vs-exported parity check (0 = skip)")
    tol: float | None = Field(None, gt=0, description="parity tolerance (default: 1e-3 relative for fp32; int8 checks agreement)")
    plots: bool = False


class BenchmarkConfig(ExportConfig):
    """``optik TASK benchmark``: every format's size, latency, throughput and val metric in one table."""

    mode: str = "benchmark"
    formats: list[str] = Field(["pytorch", "torchscript", "onnx", "onnx-int8"], description="formats to compare (pytorch = eager)")
    batch: int = Field(32, ge=1, description="throughput batch size")
    iters: int = Field(30, ge=1, description="timed runs per measurement")
    warmup: int = Field(3, ge=0, description="untimed runs first")

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> Any:
        v = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
        bad = [x for x in v if x not in ("pytorch", *EXPORT_FORMATS)]
        if bad:
            raise ValueError(f"unknown format {bad[0]!r}; expected pytorch, {', '.join(EXPORT_FORMATS)}")
        return v


class LetterboxSize(BaseModel):
    """Mixin for tasks whose images are letterboxed to a square (detect, segment): their own input size
    default and minimum. List it before the mode's config in the bases so its ``imgsz`` wins."""

    imgsz: int = Field(128, ge=32, le=4096, description="square (letterboxed) input size in pixels")
