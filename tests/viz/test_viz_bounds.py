"""Issue 17, bug 4: the enlargement of small images for drawing is bounded. A 1×4000 image used to
become a 512000×128 overlay (1.5 GB in ``predict save=true``); now the factor is capped, no side grows
past ``MAX_DRAW_SIDE`` through enlargement, and a side still below ``MIN_TEXT_SIDE`` is padded so the
labels have room — every overlay is readable and small."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from optik.results import Boxes, Results
from optik.viz import draw
from optik.viz.draw import MAX_DRAW_SIDE, MAX_ENLARGE, MIN_TEXT_SIDE

# (H, W) of the images, both orientations, and the tiniest
SHAPES = [(1, 4000), (4000, 1), (1, 8000), (3, 500), (500, 3), (1, 1), (2, 2)]
NAMES = ["thing", "stuff"]


def _inputs(h: int, w: int) -> dict:
    img = np.full((h, w, 3), 200, np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, :, : max(1, w // 2)] = True
    masks[1, :, w // 2 :] = True
    label = np.zeros((h, w), np.int64)
    label[:, w // 2 :] = 1
    pan = label + 1
    boxes = np.array([[0, 0, w / 2, h], [w / 2, 0, w, h]], np.float64)
    return {"img": img, "masks": masks, "label": label, "pan": pan, "boxes": boxes}


def _every_overlay(h: int, w: int) -> dict[str, np.ndarray]:
    a = _inputs(h, w)
    segs = [{"id": 1, "label": 0, "isthing": True, "score": 0.9}, {"id": 2, "label": 1, "isthing": False}]
    return {
        "text": draw.draw_text_block(a["img"], ["thing 0.93", "stuff 0.07"]),
        "boxes": draw.draw_boxes(a["img"], a["boxes"], [0, 1], [0.9, 0.8], NAMES),
        "masks": draw.draw_masks(a["img"], a["masks"], [0, 1], NAMES, boxes=a["boxes"], scores=[0.9, 0.8]),
        "semantic": draw.draw_semantic(a["img"], a["label"], ["background", "road"]),
        "panoptic": draw.draw_panoptic(a["img"], a["pan"], segs, NAMES),
        "legend": draw.draw_legend(a["img"], [("road", (255, 56, 56))]),
    }


def test_the_limits_are_sane():
    assert 2 <= MAX_ENLARGE <= 64 and MIN_TEXT_SIDE * 4 <= MAX_DRAW_SIDE <= 8192


@pytest.mark.parametrize("hw", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_overlays_of_extreme_shapes_are_bounded_and_readable(hw):
    h, w = hw
    for name, out in _every_overlay(h, w).items():
        oh, ow = out.shape[:2]
        assert out.dtype == np.uint8 and out.shape[2] == 3, name
        assert max(oh, ow) <= max(MAX_DRAW_SIDE, h, w), (name, out.shape)  # enlargement never exceeds the cap
        assert oh * ow <= max(MAX_DRAW_SIDE * MIN_TEXT_SIDE * 2, h * w), (name, out.shape)
        assert min(oh, ow) >= MIN_TEXT_SIDE, (name, out.shape)  # room for a line of text


@pytest.mark.parametrize("hw", [(1, 4000), (3, 500), (1, 1), (64, 64), (40, 3000)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_enlargement_keeps_aspect_and_pads_only_bottom_right(hw):
    h, w = hw
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    out = draw.draw_text_block(img, [])  # nothing drawn: the enlarged (and padded) image itself
    f = draw.enlarge_factor(h, w)
    assert 1 <= f <= MAX_ENLARGE and max(h, w) * f <= max(MAX_DRAW_SIDE, max(h, w))
    # the image sits at the top-left, every pixel an f×f block (aspect kept, boxes scale by f)
    np.testing.assert_array_equal(out[: h * f, : w * f], img.repeat(f, 0).repeat(f, 1))
    assert out.shape[0] == max(h * f, MIN_TEXT_SIDE) and out.shape[1] == max(w * f, MIN_TEXT_SIDE)
    pad = np.ones(out.shape[:2], bool)
    pad[: h * f, : w * f] = False
    assert (out[pad] == draw.PAD_VALUE).all()


def test_ordinary_sizes_are_unchanged():
    assert draw.enlarge_factor(64, 64) == 2 and draw.enlarge_factor(32, 40) == 4
    assert draw.enlarge_factor(200, 300) == 1 and draw.enlarge_factor(3000, 4000) == 1
    assert draw.draw_text_block(np.zeros((64, 64, 3), np.uint8), ["x"]).shape == (128, 128, 3)
    assert draw.draw_text_block(np.zeros((5000, 6000, 3), np.uint8), ["x"]).shape == (5000, 6000, 3)


@pytest.mark.parametrize("hw", [(1, 4000), (1, 8000), (3, 500)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_drawing_memory_is_bounded(hw):
    """Peak allocation while drawing each overlay of an extreme image: tens of MB at most, in
    proportion to the (at most 128×8000 px) output (was 98 MB for 3×500, 196 MB for the 1×4000 text
    block alone, 393 MB for 1×8000)."""
    a = _every_overlay(2, 2)  # warm-up: OpenCV / matplotlib lazy state outside the measurement
    del a
    tracemalloc.start()
    try:
        _every_overlay(*hw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_results_plot_is_bounded():
    """``Results.plot`` (what ``predict save=true`` and the server draw) of a 1×4000 detection / classification."""
    img = np.full((1, 4000, 3), 90, np.uint8)
    det = Results(img, "d", NAMES, boxes=Boxes(torch.tensor([[0.0, 0, 100, 1]]), torch.tensor([0.9]),
                                               torch.tensor([0]), (1, 4000)))  # fmt: skip
    cls = Results(img, "c", NAMES, probs=torch.tensor([0.3, 0.7]))
    for r in (det, cls):
        out = r.plot()
        assert out.shape == (MIN_TEXT_SIDE, 4000, 3), out.shape
