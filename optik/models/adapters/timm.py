"""``timm:<name>`` — any timm architecture behind :func:`optik.models.create`.

timm models already speak optik's model protocol (``forward_features``, ``get_classifier()``,
``pretrained_cfg``); this adapter only maps optik's arguments, turns timm's failures into
ModelError and loads local weight files across a changed head.

>>> create("timm:convnext_atto", num_classes=5, in_chans=1)          # doctest: +SKIP
>>> create("timm:vit_tiny_patch16_224", num_classes=5, img_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from optik.errors import ModelError
from optik.models.layers import to_2tuple
from optik.models.transfer import load_weights, read_state_dict


def _unknown(name: str) -> ModelError:
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else "; see timm.list_models()"
    return ModelError(f"timm has no model {name!r}{hint}")


def create_timm(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, …)`` with optik's arguments.

    ``img_size`` is passed to families that take it (ViT, DeiT, Swin …) and dropped for the rest;
    ``pretrained=True`` uses timm's hub weights, a path loads a local file (head mismatch skipped).
    """
    if not name:
        raise ModelError("empty timm model name; write e.g. 'timm:resnet18'")
    if not timm.is_model(name):
        raise _unknown(name)
    kwargs.pop("class_names", None)  # timm models carry no label names
    args = dict(pretrained=pretrained is True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    hub_id = pretrained if isinstance(pretrained, str) and "/" in pretrained and not Path(pretrained).exists() else None
    if hub_id:  # pretrained=<hub id>: timm's own hub loading, e.g. "timm/resnet18.a1_in1k"
        args.update(pretrained=True, pretrained_cfg_overlay={"hf_hub_id": hub_id})
    try:
        try:
            model = timm.create_model(name, **args, **({} if img_size is None else {"img_size": img_size}))
        except TypeError as e:
            # Convnets reject img_size ("unexpected keyword argument 'img_size'"): they take any size.
            if img_size is None or "img_size" not in str(e):
                raise
            model = timm.create_model(name, **args)
    except (TypeError, ValueError, AssertionError, RuntimeError, OSError) as e:
        where = " (pretrained downloads weights from the hub; offline, pass pretrained=<file>)" if args["pretrained"] else ""
        raise ModelError(f"cannot create timm:{name}{where}: {type(e).__name__}: {e}") from e

    # Record what the model expects for optik.models.model_data_config: timm's normalisation, the
    # asked-for channels and size (grey models get the mean of the RGB statistics).
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = to_2tuple(img_size) if img_size is not None else tuple(cfg.get("input_size", (3, 224, 224))[1:])
    for key, default in (("mean", IMAGENET_DEFAULT_MEAN), ("std", IMAGENET_DEFAULT_STD)):
        stats = tuple(cfg.get(key) or default)
        cfg[key] = stats if len(stats) == in_chans else (sum(stats) / len(stats),) * in_chans
    cfg["input_size"] = (in_chans, *size)
    model.pretrained_cfg = model.default_cfg = cfg

    if isinstance(pretrained, str) and pretrained and not hub_id:
        load_weights(model, read_state_dict(pretrained))
    return model
