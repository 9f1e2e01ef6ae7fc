"""``hf:<hub id or local dir>`` — a Hugging Face transformers image classifier behind
:func:`optik.models.create`, wrapped so it maps ``(B, C, H, W)`` pixels to ``(B, num_classes)`` logits.

Weights load through transformers' own ``from_pretrained`` (hub ids and ``save_pretrained``
directories alike). A run can rebuild the model without the original directory: store
``model.config_dict()`` and call ``create("hf:<anything>", hf_config=that_dict, num_classes=…)``,
which builds the architecture with random weights for the caller's state_dict.

>>> model = create("hf:runs/vit-tiny", num_classes=5)               # doctest: +SKIP
>>> twin = create("hf:runs/vit-tiny", hf_config=model.config_dict(), num_classes=5)  # doctest: +SKIP
>>> twin.load_state_dict(model.state_dict())                        # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

_HEAD_NAMES = ("classifier", "head", "fc", "cls_classifier")  # where *ForImageClassification keep their head
_DATA_CONFIG_KEY = "optik_data_config"  # rides along in config_dict() so a rebuild normalises the same way
#: transformers ``model_type``s of open-vocabulary detectors (text queries as classes: optik/zeroshot/owl.py).
OPEN_VOCAB_TYPES = ("owlvit", "owlv2")
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL codes in image processors


class HFClassifier(nn.Module):
    """A transformers ``*ForImageClassification`` model as a plain ``pixels -> logits`` module.

    Args:
        model: the transformers model (held as ``.model``; state_dict keys start with ``model.``).
        data_config: ``{"mean", "std", "input_size", "interpolation"}`` the model expects.
    """

    def __init__(self, model: nn.Module, data_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.default_cfg = data_config
        # ViT-family models take other sizes than config.image_size only when told to interpolate.
        self._can_interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        size = getattr(model.config, "image_size", None)
        self._native_size = None if size is None else tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, C, H, W)`` float, normalised → ``(B, num_classes)`` logits."""
        extra: dict[str, Any] = {}
        if self._can_interpolate and self._native_size and tuple(pixel_values.shape[-2:]) != self._native_size:
            extra["interpolate_pos_encoding"] = True
        return self.model(pixel_values=pixel_values, return_dict=True, **extra).logits

    def get_classifier(self) -> nn.Module:
        """The classification head (``model.classifier`` for most architectures)."""
        for name in _HEAD_NAMES:
            head = getattr(self.model, name, None)
            if isinstance(head, nn.Module):
                return head
        raise ModelError(f"{type(self.model).__name__} has no classifier module (looked for {_HEAD_NAMES})")

    def config_dict(self) -> dict[str, Any]:
        """The transformers config as a JSON-able dict (plus optik's data config), for rebuilding offline."""
        config = json.loads(json.dumps(self.model.config.to_dict(), default=str))
        config[_DATA_CONFIG_KEY] = json.loads(json.dumps(self.default_cfg))
        return config


def _looks_local(ref: str) -> bool:
    # Hub ids are "name" or "org/name"; anything path-like is a directory the user means.
    return Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def _set_labels(config: Any, num_classes: int, class_names: list[str] | None) -> None:
    if class_names is not None:
        if len(class_names) != num_classes:
            raise ModelError(f"hf model: {len(class_names)} class_names for num_classes={num_classes}")
        config.id2label = {i: str(n) for i, n in enumerate(class_names)}
    elif config.num_labels != num_classes:
        config.id2label = {i: f"LABEL_{i}" for i in range(num_classes)}
    config.label2id = {v: k for k, v in config.id2label.items()}


def _set_channels(config: Any, in_chans: int, ref: str) -> None:
    channels = getattr(config, "num_channels", None)
    if channels is not None and channels != in_chans:
        log.warning("hf:%s takes %d channels; rebuilt for in_chans=%d (stem re-initialised)", ref, channels, in_chans)
        config.num_channels = in_chans


def _data_config(source: str | None, config: Any) -> dict[str, Any]:
    """Mean/std/size from the image processor saved with the model, else ImageNet's."""
    channels = getattr(config, "num_channels", 3) or 3
    size = getattr(config, "image_size", None)
    cfg: dict[str, Any] = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "interpolation": "bilinear"}
    has_processor = source is not None and (
        not Path(source).is_dir() or (Path(source) / "preprocessor_config.json").is_file()
    )
    if has_processor:
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(source)
            cfg["mean"] = tuple(processor.image_mean or cfg["mean"])
            cfg["std"] = tuple(processor.image_std or cfg["std"])
            psize = getattr(processor, "size", None) or {}
            if "height" in psize and "width" in psize:
                size = (psize["height"], psize["width"])
            cfg["interpolation"] = _RESAMPLE.get(int(getattr(processor, "resample", 2) or 2), "bilinear")
        except Exception as e:  # no/odd processor: the model still works with ImageNet statistics
            log.info("hf:%s: no usable image processor (%s); using ImageNet mean/std", source, e)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        cfg["input_size"] = (channels, int(h), int(w))
    else:
        cfg["input_size"] = None
    for key in ("mean", "std"):
        stats = tuple(float(v) for v in cfg[key])
        cfg[key] = stats if len(stats) == channels else (sum(stats) / len(stats),) * channels
    return cfg


