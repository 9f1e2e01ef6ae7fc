"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"):
depthwise-separable convolutions arranged as inverted residuals — expand with a 1×1 conv, filter
with a 3×3 depthwise conv, project back with a linear 1×1 conv, skip when shapes allow.

>>> model = create("mobilenet", num_classes=10)                      # doctest: +SKIP
>>> model(torch.zeros(2, 3, 32, 32)).shape                           # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optik.models.layers import ConvBNAct, ImageClassifier, global_avg_pool
from optik.models.registry import register_model

# (expansion t, channels c, repeats n, first stride s) — Table 2 of the paper.
MOBILENET_V2 = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
)
# The same pattern for small images on CPU: reaches /4 one block sooner (where the FLOPs are), stops at
# /16, expands 4× instead of 6×.
MOBILENET_SMALL = ((1, 16, 1, 2), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1), (4, 96, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` without losing more than 10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    """1×1 expand (ReLU6) → 3×3 depthwise (ReLU6) → 1×1 linear projection, + input when shapes match.

    ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = c_in * expand_ratio
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),  # depthwise
            ConvBNAct(hidden, c_out, 1, act=None),  # linear bottleneck: no ReLU on the low-dim output
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(ImageClassifier):
    """Stride-2 stem → inverted-residual stages from ``settings`` → 1×1 conv to ``num_features`` → pool → head.

    Args:
        settings: rows of (expansion, channels, repeats, first stride).
        width_mult: scales every channel count (rounded to multiples of 8).
        num_features: channels of the last 1×1 conv (1280 in the paper).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        settings: tuple[tuple[int, int, int, int], ...] = MOBILENET_SMALL,
        width_mult: float = 1.0,
        stem_width: int = 16,
        num_features: int = 256,
        drop_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        c_in = make_divisible(stem_width * width_mult)
        self.stem = ConvBNAct(in_chans, c_in, 3, stride=2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        for t, c, n, s in settings:
            c_out = make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = ConvBNAct(c_in, num_features, 1, act=nn.ReLU6)
        self.init_head(num_features, num_classes, drop_rate, in_chans, img_size)

    def forward_features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.conv_head(self.blocks(self.stem(x))))


@register_model("mobilenet")
def mobilenet(**kwargs: Any) -> MobileNetV2:
    """Shallow MobileNetV2 (8 blocks, /16, 256 features) — the CPU default."""
    return MobileNetV2(settings=MOBILENET_SMALL, num_features=256, **kwargs)


@register_model("mobilenet_v2")
def mobilenet_v2(**kwargs: Any) -> MobileNetV2:
    """The paper's MobileNetV2 1.0 (17 blocks, /32, 1280 features)."""
    return MobileNetV2(settings=MOBILENET_V2, stem_width=32, num_features=1280, **kwargs)
