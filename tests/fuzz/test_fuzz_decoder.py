"""Byte-level fuzzing of the one image decoder (`optik.data.image`): arbitrary bytes, mutated valid
PNG/JPEG/BMP/GIF/TIFF/WebP files in every PIL mode optik meets, decompression-bomb headers and odd
paths. Only `ImageError` may escape, naming the file; a successful decode is an upright uint8 RGB
image of the size the header declares."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from fuzzkit import count, examples, guarded, mutated_bytes, only_optik_errors
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from optik.data.image import (
    ALPHA_BACKGROUND,
    MAX_IMAGE_PIXELS,
    as_image_tensor,
    check_images,
    decode_image_bytes,
    image_size,
    load_image,
    verify_image,
)
from optik.errors import ImageError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's warnings about corrupt files

FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

# Formats and the modes PIL writes for them (P+t: palette with a transparent index).
FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "P+t", "I;16", "RGB", "RGBA"],
    "JPEG": ["L", "RGB", "CMYK"],
    "BMP": ["1", "L", "P", "RGB"],
    "GIF": ["P", "L"],
    "TIFF": ["1", "L", "LA", "P", "I;16", "I", "F", "RGB", "RGBA", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
}
LOSSLESS = {"PNG", "BMP", "TIFF", "GIF"}


def make_image(mode: str, h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if mode in ("P", "P+t"):
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        im = Image.frombytes("P", (w, h), a.tobytes())
        im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
        if mode == "P+t":
            im.info["transparency"] = int(a[0, 0])
        return im
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((h, w)).astype(np.float32))
    if mode == "LA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)).convert("LA")
    if mode == "CMYK":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("CMYK")
    c = 4 if mode == "RGBA" else 3
    return Image.fromarray(rng.integers(0, 256, (h, w, c), dtype=np.uint8))


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    save_kw = dict(kw)
    if "transparency" in im.info and fmt in ("PNG", "GIF"):
        save_kw["transparency"] = im.info["transparency"]
    im.save(buf, fmt, **save_kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    out = {}
    for fmt, modes in FORMAT_MODES.items():
        for mode in modes:
            out[f"{fmt}/{mode}"] = encode(make_image(mode, 5, 7, len(out)), fmt)
    # EXIF orientation 6 (rotate 90): the decoder must transpose, image_size must swap
    exif = Image.Exif()
    exif[0x0112] = 6
    out["JPEG/RGB+exif6"] = encode(make_image("RGB", 5, 7, 99), "JPEG", exif=exif.tobytes())
    out["PNG/RGB+exif8"] = encode(make_image("RGB", 5, 7, 98), "PNG", exif=exif.tobytes())
    out["JPEG/progressive"] = encode(make_image("RGB", 16, 9, 97), "JPEG", progressive=True)
    frames = [make_image("P", 6, 4, 90 + k) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out["GIF/animated"] = buf.getvalue()
    return out


SEEDS = _seeds()


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(W, H) the header declares, or None when PIL cannot even open it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001
        return None


def check_decoded(out: object, data: bytes, what: str) -> None:
    """A successful decode: an RGB PIL image whose array is uint8 (H, W, 3), of the declared size
    (or its transpose, when EXIF says the image is rotated by 90 degrees)."""
    if isinstance(out, ImageError):
        return
    assert isinstance(out, Image.Image) and out.mode == "RGB", (what, out)
    a = np.asarray(out)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, (what, a.shape, a.dtype)
    size = declared_size(data)
    assert size is not None, what
    assert out.size in (size, size[::-1]), (what, out.size, size)


# ---- arbitrary and mutated bytes ------------------------------------------------------------------


@settings(max_examples=examples(150), **FAST)
@given(st.binary(max_size=1024))
@example(b"")
@example(b"\x89PNG\r\n\x1a\n")  # a bare signature
@example(b"GIF89a\xff\xff\xff\xff")
@example(b"BM" + b"\x00" * 60)
@example(b"II*\x00" + b"\xff" * 12)  # TIFF with an IFD offset past the end
@example(b"RIFF\x10\x00\x00\x00WEBPVP8 ")
def test_arbitrary_bytes(data):
    count("decoder:arbitrary-bytes")
    with guarded():
        out = only_optik_errors(lambda: decode_image_bytes(data, "fuzz.bin"), names=["fuzz.bin"],
                                what="decode_image_bytes")  # fmt: skip
    check_decoded(out, data, "arbitrary bytes")


@settings(max_examples=examples(500), **FAST)
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_mutated_valid_images(seed, data):
    count("decoder:mutated-images")
    blob = data.draw(mutated_bytes(SEEDS[seed]), label="mutated")
    with guarded():
        out = only_optik_errors(lambda: decode_image_bytes(blob, "mut.img"), names=["mut.img"],
                                what=f"decode_image_bytes({seed})")  # fmt: skip
    check_decoded(out, blob, seed)


@settings(max_examples=examples(120), **FAST)
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data(), ext=st.sampled_from([".png", ".jpg", ".x"]))
def test_mutated_files_through_every_entry_point(tmp_path_factory, seed, data, ext):
    """The file-based doors readers use: load_image, image_size (header only), verify_image,
    check_images and as_image_tensor."""
    count("decoder:file-entry-points")
    blob = data.draw(mutated_bytes(SEEDS[seed]), label="mutated")
    path = tmp_path_factory.mktemp("dec") / f"ïmage{ext}"
    path.write_bytes(blob)
    name = [str(path)]
    with guarded():
        out = only_optik_errors(lambda: load_image(path), names=name, what="load_image")
        check_decoded(out, blob, seed)
        hw = only_optik_errors(lambda: image_size(path), names=name, what="image_size")
        if not isinstance(hw, ImageError) and not isinstance(out, ImageError):
            assert hw == (out.size[1], out.size[0]), (hw, out.size)  # header agrees with the decode
        only_optik_errors(lambda: verify_image(path), names=name, what="verify_image")
        reasons = check_images([path, path], full=True)
        assert (reasons[0] is None) == (not isinstance(out, ImageError)), (reasons, out)
        t = only_optik_errors(lambda: as_image_tensor(path), names=name, what="as_image_tensor")
        if not isinstance(t, ImageError):
            assert t.dtype.is_floating_point is False and t.shape[0] == 3


# ---- decompression bombs ----------------------------------------------------------------------------


def png_header(w: int, h: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = zlib.compress(b"\x00" * 64)
    idat = b"IDAT" + body
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(body)) + idat + struct.pack(">I", zlib.crc32(idat))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))  # fmt: skip


def gif_header(w: int, h: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00;")  # fmt: skip


def bmp_header(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def tiff_header(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, 16)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 24) + b"\x00" * 16 + ifd + b"\x00\x00\x00\x00"


HEADERS = {"png": png_header, "gif": gif_header, "bmp": bmp_header, "tiff": tiff_header}


@settings(max_examples=examples(80), **FAST)
@given(fmt=st.sampled_from(sorted(HEADERS)),
       w=st.integers(1, 65535), h=st.integers(1, 65535))  # fmt: skip
@example(fmt="png", w=65535, h=65535)
@example(fmt="png", w=2**31 - 1, h=2**31 - 1)
@example(fmt="bmp", w=2**31 - 1, h=2**31 - 1)
def test_decompression_bomb_headers(fmt, w, h):
    """Declared sizes past the pixel limit fail fast (no decode, no allocation) as ImageError."""
    count("decoder:bomb-headers")
    if w * h <= MAX_IMAGE_PIXELS:  # make it a bomb, within the format's 16-bit fields
        w = max(w, MAX_IMAGE_PIXELS // h + 1)
        if w > 65535:
            w, h = 65535, max(h, MAX_IMAGE_PIXELS // 65535 + 1)
    data = HEADERS[fmt](w, h)
    t0 = time.perf_counter()
    with guarded(seconds=10):
        out = only_optik_errors(lambda: decode_image_bytes(data, "bomb.img"), names=["bomb.img"],
                                what=f"{fmt} {w}x{h}")  # fmt: skip
    assert isinstance(out, ImageError), f"{fmt} {w}x{h} decoded"
    assert time.perf_counter() - t0 < 5.0


@settings(max_examples=examples(40), **FAST)
@given(w=st.integers(1, 40), h=st.integers(1, 40), slack=st.integers(-3, 3))
def test_max_pixels_is_exact(w, h, slack):
    count("decoder:max-pixels")
    data = encode(make_image("RGB", h, w, 0), "PNG")
    limit = max(w * h + slack, 0)
    out = only_optik_errors(lambda: decode_image_bytes(data, "x.png", max_pixels=limit),
                            names=["x.png"])  # fmt: skip
    assert isinstance(out, ImageError) == (w * h > limit)


# ---- odd modes: right values, not just no crash ------------------------------------------------------


def expected_rgb(im: Image.Image, mode: str) -> np.ndarray:
    """What `load_image` must give for a lossless file of `im`."""
    if mode in ("L",):
        a = np.asarray(im)
        return np.repeat(a[..., None], 3, 2)
    if mode == "1":
        a = np.asarray(im).astype(np.uint8) * 255
        return np.repeat(a[..., None], 3, 2)
    if mode == "RGB":
        return np.asarray(im)
    if mode == "I;16" or mode == "I":
        a = np.asarray(im).astype(np.float64)
        g = np.clip(np.rint(a / 65535 * 255), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, 2)
    rgba = np.asarray(im.convert("RGBA")).astype(np.float64)
    if mode == "P":
        return rgba[..., :3].astype(np.uint8)
    alpha = rgba[..., 3:] / 255
    out = rgba[..., :3] * alpha + np.asarray(ALPHA_BACKGROUND, np.float64) * (1 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@settings(max_examples=examples(120), **FAST)
@given(fmt_mode=st.sampled_from([(f, m) for f, ms in FORMAT_MODES.items() for m in ms]),
       h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**16))  # fmt: skip
@example(fmt_mode=("PNG", "1"), h=1, w=1, seed=0)
@example(fmt_mode=("TIFF", "F"), h=1, w=500, seed=1)
@example(fmt_mode=("PNG", "I;16"), h=500, w=1, seed=2)
def test_odd_modes_decode_to_rgb(fmt_mode, h, w, seed):
    count("decoder:odd-modes")
    fmt, mode = fmt_mode
    im = make_image(mode, h, w, seed)
    data = encode(im, fmt)
    out = only_optik_errors(lambda: decode_image_bytes(data, f"m.{fmt.lower()}"), names=["m."])
    assert not isinstance(out, ImageError), out
    a = np.asarray(out)
    assert a.dtype == np.uint8 and a.shape == (h, w, 3)
    t = as_image_tensor(out)
    assert tuple(t.shape) == (3, h, w)
    if fmt in LOSSLESS and mode in ("1", "L", "RGB", "I;16", "I", "RGBA", "LA", "P", "P+t"):
        if fmt == "GIF" or (fmt == "TIFF" and mode in ("P", "LA")) or (fmt == "BMP" and mode == "P"):
            return  # GIF re-quantises; TIFF P/LA and BMP P round-trip through other palettes
        with Image.open(io.BytesIO(data)) as back:
            back.load()
            ref = expected_rgb(back, "P" if mode == "P+t" and "transparency" not in back.info
                               else ("RGBA" if mode == "P+t" else mode))  # fmt: skip
        np.testing.assert_array_equal(a, ref, err_msg=f"{fmt}/{mode}")


# ---- odd paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "dir", "empty", "text", "unicode", "long", "symlink_loop"])
def test_odd_paths(tmp_path, kind):
    count("decoder:odd-paths", plain=True)
    path = tmp_path / "x.png"
    if kind == "dir":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "unicode":
        path = tmp_path / "ñ 日本 😀.png"
        path.write_bytes(SEEDS["PNG/RGB"])
    elif kind == "long":
        path = tmp_path / ("x" * 300 + ".png")
    elif kind == "symlink_loop":
        path.symlink_to(path)
    for fn in (load_image, image_size, verify_image):
        out = only_optik_errors(lambda fn=fn: fn(path), names=[str(path)[:80]], what=f"{fn.__name__}({kind})")
        if kind == "unicode":
            assert not isinstance(out, ImageError)
        else:
            assert isinstance(out, ImageError), (fn.__name__, kind, out)
    assert len(check_images([path])) == 1


# ---- escapes found (each failed before its fix) -----------------------------------------------------------

FOUND = {
    # TIFF whose StripOffsets are doubles (type 12): PIL's decoder raised TypeError, which
    # `raise_image_error` re-raised -> load_image / decode_image_bytes let it escape
    "tiff-float-strip-offsets": bytes.fromhex(
        "49492a0008000000090000010400010000000700000001010400010000000500000002010300010000000800"
        "000003010300010000000100000006010300010000000100000011010c00010000007a000000160104000100"
        "0000050000001701040001000000230000001c0103000100000000000000d3e3c2e423e738667f6195b7f1fc"
        "56dea109e44794bdbe5dd1752d15eedc2b"
    ),
    # PNG with a broken chunk after IDAT: im.getexif() raises SyntaxError -> image_size (which
    # every reader calls for sizes) let it escape
    "png-broken-chunk-exif": bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000007000000050100000000a1e1cb750000000249444154789c63"
        "78c060c7f087e902930400111c03074ec7c3d10000000049454e44ae426082"
    ),
    # 65535 x 65535 PNG header: Image.open raises DecompressionBombError, not an OSError ->
    # image_size let it escape (load_image checked the size itself)
    "png-bomb-header": png_header(65535, 65535),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_escape_regression(tmp_path, name):
    count("decoder:regressions", plain=True)
    data = FOUND[name]
    path = tmp_path / f"{name}.img"
    path.write_bytes(data)
    for fn in (image_size, verify_image):  # header-only checks: may pass, must not escape
        only_optik_errors(lambda fn=fn: fn(path), names=[str(path)], what=f"{fn.__name__}({name})")
    for fn in (load_image, as_image_tensor):
        out = only_optik_errors(lambda fn=fn: fn(path), names=[str(path)], what=f"{fn.__name__}({name})")
        assert isinstance(out, ImageError), (fn.__name__, out)
    out = only_optik_errors(lambda: decode_image_bytes(data, name), names=[name])
    assert isinstance(out, ImageError)
    assert check_images([path], full=True)[0] is not None


def test_long_file_name_is_an_image_error(tmp_path):
    """A name longer than the file system allows: Path.is_file() raises ENAMETOOLONG (an OSError
    that escaped load_image / verify_image before)."""
    count("decoder:regressions", plain=True)
    path = tmp_path / ("ü" * 200 + ".png")
    for fn in (load_image, image_size, verify_image):
        with pytest.raises(ImageError, match="cannot access|file not found|cannot read"):
            fn(path)
