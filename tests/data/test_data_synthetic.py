"""Procedural shapes and bundled digits: determinism, balance, geometry and speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from optik.data import synthetic
from optik.data.synthetic import (
    SHAPE_KINDS,
    digits,
    draw_shape,
    random_background,
    shapes_classification,
)
from optik.errors import ConfigError


def test_shapes_output_types_and_balance():
    x, y, names = shapes_classification(n=40, size=32, classes=4, seed=3)
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (40,) and y.dtype == np.int64
    assert names == list(SHAPE_KINDS[:4])
    assert np.bincount(y, minlength=4).tolist() == [10, 10, 10, 10]


def test_shapes_labels_are_shuffled_within_blocks():
    _, y, _ = shapes_classification(n=64, size=16, classes=4, seed=0)
    blocks = y.reshape(-1, 4)
    assert all(sorted(b) == [0, 1, 2, 3] for b in blocks.tolist())
    assert len({tuple(b) for b in blocks.tolist()}) > 1  # not a fixed 0,1,2,3 cycle


def test_shapes_prefix_property_and_seed():
    x100, y100, _ = shapes_classification(n=30, size=24, seed=7)
    x10, y10, _ = shapes_classification(n=10, size=24, seed=7)
    assert np.array_equal(x100[:10], x10) and np.array_equal(y100[:10], y10)
    x_other, y_other, _ = shapes_classification(n=10, size=24, seed=8)
    assert not np.array_equal(x10, x_other)
    again, _, _ = shapes_classification(n=10, size=24, seed=7)
    assert np.array_equal(again, x10)


def test_shapes_named_classes():
    x, y, names = shapes_classification(n=9, size=16, classes=["star", "circle", "cross"])
    assert names == ["star", "circle", "cross"] and sorted(y.tolist()) == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
    ]


@pytest.mark.parametrize("classes", [0, 9, ["circle", "blob"], ["circle", "circle"]])
def test_shapes_bad_classes(classes):
    with pytest.raises(ConfigError, match="classes"):
        shapes_classification(n=4, size=16, classes=classes)


def test_shapes_bad_difficulty():
    with pytest.raises(ConfigError, match="difficulty"):
        shapes_classification(n=4, difficulty=1.5)


def test_difficulty_lowers_shape_contrast():
    """The shape/background colour gap shrinks as difficulty rises (measured on the mask)."""

    def mean_gap(d: float) -> float:
        gaps = []
        for i in range(30):
            rng = np.random.default_rng(i)
            bg = random_background(rng, 48, d)
            ref = bg.astype(float).copy()
            colour = synthetic._shape_colour(rng, bg.reshape(-1, 3).mean(0), d)
            m = draw_shape(bg, "square", (24, 24), 12, 0.0, colour)
            gaps.append(np.abs(bg[m].astype(float) - ref[m]).max(axis=1).mean())
        return float(np.mean(gaps))

    easy, medium, hard = mean_gap(0.0), mean_gap(0.5), mean_gap(1.0)
    assert easy > medium + 30 and medium > hard + 30


def test_background_busier_with_difficulty():
    def busyness(d):
        return np.mean(
            [
                np.abs(
                    np.diff(
                        random_background(np.random.default_rng(i), 64, d).astype(float), axis=1
                    )
                ).mean()
                for i in range(40)
            ]
        )

    assert busyness(1.0) > 2 * busyness(0.0)


def test_shapes_speed():
    t = time.perf_counter()
    shapes_classification(n=1000, size=64)
    assert time.perf_counter() - t < 2.0 * 1.5  # budget 2 s; headroom for a shared CI core


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_draw_shape_mask_area_and_colour(kind):
    canvas = np.zeros((64, 64, 3), np.uint8)
    mask = draw_shape(canvas, kind, (31.3, 32.6), 16.0, 0.4, (255, 128, 0))
    assert mask.dtype == bool and mask.shape == (64, 64)
    r2 = 16.0**2
    expected = {
        "circle": math.pi * r2,
        "square": 2 * r2,
        "triangle": 3 * math.sqrt(3) / 4 * r2,
        "pentagon": 2.5 * math.sin(2 * math.pi / 5) * r2,
        "hexagon": 3 * math.sqrt(3) / 2 * r2,
        "ellipse": math.pi * r2 * 0.55,
    }.get(kind)
    if expected is not None:
        assert mask.sum() == pytest.approx(expected, rel=0.05)
    else:  # star, cross: inside the circumcircle, clearly smaller than it
        assert 0.2 * math.pi * r2 < mask.sum() < 0.8 * math.pi * r2
    assert (canvas[mask].mean(0) > [230, 110, -1]).all()  # inside takes the colour
    assert canvas[~mask].max() < 255  # outside: at most partial (antialiased) coverage
    assert len(np.unique(canvas[..., 0])) > 2  # antialiased edge levels exist


def test_draw_shape_rotation_changes_mask_and_offcanvas_is_empty():
    a = draw_shape(np.zeros((40, 40, 3), np.uint8), "triangle", (20, 20), 12, 0.0, (255, 255, 255))
    b = draw_shape(
        np.zeros((40, 40, 3), np.uint8), "triangle", (20, 20), 12, math.pi, (255, 255, 255)
    )
    assert a[8:14].sum() > b[8:14].sum()  # apex up vs apex down
    canvas = np.zeros((20, 20, 3), np.uint8)
    assert (
        draw_shape(canvas, "circle", (-50, -50), 5, 0, (255, 0, 0)).sum() == 0 and canvas.max() == 0
    )


def test_draw_shape_unknown_kind():
    with pytest.raises(ConfigError, match="blob.*circle"):
        draw_shape(np.zeros((8, 8, 3), np.uint8), "blob", (4, 4), 2, 0, (1, 1, 1))


def test_digits_shapes_and_values():
    x, y, names = digits()
    assert x.shape == (1797, 8, 8, 3) and x.dtype == np.uint8
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert names == [str(i) for i in range(10)]
    assert x.max() == 255 and (x[..., 0] == x[..., 2]).all()
    big, _, _ = digits(size=24)
    assert big.shape == (1797, 24, 24, 3)
    assert abs(big[0].mean() - x[0].mean()) < 20  # same picture, resampled
