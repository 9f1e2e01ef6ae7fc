"""Backbones for the house detector: three feature maps at strides 8, 16 and 32.

Two kinds answer the same questions (``channels``, ``strides``, ``mean``/``std``) so the neck
never knows which one it got:

* :class:`CSPBackbone` — a small native CSP-Darknet in the YOLOv8 layout (Ultralytics 2023): a
  stride-2 stem, four stride-2 stages of :class:`CSPBlock` (YOLOv8's C2f, after CSPNet, Wang et
  al. 2020) and an SPPF pyramid pool on the last stage.
* :class:`TimmBackbone` — any timm model with ``features_only=True`` and its last three levels.

>>> bb = CSPBackbone(widths=(8, 16, 32, 64, 128), depths=(1, 1, 1, 1))
>>> [f.shape[-1] for f in bb(torch.zeros(1, 3, 64, 64))], bb.channels, bb.strides
([8, 4, 2], [32, 64, 128], [8, 16, 32])
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import ConvBNAct


def conv(c_in: int, c_out: int, k: int = 3, s: int = 1) -> ConvBNAct:
    """Conv → BN → SiLU, the one block every YOLO-family layer is made of."""
    return ConvBNAct(c_in, c_out, k, s, act=nn.SiLU)


class Bottleneck(nn.Module):
    """Two 3×3 convs with an optional identity shortcut. ``(B, c, H, W) -> (B, c, H, W)``."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1, self.cv2 = conv(c, c), conv(c, c)
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSPBlock(nn.Module):
    """YOLOv8's C2f: 1×1 conv, split in two, chain ``n`` bottlenecks on one half, concatenate every
    intermediate output, 1×1 conv. Cheap (half the channels go through the 3×3s) with rich gradients.

    ``(B, c_in, H, W) -> (B, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = conv(c_in, 2 * self.c, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.cv2 = conv((2 + n) * self.c, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        ys = list(self.cv1(x).chunk(2, dim=1))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return self.cv2(torch.cat(ys, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (YOLOv5): three chained 5×5 max-pools see 5/9/13 px windows.

    ``(B, c, H, W) -> (B, c, H, W)``.
    """

    def __init__(self, c: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = conv(c, c // 2, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)
        self.cv2 = conv(c // 2 * 4, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, dim=1))


class CSPBackbone(nn.Module):
    """Native CSP-Darknet: stem (/2) → 4 stages (/4, /8, /16, /32), each a stride-2 conv then a
    :class:`CSPBlock`; SPPF closes the last stage. Returns the /8, /16, /32 maps.

    Args:
        widths: channels of the stem and the four stages (5 values).
        depths: bottlenecks in each stage's CSPBlock (4 values).
        in_chans: input channels.
    """

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 64, 128, 256), depths: tuple[int, ...] = (1, 2, 2, 1), in_chans: int = 3
    ) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 4:
            raise ModelError(f"CSPBackbone needs 5 widths and 4 depths, got widths={widths}, depths={depths}")
        self.stem = conv(in_chans, widths[0], 3, 2)
        stages = []
        for i, n in enumerate(depths):
            layers = [conv(widths[i], widths[i + 1], 3, 2), CSPBlock(widths[i + 1], widths[i + 1], n)]
            if i == len(depths) - 1:
                layers.append(SPPF(widths[-1]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths[2:])
        self.strides = [8, 16, 32]
        self.mean, self.std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W) -> [(B, c3, H/8, W/8), (B, c4, H/16, W/16), (B, c5, H/32, W/32)]``."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[1:]


class TimmBackbone(nn.Module):
    """The last three feature levels of a timm model (``features_only=True``).

    Args:
        name: a timm architecture, e.g. ``"resnet10t"`` or ``"mobilenetv3_small_050"``.
        pretrained: False (random init), True (timm's hub weights) or a local weights file
            (a classifier checkpoint is fine: timm drops the head when building the feature model).
        in_chans: input channels.

    Normalisation comes from the model's ``pretrained_cfg`` (what its weights were trained with).
    """

    def __init__(self, name: str, pretrained: bool | str = False, in_chans: int = 3) -> None:
        super().__init__()
        if not timm.is_model(name):
            raise ModelError(f"backbone 'timm:{name}': timm has no such model; see timm.list_models()")
        kwargs: dict = {"features_only": True, "out_indices": (-3, -2, -1), "in_chans": in_chans}
        if isinstance(pretrained, (str, Path)) and str(pretrained):
            if not Path(pretrained).is_file():
                raise ModelError(f"backbone 'timm:{name}': pretrained weights file {str(pretrained)!r} not found")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
        else:
            kwargs["pretrained"] = bool(pretrained)
        try:
            self.body = timm.create_model(name, **kwargs)
        except (TypeError, ValueError, AssertionError, RuntimeError, OSError) as e:
            raise ModelError(f"cannot build backbone 'timm:{name}' (features_only): {type(e).__name__}: {e}") from e
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean") or IMAGENET_DEFAULT_MEAN)
        self.std = tuple(cfg.get("std") or IMAGENET_DEFAULT_STD)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W) -> [P3, P4, P5]`` at ``self.strides``."""
        return list(self.body(x))


def build_backbone(
    spec: str | None, widths: tuple[int, ...], depths: tuple[int, ...], in_chans: int = 3, pretrained: bool | str = False
) -> CSPBackbone | TimmBackbone:
    """``None`` → :class:`CSPBackbone`; ``"timm:<name>"`` → :class:`TimmBackbone`."""
    if spec is None or spec in ("", "csp"):
        if pretrained:
            raise ModelError("the native CSP backbone has no pretrained weights; use backbone='timm:<name>'")
        return CSPBackbone(widths, depths, in_chans)
    prefix, sep, name = spec.partition(":")
    if prefix != "timm" or not sep or not name:
        raise ModelError(f"unknown backbone {spec!r}; use None (native CSP) or 'timm:<name>', e.g. 'timm:resnet10t'")
    return TimmBackbone(name, pretrained, in_chans)


__all__ = ["Bottleneck", "CSPBackbone", "CSPBlock", "SPPF", "TimmBackbone", "build_backbone", "conv"]
