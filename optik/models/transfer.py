"""Transfer learning on any optik model (native, ``timm:``, ``hf:``): which weights are the head,
freezing the rest, loading weights across a changed head, and the input normalisation a model expects.

A two-phase fine-tune reads:

>>> model = create("timm:resnet18", num_classes=5, pretrained="resnet18.safetensors")  # doctest: +SKIP
>>> freeze_backbone(model)            # phase 1: train the new head only, BatchNorm statistics fixed  # doctest: +SKIP
>>> opt = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)          # doctest: +SKIP
>>> unfreeze(model)                   # phase 2: everything trains (same Parameter objects)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import BatchNormAct2d
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from optik.errors import ModelError

log = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP / torch.compile wrapper (the one holding the attributes)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _head(model: nn.Module) -> tuple[str, nn.Module]:
    """``(qualified name, module)`` of the classifier: ``get_classifier()`` (timm, native, HF) or ``.head``."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
    else:
        head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ModelError(f"{type(model).__name__} has no classifier head (neither get_classifier() nor .head)")
    for name, module in model.named_modules():
        if module is head:
            return name, head
    raise ModelError(f"{type(model).__name__}: its classifier head is not one of its submodules")


def _in_head(key: str, head_name: str) -> bool:
    return key == head_name or key.startswith(head_name + ".")


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """The input a model expects: ``{"mean", "std", "input_size", "interpolation", "crop_pct"}``.

    ``mean``/``std`` are per-channel tuples on the 0–1 scale (ImageNet's unless the model says
    otherwise), ``input_size`` is ``(C, H, W)`` or None when the model takes any size,
    ``interpolation`` a torchvision ``InterpolationMode`` name (``"bilinear"``, ``"bicubic"``),
    ``crop_pct`` the fraction of the resized image its eval centre crop keeps (timm's ``pretrained_cfg``;
    None when the model names none).

    >>> model_data_config(create("cnn", in_chans=1))["mean"]          # doctest: +SKIP
    (0.449,)
    """
    model = _unwrap(model)
    cfg = getattr(model, "default_cfg", None) or getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_DEFAULT_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_DEFAULT_STD))
    input_size = tuple(int(v) for v in cfg["input_size"]) if cfg.get("input_size") else None
    if input_size is not None and len(mean) != input_size[0]:  # e.g. RGB stats on a grey model
        mean = (sum(mean) / len(mean),) * input_size[0]
        std = (sum(std) / len(std),) * input_size[0]
    crop_pct = float(cfg["crop_pct"]) if cfg.get("crop_pct") else None
    return {"mean": mean, "std": std, "input_size": input_size, "interpolation": cfg.get("interpolation") or "bilinear",
            "crop_pct": crop_pct}  # fmt: skip


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone parameters, head parameters)``, e.g. for a larger learning rate on the new head.

    The head is ``model.head`` (native), ``model.get_classifier()`` (timm) or the ``classifier``
    module (HF). Every parameter lands in exactly one list, ``requires_grad`` or not.
    """
    model = _unwrap(model)
    _, head = _head(model)
    head_params = list(head.parameters())
    head_ids = {id(p) for p in head_params}
    return [p for p in model.parameters() if id(p) not in head_ids], head_params


# BatchNorm freezing. timm.layers.freeze_batch_norm_2d swaps modules for FrozenBatchNorm2d, which turns
# the affine Parameters into buffers, drops num_batches_tracked from the state_dict and, on unfreeze,
# makes new Parameters — so an optimizer or EMA built in one phase silently misaligns in the next. Instead
# each backbone BatchNorm gets a subclass whose train() always means eval(): same Parameters, same
# state_dict, running statistics fixed and used even while the model trains.
_FROZEN_BN: dict[type, type] = {}


def _frozen_bn_train(self: _BatchNorm, mode: bool = True) -> _BatchNorm:
    return _BatchNorm.train(self, False)


def _frozen_bn_class(cls: type) -> type:
    if cls not in _FROZEN_BN:
        name = f"{cls.__name__}FrozenStats"
        frozen = type(name, (cls,), {"train": _frozen_bn_train, "__module__": __name__, "_optik_unfrozen": cls})
        globals()[name] = frozen  # importable by name, so a frozen model still pickles
        _FROZEN_BN[cls] = frozen
    return _FROZEN_BN[cls]


# Defined at import, so a pickled frozen model loads in a fresh process.
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, BatchNormAct2d):
    _frozen_bn_class(_cls)


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head: backbone ``requires_grad=False`` and its BatchNorms in eval mode for good.

    In place; the head stays trainable. Build the optimizer after this call (or from
    ``p.requires_grad`` parameters); :func:`unfreeze` undoes it without replacing any Parameter.
    """
    model = _unwrap(model)
    head_name, head = _head(model)
    head_ids = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and not _in_head(name, head_name) and type(module) not in _FROZEN_BN.values():
            module.__class__ = _frozen_bn_class(type(module))
            module.train(False)


