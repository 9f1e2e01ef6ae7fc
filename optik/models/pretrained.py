"""Models that arrive already trained, with their own head, class names and preprocessing (no optik run).

``val`` and ``predict`` need trained weights. An optik ``.safetensors`` file (or a run directory)
describes itself; a model named ``<prefix>:<ref>`` whose prefix is listed in :data:`PRETRAINED` can
describe itself too:

- ``hf:<hub id or local dir>``: class names from its config's ``id2label``;
- ``timm:<arch>`` with ``pretrained=true`` (timm's hub weights) or ``pretrained=<file>`` (a local weights
  file, e.g. one written by ``optik models convert``): a 1000-class ImageNet head gets the ImageNet-1k
  class names (:func:`imagenet_classes`), and the preprocessing its weights expect (mean/std, input size,
  resize interpolation, centre-crop fraction) comes from timm's ``pretrained_cfg`` — or from the file's
  own optik metadata when it has some.

The engine asks :func:`builtin_meta` and never names a prefix or imports the library behind it; once the
model is built, :func:`preprocessing_meta` reads the preprocessing from the model itself (timm's
``pretrained_cfg``, the HF image processor) for the keys the label metadata did not give — one path for
every prefix.

>>> builtin_meta("runs/classify/train", "classify") is None   # not a self-describing pretrained name
True
>>> builtin_meta("timm:resnet18", "classify") is None          # an architecture without weights
True
>>> imagenet_classes()[285], len(imagenet_classes())
('Egyptian cat', 1000)
>>> builtin_meta("hf:google/vit-base-patch16-224", "classify")["classes"][:2]   # doctest: +SKIP
['tench, Tinca tinca', 'goldfish, Carassius auratus']
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections import Counter
from collections.abc import Callable
from typing import Any

from torch import nn

# prefix -> "module:function" returning ``{"task", "classes", …}`` for ``function(ref, task[, pretrained])``,
# or None when the reference names an architecture without trained weights; imported on first use, so
# naming a prefix here costs nothing until a model with it is used.
PRETRAINED: dict[str, str | Callable[..., dict[str, Any] | None]] = {
    "hf": "optik.models.adapters.hf:hf_label_meta",
    "timm": "optik.models.adapters.timm:timm_pretrained_meta",
}
#: How each prefix is written when it describes itself, for error messages.
FORMS = {"hf": "hf:<id|dir>", "timm": "timm:<arch> pretrained=true|<file>"}


def pretrained_forms() -> str:
    """How the pretrained names are written, for error messages (``"hf:<id|dir>, timm:<arch> pretrained=…"``)."""
    return ", ".join(FORMS.get(p, f"{p}:<ref>") for p in PRETRAINED)


def builtin_meta(name: str, task: str, pretrained: bool | str | None = None) -> dict[str, Any] | None:
    """Weights metadata (``task``, ``classes``; for ``timm:`` also ``imgsz`` and the preprocessing keys)
    of the pretrained model ``name`` with ``pretrained=`` weights, or None when ``name`` has no
    registered prefix or names an architecture without trained weights (then the caller needs an
    optik weights file).

    Raises:
        ConfigError / ModelError: the prefix is known but the model cannot be read or has no class names.
    """
    prefix, sep, ref = name.partition(":")
    if not sep or prefix not in PRETRAINED:
        return None
    target = PRETRAINED[prefix]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = PRETRAINED[prefix] = getattr(importlib.import_module(module), attr)
    if "pretrained" in inspect.signature(target).parameters:
        return target(ref, task, pretrained=pretrained)
    return target(ref, task)


@functools.cache
def _imagenet_classes(subset: str) -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    # WordNet gives two synsets one description ('crane': the bird n02012849 and the machine n03126707);
    # class names must be unique (datasets, metrics and `target=` look classes up by name), so a repeated
    # description carries its synset id.
    count = Counter(names)
    return tuple(f"{n} ({info.index_to_label_name(i)})" if count[n] > 1 else n for i, n in enumerate(names))


def imagenet_classes(subset: str = "imagenet-1k") -> list[str]:
    """Class names of an ImageNet subset in index order (timm's :class:`~timm.data.ImageNetInfo`
    descriptions, the same strings as Hugging Face's ImageNet ``id2label``), unique: a description two
    classes share gets the synset id appended (``'crane (n02012849)'``, ``'crane (n03126707)'``).

    >>> imagenet_classes()[:2]
    ['tench, Tinca tinca', 'goldfish, Carassius auratus']
    """
    return list(_imagenet_classes(subset))


def preprocessing_meta(model: nn.Module) -> dict[str, Any]:
    """What a model says about the input its weights expect, as metadata keys: ``mean``/``std`` (lists,
    0–1 scale), ``interpolation`` (``"bilinear"`` / ``"bicubic"`` …) and, where the model names one,
    ``crop_pct`` (the eval centre crop: resize the shorter side to ``imgsz / crop_pct``, crop ``imgsz``).

    >>> preprocessing_meta(create("timm:tf_efficientnet_lite0"))      # doctest: +SKIP
    {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'interpolation': 'bicubic', 'crop_pct': 0.875}
    """
    from optik.models.transfer import model_data_config

    cfg = model_data_config(model)
    out: dict[str, Any] = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "interpolation": cfg["interpolation"]}
    if cfg.get("crop_pct"):
        out["crop_pct"] = float(cfg["crop_pct"])
    return out


__all__ = ["PRETRAINED", "builtin_meta", "imagenet_classes", "preprocessing_meta", "pretrained_forms"]
