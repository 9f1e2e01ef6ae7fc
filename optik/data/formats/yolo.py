"""YOLO (Ultralytics) detection data: a `data.yaml` plus one label file per image.

    path: ../datasets/pets       # root; relative to the yaml's folder; default: that folder
    train: images/train          # a folder (searched recursively), a .txt list, or a list of them
    val: images/val              # optional; `test` is ignored
    names: [cat, dog]            # or {0: cat, 1: dog}; `nc`, when given, must match

Labels: `images/…/x.jpg` -> `labels/…/x.txt` (the last `images` folder in the path becomes
`labels`; without one, the .txt sits beside the image), one object per line
`class xc yc w h`, normalised to [0, 1] by the image's width/height. A line with more than 5
values is a segment polygon `class x1 y1 x2 y2 …` (YOLO-seg); its box is the polygon's extent
(`read_yolo_instances` also returns the polygons). A missing
label file is an image with no objects (YOLO's convention). Lines of a .txt image list are
paths relative to the list's folder (or absolute).

>>> train, val, skipped = read_yolo("pets/data.yaml")     # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from optik.data.checks import (
    BoxChecker,
    is_dir,
    is_file,
    missing_image,
    read_text,
    yaml_problem,
)
from optik.data.detection_dataset import DetectionDataset
from optik.data.image import image_size, is_image_file
from optik.errors import DatasetError, ImageError


def label_path(image: str | Path) -> Path:
    """Where YOLO keeps the labels of `image` (see the module docstring)."""
    parts = list(Path(image).parts)
    for k in range(len(parts) - 2, -1, -1):  # the last "images" folder, not the file name
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _names(doc: dict, path: Path) -> tuple[list[str], list[int]]:
    """names list or {id: name} -> (classes, ids); ids may be sparse (kept as cat_ids)."""
    names = doc.get("names")
    if isinstance(names, list) and names:
        classes, ids = [str(n) for n in names], list(range(len(names)))
    elif isinstance(names, dict) and names:
        by_id: dict[int, str] = {}
        for k, v in names.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)) or not str(k).strip().isdigit():
                raise DatasetError(f"{path}: field 'names': keys must be class ids (ints >= 0), "
                                   f"got {k!r}")  # fmt: skip
            if int(k) in by_id:
                raise DatasetError(f"{path}: field 'names': class id {int(k)} given twice")
            by_id[int(k)] = str(v)
        ids = sorted(by_id)
        classes = [by_id[k] for k in ids]
    else:
        raise DatasetError(f"{path}: field 'names' must be a non-empty list or {{id: name}} map")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:  # caught here, where the file and field can be named (the dataset would only name the split)
        raise DatasetError(f"{path}: field 'names': duplicate class names {dup}")
    nc = doc.get("nc")
    if nc is not None and nc != len(classes):
        raise DatasetError(f"{path}: field 'nc' is {nc} but 'names' has {len(classes)} entries")
    return classes, ids


def _expand(p: str) -> Path:
    """`~` expanded when it can be (`~nobody/x` stays as written instead of raising)."""
    try:
        return Path(p).expanduser()
    except RuntimeError:
        return Path(p)


def _image_list(entry: Any, root: Path, path: Path, key: str) -> list[Path]:
    """One `train:`/`val:` value -> image paths (folders recursive, sorted; lists as given)."""
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for e in entries:
        if not isinstance(e, str) or not e.strip():
            raise DatasetError(f"{path}: field {key!r}: expected a path, got {e!r}")
        p = _expand(e.strip())
        p = p if p.is_absolute() else root / p
        if is_dir(p):
            for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [
                    Path(dirpath) / f
                    for f in sorted(filenames)
                    if not f.startswith(".") and is_image_file(f)
                ]
        elif is_file(p) and p.suffix.lower() == ".txt":
            for line in read_text(p, "image list").splitlines():
                line = line.strip()
                if line:
                    q = Path(line[2:] if line.startswith("./") else line)
                    found.append(q if q.is_absolute() else p.parent / q)
        else:
            raise DatasetError(
                f"{path}: field {key!r}: {p} is not a folder or a .txt list of images"
            )
    return found


def _read_labels(
    file: Path, size: tuple[int, int], ids: dict[int, int], checker: BoxChecker,
    segments: list | None = None,
) -> dict[str, np.ndarray]:
    """One label file -> boxes and labels; with `segments`, each kept box's polygon (COCO style
    `[[x1, y1, x2, y2, …]]` in pixels) or None (a box line) is appended to it."""
    h, w = size
    boxes, labels = [], []
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{file}: cannot read label file ({e})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        vals = line.split()
        if not vals:
            continue
        where = f"line {lineno}"
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            checker.bad(where, f"malformed line {line.strip()!r}: expected 'class xc yc w h'")
            continue
        if len(nums) != 5 and (len(nums) < 7 or len(nums) % 2 == 0):
            checker.bad(
                where, f"malformed line: {len(nums)} values; expected 'class xc yc w h' (5) "
                "or a polygon 'class x1 y1 x2 y2 ...'"
            )  # fmt: skip
            continue
        cls = nums[0]
        if not cls.is_integer() or int(cls) not in ids:
            checker.bad(where, f"field 'class': unknown class id {vals[0]} (known: {sorted(ids)})")
            continue
        polygon = None
        if len(nums) == 5:
            xc, yc, bw, bh = nums[1:]
            xyxy = [(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h]
        else:
            xy = np.asarray(nums[1:]).reshape(-1, 2)
            xyxy = [xy[:, 0].min() * w, xy[:, 1].min() * h, xy[:, 0].max() * w, xy[:, 1].max() * h]
            polygon = [(xy * (w, h)).ravel().tolist()]
        box = checker.check(xyxy, size, where + " field 'box'")
        if box is not None:
            boxes.append(box)
            labels.append(ids[int(cls)])
            if segments is not None:
                segments.append(polygon)
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64)}  # fmt: skip


def _read_split(
    images: list[Path], classes: list[str], cat_ids: list[int], name: str,
    strict: bool, skip_bad: bool, yaml_path: Path, segments: list | None = None,
) -> tuple[DetectionDataset, list[tuple[str, str]]]:  # fmt: skip
    skipped: list[tuple[str, str]] = []
    ids = {c: k for k, c in enumerate(cat_ids)}
    keep, anns, sizes = [], [], []
    checker = BoxChecker(yaml_path, strict=strict, skip_bad=skip_bad)  # one clip count per split
    for img in images:
        if not is_file(img):
            missing_image(yaml_path, f"split {name!r}", img, skip_bad, skipped)
            continue
        try:
            size = image_size(img)
        except ImageError as e:
            if not skip_bad:
                raise
            skipped.append((str(img), str(e)))
            continue
        lab = label_path(img)
        segs: list | None = None if segments is None else []
        if is_file(lab):
            checker.file = str(lab)
            ann = _read_labels(lab, size, ids, checker, segs)
        else:  # YOLO: no label file = no objects
            ann = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
        if segments is not None:
            segments.append(segs)
        keep.append(str(img))
        anns.append(ann)
        sizes.append(size)
    checker.finish(f"{yaml_path} split {name!r}")
    skipped += checker.skipped
    if not keep:
        raise DatasetError(f"{yaml_path}: split {name!r} has no usable images")
    ds = DetectionDataset(keep, anns, classes, cat_ids=cat_ids, name=f"yolo:{name}", sizes=sizes)
    return ds, skipped


def read_yolo(
    path: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, DetectionDataset | None, list[tuple[str, str]]]:
    """A data.yaml -> (train, val or None, skipped). Errors name the yaml (missing/invalid
    fields), the label file and line (malformed line, unknown class, degenerate or
    out-of-image box) or the image (missing, unreadable)."""
    train, val, _, skipped = _read_yolo(Path(path), strict, skip_bad, keep_segments=False)
    return train, val, skipped


def read_yolo_instances(
    path: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, list[list]], list[tuple[str, str]]]:
    """`read_yolo` plus each kept box's segment polygon (YOLO-seg lines) for writing them back
    (`optik.data.convert`): {split: per image in dataset order, per box `[[x1, y1, …]]` in
    pixels or None for a box line}. -> (train, val or None, segments, skipped)."""
    return _read_yolo(Path(path), strict, skip_bad, keep_segments=True)


def _read_yolo(
    path: Path, strict: bool, skip_bad: bool, keep_segments: bool
) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, list[list]], list[tuple[str, str]]]:
    text = read_text(path, "data.yaml")
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as e:
        raise DatasetError(f"{path}: malformed YAML {yaml_problem(e)}") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: expected a mapping with 'train' and 'names'")
    classes, cat_ids = _names(doc, path)
    root = _expand(str(doc.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    if "train" not in doc:
        raise DatasetError(f"{path}: missing field 'train'")
    segments: dict[str, list[list]] = {"train": []}
    train, skipped = _read_split(
        _image_list(doc["train"], root, path, "train"), classes, cat_ids, "train",
        strict, skip_bad, path, segments["train"] if keep_segments else None,
    )  # fmt: skip
    val = None
    if doc.get("val"):
        segments["val"] = []
        val, more = _read_split(
            _image_list(doc["val"], root, path, "val"), classes, cat_ids, "val",
            strict, skip_bad, path, segments["val"] if keep_segments else None,
        )  # fmt: skip
        skipped += more
    return train, val, segments, skipped


__all__ = ["label_path", "read_yolo", "read_yolo_instances"]
