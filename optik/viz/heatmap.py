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

from collections.abc import Sequence

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
    least 128 px (nearest: pixels stay crisp); ``title`` lines are written on the first tile.

    The enlargement is bounded like every overlay's (:func:`optik.viz.draw.enlarge_for_display`): at
    most ``MAX_ENLARGE``×, and never so that the panel grows past ``MAX_DRAW_SIDE`` px; a tile side
    still below 128 px is padded with white (a 3×500 image: a 128×3016 panel, not 129×64516).
    """
    from optik.viz.draw import MAX_DRAW_SIDE, draw_text_block, enlarge_factor, enlarge_for_display

    h, w = image.shape[:2]
    # each tile's long side ≤ (MAX_DRAW_SIDE - gaps) / 3, so three of them side by side fit in MAX_DRAW_SIDE
    f = enlarge_factor(h, w, min_side=PANEL_MIN_SIDE, max_side=(MAX_DRAW_SIDE - 2 * _GAP) // 3)
    tiles = [enlarge_for_display(t, f, min_side=PANEL_MIN_SIDE, fill=255)[0] for t in (image, colorize(heat, cmap), overlay)]
    if title:
        tiles[0] = draw_text_block(tiles[0], list(title))
    gap = np.full((tiles[0].shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
