"""Built-in data that needs no download: procedural shapes on textured backgrounds, and
scikit-learn's bundled 8x8 digits.

Everything is seeded and per-item: image `i` of `shapes_classification` depends only on
`(seed, i)`, so a dataset of 100 is a prefix of the dataset of 1000 with the same seed.
`random_background` and `draw_shape` are the building blocks for later detection/segmentation
scenes (`draw_shape` returns the shape's mask).

>>> x, y, names = shapes_classification(n=8, size=32, classes=4)
>>> x.shape, x.dtype, sorted(y.tolist()), names
((8, 32, 32, 3), dtype('uint8'), [0, 0, 1, 1, 2, 2, 3, 3], ['circle', 'square', 'triangle', 'star'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from optik.errors import ConfigError

SHAPE_KINDS = ("circle", "square", "triangle", "star", "pentagon", "hexagon", "cross", "ellipse")

_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn at 1/16 px precision
_SS = 4  # supersampling factor for antialiased edges
_ELLIPSE_MINOR = 0.55  # ellipse minor/major axis ratio
_STAR_INNER = 0.45  # star inner/outer radius ratio
_CROSS_ARM = 0.33  # cross arm half-width / radius


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (y, x) / size as float32 (H, W) arrays, shared read-only."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _texture(rng: np.random.Generator, size: int, d: float) -> np.ndarray:
    """One zero-mean texture layer (H, W) in about [-1, 1]; more cycles as `d` grows."""
    kind = rng.integers(4)
    yy, xx = _grid(size)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    cycles = 1.0 + rng.uniform(0.5, 1.0) * 8.0 * d
    phase = rng.uniform(0, 2 * math.pi)
    if kind == 0:  # smooth gradient only
        return (u - u.mean()) * 2.0
    if kind == 1:  # stripes, soft or hard
        s = np.sin(2 * math.pi * cycles * u + phase)
        return np.sign(s) if rng.random() < 0.5 else s
    if kind == 2:  # (rotated) checkerboard
        return np.sign(np.sin(math.pi * cycles * u + phase) * np.sin(math.pi * cycles * v + phase))
    # smooth value noise: a coarse random grid upsampled
    cells = int(2 + round(10 * d * rng.uniform(0.5, 1.0)))
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def random_background(rng: np.random.Generator, size: int, difficulty: float) -> np.ndarray:
    """A (size, size, 3) uint8 background: a two-colour gradient plus one texture (stripes,
    checker, value noise or none) whose contrast and frequency grow with `difficulty` in [0, 1].

    >>> random_background(np.random.default_rng(0), 16, 0.5).shape
    (16, 16, 3)
    """
    d = float(np.clip(difficulty, 0.0, 1.0))
    yy, xx = _grid(size)
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-1, 1, 3) * (40 + 80 * d), 0, 255).astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    amp = (10 + 70 * d) * rng.uniform(0.5, 1.0)
    colour = rng.uniform(-1, 1, 3).astype(np.float32)
    colour /= max(float(np.abs(colour).max()), 1e-6)
    img += _texture(rng, size, d)[..., None] * (amp * colour)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (K, 2) float x, y of a polygonal shape kind."""
    if kind == "star":
        k = np.arange(10)
        rad = np.where(k % 2 == 0, r, r * _STAR_INNER)
        a = angle - math.pi / 2 + k * math.pi / 5
    elif kind == "cross":
        w = _CROSS_ARM * r
        local = np.array(
            [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w),
             (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        )  # fmt: skip
        c, s = math.cos(angle), math.sin(angle)
        x = local[:, 0] * c - local[:, 1] * s
        y = local[:, 0] * s + local[:, 1] * c
        return np.stack([cx + x, cy + y], axis=1)
    else:
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[kind]
        k = np.arange(n)
        rad = np.full(n, r)
        # angle 0: triangle/pentagon point up, square axis-aligned
        a = angle - math.pi / 2 + (math.pi / 4 if n == 4 else 0.0) + k * 2 * math.pi / n
    return np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], axis=1)


