"""Pascal VOC detection data: `Annotations/*.xml` + `JPEGImages/` (+ `ImageSets/Main/`).

    root/Annotations/2007_000027.xml        <filename>, <size><width><height>, and per object
    root/JPEGImages/2007_000027.jpg         <name>, <difficult>, <bndbox><xmin>…<ymax>
    root/ImageSets/Main/train.txt, val.txt  optional split lists (one image id per line)

Without `ImageSets/Main/train.txt` every XML is read into one pool (split later by fraction).
Class names come from `classes.txt` (or `labels.txt`) in the root, one per line in index
order, when present (beside `SegmentationClass/` a first line `background` is the segmentation
layout's index 0, not an object class, and is left out); else the sorted set of object names in
the XMLs read. `read_voc_instances` also reads each object's mask from `SegmentationObject/`.

Coordinates: VOC pixels are 1-based and inclusive, so `xmin, ymin, xmax, ymax` become the xyxy
box `(xmin - 1, ymin - 1, xmax, ymax)` (Detectron2's convention); fractional values are
accepted. `difficult=1` objects are kept with iscrowd=1, so COCO evaluation ignores them (a
detection on one is neither a true nor a false positive), as VOC's own metric does.

>>> train, val, skipped = read_voc("VOCdevkit/VOC2012")     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from optik.data.checks import (
    BoxChecker,
    is_file,
    missing_image,
    read_class_names,
    read_text,
)
from optik.data.detection_dataset import DetectionDataset
from optik.data.formats.masks import IGNORE, read_png
from optik.data.image import IMAGE_EXTENSIONS, image_size
from optik.errors import DatasetError, ImageError

log = logging.getLogger(__name__)

CLASS_FILES = ("classes.txt", "labels.txt")


def is_voc_dir(root: str | Path) -> bool:
    """True when `root` holds `Annotations/` and `JPEGImages/` folders."""
    root = Path(root)
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


def _text(node: ET.Element, tag: str, xml: Path, where: str, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise DatasetError(f"{xml}: {where}: missing field <{tag}>")
        return None
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path, where: str) -> float:
    text = _text(node, tag, xml, where)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{xml}: {where}: field <{tag}> is not a number: {text[:40]!r}") from None


def _parse(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as e:
        line, col = e.position
        raise DatasetError(f"{xml}: malformed XML at line {line} column {col + 1}") from None
    except (OSError, ValueError, LookupError, RecursionError) as e:  # unreadable, bad encoding
        raise DatasetError(f"{xml}: cannot read XML ({type(e).__name__}: {e})") from None


def _image_file(root: Path, xml: Path, doc: ET.Element) -> Path:
    name = _text(doc, "filename", xml, "annotation", required=False)
    jpeg = root / "JPEGImages"
    if name and is_file(jpeg / name):
        return jpeg / name
    for ext in IMAGE_EXTENSIONS:  # <filename> missing or stale: try the XML's stem
        for cand in (jpeg / (xml.stem + ext), jpeg / (xml.stem + ext.upper())):
            if is_file(cand):
                return cand
    return jpeg / (name or xml.stem + ".jpg")


def _read_classes(root: Path) -> list[str] | None:
    for fname in CLASS_FILES:
        f = root / fname
        if f.is_file():
            names = read_class_names(f)
            if (root / "SegmentationClass").is_dir() and names[0].lower() == "background":
                names = names[1:]  # the segmentation layout's index 0, not an object class
            return names or None
    return None


def _read_xml(
    xml: Path, root: Path, checker: BoxChecker
) -> tuple[Path, tuple[int, int] | None, list[tuple[list, str, int, str, int]]]:
    """-> (image file, (H, W) or None, [(xyxy, class name, difficult, where, object index)])."""
    doc = _parse(xml)
    image = _image_file(root, xml, doc)
    size = None
    sz = doc.find("size")
    if sz is not None and sz.find("width") is not None and sz.find("height") is not None:
        w, h = _number(sz, "width", xml, "size"), _number(sz, "height", xml, "size")
        if np.isfinite(w) and np.isfinite(h) and w >= 1 and h >= 1:  # else: from the image
            size = (int(h), int(w))
    objects = []
    for j, obj in enumerate(doc.findall("object")):
        name = _text(obj, "name", xml, f"object {j}")
        where = f"object {j} ({name!r})"
        bnd = obj.find("bndbox")
        if bnd is None:
            checker.bad(where, "missing field <bndbox>")
            continue
        x0, y0, x1, y1 = (_number(bnd, t, xml, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        diff = _text(obj, "difficult", xml, where, required=False)
        if diff not in (None, "0", "1"):
            diff = {"false": "0", "true": "1"}.get(diff.lower(), diff)
            if diff not in ("0", "1"):
                raise DatasetError(f"{xml}: {where}: field <difficult> must be 0 or 1, got {diff!r}")
        objects.append(([x0 - 1.0, y0 - 1.0, x1, y1], name, int(diff or 0), where, j))
    return image, size, objects


def _split_ids(root: Path) -> dict[str, list[str]] | None:
    main = root / "ImageSets" / "Main"
    if not (main / "train.txt").is_file():
        return None
    out = {}
    for split in ("train", "val"):
        f = main / f"{split}.txt"
        if f.is_file():  # first token per line (class lists have a second +-1 column)
            lines = read_text(f, "image id list").splitlines()
            out[split] = [ln.split()[0] for ln in lines if ln.split()]
    return out


def read_voc(
    root: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, DetectionDataset | None, list[tuple[str, str]]]:
    """A VOC folder -> (train, val or None, skipped). Errors name the XML file, the object and
    the field (malformed XML, missing <name>/<bndbox> values, unknown class when classes.txt
    is given, degenerate or out-of-image boxes) or the image (missing)."""
    train, val, _, skipped = _read_voc(Path(root), strict, skip_bad, masks=False)
    return train, val, skipped


def read_voc_instances(
    root: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, list[list]], list[tuple[str, str]]]:
    """`read_voc` plus each kept object's mask from `SegmentationObject/<id>.png` (pixel value
    k + 1 = the k-th <object> of the XML, VOC's convention) as a compressed COCO RLE, for
    writing the annotations elsewhere (`optik.data.convert`): {split: per image in dataset
    order, per box an RLE or None (no PNG for the image, or no pixel of the object)}. A
    difficult object (VOC paints those void, 255) gets the void pixels inside its box; the
    count is logged. -> (train, val or None, segments, skipped)."""
    return _read_voc(Path(root), strict, skip_bad, masks=True)


def _object_masks(png: Path, size: tuple[int, int], objects: list[tuple[list, int, int]]) -> list:
    """SegmentationObject PNG -> one RLE (or None) per (xyxy, difficult, object index)."""
    from faster_coco_eval.core import mask as mask_utils

    ids = read_png(png, False)
    if ids.shape[:2] != size:
        raise DatasetError(f"{png}: mask is {ids.shape[1]}x{ids.shape[0]} but the image is "
                           f"{size[1]}x{size[0]} (WxH)")  # fmt: skip
    out = []
    for xyxy, difficult, j in objects:
        if difficult:
            x0, y0 = (max(int(np.floor(v)), 0) for v in xyxy[:2])
            x1, y1 = int(np.ceil(xyxy[2])), int(np.ceil(xyxy[3]))
            m = np.zeros(size, bool)
            m[y0:y1, x0:x1] = ids[y0:y1, x0:x1] == IGNORE
        else:
            m = ids == j + 1
        if m.any():
            out.append(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))
        else:
            out.append(None)
    return out


def _read_voc(
    root: Path, strict: bool, skip_bad: bool, masks: bool
) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, list[list]], list[tuple[str, str]]]:
    ann_dir = root / "Annotations"
    splits = _split_ids(root)
    if splits is None:
        groups = {"train": sorted(ann_dir.glob("*.xml"))}
    else:
        groups = {s: [ann_dir / f"{i}.xml" for i in ids] for s, ids in splits.items()}
    if not groups["train"]:
        raise DatasetError(f"{ann_dir}: no .xml annotation files")
    classes = _read_classes(root)
    skipped: list[tuple[str, str]] = []
    parsed: dict[str, list] = {}
    checkers = {s: BoxChecker(root, strict=strict, skip_bad=skip_bad) for s in groups}
    for split, xmls in groups.items():
        rows = []
        checker = checkers[split]  # one per split: one clip count to log
        for xml in xmls:
            if not is_file(xml):
                raise DatasetError(
                    f"{root / 'ImageSets' / 'Main' / (split + '.txt')}: annotation {xml} not found"
                )
            checker.file = str(xml)
            image, size, objects = _read_xml(xml, root, checker)
            rows.append((xml, image, size, objects))
        parsed[split] = rows
    if classes is None:
        classes = sorted({o[1] for rows in parsed.values() for r in rows for o in r[3]})
        if not classes:
            raise DatasetError(f"{ann_dir}: no objects in any XML and no classes.txt")
    index = {c: k for k, c in enumerate(classes)}
    out: dict[str, DetectionDataset] = {}
    segments: dict[str, list[list]] = {}
    obj_dir, rebuilt = root / "SegmentationObject", 0
    for split, rows in parsed.items():
        images, anns, sizes = [], [], []
        segments[split] = []
        checker = checkers[split]
        for xml, image, size, objects in rows:
            checker.file = str(xml)
            if not is_file(image):
                missing_image(xml, "field <filename>", image, skip_bad, skipped)
                continue
            if size is None:
                try:
                    size = image_size(image)
                except ImageError as e:
                    if not skip_bad:
                        raise
                    skipped.append((str(image), str(e)))
                    continue
            boxes, labels, crowd, kept = [], [], [], []
            for xyxy, name, difficult, where, j in objects:
                if name not in index:
                    checker.bad(where, f"field <name>: unknown class {name!r} (classes: {classes})")
                    continue
                box = checker.check(xyxy, size, where + " field <bndbox>")
                if box is not None:
                    boxes.append(box)
                    labels.append(index[name])
                    crowd.append(1 if difficult else 0)
                    kept.append((list(box), 1 if difficult else 0, j))
            if masks:
                png = obj_dir / f"{xml.stem}.png"
                segs = _object_masks(png, size, kept) if png.is_file() else [None] * len(kept)
                rebuilt += sum(1 for (_, d, _), sg in zip(kept, segs) if d and sg is not None)
                segments[split].append(segs)
            images.append(str(image))
            sizes.append(size)
            anns.append({
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                "labels": np.asarray(labels, np.int64),
                "iscrowd": np.asarray(crowd, np.int64),
            })  # fmt: skip
        checker.finish(f"{root} split {split!r}")
        skipped += checker.skipped
        if not images:
            raise DatasetError(f"{root}: split {split!r} has no usable images")
        out[split] = DetectionDataset(images, anns, classes, name=f"voc:{split}", sizes=sizes)
    if rebuilt:
        one = rebuilt == 1
        log.info(
            "read_voc: %d difficult/crowd mask%s rebuilt from the void (255) pixels inside %s",
            rebuilt, "" if one else "s", "its box" if one else "their boxes",
        )  # fmt: skip
    return out["train"], out.get("val"), segments, skipped


__all__ = ["is_voc_dir", "read_voc", "read_voc_instances"]
