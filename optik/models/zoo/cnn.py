"""A classic ConvNet in the LeNet line (LeCun et al. 1998, "Gradient-based learning applied to
document recognition"): stages of convolution → non-linearity → pooling, then a classifier —
modernised with BatchNorm, ReLU and global average pooling so it trains at any input size.

>>> model = create("cnn", num_classes=10)                            # doctest: +SKIP
>>> model.forward_features(torch.zeros(2, 3, 32, 32)).shape          # doctest: +SKIP
torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optik.models.layers import ConvBNAct, ImageClassifier, global_avg_pool
from optik.models.registry import register_model


class ConvNet(ImageClassifier):
    """[ConvBNAct 3×3 → MaxPool 2×2] per width, global average pool, head.

    ``(B, in_chans, H, W) -> (B, widths[-1])`` features; each stage halves H and W.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (16, 32, 64),
        drop_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for c_in, c_out in zip((in_chans, *widths[:-1]), widths):
            stages.append(nn.Sequential(ConvBNAct(c_in, c_out, 3), nn.MaxPool2d(2, ceil_mode=True)))
        self.stages = nn.Sequential(*stages)
        self.init_head(widths[-1], num_classes, drop_rate, in_chans, img_size)

    def forward_features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.stages(x))


@register_model("cnn")
def cnn(**kwargs: Any) -> ConvNet:
    """Three stages, widths (16, 32, 64)."""
    return ConvNet(widths=(16, 32, 64), **kwargs)


@register_model("cnn_large")
def cnn_large(**kwargs: Any) -> ConvNet:
    """Four stages, widths (32, 64, 128, 256)."""
    return ConvNet(widths=(32, 64, 128, 256), **kwargs)
