"""Grad-CAM on real ImageNet weights (EfficientNet-Lite0, the ``lite0_weights`` fixture) looks where the object is:
on scikit-image's cat photo, and — the test that can tell a right heatmap from a merely plausible one — on a
2×2 mosaic of four photos, where each class's heat lands in its own photo's quadrant."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from optik import Model

# Chelsea (451×300): eyes at about (170, 115) and (320, 135), nose (265, 240) — the face, boxed by eye.
CAT_FACE = (120, 60, 360, 290)  # x0, y0, x1, y1 in original pixels


def test_gradcam_heat_is_on_the_cat(lite0_weights, real_photos):
    photo = real_photos["chelsea"]
    ex = Model(lite0_weights).explain(photo)[0]
    assert ex.heatmap.shape == photo.shape[:2]  # mapped back through resize 256 → crop 224 onto the photo
    assert "cat" in ex.target_name
    x0, y0, x1, y1 = CAT_FACE
    inside = float(ex.heatmap[y0:y1, x0:x1].sum() / ex.heatmap.sum())
    share = (x1 - x0) * (y1 - y0) / ex.heatmap.size
    assert inside > share + 0.25, (inside, share)  # measured: 0.83 of the heat on 0.41 of the image


def _square(a: np.ndarray, size: int = 224) -> np.ndarray:
    h, w = a.shape[:2]
    m = min(h, w)
    y, x = (h - m) // 2, (w - m) // 2
    return np.asarray(Image.fromarray(a[y : y + m, x : x + m]).resize((size, size), Image.BICUBIC))


@pytest.mark.parametrize(("target", "quadrant"), [("Egyptian cat", 0), ("espresso", 1), ("missile", 2), ("moped", 3)])
def test_gradcam_finds_each_object_in_a_mosaic(lite0_weights, real_photos, target, quadrant):
    """chelsea | coffee / rocket | motorcycle, 448×448: explaining a class puts most of the heat in its quadrant
    (a quarter of the image; measured 0.69-0.84)."""
    t = [_square(real_photos[k]) for k in ("chelsea", "coffee", "rocket", "motorcycle")]
    mosaic = np.concatenate([np.concatenate(t[:2], 1), np.concatenate(t[2:], 1)], 0)
    heat = Model(lite0_weights).explain(mosaic, target=target)[0].heatmap
    s = 224
    parts = [heat[:s, :s], heat[:s, s:], heat[s:, :s], heat[s:, s:]]
    shares = [float(p.sum() / heat.sum()) for p in parts]
    assert shares[quadrant] > 0.5 and shares[quadrant] == max(shares), shares
