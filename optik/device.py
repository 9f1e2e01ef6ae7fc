"""Devices and precision: which device a ``device=`` string means, where a model runs, moving
batches, the precision a run trains and predicts in (``amp=``), the memory format of convolutional
models (``channels_last=``) and the autocast context. A neutral module: tasks, models, metrics and the
engine use it.

Precision is decided once per run by :func:`resolve_amp` (``amp=auto``, the default: bf16 autocast where
the hardware has native bf16 units — CPUs with AVX512_BF16 or AMX, CUDA GPUs from Ampere on — fp16 with a
gradient scaler on older CUDA GPUs, fp32 elsewhere); the trainer, ``val`` and ``predict`` all ask it.

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_amp(False, torch.device("cpu")) is None     # amp=false: fp32
True
"""

from __future__ import annotations

import copy
import functools
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optik.errors import ConfigError

log = logging.getLogger(__name__)

#: CPU flags (as /proc/cpuinfo names them) of units that run bf16 matmuls natively: AVX512_BF16 (Cooper Lake,
#: Zen 4 on) and AMX (Sapphire Rapids on). Without them bf16 autocast is emulated and slower than fp32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


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


def to_device(x: Any, device: torch.device, memory_format: torch.memory_format | None = None) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to ``device``; anything else unchanged.
    ``memory_format=torch.channels_last``: 4-D tensors (image batches) also laid out NHWC, as a
    channels-last model wants them (other tensors keep their layout)."""
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        if memory_format is not None and x.ndim == 4:
            x = x.contiguous(memory_format=memory_format)
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device, memory_format) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device, memory_format) for k, v in x.items()}
    return x


# -- precision ---------------------------------------------------------------------------------------


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux's ``/proc/cpuinfo`` lists them (``flags``, or ``Features`` on ARM);
    empty where there is no such file (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls in hardware (:data:`BF16_CPU_FLAGS`). Read from ``/proc/cpuinfo``;
    where that is missing, torch's own x86 checks. (ARM's ``bf16`` is not counted: torch's CPU bf16 kernels
    there are not reliably faster than fp32.)"""
    flags = cpu_flags()
    if flags:
        return bool(flags & BF16_CPU_FLAGS)
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def native_amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``device`` runs natively: bf16 on a CPU with bf16 units and on CUDA GPUs that
    support it (Ampere on), fp16 on older CUDA GPUs, None (fp32) anywhere else."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else None
    if device.type == "cuda":
        try:  # emulated bf16 (pre-Ampere) is slow: only the native kind counts
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation to exclude
            native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float16
    return None


def has_depthwise_conv(model: nn.Module) -> bool:
    """Whether ``model`` has depthwise 2-D convolutions (``groups == in_channels > 1``: MobileNet, EfficientNet…).

    >>> has_depthwise_conv(nn.Conv2d(8, 8, 3, groups=8)), has_depthwise_conv(nn.Conv2d(8, 8, 3))
    (True, False)
    """
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())


def is_exported(model: nn.Module | None) -> bool:
    """Whether ``model`` is an exported runtime (:class:`optik.deploy.runtime.ExportedModel`: it carries its
    export metadata). It computes in the precision it was exported in; autocast must not touch it (TorchScript
    graphs would follow it)."""
    meta = getattr(model, "meta", None)
    return isinstance(meta, dict) and "export" in meta


