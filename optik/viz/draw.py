"""Overlay drawing on RGB uint8 arrays with OpenCV (no matplotlib): used by ``Results.plot()`` and
the server, where drawing must be fast and thread-safe. Boxes, text, instance masks, semantic
class maps (with a legend) and panoptic segment maps.

Small images are enlarged for readable text, within bounds (:func:`enlarge_for_display`): at most
``MAX_ENLARGE`` times, never past ``MAX_DRAW_SIDE`` px through enlargement, and a side still short of
``MIN_TEXT_SIDE`` is padded (bottom / right) instead, so a 1×8000 strip gives a 128×8000 overlay.

>>> img = np.zeros((64, 64, 3), np.uint8)
>>> out = draw_text_block(img, ["cat 0.93"])
>>> out.shape, out.dtype.name               # 64 px < 128 px: enlarged 2x (see draw_text_block)
((128, 128, 3), 'uint8')
>>> draw_text_block(np.zeros((1, 8000, 3), np.uint8), ["cat 0.93"]).shape   # not 128×1024000: padded
(128, 8000, 3)
>>> color_for(0)
(255, 56, 56)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "MAX_DRAW_SIDE", "MAX_ENLARGE", "MIN_TEXT_SIDE", "PAD_VALUE", "color_for", "draw_boxes", "draw_legend", "draw_masks",
    "draw_panoptic", "draw_semantic", "draw_text_block", "enlarge_factor", "enlarge_for_display", "legend_items", "shade",
]  # fmt: skip

# Ultralytics' 20-colour palette: distinct hues, readable on photos, familiar to users.
_PALETTE_HEX = (
    "FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
    "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7",
)  # fmt: skip
_PALETTE = tuple(tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _PALETTE_HEX)

# Text is unreadable on tiny images (32 px thumbnails): those are enlarged to at least this side.
MIN_TEXT_SIDE = 128
# ... but never by more than this factor, nor past this side: a 1×4000 strip enlarged to 128 px high
# would be 512000 px wide (196 MB; issue 17). A side still short of MIN_TEXT_SIDE is padded instead.
MAX_ENLARGE = 32
MAX_DRAW_SIDE = 4096
PAD_VALUE = 114  # the letterbox grey: padding reads as "not the image"
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(index: int) -> tuple[int, int, int]:
    """Stable RGB colour for a class / track index (cycles through 20 colours).

    >>> color_for(1), color_for(21)
    ((255, 157, 151), (255, 157, 151))
    """
    return _PALETTE[int(index) % len(_PALETTE)]  # type: ignore[return-value]


def enlarge_factor(h: int, w: int, *, min_side: int = MIN_TEXT_SIDE, max_side: int = MAX_DRAW_SIDE) -> int:
    """The integer nearest-neighbour factor for drawing on an (h, w) image: the smallest that brings
    the shorter side to ``min_side``, capped at ``MAX_ENLARGE`` and so that the longer side does not
    grow past ``max_side`` (1 when the image is large enough, or too long to enlarge at all).

    >>> enlarge_factor(64, 64), enlarge_factor(32, 40), enlarge_factor(200, 300)
    (2, 4, 1)
    >>> enlarge_factor(1, 1), enlarge_factor(3, 500), enlarge_factor(1, 4000)   # capped: 32x, 4096 px, 4096 px
    (32, 8, 1)
    """
    h, w = max(1, int(h)), max(1, int(w))
    if min(h, w) >= min_side:
        return 1
    return max(1, min(math.ceil(min_side / min(h, w)), MAX_ENLARGE, int(max_side) // max(h, w)))


def enlarge_for_display(
    image: np.ndarray, factor: int | None = None, *, min_side: int = MIN_TEXT_SIDE, fill: int = PAD_VALUE
) -> tuple[np.ndarray, int]:
    """``image`` (H, W, C) enlarged ``factor`` times (default :func:`enlarge_factor`; nearest, so
    pixels stay crisp), then padded at the bottom / right with ``fill`` wherever a side is still below
    ``min_side`` (extreme aspect ratios: room for a line of text). The image keeps the top-left corner,
    so its coordinates scale by the factor alone. Returns a new array and the factor; with the default
    factor the result has at most ``max(MAX_DRAW_SIDE, H, W)`` px on a side.

    >>> out, f = enlarge_for_display(np.zeros((3, 500, 3), np.uint8))
    >>> out.shape, f                                     # 24×4000 image, padded to 128 px high
    ((128, 4000, 3), 8)
    """
    h, w = image.shape[:2]
    f = enlarge_factor(h, w, min_side=min_side) if factor is None else max(1, int(factor))
    out_h, out_w = max(h * f, min_side), max(w * f, min_side)
    if (out_h, out_w) == (h * f, w * f):
        if f == 1:
            return np.ascontiguousarray(image).copy(), 1
        return cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_NEAREST), f
    out = np.full((out_h, out_w, *image.shape[2:]), fill, image.dtype)
    out[: h * f, : w * f] = image if f == 1 else image.repeat(f, axis=0).repeat(f, axis=1)
    return out, f


def _enlarged(image: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """Validate an (H, W, 3) uint8 image; return a copy enlarged for drawing (see :func:`enlarge_for_display`)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} expects an (H, W, 3) uint8 RGB array, got {desc}")
    return enlarge_for_display(image)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    scores: Sequence[float] | None,
    names: Sequence[str],
    *,
    labels: bool = True,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with boxes ``(N, 4)`` xyxy (pixels of ``image``) and
    ``"name 0.87"`` labels in each class's colour (or ``colors[i]`` per box). Small images are
    enlarged as in :func:`draw_text_block` (boxes are scaled with them).

    >>> draw_boxes(np.zeros((200, 300, 3), np.uint8), np.array([[10, 10, 50, 60]]), [0], [0.9], ["cat"]).shape
    (200, 300, 3)
    """
    out, factor = _enlarged(image, "draw_boxes")
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thickness = max(1, round(min(h, w) / 300))
    for i, (box, k) in enumerate(zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), classes)):
        x1, y1, x2, y2 = (int(round(v * factor)) for v in box)
        color = tuple(int(c) for c in colors[i]) if colors is not None else color_for(int(k))
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
    smallest integer factor that reaches it (nearest-neighbour, so pixels stay crisp), within the
    bounds of :func:`enlarge_for_display` (at most ``MAX_ENLARGE``×, no side enlarged past
    ``MAX_DRAW_SIDE``; a side still short is padded at the bottom / right): the result is
    ``(max(H·f, 128), max(W·f, 128), 3)``. The box is clipped to the image.

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


# --- segmentation overlays --------------------------------------------------------------------
_BACKGROUND_NAMES = frozenset({"background", "_background_", "bg"})


def shade(color: tuple[int, int, int], j: int) -> tuple[int, int, int]:
    """The ``j``-th shade of ``color`` for the ``j``-th instance of one class: 0 is the colour itself,
    odd ``j`` lighter, even ``j`` darker (up to 60% toward white / black).

    >>> shade((200, 100, 0), 0), shade((200, 100, 0), 1), shade((200, 100, 0), 2)
    ((200, 100, 0), (211, 131, 51), (160, 80, 0))
    """
    if j <= 0:
        return tuple(int(c) for c in color)  # type: ignore[return-value]
    t = min(0.6, 0.2 * ((j + 1) // 2))
    target = 255 if j % 2 else 0
    return tuple(int(round(c + (target - c) * t)) for c in color)  # type: ignore[return-value]


def _upscale(a: np.ndarray, factor: int, shape: tuple[int, ...], fill: int | bool = 0) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W) map, matching :func:`_enlarged`: ``factor`` times,
    then padded with ``fill`` at the bottom / right to the drawn image's ``shape[:2]``."""
    big = a if factor == 1 else a.repeat(factor, axis=-2).repeat(factor, axis=-1)
    if big.shape[-2:] == tuple(shape[:2]):
        return big
    dtype = big.dtype if big.dtype == bool else np.result_type(big.dtype, np.min_scalar_type(fill))
    out = np.full((*big.shape[:-2], *shape[:2]), fill, dtype)
    out[..., : big.shape[-2], : big.shape[-1]] = big
    return out


