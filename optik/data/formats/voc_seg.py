"""Pascal VOC segmentation: `SegmentationClass/` (+ `SegmentationObject/`) palette PNGs.

    root/JPEGImages/2007_000032.jpg
    root/SegmentationClass/2007_000032.png      class index per pixel (palette PNG), 255 = void
    root/SegmentationObject/2007_000032.png     instance index 1..N per pixel, 0 = none, 255 void
    root/ImageSets/Segmentation/train.txt, val.txt   image ids (else every mask, split later)

Classes: `classes.txt` in the root when present, else VOC's 21 (`VOC_SEG_CLASSES`,
"background" first). Semantic targets are the class maps. With `instances=True` (kind
"instance") each object of SegmentationObject/ is an instance whose class is the majority
class of its pixels in SegmentationClass/; classes are then the object classes (background
dropped, labels shifted by one). Masks are decoded once while reading (size, class range).

>>> train, val, skipped = read_voc_seg("VOCdevkit/VOC2012")     # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optik.data.checks import (
    is_file,
    missing_image,
    read_class_names,
    read_text,
    skip_or_raise,
)
from optik.data.formats.masks import IGNORE, MaskFile, read_png
from optik.data.image import IMAGE_EXTENSIONS, image_size
from optik.data.segmentation_dataset import SegmentationDataset
from optik.errors import DatasetError, ImageError

VOC_SEG_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip


def _voc_palette() -> list[int]:
    """VOC's colour map (the devkit's bit-interleaved `labelcolormap`): 256 RGB triples, flat;
    index 255 (void) is (224, 224, 192)."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


VOC_PALETTE = _voc_palette()  # for SegmentationClass/ and SegmentationObject/ palette PNGs


def is_voc_seg_dir(root: str | Path) -> bool:
    """True when `root` holds `SegmentationClass/` and `JPEGImages/`."""
    root = Path(root)
    return (root / "SegmentationClass").is_dir() and (root / "JPEGImages").is_dir()


class VOCObjects:
    """A VOC image's instances: SegmentationObject ids + their majority class, decoded on load."""

    def __init__(self, class_png: str, object_png: str, num_classes: int,
                 size: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.class_png, self.object_png = class_png, object_png
        self.num_classes, self.size = num_classes, size

    def decode(self) -> dict[str, np.ndarray]:
        sem = MaskFile(self.class_png, self.num_classes).decode()["semantic"]
        obj = read_png(self.object_png, False).astype(np.int64)
        if obj.shape != sem.shape:
            raise DatasetError(
                f"{self.object_png}: mask is {obj.shape[1]}x{obj.shape[0]} but "
                f"{Path(self.class_png).name} is {sem.shape[1]}x{sem.shape[0]} (WxH)"
            )
        obj[obj == IGNORE] = 0
        ids = np.unique(obj[obj > 0])  # object values (sparse: a 16-bit PNG may hold 60000)
        labels = []
        for k, v in enumerate(ids):
            classes = sem[(obj == v) & (sem != IGNORE) & (sem > 0)]
            if not classes.size:
                raise DatasetError(
                    f"{self.object_png}: field 'SegmentationObject': object {int(v)} has no "
                    f"class in {Path(self.class_png).name}"
                )
            labels.append(int(np.bincount(classes).argmax()) - 1)  # background dropped
        compact = np.where(obj > 0, np.searchsorted(ids, obj) + 1, 0)  # object v -> its k + 1
        labels_a = np.asarray(labels, np.int64)
        return {"ids": compact, "labels": labels_a, "iscrowd": np.zeros(len(labels), np.int64)}


def _read_classes(root: Path) -> list[str]:
    f = root / "classes.txt"
    return read_class_names(f) if is_file(f) else list(VOC_SEG_CLASSES)


def _image(root: Path, stem: str) -> Path:
    for ext in (".jpg", *sorted(IMAGE_EXTENSIONS)):
        p = root / "JPEGImages" / (stem + ext)
        if is_file(p):
            return p
    return root / "JPEGImages" / (stem + ".jpg")


def read_voc_seg(
    root: str | Path, *, skip_bad: bool = False, instances: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset | None, list[tuple[str, str]]]:
    """A VOC folder -> (train, val or None, skipped) `SegmentationDataset`s (semantic, or
    instance with `instances=True`)."""
    root = Path(root)
    names = _read_classes(root)
    cls_dir, obj_dir = root / "SegmentationClass", root / "SegmentationObject"
    if instances and not obj_dir.is_dir():
        raise DatasetError(f"{root}: instance targets need SegmentationObject/")
    sets = root / "ImageSets" / "Segmentation"
    if (sets / "train.txt").is_file():
        groups = {}
        for split in ("train", "val"):
            if (sets / f"{split}.txt").is_file():
                lines = read_text(sets / f"{split}.txt", "image id list").split()
                groups[split] = lines
    else:
        groups = {"train": sorted(p.stem for p in cls_dir.glob("*.png"))}
    skipped: list[tuple[str, str]] = []
    out = {}
    for split, stems in groups.items():
        images, anns, sizes = [], [], []
        for stem in stems:
            img, cls_png = _image(root, stem), cls_dir / f"{stem}.png"
            if not is_file(img):
                missing_image(cls_png, "field 'JPEGImages'", img, skip_bad, skipped)
                continue
            if not is_file(cls_png):
                skip_or_raise(f"{sets / (split + '.txt')}: id {stem!r}: mask file not found: "
                              f"{cls_png}", skip_bad, skipped, cls_png)  # fmt: skip
                continue
            try:
                hw = image_size(img)
                if instances:
                    obj_png = str(obj_dir / f"{stem}.png")
                    ann: Any = VOCObjects(str(cls_png), obj_png, len(names), hw)
                    shape = ann.decode()["ids"].shape
                else:
                    ann = MaskFile(str(cls_png), len(names), None, hw)
                    shape = ann.decode()["semantic"].shape
                if shape != hw:
                    raise DatasetError(f"{cls_png}: mask is {shape[1]}x{shape[0]} but image "
                                       f"{img.name!r} is {hw[1]}x{hw[0]} (WxH)")  # fmt: skip
            except (DatasetError, ImageError) as e:
                if not skip_bad:
                    raise
                skipped.append((str(cls_png), str(e)))
                continue
            images.append(str(img))
            anns.append(ann)
            sizes.append(hw)
        if not images:
            raise DatasetError(f"{root}: split {split!r} has no usable images")
        classes = names[1:] if instances else names
        out[split] = SegmentationDataset(images, anns, classes,
                                         kind="instance" if instances else "semantic",
                                         name=f"voc:{split}", sizes=sizes)  # fmt: skip
    return out["train"], out.get("val"), skipped


__all__ = ["VOC_PALETTE", "VOC_SEG_CLASSES", "VOCObjects", "is_voc_seg_dir", "read_voc_seg"]