def resolve_amp(
    amp: bool | str | torch.dtype | None, device: torch.device, model: nn.Module | None = None, train: bool = False
) -> torch.dtype | None:
    """The ``amp=`` key → the autocast dtype a run uses on ``device`` (None = fp32). Decided once per run
    (the trainer, ``val`` and ``predict`` call it); ``auto`` = :func:`native_amp_dtype`; ``true`` forces
    mixed precision (bf16, or fp16 on a CUDA GPU without bf16) even where it is emulated, with a warning;
    ``false`` = fp32. A dtype passes through (already resolved). An exported ``model`` (:func:`is_exported`)
    always gets None: its file fixes its precision.

    One exception to ``auto``: *training* a ``model`` with depthwise convolutions on a CPU stays fp32 — the
    bf16 backward of a depthwise convolution is slower than fp32 there (1.4–1.7× per layer), so EfficientNet-Lite0
    and MobileNetV3 train 1.4–1.5× slower in bf16 than in fp32 channels-last, while their inference still gains
    1.3–1.9× (``benchmarks/amp_parity.py``, ``results/amp_speed.json``). And a model with a module whose
    ``amp_auto_train`` is False (torchvision detectors: their losses diverge in bf16) trains in fp32.

    >>> resolve_amp("auto", torch.device("meta")) is None          # no native reduced precision there
    True
    >>> resolve_amp(True, torch.device("cuda")) in (torch.bfloat16, torch.float16)   # doctest: +SKIP
    True
    """
    if is_exported(model):
        return None
    if amp is None or isinstance(amp, torch.dtype):
        return amp
    if isinstance(amp, str):
        word = amp.strip().lower()
        if word not in ("auto", "true", "false"):
            raise ConfigError(f"bad value for 'amp': {amp!r} (expected auto, true or false)")
        amp = word if word == "auto" else word == "true"
    if amp is False:
        return None
    native = native_amp_dtype(device)
    if amp == "auto":
        if train and device.type == "cpu" and model is not None and has_depthwise_conv(model):
            return None
        if train and model is not None and any(getattr(m, "amp_auto_train", True) is False for m in model.modules()):
            return None  # a model that declares bf16 training unsafe (e.g. optik.models.adapters.tv_detection)
        return native
    if native is not None:
        return native
    _warn_emulated(device.type)
    return torch.float16 if device.type == "mps" else torch.bfloat16


@functools.cache  # once per process, not per batch
def _warn_emulated(device_type: str) -> None:
    what = "bf16 units (AVX512_BF16 / AMX)" if device_type == "cpu" else "native reduced precision"
    log.warning("amp=true on a %s without %s: mixed precision is emulated and usually slower than fp32; "
                "amp=auto picks fp32 here", device_type, what)  # fmt: skip


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` (None) — how reports and ``config.yaml`` name a precision."""
    return PRECISION_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler where the precision needs one (fp16: its small range underflows gradients); None
    for bf16 and fp32, which have fp32's exponent range."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def autocast(device: torch.device, amp: bool | str | torch.dtype | None):
    """The autocast context of precision ``amp`` on ``device`` (a dtype from :func:`resolve_amp`, or an
    ``amp=`` key value, resolved here); a no-op for fp32.

    >>> with autocast(torch.device("cpu"), torch.bfloat16):
    ...     y = nn.Linear(4, 2)(torch.ones(1, 4))
    >>> y.dtype
    torch.bfloat16
    """
    dtype = resolve_amp(amp, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def float_outputs(x: Any) -> Any:
    """``x`` with every bf16 / fp16 tensor (also inside lists, tuples and dicts) cast to fp32: what a model
    returns under autocast, before metrics, postprocessing and NumPy (which has no bf16) see it.

    >>> float_outputs({"scores": torch.ones(2, dtype=torch.bfloat16)})["scores"].dtype
    torch.float32
    """
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple takes its fields as arguments
        return type(x)(*(float_outputs(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(float_outputs(v) for v in x)
    if isinstance(x, dict):  # a copy of the same mapping type (e.g. transformers' ModelOutput keeps its attributes)
        out = copy.copy(x)
        for k, v in x.items():
            out[k] = float_outputs(v)
        return out
    return x


# -- memory format -----------------------------------------------------------------------------------


def use_channels_last(setting: bool | str, model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` runs in channels-last (NHWC) memory format: ``setting`` true / false forces it;
    ``auto`` picks it for models with 2-D convolutions on CPU and CUDA, where oneDNN / cuDNN convolutions
    run NHWC natively (measured in ``benchmarks/amp_parity.py``: faster in fp32 and bf16 for the native zoo,
    timm ResNets, EfficientNet/MobileNet, the house detector and U-Net) — other models have nothing to gain.

    >>> use_channels_last("auto", nn.Conv2d(3, 8, 3), torch.device("cpu"))
    True
    >>> use_channels_last("auto", nn.Linear(3, 8), torch.device("cpu"))
    False
    """
    if not isinstance(setting, str):
        return bool(setting)
    if device.type not in ("cpu", "cuda"):
        return False
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def input_memory_format(model: nn.Module) -> torch.memory_format | None:
    """``torch.channels_last`` when ``model``'s convolutions hold channels-last weights (inputs should then
    be NHWC too, or every batch is reordered at the first layer), else None.

    >>> input_memory_format(nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last))
    torch.channels_last
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.dim() == 4:
            w = m.weight
            if w.is_contiguous(memory_format=torch.channels_last) != w.is_contiguous():
                return torch.channels_last if not w.is_contiguous() else None
    return None
