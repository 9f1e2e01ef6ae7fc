"""``tv:<name>`` for task="semantic" — torchvision's segmentation models as plain logits models.

Names: ``fcn_resnet50``, ``fcn_resnet101`` (Long et al. 2015), ``deeplabv3_resnet50``,
``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large`` (Chen et al. 2017), ``lraspp_mobilenet_v3_large``
(Howard et al. 2019). The wrapper normalises ``[0, 1]`` input with ImageNet statistics (what the
torchvision weights expect), drops the auxiliary head and returns the ``"out"`` logits at input size.

>>> model = create("tv:lraspp_mobilenet_v3_large", task="semantic", num_classes=3)   # doctest: +SKIP
>>> model(torch.rand(2, 3, 64, 64)).shape                                            # doctest: +SKIP
torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torchvision.models import segmentation as tvs

from optik.errors import ModelError

NAMES = (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)  # fmt: skip


class TVSegmenter(nn.Module):
    """A torchvision segmentation model (held as ``.model``): ``(B, 3, H, W)`` in [0, 1] → ``(B, C, H, W)`` logits.

    Args:
        model: a torchvision ``FCN`` / ``DeepLabV3`` / ``LRASPP``.
        num_classes: C.
        img_size: the training side in pixels (recorded in ``default_cfg`` only; any size ≥ 32 works).
    """

    def __init__(self, model: nn.Module, num_classes: int, img_size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.default_cfg = {
            "mean": tuple(IMAGENET_DEFAULT_MEAN), "std": tuple(IMAGENET_DEFAULT_STD), "interpolation": "bilinear",
            "input_size": None if img_size is None else (3, img_size, img_size),
        }  # fmt: skip
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] → ``(B, num_classes, H, W)`` logits (torchvision upsamples to the input)."""
        return self.model((x - self.mean) / self.std)["out"]

    def get_classifier(self) -> nn.Module:
        """The class-count-dependent part: the last conv of FCN/DeepLab's head, LR-ASPP's whole head."""
        head = self.model.classifier
        return head if isinstance(self.model, tvs.LRASPP) else head[-1]

    def config_dict(self) -> dict[str, Any]:
        """Nothing beyond the name: ``create("tv:<name>", num_classes=…)`` rebuilds it."""
        return {}


def reset_classifier(model: nn.Module, num_classes: int) -> None:
    """Give a torchvision segmentation model new ``num_classes`` output convs (in place; the rest kept).

    >>> m = tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    >>> reset_classifier(m, 3); m.classifier.high_classifier.out_channels
    3
    """
    if isinstance(model, tvs.LRASPP):
        head = model.classifier
        head.low_classifier = nn.Conv2d(head.low_classifier.in_channels, num_classes, 1)
        head.high_classifier = nn.Conv2d(head.high_classifier.in_channels, num_classes, 1)
    else:  # FCNHead / DeepLabHead are Sequentials ending in the 1×1 class conv
        last = model.classifier[-1]
        model.classifier[-1] = nn.Conv2d(last.in_channels, num_classes, 1)


def create_tv_segmenter(
    name: str,
    *,
    num_classes: int = 21,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    **kwargs: Any,
) -> TVSegmenter:
    """Build ``tv:<name>`` (see :data:`NAMES`) for ``num_classes`` classes.

    Args:
        pretrained: ``None``/``False`` random init (no download); ``True`` torchvision's COCO-with-VOC-labels
            weights with a new class head; a path loads an optik or bare torchvision state dict
            (a class head of another size skipped).
        **kwargs: passed to the torchvision builder.

    Raises:
        ModelError: unknown name, ``in_chans != 3``, a failing builder or download.
    """
    kwargs.pop("class_names", None)  # torchvision models carry no label names
    if name not in NAMES:
        close = difflib.get_close_matches(name, NAMES, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join('tv:' + c for c in close)}?" if close else ""
        raise ModelError(f"no torchvision segmentation model {name!r}; known: {', '.join(NAMES)}{hint}")
    if in_chans != 3:
        raise ModelError(f"tv:{name} takes RGB input (in_chans=3), got in_chans={in_chans}")
    if num_classes < 1:
        raise ModelError(f"tv:{name} needs num_classes >= 1, got {num_classes}")
    fn = getattr(tvs, name)
    try:
        if pretrained is True:
            model = fn(weights="DEFAULT", **kwargs)  # 21 VOC classes (+ aux head): replaced below
            reset_classifier(model, num_classes)
        else:
            model = fn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, RuntimeError, OSError) as e:
        where = " (pretrained=True downloads torchvision weights; offline, pass pretrained=<file>)"
        where = where if pretrained is True else ""
        raise ModelError(f"cannot create tv:{name}{where}: {type(e).__name__}: {e}") from e
    if getattr(model, "aux_classifier", None) is not None:
        model.aux_classifier = None  # only "out" is returned; an unused head would hold dead parameters
    wrapper = TVSegmenter(model, num_classes, img_size).train()
    if isinstance(pretrained, str) and pretrained:
        load_file(wrapper, pretrained)
    return wrapper


def load_file(wrapper: TVSegmenter, path: str) -> list[str]:
    """Load an optik checkpoint (keys ``model.…``) or a bare torchvision state dict into ``wrapper``.

    torchvision's own checkpoints carry an ``aux_classifier`` the wrapper does not have: those keys are
    dropped. Returns the skipped head keys (see :func:`optik.models.transfer.load_weights`).
    """
    from optik.models.transfer import load_weights, read_state_dict

    state = read_state_dict(path)
    if not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("model.aux_classifier.")}
    return load_weights(wrapper, state)


__all__ = ["NAMES", "TVSegmenter", "create_tv_segmenter", "load_file", "reset_classifier"]
