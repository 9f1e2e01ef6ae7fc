"""Plots write real PNGs of the expected size; text overlays change the pixels they should."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from optik.viz.draw import MIN_TEXT_SIDE, color_for, draw_text_block
from optik.viz.plots import plot_bar, plot_confusion_matrix, plot_prediction_grid, plot_training_curves


def _png(path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    return image


def _write_csv(path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")


HEADER = ["epoch", "train/loss", "val/loss", "val/top1", "lr", "val/f1_macro"]


def _rows(n: int) -> list[list[str]]:
    return [[str(e), f"{2 / e:.4f}", f"{2.2 / e:.4f}", f"{1 - 1 / (e + 1):.4f}", f"{0.1 * 0.9**e:.6f}", "nan"]
            for e in range(1, n + 1)]  # fmt: skip


def _axes_count(png: Image.Image) -> float:
    """Subplots are laid out 4 per row at 4 in x 3 in (100 dpi): width ~ 400 px per axis."""
    return png.size[0] / 400


def test_training_curves_several_rows_with_nan_column(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_csv(csv_path, HEADER, _rows(6))
    out = plot_training_curves(csv_path, tmp_path / "plots" / "curves.png")  # creates plots/
    image = _png(out)
    # loss group (train+val on one axis) + val/top1 + lr; the all-NaN f1 column is skipped → 3 axes.
    assert _axes_count(image) == pytest.approx(3, abs=0.3)
    assert image.size[1] == pytest.approx(300, abs=40)


def test_training_curves_one_row_and_text_column(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_csv(csv_path, [*HEADER, "time", "train/box_loss", "val/box_loss"],
               [[*r, "2024-01-01T00:00", "0.5", ""] for r in _rows(1)])  # fmt: skip
    image = _png(plot_training_curves(csv_path, tmp_path / "curves.png"))
    # loss, val/top1, lr, box_loss (train/val grouped; the text column is dropped) → 4 axes, 1 row.
    assert _axes_count(image) == pytest.approx(4, abs=0.3)
    assert image.size[1] == pytest.approx(300, abs=40)
    # The single point is drawn (a marker), so the image is not just axes and white.
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_training_curves_errors_name_the_file(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    _write_csv(csv_path, HEADER, [])
    with pytest.raises(ValueError, match="metrics.csv"):
        plot_training_curves(csv_path, tmp_path / "c.png")


@pytest.mark.parametrize("c", [3, 25, 100])
def test_confusion_matrix_png_grows_with_classes(tmp_path, c):
    cm = np.random.default_rng(c).integers(0, 20, (c, c))
    cm[0] = 0  # an absent class: normalisation must not divide by zero
    names = [f"class_{i}" for i in range(c)]
    image = _png(plot_confusion_matrix(cm, names, tmp_path / "cm.png"))
    side = min(max(0.3 * c + 3, 6), 24) * 100  # figure height in px at 100 dpi
    assert image.size[1] == pytest.approx(side, rel=0.15)
    assert image.size[0] == pytest.approx(side + 150, rel=0.2)


def test_confusion_matrix_counts_and_normalisation_change_the_picture(tmp_path):
    cm = np.array([[9, 1], [5, 5]])
    normed = np.asarray(_png(plot_confusion_matrix(cm, ["a", "b"], tmp_path / "n.png")).convert("RGB"))
    raw = np.asarray(_png(plot_confusion_matrix(cm, ["a", "b"], tmp_path / "r.png", normalize=False)).convert("RGB"))
    assert normed.shape != raw.shape or not np.array_equal(normed, raw)  # colourbar 0-1 vs 0-9
    with pytest.raises(ValueError, match="3 class names"):
        plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "x.png")


def _red_green_pixels(image: Image.Image) -> tuple[int, int]:
    a = np.asarray(image.convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    red = ((r > 180) & (g < 80) & (b < 80)).sum()
    green = ((g > 90) & (r < 60) & (b < 60)).sum()
    return int(red), int(green)


def test_prediction_grid_layout_and_title_colours(tmp_path):
    # Grey images so red / green pixels can only come from the titles.
    images = torch.full((10, 3, 16, 16), 128, dtype=torch.uint8)
    all_right = _png(plot_prediction_grid(images, [0] * 10, [0] * 10, [0.9] * 10, ["cat", "dog"],
                                          tmp_path / "right.png", ncols=4))  # fmt: skip
    all_wrong = _png(plot_prediction_grid(images.numpy(), [0] * 10, [1] * 10, [0.9] * 10, ["cat", "dog"],
                                          tmp_path / "wrong.png", ncols=4))  # fmt: skip
    assert all_right.size[0] == pytest.approx(4 * 180, rel=0.15)  # 4 columns x 1.8 in
    assert all_right.size[1] == pytest.approx(3 * 200, rel=0.15)  # ceil(10 / 4) rows x 2 in
    red, green = _red_green_pixels(all_right)
    assert green > 50 and red == 0
    red, green = _red_green_pixels(all_wrong)
    assert red > 50 and green == 0
    with pytest.raises(ValueError, match="N, 3, H, W"):
        plot_prediction_grid(np.zeros((2, 16, 16, 3), np.uint8), [0, 0], [0, 0], [1, 1], ["a"], tmp_path / "x.png")


def test_bar_chart_size_grows_with_bars(tmp_path):
    few = _png(plot_bar({"cat": 0.9, "dog": 0.5, "bird": 0.0}, tmp_path / "few.png", title="F1", xlabel="F1"))
    many = _png(plot_bar({f"c{i}": i / 60 for i in range(60)}, tmp_path / "many.png", title="F1"))
    assert few.size[0] == pytest.approx(700, rel=0.15)
    assert many.size[1] > 3 * few.size[1]
    with pytest.raises(ValueError, match="no values"):
        plot_bar({}, tmp_path / "e.png", title="empty")


def test_plots_do_not_touch_pyplot(tmp_path):
    plot_bar({"a": 1.0}, tmp_path / "b.png", title="t")
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()


def test_color_for_is_stable_distinct_rgb():
    colours = [color_for(i) for i in range(20)]
    assert len(set(colours)) == 20
    assert color_for(3) == color_for(23) == color_for(-17)
    assert all(len(c) == 3 and all(0 <= v <= 255 and isinstance(v, int) for v in c) for c in colours)


def test_draw_text_block_large_image_keeps_shape_and_marks_text_area():
    rng = np.random.default_rng(0)
    image = rng.integers(100, 200, (240, 320, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_text_block(image, ["cat 0.93", "dog 0.05"], origin=(10, 20))
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched
    changed = np.any(out != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 10 and ys.min() >= 20  # the box starts at origin
    assert changed[20:40, 10:60].mean() > 0.9  # a dark box (every pixel darkened)
    assert (out[changed] > 200).all(axis=1).sum() > 20  # white text on the box (darkened pixels <= 80)
    assert not changed[150:, 200:].any()  # far away: unchanged


def test_draw_text_block_upscales_small_images():
    image = np.full((32, 48, 3), 180, np.uint8)
    out = draw_text_block(image, ["bird"])
    factor = MIN_TEXT_SIDE // 32
    assert out.shape == (32 * factor, 48 * factor, 3) and out.dtype == np.uint8
    assert np.any(out[:20, :40] != 180)  # text box near the origin
    assert (out[-10:, -10:] == 180).all()  # nearest-neighbour enlargement elsewhere
    # No lines: enlarged but otherwise identical.
    np.testing.assert_array_equal(draw_text_block(image, []), np.full(out.shape, 180, np.uint8))


def test_draw_text_block_rejects_wrong_arrays():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        draw_text_block(np.zeros((32, 32), np.uint8), ["x"])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        draw_text_block(np.zeros((32, 32, 3), np.float32), ["x"])
