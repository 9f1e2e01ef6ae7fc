"""ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition") with basic blocks in the
ResNet-18 layout [2, 2, 2, 2], at a small width for CPU training on small images. The stem keeps the
paper's /4 (stride-2 conv, then 3×3 max-pool) with a 3×3 instead of a 7×7 conv; a 32 px input
reaches the last stage at 1×1.

>>> model = create("resnet", num_classes=10)                         # doctest: +SKIP
>>> model.forward_features(torch.zeros(2, 3, 32, 32)).shape          # doctest: +SKIP
torch.Size([2, 128])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optik.models.layers import ConvBNAct, ImageClassifier, global_avg_pool
from optik.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3×3 convs with an identity shortcut (1×1 projection when shape changes), ReLU after the sum.

    ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c_in, c_out, 3, stride)
        self.conv2 = ConvBNAct(c_out, c_out, 3, act=None)
        self.shortcut = (
            ConvBNAct(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(ImageClassifier):
    """Stem (/4) → 4 stages of BasicBlocks (first block of stages 2–4 strides 2) → global pool → head.

    Args:
        widths: channels per stage; ``num_features = widths[-1]``.
        depths: blocks per stage; (2, 2, 2, 2) is ResNet-18.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        drop_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(in_chans, widths[0], 3, stride=2), nn.MaxPool2d(3, 2, padding=1))
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, (c_out, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.init_head(widths[-1], num_classes, drop_rate, in_chans, img_size)
        for m in self.modules():
            # Zero-init each block's last BN so it starts as the identity (Goyal et al. 2017): trains sooner.
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.conv2[1].weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.stages(self.stem(x)))


@register_model("resnet")
def resnet(**kwargs: Any) -> ResNet:
    """ResNet-18 layout, widths (16, 32, 64, 128) — the CPU default."""
    return ResNet(widths=(16, 32, 64, 128), **kwargs)


@register_model("resnet_w32")
def resnet_w32(**kwargs: Any) -> ResNet:
    """ResNet-18 layout, widths (32, 64, 128, 256)."""
    return ResNet(widths=(32, 64, 128, 256), **kwargs)


@register_model("resnet_w64")
def resnet_w64(**kwargs: Any) -> ResNet:
    """ResNet-18 layout at the paper's widths (64, 128, 256, 512), small-image stem."""
    return ResNet(widths=(64, 128, 256, 512), **kwargs)