def draw_shape(
    canvas: np.ndarray,
    kind: str,
    center: tuple[float, float],
    radius: float,
    angle: float,
    color: tuple[int, int, int],
) -> np.ndarray:
    """Draw a filled, antialiased shape into `canvas` in place and return its mask.

    canvas: (H, W, C) or (H, W) uint8. center: (x, y) in pixels (sub-pixel allowed).
    radius: circumradius in pixels (ellipse: semi-major axis). angle: rotation in radians.
    color: one value per channel. Returns a bool (H, W) mask of pixels at least half covered
    (the shape may be partly or wholly off the canvas).

    >>> canvas = np.zeros((32, 32, 3), np.uint8)
    >>> mask = draw_shape(canvas, "square", (16, 16), 8, 0.0, (255, 0, 0))  # side 8*sqrt(2)
    >>> mask.shape, int(mask.sum()), canvas[16, 16].tolist()
    ((32, 32), 121, [255, 0, 0])
    """
    if kind not in SHAPE_KINDS:
        raise ConfigError(f"unknown shape kind {kind!r}; expected one of {', '.join(SHAPE_KINDS)}")
    if canvas.dtype != np.uint8 or canvas.ndim not in (2, 3):
        raise ValueError(
            f"canvas must be uint8 (H, W) or (H, W, C), got {canvas.dtype} {canvas.shape}"
        )
    h, w = canvas.shape[:2]
    mask = np.zeros((h, w), bool)
    cx, cy = float(center[0]), float(center[1])
    r = float(radius)
    # Draw only in the shape's bounding box: cheap on large scenes.
    x0, x1 = max(math.floor(cx - r) - 2, 0), min(math.ceil(cx + r) + 3, w)
    y0, y1 = max(math.floor(cy - r) - 2, 0), min(math.ceil(cy + r) + 3, h)
    if x0 >= x1 or y0 >= y1 or r <= 0:
        return mask
    # Antialiasing by supersampling: cv2's own LINE_AA fill grows shapes by ~0.5 px per side,
    # so we rasterize hard edges at _SS x resolution and average down to true pixel coverage.
    hi = np.zeros(((y1 - y0) * _SS, (x1 - x0) * _SS), np.uint8)
    one = 1 << _SHIFT

    def hires(x: float, y: float) -> tuple[float, float]:  # pixel centres stay centres
        return (x - x0 + 0.5) * _SS - 0.5, (y - y0 + 0.5) * _SS - 0.5

    hx, hy = hires(cx, cy)
    pt = (round(hx * one), round(hy * one))
    # cv2 also fills sub-pixels the edge merely touches: pull the outline in by half a sub-pixel.
    rh = max(r * _SS - 0.5, 0.0)
    if kind == "circle":
        cv2.circle(hi, pt, round(rh * one), 255, -1, cv2.LINE_8, _SHIFT)
    elif kind == "ellipse":
        axes = (round(rh * one), round(max(r * _ELLIPSE_MINOR * _SS - 0.5, 0.0) * one))
        cv2.ellipse(hi, pt, axes, math.degrees(angle), 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
    else:
        pts = _polygon(kind, hx, hy, rh, angle)
        cv2.fillPoly(hi, [np.round(pts * one).astype(np.int32)], 255, cv2.LINE_8, _SHIFT)
    alpha = cv2.resize(hi, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    roi = canvas[y0:y1, x0:x1]
    a = alpha.astype(np.float32) / 255.0
    col = np.asarray(color, np.float32)
    if roi.ndim == 3:
        a = a[..., None]
    else:
        col = col.reshape(-1)[0]
    roi[...] = np.clip(np.rint(roi * (1.0 - a) + col * a), 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1] = alpha >= 128
    return mask


def _shape_colour(rng: np.random.Generator, bg_mean: np.ndarray, d: float) -> tuple[int, int, int]:
    """A colour whose largest channel differs from the local background by ~200 (easy) to ~60."""
    contrast = (200.0 - 140.0 * d) * rng.uniform(0.85, 1.15)
    direction = rng.uniform(0.2, 1.0, 3)
    direction /= direction.max()
    sign = np.where(bg_mean < 128, 1.0, -1.0)  # move towards the far end so clipping costs little
    return tuple(int(v) for v in np.clip(np.rint(bg_mean + sign * direction * contrast), 0, 255))


def _class_names(classes: int | Sequence[str]) -> list[str]:
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 1 <= classes <= len(SHAPE_KINDS):
            raise ConfigError(f"classes={classes}: must be 1..{len(SHAPE_KINDS)} (or shape names)")
        return list(SHAPE_KINDS[: int(classes)])
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    names = [str(c) for c in classes]
    bad = [c for c in names if c not in SHAPE_KINDS]
    if bad or not names or len(set(names)) != len(names):
        raise ConfigError(
            f"classes={','.join(names)}: expected distinct names from {', '.join(SHAPE_KINDS)}"
        )
    return names


def _check_scene_args(n: int, size: int, difficulty: float, seed: int, min_size: int = 16) -> None:
    """The arguments every scene generator shares: a ConfigError naming the bad one."""
    if n < 0 or size < min_size:
        raise ConfigError(f"need n >= 0 and size >= {min_size}, got n={n}, size={size}")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError(f"difficulty={difficulty}: must be in [0, 1]")
    if seed < 0:
        raise ConfigError(f"seed={seed}: must be >= 0")


def shapes_classification(
    n: int = 1000,
    size: int = 64,
    classes: int | Sequence[str] = 4,
    difficulty: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One shape per image on a textured background; the label is the shape kind.

    Returns images (n, size, size, 3) uint8, labels (n,) int64 and the class names. Classes are
    balanced (each block of len(classes) consecutive images holds every class once, shuffled).
    `difficulty` in [0, 1] lowers shape/background contrast and raises texture, noise and size
    variation. Image `i` depends only on (seed, i).

    >>> x, y, names = shapes_classification(n=6, size=16, classes=["circle", "star"])
    >>> sorted(y.tolist())
    [0, 0, 0, 1, 1, 1]
    """
    names = _class_names(classes)
    _check_scene_args(n, size, difficulty, seed, min_size=8)
    k, d = len(names), float(difficulty)
    labels = np.empty(n, np.int64)
    for b in range(0, n, k):
        perm = np.random.default_rng([seed, 1, b // k]).permutation(k)
        labels[b : b + k] = perm[: n - b]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        img = random_background(rng, size, d)
        r = size * rng.uniform(0.22 - 0.08 * d, 0.38)
        margin = min(r * (1.0 - 0.3 * d), size / 2)  # hard images may crop the shape a little
        cx, cy = rng.uniform(margin, size - margin, 2)
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r, size)) + 1
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r, size)) + 1
        colour = _shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(0), d)
        draw_shape(img, names[labels[i]], (cx, cy), r, rng.uniform(0, 2 * math.pi), colour)
        sigma = 2.0 + 18.0 * d
        noisy = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return images, labels, names


def shapes_multilabel(
    n: int = 1000,
    size: int = 64,
    classes: int | Sequence[str] = 4,
    difficulty: float = 0.5,
    seed: int = 0,
    *,
    return_masks: bool = False,
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Multi-label images: 0..k shapes of distinct kinds per image; the label set is the kinds present.

    Each of the k classes is present independently with probability 1/2 (every subset, the empty one
    included, equally likely). The m present shapes sit in m distinct cells of a ceil(sqrt(m))² grid,
    each wholly inside its own cell, so none overlaps another and none is cut by the border: every
    labelled shape is fully visible, and nothing unlabelled is drawn. Image `i` depends only on
    (seed, i) (its own random stream, not the other generators').

    Returns images (n, size, size, 3) uint8, per-image label sets (sorted int64 arrays, possibly empty)
    and the class names; with `return_masks=True` also a list of (m, size, size) bool masks per image,
    in label-set order (the test of "label set = drawn shapes").

    >>> x, labels, names = shapes_multilabel(n=4, size=32, classes=3, seed=5)
    >>> x.shape, [lab.tolist() for lab in labels], names
    ((4, 32, 32, 3), [[], [0], [0, 2], [1]], ['circle', 'square', 'triangle'])
    """
    names = _class_names(classes)
    _check_scene_args(n, size, difficulty, seed)
    k, d = len(names), float(difficulty)
    images = np.empty((n, size, size, 3), np.uint8)
    label_sets: list[np.ndarray] = []
    all_masks: list[np.ndarray] = []
    for i in range(n):
        rng = np.random.default_rng([seed, 6, i])  # stream 6: not the classification/detection/segmentation ones
        img = random_background(rng, size, d)
        present = np.flatnonzero(rng.random(k) < 0.5)
        m = len(present)
        g = max(1, math.ceil(math.sqrt(m)))
        cell = size / g
        cells = rng.permutation(g * g)[:m]
        masks = []
        for label, c in zip(present.tolist(), cells.tolist()):
            # circumradius 0.25..0.4 of the cell (at most 0.3 of the image), centre jittered so the shape
            # stays 1 px inside its cell: shapes never touch, whatever the size and class count
            r = min(cell * rng.uniform(0.25, 0.4), 0.3 * size)
            row, col = divmod(c, g)
            jitter = max(cell / 2 - r - 1, 0.0)
            # draw_shape puts pixel j's centre at j: the image spans [-0.5, size - 0.5]
            cx = (col + 0.5) * cell - 0.5 + rng.uniform(-1, 1) * jitter
            cy = (row + 0.5) * cell - 0.5 + rng.uniform(-1, 1) * jitter
            x0, x1 = int(max(cx - r, 0)), int(min(cx + r, size)) + 1
            y0, y1 = int(max(cy - r, 0)), int(min(cy + r, size)) + 1
            colour = _shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(0), d)
            masks.append(draw_shape(img, names[label], (cx, cy), r, rng.uniform(0, 2 * math.pi), colour))
        label_sets.append(present.astype(np.int64))
        if return_masks:
            all_masks.append(np.stack(masks) if masks else np.zeros((0, size, size), bool))
        sigma = 2.0 + 18.0 * d
        noisy = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if return_masks:
        return images, label_sets, names, all_masks  # type: ignore[return-value]
    return images, label_sets, names


def digits(size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled handwritten digits (1797 images, no download) as RGB uint8.

    Returns images (1797, S, S, 3) uint8 with S = 8 or `size` (bilinear upsampling), labels
    (1797,) int64, and class names "0".."9". Pixel values 0..16 are scaled x16 (clipped at 255).

    >>> x, y, names = digits(size=32); x.shape
    (1797, 32, 32, 3)
    """
    from sklearn.datasets import load_digits  # lazy: sklearn import is slow

    bunch = load_digits()
    grey = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)  # (N, 8, 8)
    if size is not None:
        if size < 1:
            raise ConfigError(f"size={size}: must be >= 1")
        grey = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR) for g in grey])
    images = np.repeat(grey[..., None], 3, axis=3)
    return images, bunch.target.astype(np.int64), [str(i) for i in range(10)]


MIN_VISIBLE = 0.3  # shapes_detection drops objects less visible than this share of their own area
_DET_RADIUS = (0.05, 0.3)  # object circumradius range as a share of the image size (log-uniform)


def shapes_detection(
    n: int = 500,
    size: int = 128,
    classes: int | Sequence[str] = 4,
    min_objects: int = 1,
    max_objects: int = 6,
    difficulty: float = 0.5,
    seed: int = 0,
    *,
    return_masks: bool = False,
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], list[str]]:
    """Scenes of several shapes on a textured background, with exact boxes.

    Each image holds `min_objects..max_objects` shapes of random kind, colour and rotation, sizes
    log-uniform from small (radius 5 % of the image, at least 3 px) to large (30 %). Shapes are
    drawn in order, so later ones occlude earlier ones: an object's box is the pixel extent of
    its *visible* mask, its area the visible pixel count, and an object whose visible area is
    below `MIN_VISIBLE` (30 %) of its own on-canvas area is dropped from the labels (its pixels
    stay in the image as clutter). Shapes may be partly cut by the image border as `difficulty`
    grows. Image `i` depends only on (seed, i).

    Returns images (n, size, size, 3) uint8, one annotation dict per image
    `{"boxes": (N, 4) float32 xyxy pixels (a pixel j spans [j, j + 1)), "labels": (N,) int64,
    "area": (N,) float32}` (+ `"masks"`: (N, size, size) bool visible masks with
    `return_masks=True`), and the class names. N may be 0 when every shape got occluded.

    >>> x, anns, names = shapes_detection(n=2, size=64, classes=3, seed=0)
    >>> x.shape, anns[0]["boxes"].shape[1], names
    ((2, 64, 64, 3), 4, ['circle', 'square', 'triangle'])
    """
    names = _class_names(classes)
    _check_scene_args(n, size, difficulty, seed)
    if not 0 <= min_objects <= max_objects or max_objects < 1:
        raise ConfigError(
            f"min_objects={min_objects}, max_objects={max_objects}: need 0 <= min <= max, max >= 1"
        )
    k, d = len(names), float(difficulty)
    lo, hi = math.log(_DET_RADIUS[0]), math.log(_DET_RADIUS[1])
    images = np.empty((n, size, size, 3), np.uint8)
    annotations = []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])  # stream 2: not the classification streams
        img = random_background(rng, size, d)
        masks, labels = [], []
        for _ in range(int(rng.integers(min_objects, max_objects + 1))):
            r = max(size * math.exp(rng.uniform(lo, hi)), 3.0)
            margin = min(r * (1.0 - 0.4 * d), size / 2)  # hard scenes cut shapes at the border
            cx, cy = rng.uniform(margin, size - margin, 2)
            x0, x1 = int(max(cx - r, 0)), int(min(cx + r, size)) + 1
            y0, y1 = int(max(cy - r, 0)), int(min(cy + r, size)) + 1
            colour = _shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(0), d)
            label = int(rng.integers(k))
            mask = draw_shape(img, names[label], (cx, cy), r, rng.uniform(0, 2 * math.pi), colour)
            masks.append(mask)
            labels.append(label)
        # Visible part of each shape: its mask minus everything drawn after it.
        keep_masks, keep_labels = [], []
        cover = np.zeros((size, size), bool)
        for mask, label in zip(reversed(masks), reversed(labels)):
            visible = mask & ~cover
            cover |= mask
            own = int(mask.sum())
            if own and visible.sum() >= max(MIN_VISIBLE * own, 4):
                keep_masks.append(visible)
                keep_labels.append(label)
        keep_masks.reverse()
        keep_labels.reverse()
        boxes = np.zeros((len(keep_masks), 4), np.float32)
        for j, m in enumerate(keep_masks):
            xs, ys = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
            boxes[j] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        ann = {
            "boxes": boxes,
            "labels": np.asarray(keep_labels, np.int64),
            "area": np.asarray([m.sum() for m in keep_masks], np.float32),
        }
        if return_masks:
            ann["masks"] = (
                np.stack(keep_masks) if keep_masks else np.zeros((0, size, size), bool)
            )
        annotations.append(ann)
        sigma = 2.0 + 18.0 * d
        noisy = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return images, annotations, names


SEG_KINDS = ("semantic", "instance", "panoptic")
STUFF_CLASSES = ("sky", "ground")  # shapes-pan: the background split in two stuff regions
MIN_SEGMENT = 4  # px: visible fragments smaller than this are not instances/segments


def _horizon(rng: np.random.Generator, size: int) -> np.ndarray:
    """bool (H, W): True below a random wavy boundary (a tilted line plus one sine)."""
    x = np.arange(size, dtype=np.float32) / size
    base = rng.uniform(0.3, 0.7) + rng.uniform(-0.2, 0.2) * (x - 0.5)
    wave = rng.uniform(0.0, 0.08) * np.sin(2 * math.pi * rng.uniform(0.5, 3.0) * x
                                           + rng.uniform(0, 2 * math.pi))  # fmt: skip
    y = np.clip(base + wave, 0.1, 0.9) * size  # boundary row per column
    return np.arange(size, dtype=np.float32)[:, None] + 0.5 > y[None, :]


def shapes_segmentation(
    n: int = 500,
    size: int = 128,
    classes: int | Sequence[str] = 4,
    difficulty: float = 0.5,
    seed: int = 0,
    kind: str = "semantic",
    min_objects: int = 1,
    max_objects: int = 6,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str], list[bool]]:
    """Scenes of shapes (as in `shapes_detection`) with pixel-exact segmentation maps.

    kind="semantic": `maps[i]` is the class map, 0 = "background", shape class k -> k + 1;
        every visible shape pixel is labelled (occluded clutter included).
    kind="instance": `maps[i]` is an instance-id map, 0 = background, id j + 1 -> `labels[i][j]`
        (shape kinds); later shapes occlude earlier ones, so an instance is its visible part
        (fragments under `MIN_SEGMENT` px are left unlabelled, id 0).
    kind="panoptic": as instance, but the background is two stuff regions, "sky" above and
        "ground" below a random wavy boundary (each with its own texture), which are segments
        too (classes = shape kinds + STUFF_CLASSES, isthing accordingly); id 0 = void.

    Returns images (n, size, size, 3) uint8, maps (n, size, size) uint8, per-image labels
    (int64 arrays; empty for semantic), class names and isthing. Image `i` depends only on
    (seed, i).

    >>> x, maps, labels, names, isthing = shapes_segmentation(n=2, size=32, kind="panoptic")
    >>> x.shape, maps.shape, names[-2:], isthing[-2:]
    ((2, 32, 32, 3), (2, 32, 32), ['sky', 'ground'], [False, False])
    """
    if kind not in SEG_KINDS:
        raise ConfigError(f"kind={kind!r}: expected one of {', '.join(SEG_KINDS)}")
    shape_names = _class_names(classes)
    _check_scene_args(n, size, difficulty, seed)
    if not 0 <= min_objects <= max_objects or max_objects < 1 or max_objects > 200:
        raise ConfigError(
            f"min_objects={min_objects}, max_objects={max_objects}: need 0 <= min <= max, "
            "1 <= max <= 200"
        )
    k, d = len(shape_names), float(difficulty)
    lo, hi = math.log(_DET_RADIUS[0]), math.log(_DET_RADIUS[1])
    stream = 3 + SEG_KINDS.index(kind)  # streams 3..5: not the classification/detection ones
    images = np.empty((n, size, size, 3), np.uint8)
    maps = np.zeros((n, size, size), np.uint8)
    all_labels: list[np.ndarray] = []
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i])
        img = random_background(rng, size, d)
        ground = None
        if kind == "panoptic":
            ground = _horizon(rng, size)
            img[ground] = random_background(rng, size, d)[ground]
        cover = np.zeros((size, size), np.int32)  # index + 1 of the shape on top, per pixel
        shape_labels = []
        for j in range(int(rng.integers(min_objects, max_objects + 1))):
            r = max(size * math.exp(rng.uniform(lo, hi)), 3.0)
            margin = min(r * (1.0 - 0.4 * d), size / 2)
            cx, cy = rng.uniform(margin, size - margin, 2)
            x0, x1 = int(max(cx - r, 0)), int(min(cx + r, size)) + 1
            y0, y1 = int(max(cy - r, 0)), int(min(cy + r, size)) + 1
            colour = _shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(0), d)
            label = int(rng.integers(k))
            mask = draw_shape(img, shape_names[label], (cx, cy), r, rng.uniform(0, 2 * math.pi),
                              colour)  # fmt: skip
            cover[mask] = j + 1
            shape_labels.append(label)
        if kind == "semantic":
            lut = np.asarray([0] + [lab + 1 for lab in shape_labels], np.uint8)
            maps[i] = lut[cover]
            all_labels.append(np.zeros(0, np.int64))
        else:
            # Renumber the visible shapes 1..N (fragments under MIN_SEGMENT px -> 0).
            counts = np.bincount(cover.ravel(), minlength=len(shape_labels) + 1)
            new_id = np.zeros(len(shape_labels) + 1, np.int32)
            labels = []
            for j, lab in enumerate(shape_labels):
                if counts[j + 1] >= MIN_SEGMENT:
                    labels.append(lab)
                    new_id[j + 1] = len(labels)
            ids = new_id[cover]
            if ground is not None:  # stuff segments: sky and ground where no shape is
                free = cover == 0
                for region, cls in ((~ground & free, k), (ground & free, k + 1)):
                    if region.sum() >= MIN_SEGMENT:
                        labels.append(cls)
                        ids[region] = len(labels)
            if len(labels) > 255:
                raise ConfigError(f"image {i}: {len(labels)} segments do not fit a uint8 map")
            maps[i] = ids
            all_labels.append(np.asarray(labels, np.int64))
        sigma = 2.0 + 18.0 * d
        noisy = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "semantic":
        names, isthing = ["background", *shape_names], [False] + [True] * k
    elif kind == "instance":
        names, isthing = list(shape_names), [True] * k
    else:
        names, isthing = [*shape_names, *STUFF_CLASSES], [True] * k + [False] * len(STUFF_CLASSES)
    return images, maps, all_labels, names, isthing


__all__ = [
    "MIN_SEGMENT",
    "MIN_VISIBLE",
    "SEG_KINDS",
    "SHAPE_KINDS",
    "STUFF_CLASSES",
    "digits",
    "draw_shape",
    "random_background",
    "shapes_classification",
    "shapes_detection",
    "shapes_multilabel",
    "shapes_segmentation",
]