def _blend(out: np.ndarray, mask: np.ndarray, color: Sequence[int], alpha: float) -> None:
    out[mask] = (out[mask].astype(np.float32) * (1 - alpha) + np.asarray(color, np.float32) * alpha).astype(np.uint8)


def _contour(out: np.ndarray, mask: np.ndarray, color: Sequence[int], thickness: int) -> None:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, found, -1, tuple(int(c) for c in color), thickness, cv2.LINE_AA)


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel farthest from the mask's border: a label there sits inside the region."""
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _label_at(out: np.ndarray, text: str, center: tuple[int, int], color: Sequence[int]) -> None:
    """``text`` in white on a filled box of ``color``, centred on ``center`` and clipped to the image."""
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x = int(min(max(0, center[0] - tw // 2), max(0, w - tw - 2)))
    y = int(min(max(th + base, center[1] + th // 2), h - 1))
    cv2.rectangle(out, (x, y - th - base), (min(w - 1, x + tw + 2), y), tuple(int(c) for c in color), -1)
    cv2.putText(out, text, (x + 1, y - base), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_masks(
    image: np.ndarray,
    masks: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    *,
    alpha: float = 0.5,
    contours: bool = True,
    boxes: np.ndarray | None = None,
    scores: Sequence[float] | None = None,
    labels: bool = True,
    color_by: str = "class",
) -> np.ndarray:
    """Return a copy of ``image`` with instance masks ``(N, H, W)`` bool (pixels of ``image``)
    blended in their class colour (``color_by="instance"``: one colour per mask, for class-less
    masks such as SAM's), outlined when ``contours``; ``boxes`` (N, 4) xyxy are drawn on top with
    ``"name 0.87"`` labels as in :func:`draw_boxes`. Larger masks are drawn first so small ones stay
    visible. Small images are enlarged as in :func:`draw_text_block` (masks nearest-neighbour).

    >>> m = np.zeros((1, 64, 64), bool); m[0, 10:30, 10:30] = True
    >>> out = draw_masks(np.zeros((64, 64, 3), np.uint8), m, [0], ["cat"])
    >>> out.shape, out[40, 40].tolist(), out[0, 0].tolist()
    ((128, 128, 3), [127, 28, 28], [0, 0, 0])
    """
    out, factor = _enlarged(image, "draw_masks")
    masks = np.asarray(masks).astype(bool).reshape(-1, *image.shape[:2])
    if color_by not in ("class", "instance"):
        raise ValueError(f"color_by must be 'class' or 'instance', got {color_by!r}")
    colors = [color_for(i if color_by == "instance" else int(k)) for i, k in enumerate(classes)]
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for i in np.argsort(-masks.sum(axis=(1, 2)), kind="stable"):
        big = _upscale(masks[i], factor, out.shape, False)  # one at a time: N full-size masks add up
        _blend(out, big, colors[i], alpha)
        if contours:
            _contour(out, big, colors[i], thickness)
    if boxes is not None and len(masks):
        out = draw_boxes(out, np.asarray(boxes, np.float64).reshape(-1, 4) * factor, classes, scores, names,
                         labels=labels, colors=colors)
    return out


def legend_items(
    label_map: np.ndarray, names: Sequence[str], *, ignore_index: int = 255
) -> list[tuple[str, tuple[int, int, int] | None]]:
    """``(name, colour)`` of every class present in a class map, by class index; ``None`` colour
    for a class named "background" (left untinted by :func:`draw_semantic`).

    >>> legend_items(np.array([[0, 2], [2, 255]]), ["background", "cat", "dog"])
    [('background', None), ('dog', (255, 112, 31))]
    """
    present = [int(k) for k in np.unique(label_map) if k != ignore_index and k >= 0]
    return [(_class_name(names, k), None if _is_background(names, k) else color_for(k)) for k in present]


def _class_name(names: Sequence[str], k: int) -> str:
    return str(names[k]) if 0 <= k < len(names) else str(k)


def _is_background(names: Sequence[str], k: int) -> bool:
    return _class_name(names, k).lower() in _BACKGROUND_NAMES


def draw_semantic(
    image: np.ndarray,
    label_map: np.ndarray,
    names: Sequence[str],
    *,
    alpha: float = 0.5,
    legend: bool = True,
    ignore_index: int = 255,
    contours: bool = True,
) -> np.ndarray:
    """Return a copy of ``image`` with a semantic class map ``(H, W)`` int blended in class colours
    (a class named "background" and ``ignore_index`` pixels are left as they are), region outlines
    when ``contours``, and a legend of the present classes (top-right, see :func:`draw_legend`).
    Small images are enlarged as in :func:`draw_text_block` (the map nearest-neighbour).

    >>> lab = np.zeros((64, 64), np.int64); lab[:, 32:] = 1
    >>> out = draw_semantic(np.zeros((64, 64, 3), np.uint8), lab, ["background", "road"], legend=False)
    >>> out.shape, out[100, 100].tolist(), out[100, 10].tolist()
    ((128, 128, 3), [127, 78, 75], [0, 0, 0])
    """
    out, factor = _enlarged(image, "draw_semantic")
    label_map = np.asarray(label_map)
    if label_map.shape != image.shape[:2]:
        raise ValueError(f"draw_semantic: label map {label_map.shape} does not match the image {image.shape[:2]}")
    big = _upscale(label_map, factor, out.shape, ignore_index)
    items = legend_items(label_map, names, ignore_index=ignore_index)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    present = [int(k) for k in np.unique(label_map) if k != ignore_index and k >= 0]
    for k in present:
        if _is_background(names, k):
            continue
        region = big == k
        _blend(out, region, color_for(k), alpha)
        if contours:
            _contour(out, region, color_for(k), thickness)
    return draw_legend(out, items) if legend and items else out


def draw_legend(
    image: np.ndarray,
    items: Sequence[tuple[str, tuple[int, int, int] | None]],
    *,
    corner: str = "top-right",
    scale: float | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with a legend box: one row per ``(name, colour)`` — a filled swatch
    in exactly ``colour`` (a hollow grey one for ``None``) and the name in white, on a darkened box
    in ``corner`` ("top-right" or "top-left"). Small images are enlarged as in :func:`draw_text_block`.

    >>> out = draw_legend(np.zeros((200, 300, 3), np.uint8), [("road", (255, 56, 56))])
    >>> out.shape, bool(((out == (255, 56, 56)).all(-1)).any())
    ((200, 300, 3), True)
    """
    out, _ = _enlarged(image, "draw_legend")
    if not items:
        return out
    if corner not in ("top-right", "top-left"):
        raise ValueError(f"corner must be 'top-right' or 'top-left', got {corner!r}")
    h, w = out.shape[:2]
    scale = scale or max(0.35, min(h, w) / 900)
    sizes = [cv2.getTextSize(str(name), _FONT, scale, 1) for name, _ in items]
    pad = max(2, int(6 * scale))
    row = max(th + base for (_, th), base in sizes) + pad
    swatch = row - pad
    box_w = min(w, 3 * pad + swatch + max(tw for (tw, _), _ in sizes))
    box_h = min(h, row * len(items) + pad)
    x0 = w - box_w if corner == "top-right" else 0
    out[0:box_h, x0 : x0 + box_w] = (out[0:box_h, x0 : x0 + box_w].astype(np.float32) * 0.4).astype(np.uint8)
    for i, ((name, color), ((_, th), base)) in enumerate(zip(items, sizes)):
        y = pad + i * row
        if y + swatch > h:
            break
        sx = x0 + pad
        if color is None:
            cv2.rectangle(out, (sx, y), (sx + swatch - 1, y + swatch - 1), (160, 160, 160), 1)
        else:
            out[y : y + swatch, sx : sx + swatch] = color  # exact colour: no anti-aliasing on the swatch
        cv2.putText(out, str(name), (sx + swatch + pad, y + th), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_panoptic(
    image: np.ndarray,
    panoptic: np.ndarray,
    segments: Sequence[dict],
    names: Sequence[str],
    *,
    alpha: float = 0.5,
    contours: bool = True,
    labels: bool = True,
) -> np.ndarray:
    """Return a copy of ``image`` with a panoptic segment-id map ``(H, W)`` (0 = void) drawn:
    stuff segments in their class colour, thing segments in per-instance shades of it (see
    :func:`shade`), white segment outlines when ``contours`` (they separate touching instances of
    one class), and ``"name 0.87"`` labels inside each segment. ``segments``: ``[{"id", "label",
    "isthing", "score"?}]``. Small images are enlarged as in :func:`draw_text_block`.

    >>> pan = np.zeros((64, 64), np.int64); pan[:, :32] = 1; pan[10:20, 40:50] = 2
    >>> segs = [{"id": 1, "label": 1, "isthing": False}, {"id": 2, "label": 0, "isthing": True, "score": 0.9}]
    >>> draw_panoptic(np.zeros((64, 64, 3), np.uint8), pan, segs, ["circle", "sky"]).shape
    (128, 128, 3)
    """
    out, factor = _enlarged(image, "draw_panoptic")
    panoptic = np.asarray(panoptic)
    if panoptic.shape != image.shape[:2]:
        raise ValueError(f"draw_panoptic: segment map {panoptic.shape} does not match the image {image.shape[:2]}")
    big = _upscale(panoptic, factor, out.shape, 0)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    seen: dict[int, int] = {}
    drawn: list[tuple[np.ndarray, str, tuple[int, int, int]]] = []
    for s in segments:
        k = int(s["label"])
        region = big == int(s["id"])
        if not region.any():
            continue
        if s.get("isthing", True):
            color = shade(color_for(k), seen.get(k, 0))
            seen[k] = seen.get(k, 0) + 1
        else:
            color = color_for(k)
        _blend(out, region, color, alpha)
        score = s.get("score")
        drawn.append((region, _class_name(names, k) + (f" {float(score):.2f}" if score is not None else ""), color))
    if contours:
        for region, _, _ in drawn:
            _contour(out, region, (255, 255, 255), thickness)
    if labels:
        for region, text, color in drawn:
            _label_at(out, text, _interior_point(region), color)
    return out
