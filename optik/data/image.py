"""The one safe image decoder: every image optik reads from disk comes through `load_image`.

It applies EXIF orientation, turns any PIL mode into RGB, refuses decompression bombs and forces a
full decode, so a truncated or mislabelled file fails here with its path in the message instead of
deep inside a DataLoader worker.

>>> img = load_image("cat.jpg")            # doctest: +SKIP
>>> as_image_tensor(img).shape             # doctest: +SKIP
torch.Size([3, 480, 640])
"""

from __future__ import annotations

from typing import NoReturn

import os
import io
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from optik.errors import ImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
# PIL's own warning threshold (about 9460x9460); PIL itself only raises at twice this.
MAX_IMAGE_PIXELS: int = 89_478_485

# Transparent pixels are composited over white: a logo or icon on a transparent background then
# looks the way a browser shows it, and the (arbitrary) colour PIL keeps under alpha=0 never leaks.
ALPHA_BACKGROUND = (255, 255, 255)


def is_image_file(path: str | Path) -> bool:
    """True when the file name ends in one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def check_pixels(path: str | Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise `ImageError` when a `(W, H)` image is larger than `max_pixels` (None: no limit)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{path}: image is {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,} "
            "(possible decompression bomb; pass max_pixels=None to allow)"
        )


def _check_file(path: Path) -> None:
    """ImageError unless `path` is a regular file (a name too long for the file system, a
    permission error or a symlink loop is an ImageError too, never an OSError)."""
    try:
        if path.is_file():
            return
        problem = "not a file" if path.exists() else "file not found"
    except OSError as e:  # ENAMETOOLONG, EACCES, ELOOP...
        problem = f"cannot access ({e.strerror or type(e).__name__})"
    raise ImageError(f"{path}: {problem}")


def load_image(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file fully into an upright RGB PIL image.

    Errors (missing file, not an image, truncated data, more than `max_pixels` pixels) raise
    `ImageError` whose message starts with the path. Multi-frame files (GIF, TIFF) give frame 0.
    PIL's own hard limit (2x its `MAX_IMAGE_PIXELS`) still applies when `max_pixels=None`.

    >>> load_image("scan.png").mode        # doctest: +SKIP
    'RGB'
    """
    path = Path(path)
    _check_file(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped PIL's global switch; we still want truncation to be an error.
        warnings.warn(
            "PIL ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images may pass", stacklevel=2
        )
    return _decode(path, path, max_pixels)


def decode_image_bytes(data: bytes, name: str = "upload", *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """:func:`load_image` for encoded bytes that never touch the disk (uploads); errors start with ``name``.

    >>> import io; buf = io.BytesIO(); Image.new("RGB", (4, 2)).save(buf, "PNG")
    >>> decode_image_bytes(buf.getvalue(), "a.png").size
    (4, 2)
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), Path(name), max_pixels)


def _decode(fp: str | Path | io.BytesIO, name: Path, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We apply our own (stricter or disabled) limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                check_pixels(name, img.size, max_pixels)  # before decoding: a bomb never allocates
                img.load()  # full decode now: truncation surfaces here
                out = to_rgb(_upright(img))
                # The `with` closes `img`; never hand back the object it closes.
                return out.copy() if out is img else out
    except Exception as e:
        raise_image_error(name, e, "cannot decode image")


def raise_image_error(path: Path, e: Exception, what: str) -> NoReturn:
    """Re-raise a PIL failure as one `ImageError` naming the file (PIL reports truncation and
    corruption through several exception types depending on the format)."""
    if isinstance(e, ImageError):
        raise e
    if isinstance(e, UnidentifiedImageError):
        raise ImageError(f"{path}: not an image (PIL cannot identify the format)") from None
    if isinstance(e, Image.DecompressionBombError):
        raise ImageError(f"{path}: {e}") from None
    # PIL's plugins report corrupt data as OSError, SyntaxError, ValueError, EOFError, but also as
    # struct.error, IndexError, KeyError, TypeError, ZeroDivisionError... (found by fuzzing): for
    # an untrusted file every one of them means "cannot decode".
    raise ImageError(f"{path}: {what} ({type(e).__name__}: {e})") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag; a malformed EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - bad EXIF metadata must not make a good image unreadable
        return img


def verify_image(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Cheap scan-time check without decoding pixels: PIL open + `verify()` + size guard.

    Catches missing files, non-images and (for PNG) corrupt chunks; a JPEG cut short usually
    passes and is only caught by `load_image`. Raises `ImageError` naming the path.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(path, img.size, max_pixels)
                img.verify()
    except Exception as e:
        raise_image_error(path, e, "corrupt image")


def check_images(paths: Sequence[str | Path], *, full: bool = False) -> list[str | None]:
    """Scan-time check of many files: per path None (fine) or the reason it is unusable.

    full=False: `verify_image` (header + structure, cheap). full=True: `load_image` (complete
    decode, also catches truncated JPEGs). Runs on a few threads (PIL releases the GIL).
    """
    check = load_image if full else verify_image

    def one(p: str | Path) -> str | None:
        try:
            check(p)
            return None
        except ImageError as e:
            msg, prefix = str(e), f"{Path(p)}: "
            return msg[len(prefix) :] if msg.startswith(prefix) else msg

    if len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, paths, chunksize=32))


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 colour + (H,W) uint8 alpha -> (H,W,3) uint8 over `ALPHA_BACKGROUND`."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(ALPHA_BACKGROUND, np.float32)
    out = rgb.astype(np.float32) * a + bg * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth or float pixels -> uint8 by the value range of the data type, not clipping.

    uint16 (PIL "I;16"): /65535. int32 (PIL "I"): PIL stores 16-bit PNG/TIFF data in this mode,
    so values within 0..65535 are read as 16-bit; anything else is min-max scaled. float (PIL "F"):
    values in [0, 1] are taken as-is, anything else min-max scaled.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    x = a.astype(np.float64)
    if a.dtype == np.uint16:
        x = x / 65535.0
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = (x.min(), x.max()) if x.size else (0.0, 0.0)
        if lo >= 0 and hi <= 65535:
            x = x / 65535.0
        else:
            x = (x - lo) / max(hi - lo, 1.0)
    else:
        finite = x[np.isfinite(x)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if lo < 0 or hi > 1:
            x = (x - lo) / (hi - lo if hi > lo else 1.0)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> "RGB".

    L/1: grey replicated. LA, RGBA, PA and P with a transparency key: composited over white.
    CMYK/YCbCr/HSV: PIL's conversion. I;16 / I / F: scaled to 0-255 by the data type's range
    (16-bit 65535 -> 255), never clipped.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" or mode == "PA":
        img = (
            img.convert("RGBA")
            if (mode == "PA" or "transparency" in img.info)
            else img.convert("RGB")
        )
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "RGBa", "La"):
        if mode in ("RGBa", "La"):  # premultiplied alpha
            img = img.convert("RGBA" if mode == "RGBa" else "LA")
        rgba = np.asarray(img.convert("RGBA"))
        return Image.fromarray(_composite(rgba[..., :3], rgba[..., 3]), "RGB")
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img)
        if a.ndim == 3:  # e.g. I;16 RGB variants are rare but exist
            a = a[..., 0]
        g = _scale_to_uint8(a)
        return Image.fromarray(np.repeat(g[..., None], 3, axis=2), "RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    if mode == "LAB":
        raise ImageError("LAB images are not supported; convert to RGB first")
    return img.convert("RGB")


def _array_to_hwc_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """HW / HWC(1,3,4) array of uint8, uint16, bool or float in [0, 1] -> (H,W,3) uint8."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(
            f"{what} of shape {tuple(a.shape)} is not an image; expected (H, W), or (H, W, C) "
            "with C in 1, 3, 4"
        )
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a).all()
        lo, hi = (float(a.min()), float(a.max()))
        if not finite or lo < -1e-3 or hi > 1 + 1e-3:
            raise ImageError(
                f"{what} of shape {tuple(a.shape)} is float with values in [{lo:.3g}, {hi:.3g}]; "
                "float images must be in [0, 1]"
            )
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype in (np.uint16, np.bool_):
        a = _scale_to_uint8(a)
    elif a.dtype != np.uint8:
        raise ImageError(
            f"{what} of shape {tuple(a.shape)} has dtype {a.dtype}; expected uint8, uint16, bool "
            "or float in [0, 1]"
        )
    c = a.shape[2]
    if c == 1:
        return np.repeat(a, 3, axis=2)
    if c == 4:
        return _composite(a[..., :3], a[..., 3])
    return a


