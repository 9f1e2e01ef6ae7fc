"""Issue 17, bug 4: explanation panels of extreme images are bounded (a 3×500 image used to give a
129×64516 panel: each tile enlarged 43× to reach 128 px)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from optik.viz.draw import MAX_DRAW_SIDE, MIN_TEXT_SIDE
from optik.viz.heatmap import heatmap_panel, overlay_heatmap


@pytest.mark.parametrize("hw", [(3, 500), (500, 3), (1, 4000), (1, 1)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_panel_of_an_extreme_image_is_bounded(hw):
    h, w = hw
    img = np.full((h, w, 3), 120, np.uint8)
    heat = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    panel = heatmap_panel(img, heat, overlay_heatmap(img, heat), title=["circle 0.93", "gradcam @ features.3"])
    ph, pw = panel.shape[:2]
    assert panel.dtype == np.uint8 and panel.shape[2] == 3
    assert max(ph, pw) <= max(MAX_DRAW_SIDE, 3 * max(h, w) + 16), panel.shape
    assert min(ph, pw) >= MIN_TEXT_SIDE, panel.shape  # the title has room


def test_ordinary_panels_are_unchanged():
    img = np.zeros((32, 48, 3), np.uint8)
    heat = np.zeros((32, 48), np.float32)
    assert heatmap_panel(img, heat, overlay_heatmap(img, heat)).shape == (128, 592, 3)  # 4× tiles, 2 gaps of 8
    img = np.zeros((300, 400, 3), np.uint8)
    heat = np.zeros((300, 400), np.float32)
    assert heatmap_panel(img, heat, overlay_heatmap(img, heat)).shape == (300, 1216, 3)


def test_explain_save_writes_a_bounded_panel(tiny_run, tmp_path):
    """``explain save=true`` on a 3×500 image: the PNG written is small (was 129×64516)."""
    from optik import Model

    img = np.random.default_rng(0).integers(0, 255, (3, 500, 3), dtype=np.uint8)
    ex = Model(tiny_run["best"]).explain(img, save=True, project=str(tmp_path))
    assert ex[0].heatmap.shape == (3, 500)
    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 1
    panel = cv2.imread(str(files[0]))
    assert panel.shape[0] >= MIN_TEXT_SIDE and panel.shape[1] <= MAX_DRAW_SIDE, panel.shape
