"""U-Net decoder over any timm backbone (the encoder–decoder of Ronneberger et al. 2015 with a pretrained
classifier as the encoder, as segmentation_models_pytorch's ``Unet``), for semantic segmentation.

    [0, 1] image → normalise (the backbone's mean/std) → pad to the backbone stride → timm features
    (every level, e.g. strides 2 … 32) → from the coarsest level up: 2× nearest upsample, concatenate
    the next finer level, two 3×3 Conv → BN → ReLU → 1×1 class conv at the finest level's stride
    → bilinear up to the input → crop → (B, C, H, W) logits

Unlike the FPN head (:mod:`optik.models.segment.fpn`, logits at stride 4), the decoder reaches the
backbone's finest level (stride 2 for EfficientNet / MobileNet / ResNet stems), so small objects keep
their corners; its widths halve level by level, so the fine levels stay cheap on a CPU.

>>> model = create("unet_timm", task="semantic", num_classes=3)                        # doctest: +SKIP
>>> model = create("unet_timm", task="semantic", num_classes=3,
...                backbone_pretrained="lite0.safetensors")                             # doctest: +SKIP
>>> model(torch.rand(1, 3, 50, 70)).shape                                               # doctest: +SKIP
torch.Size([1, 3, 50, 70])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import ConvBNAct
from optik.models.registry import register_model
from optik.models.segment.fpn import TimmSegmenter

DEFAULT_BACKBONE = "timm:tf_efficientnet_lite0"


class DecoderBlock(nn.Module):
    """2× nearest upsample to the skip's size, concatenate it, two 3×3 Conv → BN → ReLU.
    ``(B, c_in, H, W), (B, c_skip, 2H, 2W) -> (B, c_out, 2H, 2W)``."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(ConvBNAct(c_in + c_skip, c_out, 3), ConvBNAct(c_out, c_out, 3))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class TimmUNet(TimmSegmenter):
    """U-Net decoder on a timm ``features_only`` backbone (see the module docstring).

    Args:
        num_classes: C, output channels.
        in_chans: input channels.
        img_size: the training side in pixels (recorded in ``default_cfg`` only; any size ≥ 32 works).
        backbone: ``"timm:<name>"``, any timm model that supports ``features_only``.
        backbone_pretrained: False, True (timm hub download) or a local weights file for the backbone
            (e.g. from ``optik models convert``).
        decoder_channels: width of each decoder block, coarsest first, one per level below the coarsest
            (default: 128 halving down to 16; a shorter tuple is extended by halving).
        drop_rate: channel dropout before the class conv.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int | None = None,
        backbone: str = DEFAULT_BACKBONE,
        backbone_pretrained: bool | str = False,
        decoder_channels: tuple[int, ...] | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        info = self._build_backbone(num_classes, backbone, backbone_pretrained, in_chans)
        strides, channels = list(info.reduction()), list(info.channels())
        if len(strides) < 2 or any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ModelError(f"unet_timm backbone {backbone!r}: feature strides {strides} do not double level by level")
        n = len(strides) - 1
        widths = [max(128 >> k, 16) for k in range(n)] if decoder_channels is None else [int(c) for c in decoder_channels]
        widths += [max(widths[-1] // 2, 8) for _ in range(n - len(widths))] if widths else []
        if len(widths) != n or min(widths) < 1:
            raise ModelError(f"unet_timm decoder_channels {decoder_channels}: need up to {n} positive widths for {backbone!r}")
        self._config = {"backbone": backbone, "decoder_channels": tuple(widths), "drop_rate": drop_rate}
        self.stride, self.out_stride = strides[-1], strides[0]
        c_in = channels[-1]
        blocks = []
        for c_skip, c_out in zip(channels[-2::-1], widths):
            blocks.append(DecoderBlock(c_in, c_skip, c_out))
            c_in = c_out
        self.decoder = nn.ModuleList(blocks)
        self._finish(c_in, drop_rate, (self.decoder,), in_chans, img_size)

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Backbone levels → decoder output at the finest level's stride (``out_stride``)."""
        y = feats[-1]
        for block, skip in zip(self.decoder, feats[-2::-1]):
            y = block(y, skip)
        return y


@register_model("unet_timm", task="semantic")
def unet_timm(pretrained: bool | str | None = None, **kwargs: Any) -> TimmUNet:
    """U-Net decoder (128 → 16 wide) on ``backbone="timm:tf_efficientnet_lite0"`` (default; ~3.9 M params).

    ``pretrained`` (True: timm's hub weights; a path: a timm / ``optik models convert`` weights file)
    initialises the backbone, the same as ``backbone_pretrained``.
    """
    if pretrained:
        kwargs.setdefault("backbone_pretrained", pretrained)
    return TimmUNet(**kwargs)


__all__ = ["DecoderBlock", "TimmUNet", "unet_timm"]