def _chw_tensor(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> a fresh contiguous (3, H, W) tensor. Always one copy: the result never
    aliases the caller's array (or a dataset's shared storage) and is writable."""
    return torch.from_numpy(np.array(a.transpose(2, 0, 1), order="C"))


def as_image_array(x: str | Path | np.ndarray | Image.Image | torch.Tensor) -> np.ndarray:
    """Anything :func:`as_image_tensor` takes -> a fresh (H, W, 3) uint8 RGB array: C-contiguous, writable,
    never aliasing ``x``. It is the layout decoders and PIL give, so no transposing copy is made: predict keeps
    it as ``Results.orig_img`` and hands the preprocessing a channels-last (3, H, W) view of it.

    >>> a = np.zeros((8, 6), np.uint8); b = as_image_array(a)
    >>> b.shape, b.flags.c_contiguous, b.flags.writeable, np.shares_memory(a, b)
    ((8, 6, 3), True, True, False)
    """
    return np.array(_hwc_uint8(x), order="C")  # always a copy (np.asarray of a PIL image is read-only)


def as_image_tensor(x: str | Path | np.ndarray | Image.Image | torch.Tensor) -> torch.Tensor:
    """Anything image-like -> uint8 tensor (3, H, W) on the CPU.

    - str / Path: decoded with `load_image`.
    - PIL image: any mode, via `to_rgb`.
    - ndarray: (H, W) grey or (H, W, C) with C in 1, 3 (RGB), 4 (RGBA, over white);
      uint8, uint16 (scaled), bool, or float in [0, 1].
    - Tensor: (C, H, W) with C in 1, 3, 4, or (H, W); uint8 or float in [0, 1].
    Other shapes/dtypes raise `ImageError` naming the shape.

    >>> as_image_tensor(np.zeros((8, 6, 3), np.uint8)).shape
    torch.Size([3, 8, 6])
    """
    return _chw_tensor(_hwc_uint8(x))


def _hwc_uint8(x: str | Path | np.ndarray | Image.Image | torch.Tensor) -> np.ndarray:
    """:func:`as_image_tensor`'s conversion to (H, W, 3) uint8; may alias ``x`` (callers copy)."""
    if isinstance(x, (str, Path)):
        x = load_image(x)
    if isinstance(x, Image.Image):
        return np.asarray(to_rgb(x))
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().as_subclass(torch.Tensor)
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ImageError(
                f"tensor of shape {tuple(x.shape)} is not an image; expected (C, H, W) with C in "
                "1, 3, 4, or (H, W)"
            )
        if t.dtype == torch.bool:
            t = t.to(torch.uint8) * 255
        elif t.is_floating_point():
            t = t.float()
        elif t.dtype != torch.uint8:
            raise ImageError(
                f"tensor of shape {tuple(x.shape)} has dtype {t.dtype}; expected uint8 or float "
                "in [0, 1]"
            )
        return _array_to_hwc_uint8(t.permute(1, 2, 0).numpy(), "tensor")
    if isinstance(x, np.ndarray):
        return _array_to_hwc_uint8(x, "array")
    raise ImageError(
        f"cannot use a {type(x).__name__} as an image; "
        "expected a path, PIL image, ndarray or tensor"
    )


_EXIF_ORIENTATION = 0x0112  # values 5..8 rotate by 90 degrees: width and height swap


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (no pixel decode), after EXIF orientation, so it
    matches what `load_image` returns. Raises `ImageError` naming the path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if _orientation(im) in (5, 6, 7, 8):
                    w, h = h, w
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (PIL cannot identify the format)") from None
    except Exception as e:  # noqa: BLE001 - OSError, DecompressionBombError, struct.error...
        raise ImageError(f"{path}: cannot read image header ({type(e).__name__}: {e})") from None
    return int(h), int(w)


def _orientation(im: Image.Image) -> int:
    """The EXIF Orientation tag (1 when absent or unreadable: `load_image` then keeps the image
    as stored, so the header size must agree)."""
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF
        return 1


__all__ = [
    "image_size",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "as_image_array",
    "as_image_tensor",
    "check_images",
    "is_image_file",
    "load_image",
    "to_rgb",
    "verify_image",
]
