"""Patch (dense) features: the backbone's last spatial map or its patch tokens, one ``D``-vector per location, for
``optik embed predict patches=true`` (DINO-style dense descriptors for matching, segmentation probes, retrieval).

- timm models: ``forward_features`` — a CNN's ``(B, C, h, w)`` map becomes ``(B, h·w, C)``; a ViT's tokens lose
  their prefix (class / register) tokens: ``(B, h·w, D)`` in raster order.
- native zoo models: the output of their ``stages`` (the map their head pools).

>>> import timm
>>> net = timm.create_model("resnet10t", num_classes=0)
>>> patch_features(net, torch.zeros(2, 3, 64, 64))[0].shape, patch_features(net, torch.zeros(2, 3, 64, 64))[1]
(torch.Size([2, 4, 512]), (2, 2))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optik.errors import ConfigError


def _map_to_tokens(f: Tensor) -> tuple[Tensor, tuple[int, int]]:
    b, c, h, w = f.shape
    return f.flatten(2).transpose(1, 2), (h, w)


@torch.no_grad()
def patch_features(backbone: nn.Module, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """``(B, 3, H, W)`` → ``((B, h·w, D) patch features, (h, w) grid)`` of ``backbone`` (see the module docstring).

    Raises:
        ConfigError: the backbone exposes no spatial map (a plain MLP, an ``hf:`` model, an exported file).
    """
    if type(backbone).__module__.startswith("timm.") and hasattr(backbone, "forward_features"):
        f = backbone.forward_features(x)
        if f.ndim == 4:
            if f.shape[1] != getattr(backbone, "num_features", f.shape[1]) and f.shape[-1] == backbone.num_features:
                f = f.permute(0, 3, 1, 2)  # NHWC models (ConvNeXt-style stages that keep channels last)
            return _map_to_tokens(f)
        if f.ndim == 3:
            tokens = f[:, int(getattr(backbone, "num_prefix_tokens", 0)) :]
            grid = getattr(getattr(backbone, "patch_embed", None), "dynamic_feat_size", None)
            grid = grid(x.shape[-2:]) if callable(grid) else getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
            if grid is None or grid[0] * grid[1] != tokens.shape[1]:
                side = int(math.isqrt(tokens.shape[1]))
                grid = (side, tokens.shape[1] // max(side, 1))
            return tokens, (int(grid[0]), int(grid[1]))
    stages = getattr(backbone, "stages", None)
    if isinstance(stages, nn.Module):
        stem = getattr(backbone, "stem", None)
        f = stages(stem(x) if isinstance(stem, nn.Module) else x)
        if f.ndim == 4:
            return _map_to_tokens(f)
    raise ConfigError(f"key 'patches': {type(backbone).__name__} exposes no spatial feature map (timm models and the native "
                      "CNNs do; an hf: or exported model does not)")  # fmt: skip


__all__ = ["patch_features"]
