"""``timm:<name>`` — any timm architecture behind :func:`optik.models.create`.

timm models already speak optik's model protocol (``forward_features``, ``get_classifier()``,
``pretrained_cfg``); this adapter only maps optik's arguments, turns timm's failures into
ModelError and loads local weight files across a changed head. :func:`timm_pretrained_meta` says what a
``timm:<arch>`` with ``pretrained=true|<file>`` predicts (ImageNet names, timm's preprocessing) for
``val`` / ``predict`` without an optik run (:mod:`optik.models.pretrained`).

>>> create("timm:convnext_atto", num_classes=5, in_chans=1)          # doctest: +SKIP
>>> create("timm:vit_tiny_patch16_224", num_classes=5, img_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from optik.errors import ModelError
from optik.models.layers import to_2tuple
from optik.models.transfer import head_rows, load_weights, read_state_dict

log = logging.getLogger(__name__)


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
        _load_file(model, name, pretrained)
    return model


def _load_file(model: nn.Module, name: str, path: str) -> None:
    """``pretrained=<file>``: load by name (head mismatch skipped); a file of another naming scheme is an
    error that says how to convert it, and weights converted for another architecture are loaded with a
    warning (same names and shapes, but e.g. other padding or BatchNorm epsilon)."""
    meta = _optik_meta(path)
    if meta.get("model") and meta["model"] != f"timm:{name}":
        log.warning("pretrained=%s holds weights for %s; loading them into timm:%s", path, meta["model"], name)
    try:
        load_weights(model, read_state_dict(path))
    except ModelError as e:
        raise ModelError(f"{e}. If the file comes from another implementation, map it onto this architecture "
                         f"first: optik models convert src={path} model=timm:{name} out=<file>.safetensors") from None  # fmt: skip


def _optik_meta(path: str | Path) -> dict[str, Any]:
    """The optik metadata of a ``.safetensors`` file ({} for other files or none)."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return {}
    from optik.weights import read_meta

    return read_meta(path)


def timm_pretrained_meta(ref: str, task: str, pretrained: bool | str | None = None) -> dict[str, Any] | None:
    """Weights metadata of ``timm:<ref>`` with trained weights (:func:`optik.models.pretrained.builtin_meta`):
    ``task``, ``classes``, ``imgsz`` and the preprocessing its weights expect (``mean``, ``std``,
    ``interpolation``, ``crop_pct``), plus ``pretrained`` (where the weights came from). None without
    weights (``pretrained`` unset or false: a random-init architecture cannot predict).

    ``pretrained=true`` (timm's hub weights) names its classes after timm's ImageNet subset for the
    architecture's pretrained head; ``pretrained=<file>`` takes the file's own optik metadata when it has
    class names (a converted or trained file), else a 1000-output head means ImageNet-1k. The
    preprocessing is the file's where it records it, else timm's ``pretrained_cfg`` of ``ref``.

    >>> timm_pretrained_meta("tf_efficientnet_lite0", "classify", "lite0.safetensors")["crop_pct"]   # doctest: +SKIP
    0.875

    Raises:
        ModelError: unknown architecture, unreadable file. ConfigError: no class names can be found.
    """
    from timm.data import infer_imagenet_subset

    from optik.errors import ConfigError
    from optik.models.pretrained import imagenet_classes

    if not pretrained:
        return None
    if not timm.is_model(ref):
        raise _unknown(ref)
    pcfg = timm.models.get_pretrained_cfg(ref)
    cfg = pcfg.to_dict() if pcfg is not None else {}
    meta: dict[str, Any] = {
        "task": task, "imgsz": int(tuple(cfg.get("input_size") or (3, 224, 224))[-1]),
        "mean": list(cfg.get("mean") or IMAGENET_DEFAULT_MEAN), "std": list(cfg.get("std") or IMAGENET_DEFAULT_STD),
        "interpolation": cfg.get("interpolation") or "bilinear", "crop_pct": float(cfg.get("crop_pct") or 1.0),
    }  # fmt: skip
    if pretrained is True:
        subset = infer_imagenet_subset(cfg)
        if subset is None:
            raise ConfigError(f"bad value for 'model': timm:{ref}'s pretrained weights have {cfg.get('num_classes')} "
                              "classes without known names; train it on your data first")  # fmt: skip
        return {**meta, "classes": imagenet_classes(subset), "pretrained": {"weights": "timm hub", "dataset": subset}}
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        if "/" in str(pretrained) and not path.suffix:  # a hub id: timm's own download, its pretrained cfg
            return timm_pretrained_meta(ref, task, True)
        raise ModelError(f"bad value for 'pretrained': weights file '{path}' not found")
    own = _optik_meta(path)
    if own.get("classes"):  # converted (or trained) by optik: the file says what it is
        keep = ("classes", "imgsz", "mean", "std", "interpolation", "crop_pct", "pretrained")
        # A file without crop / filter keys comes from an optik run, which validates with crop 1.0, bilinear.
        return {**meta, "crop_pct": 1.0, "interpolation": "bilinear", **{k: own[k] for k in keep if own.get(k) is not None},
                "task": task}  # fmt: skip
    rows = head_rows(read_state_dict(path), cfg.get("classifier"))
    if rows != 1000:
        raise ConfigError(f"bad value for 'pretrained': '{path}' has a {rows}-class head and names no classes, so its "
                          f"predictions cannot be labelled; train it (optik classify train model=timm:{ref} "
                          f"pretrained={path} data=…) or predict with the run it made")  # fmt: skip
    return {**meta, "classes": imagenet_classes(), "pretrained": {"weights": str(path), "dataset": "imagenet-1k"}}
