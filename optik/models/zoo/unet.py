"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation")
for semantic segmentation, at small widths for CPU training.

    [0, 1] image → normalise → pad to the stride → encoder (double 3×3 conv, 2×2 max-pool)
    → decoder (2× up, concatenate the skip, double 3×3 conv) → 1×1 conv head → crop → (B, C, H, W) logits

Differences from the paper: 'same' padding and BatchNorm in every conv (so the output has the input's
size and trains from scratch quickly), and the input is padded to a multiple of the total stride and
the logits cropped back, so any H, W ≥ 32 works (no "input must be divisible by 32").

>>> model = create("unet_s", task="semantic", num_classes=3)          # doctest: +SKIP
>>> model(torch.rand(2, 3, 33, 47)).shape                            # doctest: +SKIP
torch.Size([2, 3, 33, 47])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import ConvBNAct, data_config, init_weights
from optik.models.registry import register_model

UPSAMPLE = ("transpose", "bilinear")


def pad_to_multiple(x: Tensor, multiple: int, value: float = 0.0) -> Tensor:
    """Pad ``(B, C, H, W)`` right/bottom so H and W are multiples of ``multiple`` (crop back with ``[..., :H, :W]``).

    Pad amounts come from shapes only, so the op traces/exports to ONNX as a Pad.

    >>> pad_to_multiple(torch.zeros(1, 3, 33, 47), 16).shape
    torch.Size([1, 3, 48, 48])
    """
    h, w = x.shape[-2], x.shape[-1]
    return F.pad(x, (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple), value=value)


def normalization(in_chans: int, img_size: int | None) -> tuple[dict[str, Any], Tensor, Tensor]:
    """ImageNet ``default_cfg`` for ``in_chans`` and its mean/std as ``(1, C, 1, 1)`` tensors."""
    cfg = data_config(in_chans, img_size)
    return cfg, torch.tensor(cfg["mean"]).view(1, -1, 1, 1), torch.tensor(cfg["std"]).view(1, -1, 1, 1)


class DoubleConv(nn.Sequential):
    """The U-Net unit: two 3×3 Conv → BN → ReLU. ``(B, c_in, H, W) -> (B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(ConvBNAct(c_in, c_out, 3), ConvBNAct(c_out, c_out, 3))


class Up(nn.Module):
    """Decoder step: upsample ×2 halving the channels, concatenate the encoder skip, DoubleConv.

    ``upsample="transpose"`` is the paper's 2×2 up-convolution; ``"bilinear"`` is interpolation then a
    1×1 conv (no checkerboard artefacts, fewer parameters).
    ``(B, c_in, H, W), (B, c_skip, 2H, 2W) -> (B, c_out, 2H, 2W)``.
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int, upsample: str = "transpose") -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(c_in, c_skip, 2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    ConvBNAct(c_in, c_skip, 1))  # fmt: skip
        self.conv = DoubleConv(2 * c_skip, c_out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Encoder–decoder with skip connections; ``len(widths) - 1`` poolings (total stride ``2 ** that``).

    Args:
        num_classes: C, output channels (class logits per pixel).
        in_chans: input channels.
        img_size: the training side in pixels (recorded in ``default_cfg`` only; any size ≥ 32 works).
        widths: channels per level, finest first; the paper's is (64, 128, 256, 512, 1024).
        upsample: ``"transpose"`` (paper) or ``"bilinear"``.
        drop_rate: channel dropout before the head.

    Attributes:
        num_classes, stride, default_cfg (``{"mean", "std", "input_size", "interpolation"}``).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int | None = None,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        upsample: str = "transpose",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if num_classes < 1:
            raise ModelError(f"a semantic segmentation model needs num_classes >= 1, got {num_classes}")
        if len(widths) < 2 or min(widths) < 1:
            raise ModelError(f"UNet widths must be >= 2 positive channel counts, got {widths}")
        if upsample not in UPSAMPLE:
            raise ModelError(f"UNet upsample must be one of {UPSAMPLE}, got {upsample!r}")
        self.num_classes = num_classes
        self.stride = 2 ** (len(widths) - 1)
        self._config = {"widths": widths, "upsample": upsample, "drop_rate": drop_rate}
        self.default_cfg, mean, std = normalization(in_chans, img_size)
        # Not persistent: derived from in_chans, so checkpoints hold only learned weights.
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

        self.inc = DoubleConv(in_chans, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(c_in, c_out)) for c_in, c_out in zip(widths, widths[1:])
        )
        self.up = nn.ModuleList(
            Up(c_in, c_out, c_out, upsample) for c_in, c_out in zip(widths[:0:-1], widths[-2::-1])
        )
        self.drop = nn.Dropout2d(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 1] → ``(B, num_classes, H, W)`` logits."""
        h, w = x.shape[-2], x.shape[-1]
        # Pad after normalising: zeros are the mean colour, the most neutral fill.
        x = pad_to_multiple((x - self.mean) / self.std, self.stride)
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(self.drop(x))[..., :h, :w]

    def get_classifier(self) -> nn.Module:
        """The 1×1 class conv (skipped by ``load_weights`` when ``num_classes`` differs)."""
        return self.head

    def config_dict(self) -> dict[str, Any]:
        """Architecture kwargs that, with ``num_classes``, rebuild this model through ``create``."""
        return dict(self._config)


VARIANTS: dict[str, tuple[int, ...]] = {
    # Narrow at full resolution, deep (stride 32): the receptive field covers a 128-px scene, which
    # telling a shape's interior from background needs, at ~200 ms per 8×128² training step on 2 cores.
    "unet_s": (8, 16, 32, 64, 128, 256),  # ~2.0 M params, stride 32: the CPU default
    "unet": (32, 64, 128, 256),  # ~1.9 M params, stride 8
    "unet_m": (32, 64, 128, 256, 512),  # ~7.8 M params, stride 16: the paper's five levels at half width
}


def _build(name: str, kwargs: dict[str, Any]) -> UNet:
    kwargs.setdefault("widths", VARIANTS[name])
    return UNet(**kwargs)


@register_model("unet_s", task="semantic")
def unet_s(**kwargs: Any) -> UNet:
    """Small U-Net, widths (8, 16, 32, 64, 128, 256) (~2.0 M params, stride 32): the default, fast on
    CPU at 128 px (cheap full-resolution levels, a receptive field as large as the image)."""
    return _build("unet_s", kwargs)


@register_model("unet_m", task="semantic")
def unet_m(**kwargs: Any) -> UNet:
    """U-Net with the paper's five levels at half width, (32, 64, 128, 256, 512) (~7.8 M params);
    ``widths=(64, 128, 256, 512, 1024)`` is the paper's."""
    return _build("unet_m", kwargs)


@register_model("unet", task="semantic")
def unet(**kwargs: Any) -> UNet:
    """U-Net, widths (32, 64, 128, 256) (~1.9 M params)."""
    return _build("unet", kwargs)


__all__ = ["UNet", "DoubleConv", "Up", "VARIANTS", "normalization", "pad_to_multiple", "unet", "unet_m", "unet_s"]
