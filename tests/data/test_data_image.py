"""The safe decoder: orientation, every mode to RGB, and clear errors for broken files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optik.data.image import (
    IMAGE_EXTENSIONS,
    as_image_tensor,
    check_images,
    load_image,
    to_rgb,
    verify_image,
)
from optik.errors import DatasetError, ImageError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def two_tone(w: int = 20, h: int = 10) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    return Image.fromarray(a)


def near(pixel, colour, tol=40) -> bool:
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel, colour))


def test_exif_orientation_6_is_rotated_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    img = two_tone(20, 10)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(path, exif=exif, quality=95)

    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == (10, 20)  # W, H swapped
    a = np.asarray(out)
    # 90 degrees clockwise: the stored left (red) column becomes the top row.
    assert near(a[2, 5], RED) and near(a[17, 5], BLUE)


def test_no_exif_keeps_layout(tmp_path):
    path = tmp_path / "plain.png"
    two_tone(20, 10).save(path)
    out = load_image(path)
    assert out.size == (20, 10)
    assert tuple(np.asarray(out)[5, 2]) == RED


def test_mode_l_and_1():
    grey = to_rgb(Image.new("L", (3, 2), 100))
    assert grey.mode == "RGB" and np.asarray(grey)[0, 0].tolist() == [100, 100, 100]
    bw = to_rgb(Image.new("1", (3, 2), 1))
    assert np.asarray(bw)[1, 2].tolist() == [255, 255, 255]


def test_mode_la_composites_over_white():
    la = np.zeros((1, 2, 2), np.uint8)
    la[0, 0] = (100, 255)  # opaque grey
    la[0, 1] = (100, 0)  # fully transparent
    out = np.asarray(to_rgb(Image.fromarray(la, "LA")))
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [255, 255, 255]


def test_mode_rgba_half_alpha_blends_with_white():
    rgba = np.array([[[200, 0, 0, 128]]], np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))[0, 0]
    a = 128 / 255
    expected = [round(200 * a + 255 * (1 - a)), round(255 * (1 - a)), round(255 * (1 - a))]
    assert out.tolist() == expected


def test_mode_p_with_transparency_from_file(tmp_path):
    img = Image.new("P", (4, 1), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)

    out = np.asarray(load_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index -> white, not black
    assert out[0, 1].tolist() == [10, 200, 30]


def test_mode_p_without_transparency():
    img = Image.new("P", (2, 1), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [10, 200, 30]


def test_mode_cmyk():
    assert np.asarray(to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))))[0, 0].tolist() == [
        255,
        0,
        0,
    ]
    assert np.asarray(to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))))[0, 0].tolist() == [
        255,
        255,
        255,
    ]


def test_mode_i16_scales_by_range_not_clip(tmp_path):
    a = np.array([[0, 32896, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # the file really is 16-bit
    out = np.asarray(load_image(path))
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_mode_i_and_f():
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert i32.mode == "I"
    assert np.asarray(to_rgb(i32))[0, :, 1].tolist() == [0, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert f.mode == "F"
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises_image_error_naming_file(tmp_path, ext):
    path = tmp_path / f"broken_{ext[1:]}{ext}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    _truncate(path)
    with pytest.raises(ImageError, match=path.name) as err:
        load_image(path)
    assert str(err.value).startswith(str(path))
    assert isinstance(err.value, DatasetError)


def test_text_file_with_image_extension(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match=r"x\.jpg.*not an image"):
        load_image(path)
    with pytest.raises(ImageError, match=r"x\.jpg"):
        verify_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png")


def test_max_pixels_guard(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60), "white").save(path)
    with pytest.raises(ImageError, match=r"big\.png.*100x60.*max_pixels"):
        load_image(path, max_pixels=5_999)
    assert load_image(path, max_pixels=6_000).size == (100, 60)
    assert load_image(path, max_pixels=None).size == (100, 60)
    with pytest.raises(ImageError, match="max_pixels"):
        verify_image(path, max_pixels=10)


def test_check_images_reports_reasons_in_order(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    jpg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        jpg
    )
    _truncate(jpg)
    quick = check_images([good, bad, jpg], full=False)
    full = check_images([good, bad, jpg], full=True)
    assert quick[0] is None and "not an image" in quick[1]
    assert full[0] is None and full[1] is not None
    assert full[2] is not None and "bad.png" not in full[2]  # reason without the path prefix


def test_image_extensions_are_lowercase_with_dot():
    assert ".jpg" in IMAGE_EXTENSIONS and ".webp" in IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


# ---- as_image_tensor -------------------------------------------------------------------------


def test_as_image_tensor_from_hwc_uint8():
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = as_image_tensor(a)
    assert t.dtype == torch.uint8 and t.shape == (3, 5, 7)
    assert torch.equal(t.permute(1, 2, 0), torch.from_numpy(a))


def test_as_image_tensor_grey_and_single_channel():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for x in (g, g[..., None]):
        t = as_image_tensor(x)
        assert t.shape == (3, 3, 4)
        assert torch.equal(t[0], torch.from_numpy(g)) and torch.equal(t[2], torch.from_numpy(g))


def test_as_image_tensor_rgba_array_uses_alpha():
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 0] = 200
    a[0, 0, 3] = 255
    t = as_image_tensor(a)
    assert t[:, 0, 0].tolist() == [200, 0, 0]
    assert t[:, 1, 1].tolist() == [255, 255, 255]


def test_as_image_tensor_float_array_scaled():
    a = np.full((2, 3, 3), 0.5, np.float32)
    a[0, 0] = 1.0
    t = as_image_tensor(a)
    assert t[:, 0, 0].tolist() == [255, 255, 255] and t[0, 1, 1].item() == 128


def test_as_image_tensor_tensor_inputs():
    u8 = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    assert torch.equal(as_image_tensor(u8), u8)
    f = torch.zeros(1, 4, 5)
    f[0, 0, 0] = 1.0
    out = as_image_tensor(f)
    assert out.shape == (3, 4, 5) and out[:, 0, 0].tolist() == [255, 255, 255] and out.sum() == 765


def test_as_image_tensor_pil_and_path(tmp_path):
    img = two_tone(6, 4)
    t = as_image_tensor(img)
    assert t.shape == (3, 4, 6) and t[:, 0, 0].tolist() == list(RED)
    path = tmp_path / "a.png"
    img.save(path)
    assert torch.equal(as_image_tensor(path), t)
    assert torch.equal(as_image_tensor(str(path)), t)


@pytest.mark.parametrize(
    "bad, shape",
    [
        (np.zeros((5, 5, 2), np.uint8), "(5, 5, 2)"),
        (np.zeros((2, 5, 5, 3), np.uint8), "(2, 5, 5, 3)"),
        (np.zeros((4, 4, 3), np.int64), "(4, 4, 3)"),
        (np.full((4, 4, 3), 7.0), "(4, 4, 3)"),  # float outside [0, 1]
        (torch.zeros(8, 8, 3, dtype=torch.uint8), "(8, 8, 3)"),  # HWC tensor
        (torch.zeros(3, 4, 4, dtype=torch.int32), "(3, 4, 4)"),
    ],
)
def test_as_image_tensor_rejects_bad_shapes_and_dtypes(bad, shape):
    with pytest.raises(ImageError) as err:
        as_image_tensor(bad)
    assert shape in str(err.value)


def test_as_image_tensor_rejects_other_types():
    with pytest.raises(ImageError, match="list"):
        as_image_tensor([1, 2, 3])


def test_as_image_tensor_never_aliases_its_input():
    src = torch.zeros(3, 4, 4, dtype=torch.uint8)
    out = as_image_tensor(src)
    out += 1
    assert src.max() == 0
    chw_backed = np.zeros((3, 4, 4), np.uint8).transpose(1, 2, 0)  # HWC view of CHW memory
    out = as_image_tensor(chw_backed)
    out += 1
    assert chw_backed.max() == 0
