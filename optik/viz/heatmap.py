"""Heatmap rendering for explanations: colourise a [0, 1] map with a matplotlib colormap, blend it
over the image, and lay out an ``image | heatmap | overlay`` panel.

Only ``matplotlib.colormaps`` is used (a lookup table, no figure), so this is cheap and thread-safe.

>>> img = np.zeros((32, 48, 3), np.uint8)
>>> heat = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
>>> overlay_heatmap(img, heat, alpha=0.5).shape
(32, 48, 3)
>>> heatmap_panel(img, heat, overlay_heatmap(img, heat)).shape  # 3 tiles, enlarged 4x to 128 px high
(128, 592, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["colorize", "heatmap_panel", "overlay_heatmap"]

PANEL_MIN_SIDE = 128  # tiny (32 px) images are enlarged so the panel is readable
_GAP = 8  # px of white between the panel's tiles


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) float map in [0, 1] → (H, W, 3) uint8 RGB through a matplotlib colormap.

    >>> colorize(np.array([[0.0, 1.0]], np.float32)).tolist()   # jet: dark blue → dark red
    [[[0, 0, 127], [127, 0, 0]]]
    """
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)
    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    return lut[np.rint(h * 255.0).astype(np.intp)]


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend the colourised ``heat`` (H, W) over ``image`` (H, W, 3) uint8: ``(1 - α)·image + α·colour``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"overlay_heatmap expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match the image {image.shape[:2]}")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(heat, cmap).astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def heatmap_panel(
    image: np.ndarray, heat: np.ndarray, overlay: np.ndarray, title: Sequence[str] = (), cmap: str = "jet"
) -> np.ndarray:
    """``image | heatmap | overlay`` side by side (white gaps), enlarged so the shorter side is at
    least 128 px (nearest: pixels stay crisp); ``title`` lines are written on the first tile."""
    h, w = image.shape[:2]
    f = math.ceil(PANEL_MIN_SIDE / min(h, w)) if min(h, w) < PANEL_MIN_SIDE else 1
    tiles = [image, colorize(heat, cmap), overlay]
    if f > 1:
        tiles = [cv2.resize(t, (w * f, h * f), interpolation=cv2.INTER_NEAREST) for t in tiles]
    if title:
        from optik.viz.draw import draw_text_block

        tiles[0] = draw_text_block(tiles[0], list(title))
    gap = np.full((h * f, _GAP, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