def unfreeze(model: nn.Module) -> None:
    """Inverse of :func:`freeze_backbone`: every parameter trains, BatchNorms follow ``model.training`` again."""
    model = _unwrap(model)
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        original = getattr(type(module), "_optik_unfrozen", None)
        if original is not None and type(module) in _FROZEN_BN.values():
            module.__class__ = original
            module.train(model.training)


def _strip_wrapper_prefix(state_dict: dict[str, Tensor], own_keys: set[str]) -> dict[str, Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        wrapped = state_dict and all(k.startswith(prefix) for k in state_dict)
        if wrapped and not any(k.startswith(prefix) for k in own_keys):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def load_weights(model: nn.Module, state_dict: dict[str, Tensor], *, strict_head: bool = False) -> list[str]:
    """Copy ``state_dict`` into ``model``; a classifier head of another size is skipped, not an error.

    Keys of the head (see :func:`split_head`) whose shape differs or which one side lacks are left at
    the model's initialisation, logged and returned (``strict_head=True`` makes them errors too).
    Anything else that does not match — a shape, a missing or an extra key — raises ModelError naming
    it. ``num_batches_tracked`` buffers may be absent on either side; ``module.`` / ``_orig_mod.``
    prefixes (DDP, torch.compile) are stripped.

    Returns:
        The skipped key names (empty when everything loaded).

    >>> src = create("resnet", num_classes=10).state_dict()            # doctest: +SKIP
    >>> load_weights(create("resnet", num_classes=3), src)             # doctest: +SKIP
    ['head.weight', 'head.bias']
    """
    model = _unwrap(model)
    head_name, _ = _head(model)
    own = model.state_dict()
    state_dict = _strip_wrapper_prefix(dict(state_dict), set(own))

    skipped: list[str] = []
    problems: list[str] = []
    to_load: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
        elif key not in own:
            if key.endswith("num_batches_tracked"):
                continue
            if _in_head(key, head_name) and not strict_head:
                skipped.append(key)
            else:
                problems.append(f"unexpected key {key!r}")
        elif value.shape != own[key].shape:
            if _in_head(key, head_name) and not strict_head:
                skipped.append(key)
            else:
                problems.append(
                    f"{key!r} has shape {tuple(value.shape)} in the weights but {tuple(own[key].shape)} in the model"
                )
        else:
            to_load[key] = value
    for key in own:
        if key not in state_dict and not key.endswith("num_batches_tracked"):
            if _in_head(key, head_name) and not strict_head:
                skipped.append(key)
            else:
                problems.append(f"missing key {key!r}")
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ModelError(f"weights do not fit {type(model).__name__}: " + "; ".join(problems[:5]) + more)

    model.load_state_dict(to_load, strict=False)
    if skipped:
        log.warning("kept the model's own classifier head; skipped %d checkpoint key(s): %s", len(skipped), skipped)
    return sorted(set(skipped))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a ``.safetensors`` file or a ``.pt``/``.pth``/``.bin`` file (``torch.load(weights_only=True)``).

    A ``{"state_dict": …}``, ``{"model": …}`` or ``{"model_state_dict": …}`` checkpoint is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code in it, wrong format: all one message
        raise ModelError(f"cannot read weights {path}: {type(e).__name__}: {e}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return obj


def head_rows(state: dict[str, Tensor], classifier: str | None = None) -> int | None:
    """Outputs of the classifier head in a state dict: ``<classifier>.weight`` rows when that key is there
    (timm's ``pretrained_cfg["classifier"]``), else the rows of the last 2-D tensor (a Linear head's weight,
    whatever the file calls it); None without any 2-D tensor.

    >>> head_rows({"features.weight": torch.zeros(8, 3, 3, 3), "_fc.weight": torch.zeros(10, 8), "_fc.bias": torch.zeros(10)})
    10
    """
    if classifier and f"{classifier}.weight" in state:
        return int(state[f"{classifier}.weight"].shape[0])
    linear = [v for v in state.values() if isinstance(v, Tensor) and v.ndim == 2]
    return int(linear[-1].shape[0]) if linear else None


def load_into_wrapper(wrapper: nn.Module, path: str | Path) -> list[str]:
    """Load a weights file into an adapter that keeps the library model as ``wrapper.model``.

    Accepts optik checkpoints (keys ``model.…``) and bare torchvision/transformers state dicts
    (keys without the prefix). Returns the skipped head keys, as :func:`load_weights`.
    """
    state = read_state_dict(path)
    own = wrapper.state_dict()
    if not own.keys() & state.keys() and own.keys() & {f"model.{k}" for k in state}:
        state = {f"model.{k}": v for k, v in state.items()}
    return load_weights(wrapper, state)


__all__ = [
    "freeze_backbone", "head_rows", "load_into_wrapper", "load_weights", "model_data_config", "read_state_dict", "split_head",
    "unfreeze",
]