def load_hf_model(
    ref: str,
    auto_cls: Any,
    *,
    num_classes: int,
    class_names: list[str] | None,
    hf_config: dict[str, Any] | None,
    pretrained: bool | str | None,
    prepare: Callable[[Any], None],
    what: str,
    **kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Shared by every ``hf:`` adapter: ``auto_cls`` (e.g. ``AutoModelForImageClassification``)
    from a hub id / local dir with a ``num_classes`` head, or from an optik ``hf_config`` dict with
    random weights. ``prepare(config)`` adapts the config first (channels, no backbone download).
    Returns (model, data config). Every failure is a one-line ModelError naming ``ref``."""
    from transformers import AutoConfig

    if hf_config is not None:
        values = dict(hf_config)
        data_cfg = values.pop(_DATA_CONFIG_KEY, None)
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ModelError("hf_config has no 'model_type'; pass the dict from the model's config_dict()")
        try:
            config = AutoConfig.for_model(model_type, **values)
            _set_labels(config, num_classes, class_names)
            prepare(config)
            model = auto_cls.from_config(config)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"cannot build an hf {what} from hf_config (model_type={model_type!r}): {e}") from e
        return model, data_cfg or _data_config(None, config)
    if not ref:
        raise ModelError("empty hf model reference; write 'hf:<hub id>' or 'hf:<local dir>'")
    if _looks_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelError(f"hf model directory not found: {path}")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a transformers model directory (no config.json)")
        ref = str(path)
    try:
        config = AutoConfig.from_pretrained(ref)
        _set_labels(config, num_classes, class_names)
        prepare(config)
        if pretrained is False or isinstance(pretrained, str):
            model = auto_cls.from_config(config)
        else:
            model = auto_cls.from_pretrained(ref, config=config, ignore_mismatched_sizes=True, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        offline = "" if _looks_local(ref) else " (hub ids need the network or the local cache, or use a local dir)"
        first_line = (str(e).splitlines() or [""])[0]  # the message, not the network retry log
        raise ModelError(f"cannot load hf:{ref} as an {what}{offline}: {type(e).__name__}: {first_line}") from None
    return model, _data_config(ref, config)


def create_hf(
    ref: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    class_names: list[str] | None = None,
    hf_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HFClassifier:
    """Load ``ref`` (hub id or local dir) with a ``num_classes`` head, or build from ``hf_config``.

    ``pretrained=False`` builds the architecture with random weights; a path loads a local weights
    file into it. ``img_size`` is not needed: ViT-family models interpolate position embeddings.
    ``class_names`` become the config's ``id2label``; other kwargs go to ``from_pretrained``.
    """
    from transformers import AutoModelForImageClassification

    model, data_cfg = load_hf_model(
        ref, AutoModelForImageClassification, num_classes=num_classes, class_names=class_names, hf_config=hf_config,
        pretrained=pretrained, prepare=lambda config: _set_channels(config, in_chans, ref), what="image classifier", **kwargs,
    )
    wrapper = HFClassifier(model.float(), data_cfg).train()
    if isinstance(pretrained, str) and pretrained:
        from optik.models.transfer import load_weights, read_state_dict

        load_weights(wrapper, read_state_dict(pretrained))
    return wrapper


def hf_label_meta(ref: str, task: str) -> dict[str, Any]:
    """Weights metadata (``task``, ``classes``) of a trained Hugging Face model (hub id or local dir),
    its class names read from its config's ``id2label``; used by val/predict on ``hf:<ref>``. An OWL-ViT / OWLv2
    detector has none (``open_vocabulary``: the ``prompts=`` of the run are its classes) but its input size.

    Raises:
        ConfigError: the config cannot be loaded, or it has no complete ``id2label``.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0]
        raise ConfigError(f"bad value for 'model': 'hf:{ref}' ({type(e).__name__}: {first})") from None
    if task == "detect" and config.model_type in OPEN_VOCAB_TYPES:  # open vocabulary: prompts= are the classes
        return {"task": task, "classes": [], "open_vocabulary": True, "imgsz": int(config.vision_config.image_size)}
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    if not id2label or sorted(id2label) != list(range(len(id2label))):
        raise ConfigError(f"bad value for 'model': 'hf:{ref}' has no id2label class names; train it first")
    return {"task": task, "classes": [id2label[i] for i in range(len(id2label))]}
