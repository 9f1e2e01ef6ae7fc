"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"): only 3×3 convolutions, stacked in stages separated by 2×2 max-pooling, channels
doubling per stage. Configuration "A" (VGG-11) layout; BatchNorm added and the three large FC
layers replaced by global average pooling (as later VGG-BN / all-conv variants do).

>>> model = create("vgg", num_classes=10)                            # doctest: +SKIP
>>> model(torch.zeros(2, 3, 32, 32)).shape                           # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optik.models.layers import ConvBNAct, ImageClassifier, global_avg_pool
from optik.models.registry import register_model

VGG11_DEPTHS = (1, 1, 2, 2, 2)  # convs per stage, paper's configuration "A"


def vgg_stage(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    """``depth`` 3×3 ConvBNAct then 2×2 max-pool: ``(B, c_in, H, W) -> (B, c_out, H/2, W/2)``."""
    convs = [ConvBNAct(c_in if i == 0 else c_out, c_out, 3) for i in range(depth)]
    return nn.Sequential(*convs, nn.MaxPool2d(2, ceil_mode=True))


class VGG(ImageClassifier):
    """Stages of 3×3 convs + max-pool, global average pool, head. ``num_features = widths[-1]``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (8, 16, 32, 64, 128),
        depths: tuple[int, ...] = VGG11_DEPTHS,
        drop_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"VGG: widths {widths} and depths {depths} differ in length")
        ins = (in_chans, *widths[:-1])
        self.stages = nn.Sequential(*(vgg_stage(i, o, d) for i, o, d in zip(ins, widths, depths)))
        self.init_head(widths[-1], num_classes, drop_rate, in_chans, img_size)

    def forward_features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.stages(x))


@register_model("vgg")
def vgg(**kwargs: Any) -> VGG:
    """VGG-11 layout, narrow: (8, 16, 32, 64, 128) — the CPU default."""
    return VGG(widths=(8, 16, 32, 64, 128), **kwargs)


@register_model("vgg11")
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 layout at the paper's width: (64, 128, 256, 512, 512)."""
    return VGG(widths=(64, 128, 256, 512, 512), **kwargs)
