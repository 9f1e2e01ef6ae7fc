"""Mask-PNG folders for semantic segmentation: images and masks with the same stems.

    root/images/a.jpg   root/masks/a.png        (or root/train/{images,masks}, root/val/...)
    root/classes.txt    one class name per line, index order; or
    root/classes.yaml   `names: [...]` (+ `colors: [[r, g, b], ...]` per class, `void_color`)

Index masks (PNG mode L, P, I): the pixel value is the class index, 255 = void. With `colors`
in classes.yaml, masks are colour masks (RGB, or P shown through its palette): each colour
maps to its class, `void_color` (optional) to 255. Without a classes file the names are
"0", "1", … up to the largest index found. Every mask is decoded once while reading, so a
size mismatch, an index >= C (not 255) or a colour outside the palette raises DatasetError
naming the mask file (skip_bad: the image is skipped and listed).

>>> train, val, skipped = read_mask_dir("data/roads")             # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from optik.data.checks import (
    is_file,
    read_class_names,
    read_text,
    skip_or_raise,
    yaml_problem,
)
from optik.data.image import IMAGE_EXTENSIONS, image_size
from optik.data.segmentation_dataset import IGNORE_INDEX, SegmentationDataset
from optik.errors import DatasetError, ImageError

IGNORE = IGNORE_INDEX  # void pixels in index masks
MASK_DIRS = ("masks", "labels", "annotations")


def read_png(path: str | Path, colours: bool) -> np.ndarray:
    """A mask file -> (H, W) uint8/int32 index array, or (H, W, 3) uint8 RGB when `colours`."""
    try:
        with Image.open(path) as im:
            if colours:
                return np.asarray(im.convert("RGB"))
            if im.mode in ("RGB", "RGBA"):
                raise DatasetError(
                    f"{path}: field 'mask': an {im.mode} colour mask needs `colors` in "
                    "classes.yaml (or save index/palette PNGs)"
                )
            a = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L"))
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: mask file not found") from None
    except Exception as e:  # noqa: BLE001 - OSError, DecompressionBombError, struct.error...
        raise DatasetError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
    if a.ndim != 2 or (a.size and (a.min() < 0 or a.max() > 65535)):
        what = f"shape {a.shape}" if a.ndim != 2 else f"values {int(a.min())}..{int(a.max())}"
        raise DatasetError(f"{path}: field 'mask': {what}; an index mask holds one value 0..65535 "
                           "per pixel")  # fmt: skip
    return a


class MaskFile:
    """A semantic mask PNG, decoded on load: index values (255 void) or colours via a palette."""

    def __init__(self, path: str, num_classes: int, palette: dict[int, int] | None = None,
                 size: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.path, self.num_classes, self.palette, self.size = str(path), num_classes, palette, size

    def decode(self) -> dict[str, np.ndarray]:
        a = read_png(self.path, self.palette is not None)
        if self.palette is not None:
            key = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
            colours = np.fromiter(self.palette, np.int64)
            order = np.argsort(colours)
            pos = np.searchsorted(colours[order], key).clip(0, len(colours) - 1)
            found = colours[order][pos] == key
            if not found.all():
                y, x = np.argwhere(~found)[0]
                raise DatasetError(
                    f"{self.path}: field 'colors': colour {tuple(a[y, x].tolist())} at (x={x}, "
                    f"y={y}) is not in the palette of classes.yaml"
                )
            values = np.fromiter(self.palette.values(), np.int64)[order]
            return {"semantic": values[pos].astype(np.uint8)}
        bad = (a >= self.num_classes) & (a != IGNORE)
        if bad.any():
            y, x = np.argwhere(bad)[0]
            raise DatasetError(
                f"{self.path}: field 'mask': class index {int(a[y, x])} at (x={x}, y={y}) out "
                f"of range for {self.num_classes} classes (255 = void)"
            )
        return {"semantic": a.astype(np.uint8)}


def _rgb(value: Any, where: str) -> int:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in value)):  # fmt: skip
        raise DatasetError(f"{where}: expected an [r, g, b] colour of ints 0..255, got {value!r}")
    return (value[0] << 16) | (value[1] << 8) | value[2]


def read_classes(root: Path) -> tuple[list[str] | None, dict[int, int] | None]:
    """classes.txt / classes.yaml in `root` -> (names or None, colour -> index or None)."""
    txt, yml = root / "classes.txt", next((root / n for n in ("classes.yaml", "classes.yml")
                                           if (root / n).is_file()), None)  # fmt: skip
    if yml is None:
        return (read_class_names(txt) if txt.is_file() else None), None
    try:
        doc = yaml.safe_load(read_text(yml, "class list"))
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as e:
        raise DatasetError(f"{yml}: malformed YAML {yaml_problem(e)}") from None
    if isinstance(doc, list):
        doc = {"names": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("names"), (list, dict)):
        raise DatasetError(f"{yml}: field 'names' must list the class names")
    names = doc["names"]
    if isinstance(names, dict):  # {0: name, 1: name}
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise DatasetError(f"{yml}: field 'names': keys must be class indices 0, 1, ...")
        names = [names[k] for k in sorted(names)]
    names = [str(n) for n in names]
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"{yml}: expected distinct class names")
    palette = None
    if doc.get("colors") is not None:
        cols = doc["colors"]
        if not isinstance(cols, list) or len(cols) != len(names):
            raise DatasetError(f"{yml}: field 'colors' must give one [r, g, b] per class "
                               f"({len(names)})")  # fmt: skip
        palette = {}
        for k, c in enumerate(cols):
            rgb = _rgb(c, f"{yml}: field 'colors'[{k}]")
            if rgb in palette:
                raise DatasetError(f"{yml}: field 'colors'[{k}]: colour {c} used twice")
            palette[rgb] = k
        if doc.get("void_color") is not None:
            palette[_rgb(doc["void_color"], f"{yml}: field 'void_color'")] = IGNORE
    return names, palette


def _split_dirs(root: Path) -> dict[str, Path]:
    if (root / "train" / "images").is_dir():
        out = {"train": root / "train"}
        if (root / "val" / "images").is_dir():
            out["val"] = root / "val"
        return out
    return {"train": root}


def _mask_dir(folder: Path) -> Path | None:
    return next((folder / d for d in MASK_DIRS if (folder / d).is_dir()), None)


def is_mask_dir(root: str | Path) -> bool:
    """True when `root` (or root/train) holds images/ and masks/ (or labels/, annotations/)."""
    base = _split_dirs(Path(root))["train"]
    return (base / "images").is_dir() and _mask_dir(base) is not None


def read_mask_dir(
    root: str | Path, *, skip_bad: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset | None, list[tuple[str, str]]]:
    """A mask folder -> (train, val or None, skipped) semantic `SegmentationDataset`s."""
    root = Path(root)
    names, palette = read_classes(root)
    skipped: list[tuple[str, str]] = []
    rows: dict[str, list[tuple[Path, Path, tuple[int, int]]]] = {}
    top = -1
    for split, folder in _split_dirs(root).items():
        mdir = _mask_dir(folder)
        if mdir is None:
            raise DatasetError(f"{folder}: no masks/ folder beside images/")
        files = sorted(p for p in (folder / "images").iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS)  # fmt: skip
        if not files:
            raise DatasetError(f"{folder / 'images'}: no image files")
        rows[split] = []
        for img in files:
            mask = mdir / (img.stem + ".png")
            if not is_file(mask):
                skip_or_raise(f"{mask}: mask file not found (for image {img.name!r})", skip_bad,
                              skipped, mask)  # fmt: skip
                continue
            try:
                hw = image_size(img)
                if names is not None:  # full check now: size, class range / palette
                    a = MaskFile(str(mask), len(names), palette).decode()["semantic"]
                else:
                    a = read_png(mask, False)
                    found = int(a[a != IGNORE].max(initial=0))
                    if found > IGNORE:  # a semantic map holds classes 0..254 (255 = void)
                        raise DatasetError(
                            f"{mask}: field 'mask': class index {found} > {IGNORE - 1}; without "
                            "classes.txt the largest index sets the class count (255 = void)"
                        )  # fmt: skip
                    top = max(top, found)
                if a.shape[:2] != hw:
                    raise DatasetError(
                        f"{mask}: mask is {a.shape[1]}x{a.shape[0]} but image {img.name!r} is "
                        f"{hw[1]}x{hw[0]} (WxH)"
                    )
            except (DatasetError, ImageError) as e:
                if not skip_bad:
                    raise
                skipped.append((str(mask), str(e)))
                continue
            rows[split].append((img, mask, hw))
    if names is None:
        names = [str(k) for k in range(top + 1)] or ["0"]
    out = {}
    for split, items in rows.items():
        if not items:
            raise DatasetError(f"{root}: split {split!r} has no usable images")
        out[split] = SegmentationDataset(
            [str(img) for img, _, _ in items],
            [MaskFile(str(mask), len(names), palette, hw) for _, mask, hw in items],
            names, kind="semantic", name=f"masks:{split}", sizes=[hw for _, _, hw in items],
        )  # fmt: skip
    return out["train"], out.get("val"), skipped


__all__ = ["MaskFile", "is_mask_dir", "read_classes", "read_mask_dir", "read_png"]
