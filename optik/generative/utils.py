"""Image helpers of the generative runners: model space → uint8, image grids.

>>> x = torch.zeros(4, 1, 8, 8)                       # model space: [-1, 1]
>>> to_uint8(x).unique().tolist()
[128]
>>> make_grid_image(to_uint8(x), nrow=2).shape          # RGB, 2 px padding
(22, 22, 3)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """``[-1, 1]`` float ``(B, C, H, W)`` → uint8 ``[0, 255]`` (clamped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def make_grid_image(x: Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 ``(B, C, H, W)`` (C = 1 or 3) → one ``H×W×3`` uint8 array, ``nrow`` images per row."""
    from torchvision.utils import make_grid

    if x.dtype != torch.uint8:
        x = to_uint8(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    grid = make_grid(x, nrow=max(1, nrow), padding=padding, pad_value=pad_value)
    return grid.permute(1, 2, 0).contiguous().numpy()


def save_grid(x: Tensor, path, nrow: int = 8, upscale: int = 1) -> None:
    """Write a grid PNG of ``x`` (model space or uint8); ``upscale`` enlarges tiny images (nearest)."""
    from pathlib import Path

    from PIL import Image

    img = Image.fromarray(make_grid_image(x, nrow))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
