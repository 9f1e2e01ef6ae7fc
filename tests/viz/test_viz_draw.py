"""Segmentation overlays: enlarged like boxes, masks resized with the image, bad inputs rejected."""

from __future__ import annotations

import numpy as np
import pytest

from optik.viz.draw import color_for, draw_legend, draw_masks, draw_panoptic, draw_semantic, shade


def test_masks_follow_the_enlargement():
    img = np.zeros((32, 40, 3), np.uint8)
    m = np.zeros((1, 32, 40), bool)
    m[0, 8:16, 8:16] = True
    out = draw_masks(img, m, [2], ["a", "b", "c"], alpha=1.0, contours=False)
    assert out.shape == (128, 160, 3)  # ceil(128 / 32) = 4
    hit = (out == color_for(2)).all(-1)
    assert hit[32:64, 32:64].all() and hit.sum() == 32 * 32
    with pytest.raises(ValueError, match="color_by"):
        draw_masks(img, m, [0], ["a"], color_by="x")
    with pytest.raises(ValueError, match="uint8"):
        draw_masks(img.astype(np.float32), m, [0], ["a"])


def test_semantic_and_panoptic_check_their_maps():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        draw_semantic(img, np.zeros((16, 16), np.int64), ["a"])
    with pytest.raises(ValueError, match="does not match"):
        draw_panoptic(img, np.zeros((16, 16), np.int64), [], ["a"])
    void = np.full((32, 32), 255, np.int64)
    assert (draw_semantic(img, void, ["a"]) == 0).all()  # all void: nothing drawn, no legend


def test_legend_rows_and_shades():
    out = draw_legend(np.zeros((200, 300, 3), np.uint8), [("bg", None), ("a", (10, 200, 30)), ("b", (200, 10, 30))])
    assert (out == (10, 200, 30)).all(-1).any() and (out == (200, 10, 30)).all(-1).any()
    assert out[:, :150].max() == 0  # top-right corner only
    assert len({shade((200, 100, 50), j) for j in range(5)}) == 5
