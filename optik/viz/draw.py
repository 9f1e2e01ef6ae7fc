"""Overlay drawing on RGB uint8 arrays with OpenCV (no matplotlib): used by ``Results.plot()`` and
the server, where drawing must be fast and thread-safe.

>>> img = np.zeros((64, 64, 3), np.uint8)
>>> out = draw_text_block(img, ["cat 0.93"])
>>> out.shape, out.dtype.name               # 64 px < 128 px: enlarged 2x (see draw_text_block)
((128, 128, 3), 'uint8')
>>> color_for(0)
(255, 56, 56)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["MIN_TEXT_SIDE", "color_for", "draw_boxes", "draw_text_block"]

# Ultralytics' 20-colour palette: distinct hues, readable on photos, familiar to users.
_PALETTE_HEX = (
    "FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
    "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7",
)  # fmt: skip
_PALETTE = tuple(tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _PALETTE_HEX)

# Text is unreadable on tiny images (32 px thumbnails): those are enlarged to at least this side.
MIN_TEXT_SIDE = 128
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(index: int) -> tuple[int, int, int]:
    """Stable RGB colour for a class / track index (cycles through 20 colours).

    >>> color_for(1), color_for(21)
    ((255, 157, 151), (255, 157, 151))
    """
    return _PALETTE[int(index) % len(_PALETTE)]  # type: ignore[return-value]


def _enlarged(image: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """Validate an (H, W, 3) uint8 image; copy it, enlarged by the smallest integer factor that
    brings its shorter side to ``MIN_TEXT_SIDE`` (nearest-neighbour, so pixels stay crisp)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} expects an (H, W, 3) uint8 RGB array, got {desc}")
    h, w = image.shape[:2]
    factor = math.ceil(MIN_TEXT_SIDE / min(h, w)) if min(h, w) < MIN_TEXT_SIDE else 1
    if factor > 1:
        return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST), factor
    return np.ascontiguousarray(image).copy(), 1


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    scores: Sequence[float] | None,
    names: Sequence[str],
    *,
    labels: bool = True,
) -> np.ndarray:
    """Return a copy of ``image`` with boxes ``(N, 4)`` xyxy (pixels of ``image``) and
    ``"name 0.87"`` labels in each class's colour. Small images are enlarged as in
    :func:`draw_text_block` (boxes are scaled with them).

    >>> draw_boxes(np.zeros((200, 300, 3), np.uint8), np.array([[10, 10, 50, 60]]), [0], [0.9], ["cat"]).shape
    (200, 300, 3)
    """
    out, factor = _enlarged(image, "draw_boxes")
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thickness = max(1, round(min(h, w) / 300))
    for i, (box, k) in enumerate(zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), classes)):
        x1, y1, x2, y2 = (int(round(v * factor)) for v in box)
        color = color_for(int(k))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if not labels:
            continue
        text = str(names[int(k)]) + (f" {float(scores[i]):.2f}" if scores is not None else "")
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2  # inside the box at the top edge
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 2), ty), color, -1)
        cv2.putText(out, text, (x1 + 1, ty - base), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_text_block(
    image: np.ndarray,
    lines: Sequence[str],
    *,
    origin: tuple[int, int] = (4, 4),
    scale: float | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with ``lines`` written in white on a semi-opaque dark box.

    image: (H, W, 3) uint8 RGB. origin: (x, y) of the box's top-left corner, in pixels of the input
    image. scale: OpenCV font scale; ``None`` adapts it to the image size (0.4 at 128 px, 1.0 at
    640 px on the shorter side).

    Images whose shorter side is below ``MIN_TEXT_SIDE`` (128 px) are first enlarged by the
    smallest integer factor that reaches it (nearest-neighbour, so pixels stay crisp); the result
    is then ``(H·f, W·f, 3)``. The box is clipped to the image.

    >>> draw_text_block(np.zeros((200, 300, 3), np.uint8), ["top1: cat"]).shape
    (200, 300, 3)
    """
    out, factor = _enlarged(image, "draw_text_block")
    if not lines:
        return out
    h, w = out.shape[:2]
    if scale is None:
        scale = max(0.4, min(h, w) / 640)
    thickness = max(1, int(scale * 1.5))
    pad = max(2, int(4 * scale))

    sizes = [cv2.getTextSize(str(line), _FONT, scale, thickness) for line in lines]
    line_h = max(th + base for (_, th), base in sizes) + pad
    box_w = max(tw for (tw, _), _ in sizes) + 2 * pad
    box_h = line_h * len(lines) + pad
    x0, y0 = int(origin[0]) * factor, int(origin[1]) * factor
    x1, y1 = min(w, x0 + box_w), min(h, y0 + box_h)
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))

    # Darken the box region (alpha 0.6 toward black) so white text reads on any background.
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = (region.astype(np.float32) * 0.4).astype(np.uint8)
    for i, ((_, th), base) in enumerate(sizes):
        baseline_y = y0 + pad + i * line_h + th
        cv2.putText(out, str(lines[i]), (x0 + pad, baseline_y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
