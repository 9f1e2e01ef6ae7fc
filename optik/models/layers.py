"""Building blocks shared by the native zoo (the ``timm.layers`` of optik): import, never copy.

Every native classifier subclasses :class:`ImageClassifier`, so they all answer the same questions:
``forward_features(x) -> (B, num_features)``, ``head`` (the classifier), ``get_classifier()`` and
``default_cfg`` (the normalisation they expect).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn


def to_2tuple(size: int | tuple[int, int]) -> tuple[int, int]:
    """``32 -> (32, 32)``; a ``(H, W)`` pair passes through."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def data_config(in_chans: int, img_size: int | tuple[int, int] | None) -> dict[str, Any]:
    """ImageNet normalisation for ``in_chans`` channels (grey: the mean of the RGB values).

    >>> data_config(1, 32)["mean"]                                  # doctest: +SKIP
    (0.449,)
    """

    def per_channel(rgb: tuple[float, ...]) -> tuple[float, ...]:
        if in_chans == len(rgb):
            return tuple(rgb)
        return (round(sum(rgb) / len(rgb), 4),) * in_chans

    return {
        "mean": per_channel(IMAGENET_DEFAULT_MEAN),
        "std": per_channel(IMAGENET_DEFAULT_STD),
        "input_size": None if img_size is None else (in_chans, *to_2tuple(img_size)),
        "interpolation": "bilinear",
    }


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, 'same' padding) → BatchNorm2d → activation; ``act=None`` leaves it linear.

    ``(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act())  # not in-place: keeps forward hooks (Grad-CAM) safe
        super().__init__(*layers)


class Mlp(nn.Module):
    """Transformer feed-forward: Linear → GELU → Dropout → Linear → Dropout. ``(..., dim) -> (..., dim)``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def classifier_head(num_features: int, num_classes: int, drop_rate: float = 0.0) -> nn.Module:
    """Dropout → Linear, ``(B, num_features) -> (B, num_classes)``; ``num_classes=0`` gives Identity
    (the model then returns its pooled features)."""
    if num_classes == 0:
        return nn.Identity()
    linear = nn.Linear(num_features, num_classes)
    return nn.Sequential(nn.Dropout(drop_rate), linear) if drop_rate > 0 else linear


class ImageClassifier(nn.Module):
    """Base of every native classifier: subclasses build ``self.head`` and define ``forward_features``.

    Attributes:
        num_features: width of ``forward_features``' output.
        head: the classifier, ``(B, num_features) -> (B, num_classes)``.
        default_cfg: ``{"mean", "std", "input_size", "interpolation"}`` the model expects.
    """

    # No class-level annotations: torch.jit.script reads them and cannot resolve these types.

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, num_features)`` pooled features."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, num_classes)`` logits."""
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The head, named as timm names it (so adapters and native models answer alike)."""
        return self.head

    def init_head(
        self, num_features: int, num_classes: int, drop_rate: float, in_chans: int, img_size: Any
    ) -> None:
        """The tail every native ``__init__`` ends with: head, data config, weight init."""
        self.num_features = num_features
        self.head = classifier_head(num_features, num_classes, drop_rate)
        self.default_cfg = data_config(in_chans, img_size)
        self.apply(init_weights)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs, truncated-normal linears, unit norms; apply with ``model.apply(init_weights)``."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def global_avg_pool(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, C)`` mean over space (exports to ONNX ReduceMean/GlobalAveragePool)."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


__all__ = [
    "ConvBNAct",
    "ImageClassifier",
    "Mlp",
    "classifier_head",
    "data_config",
    "global_avg_pool",
    "init_weights",
    "to_2tuple",
]
