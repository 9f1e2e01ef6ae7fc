"""Multi-layer perceptron on flattened pixels — the baseline every image model has to beat
(Rumelhart, Hinton & Williams 1986, "Learning representations by back-propagating errors").

The image is flattened, so the input size is fixed at construction: ``img_size`` is required.

>>> model = create("mlp", num_classes=10, in_chans=1, img_size=28)   # doctest: +SKIP
>>> model(torch.zeros(2, 1, 28, 28)).shape                           # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import ImageClassifier, to_2tuple
from optik.models.registry import register_model


class MLP(ImageClassifier):
    """Flatten → [Linear → GELU → Dropout] × len(hidden) → head.

    Args:
        img_size: input side (or ``(H, W)``); inputs must be exactly this size.
        hidden: widths of the hidden layers; ``num_features = hidden[-1]``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int],
        num_classes: int = 1000,
        in_chans: int = 3,
        hidden: tuple[int, ...] = (256, 128),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = to_2tuple(img_size)
        widths = (in_chans * h * w, *hidden)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(d_in, d_out), nn.GELU(), nn.Dropout(drop_rate)]
        self.body = nn.Sequential(*layers)
        self.init_head(widths[-1], num_classes, drop_rate, in_chans, (h, w))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(torch.flatten(x, 1))


def _mlp(hidden: tuple[int, ...], img_size: int | tuple[int, int] | None, **kwargs: Any) -> MLP:
    if img_size is None:
        raise ModelError("model 'mlp' flattens the image, so it needs img_size (e.g. imgsz=32)")
    return MLP(img_size, hidden=hidden, **kwargs)


@register_model("mlp")
def mlp(img_size: int | tuple[int, int] | None = None, **kwargs: Any) -> MLP:
    """Two hidden layers (256, 128)."""
    return _mlp((256, 128), img_size, **kwargs)


@register_model("mlp_large")
def mlp_large(img_size: int | tuple[int, int] | None = None, **kwargs: Any) -> MLP:
    """Three hidden layers (1024, 512, 256)."""
    return _mlp((1024, 512, 256), img_size, **kwargs)
