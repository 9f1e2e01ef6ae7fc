"""COCO detection JSON: one file, or a folder with `annotations/instances_train*.json` (+ an
optional `instances_val*.json`).

An image's `file_name` is looked up, first hit wins, in
    1. the JSON's own folder                    2. `images/` beside the JSON
    3. `../images/` (sibling of the JSON's folder)
and for `instances_<split>.json` also in  4. `../<split>/`   5. `../images/<split>/`
(absolute file names are used as they are). That covers `coco/annotations/instances_val2017.json`
+ `coco/val2017/` and the `images/` layouts that `optik.data.convert.write_coco` writes.

Categories are sorted by id and mapped to class indices 0..C-1 (ids may be sparse, e.g. COCO's
1..90); the ids are kept as the dataset's `cat_ids`. Crowd annotations are kept with iscrowd=1;
the source `area` is kept for COCO evaluation. Sizes come from each image's width/height (the
file header when missing).

>>> ds, skipped = read_coco("coco/annotations/instances_val2017.json")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from optik.data.checks import (
    BoxChecker,
    declared_size,
    int_field,
    is_file,
    missing_image,
    real_field,
)
from optik.data.detection_dataset import DetectionDataset
from optik.data.image import image_size
from optik.data.segmentation_dataset import RLEMasks, SegmentationDataset
from optik.errors import DatasetError, ImageError

_SPLIT_RE = re.compile(r"^instances_(.+)\.json$")


def image_dirs(json_path: str | Path) -> list[Path]:
    """Folders searched for `file_name`, in order (see the module docstring)."""
    p = Path(json_path)
    dirs = [p.parent, p.parent / "images", p.parent.parent / "images"]
    m = _SPLIT_RE.match(p.name)
    if m:
        dirs += [p.parent.parent / m.group(1), p.parent.parent / "images" / m.group(1)]
    return dirs


def json_file_name(image: str | Path, json_path: str | Path) -> str:
    """``image``'s ``file_name`` for a COCO JSON at ``json_path``: relative to the first folder of
    :func:`image_dirs` that holds it (so the JSON reads back), else absolute. The folder is resolved, the name
    kept (a symlink keeps its own name)."""
    f = Path(image)
    f = f.parent.resolve() / f.name
    for root in image_dirs(json_path):
        root = root.resolve()
        if f.is_relative_to(root):
            return f.relative_to(root).as_posix()
    return str(f)


def load_json(path: Path) -> Any:
    """A JSON file's content; malformed or unreadable files are DatasetErrors naming the spot."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}); JSON must be UTF-8") from None
    except RecursionError:
        raise DatasetError(f"{path}: malformed JSON: nested too deeply") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None


def _list(doc: dict, key: str, path: Path) -> list:
    if key not in doc:
        raise DatasetError(f"{path}: missing top-level field {key!r}")
    if not isinstance(doc[key], list):
        raise DatasetError(f"{path}: field {key!r} must be a list")
    return doc[key]


def read_coco_header(
    path: Path, dirs: list[Path]
) -> tuple[list, dict[int, dict], dict[int, int], dict[int, dict]]:
    """Read and check the parts every COCO-style JSON shares (instances and panoptic).

    Returns (raw annotation list, categories by id (their dicts), ``label_of`` (category id → 0-based
    label, ids ascending), image records by id in file order: ``{"name", "file" (found in ``dirs``
    or None), "size" ((H, W) or None), "where", "anns": []}``).
    Raises DatasetError naming the file, the entry and the field: not an object, missing fields,
    empty categories, duplicate category or image ids, width/height < 1."""
    doc = load_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: top level must be a JSON object with images/annotations")
    raw_images = _list(doc, "images", path)
    raw_anns = _list(doc, "annotations", path)
    raw_cats = _list(doc, "categories", path)
    if not raw_cats:
        raise DatasetError(f"{path}: field 'categories' is empty")
    cats: dict[int, dict] = {}
    for j, c in enumerate(raw_cats):
        where = f"categories[{j}]"
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DatasetError(f"{path}: {where}: needs fields 'id' and 'name'")
        cid = int_field(c["id"], path, where, "id")
        if cid in cats:
            raise DatasetError(f"{path}: {where}: duplicate category id {cid}")
        cats[cid] = c
    last_dir = dirs[0] if dirs else path.parent
    records: dict[int, dict] = {}  # image id -> record, in file order
    for j, im in enumerate(raw_images):
        where = f"images[{j}]"
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DatasetError(f"{path}: {where}: needs fields 'id' and 'file_name'")
        img_id = int_field(im["id"], path, where, "id")
        name = str(im["file_name"])
        where = f"image {name!r} (id {img_id})"
        if img_id in records:
            raise DatasetError(
                f"{path}: {where}: duplicate image id {img_id} (also {records[img_id]['name']!r})"
            )
        size = None
        if im.get("width") is not None and im.get("height") is not None:
            w = int_field(im["width"], path, where, "width")
            h = int_field(im["height"], path, where, "height")
            size = declared_size(w, h, path, where)
        file: Path | None = Path(name)
        if not file.is_absolute():  # the folder of the previous hit first: one stat per image
            file = None
            for d in [last_dir] + list(dirs):
                if is_file(d / name):
                    file, last_dir = d / name, d
                    break
        records[img_id] = {"name": name, "file": file, "size": size, "where": where, "anns": []}
    label_of = {cid: k for k, cid in enumerate(sorted(cats))}
    return raw_anns, cats, label_of, records


def read_coco(
    path: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, list[tuple[str, str]]]:
    """-> (dataset, skipped (source, reason) list). Raises DatasetError naming the file, the
    image or annotation id and the field for malformed JSON, missing fields, duplicate image or
    category ids, unknown image/category ids, degenerate boxes, out-of-image boxes (strict) and
    missing image files (the last three skipped and listed instead with skip_bad)."""
    ds, skipped, _, _ = _read_coco(Path(path), strict, skip_bad, keep_segments=False)
    return ds, skipped


def read_coco_instances(
    path: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, list[list[Any]], list[dict], list[tuple[str, str]]]:
    """`read_coco` plus what writing the annotations back needs (`optik.data.convert`): each
    kept box's `segmentation` as it is in the JSON (polygons, RLE, uncompressed RLE; None when
    absent or empty), per image in dataset order, and the category records sorted by id (= class
    order) with every field (`supercategory`, …). -> (dataset, segments, categories, skipped)."""
    ds, skipped, segments, cats = _read_coco(Path(path), strict, skip_bad, keep_segments=True)
    return ds, segments, cats, skipped


def _read_coco(
    path: Path, strict: bool, skip_bad: bool, keep_segments: bool
) -> tuple[DetectionDataset, list[tuple[str, str]], list[list[Any]], list[dict]]:
    dirs = image_dirs(path)
    raw_anns, cats, label_of, records = read_coco_header(path, dirs)
    cat_ids = sorted(cats)
    categories = [dict(cats[c]) for c in cat_ids]
    cats = {cid: str(c["name"]) for cid, c in cats.items()}
    skipped: list[tuple[str, str]] = []
    segments: list[list[Any]] = []

    for j, a in enumerate(raw_anns):
        if not isinstance(a, dict):
            raise DatasetError(f"{path}: annotations[{j}]: must be an object")
        where = f"annotation id {a.get('id', f'#{j}')}"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise DatasetError(f"{path}: {where}: missing field {key!r}")
        img_id = int_field(a["image_id"], path, where, "image_id")
        if img_id not in records:
            raise DatasetError(f"{path}: {where}: field 'image_id': unknown image id {img_id}")
        cid = int_field(a["category_id"], path, where, "category_id")
        if cid not in label_of:
            raise DatasetError(
                f"{path}: {where} (image {records[img_id]['name']!r}): field 'category_id': "
                f"unknown category id {cid} (categories: {cat_ids[:20]})"
            )
        records[img_id]["anns"].append((where, a, label_of[cid]))

    images, anns, ids, sizes = [], [], [], []
    checker = BoxChecker(path, strict=strict, skip_bad=skip_bad)
    for img_id, r in records.items():
        if r["file"] is None or not is_file(r["file"]):
            looked = r["file"] or f"{r['name']} (searched {', '.join(map(str, dirs))})"
            missing_image(path, r["where"], looked, skip_bad, skipped)
            continue
        size = r["size"]
        if size is None:
            try:
                size = image_size(r["file"])
            except ImageError as e:
                if not skip_bad:
                    raise DatasetError(f"{path}: {r['where']}: {e}") from None
                skipped.append((str(r["file"]), str(e)))
                continue
        boxes, labels, crowd, area, segs = [], [], [], [], []
        for where, a, label in r["anns"]:
            where = f"{where} (image {r['name']!r}) field 'bbox'"
            bb = a["bbox"]
            xywh = [real_field(v) for v in bb] if isinstance(bb, list) and len(bb) == 4 else [None]
            if None in xywh:  # not 4 finite numbers (NaN, inf, 10**400, strings, bools...)
                checker.bad(where, f"expected [x, y, width, height] of finite numbers, got "
                                   f"{repr(bb)[:80]}")  # fmt: skip
                continue
            x, y, w, h = xywh
            box = checker.check([x, y, x + w, y + h], size, where)
            if box is None:
                continue
            boxes.append(box)
            labels.append(label)
            crowd.append(1 if a.get("iscrowd") else 0)
            ar = real_field(a.get("area"))
            area.append(ar if ar is not None and ar > 0 else w * h)
            if keep_segments:
                segm = a.get("segmentation")
                segs.append(segm if segm else None)  # [] / {} / missing: box only
        segments.append(segs)
        images.append(str(r["file"]))
        ids.append(img_id)
        sizes.append(size)
        anns.append({
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
            "iscrowd": np.asarray(crowd, np.int64),
            "area": np.asarray(area, np.float32),
        })  # fmt: skip
    checker.finish()
    if not images:
        raise DatasetError(f"{path}: no usable images (of {len(records)} listed)")
    ds = DetectionDataset(
        images, anns, [cats[c] for c in cat_ids], cat_ids=cat_ids, name=f"coco:{path.name}",
        image_ids=ids, sizes=sizes,
    )  # fmt: skip
    return ds, skipped + checker.skipped, segments, categories


def _one(root: Path, pattern: str) -> Path | None:
    found = sorted((root / "annotations").glob(pattern))
    if len(found) > 1:
        raise DatasetError(
            f"{root}: several {pattern} files ({', '.join(f.name for f in found)}); pass one "
            "JSON file as data="
        )
    return found[0] if found else None


def is_coco_dir(root: str | Path) -> bool:
    """True when `root/annotations/` holds an `instances_train*.json`."""
    return any((Path(root) / "annotations").glob("instances_train*.json"))


def split_files(root: str | Path) -> tuple[Path, Path | None]:
    """A COCO folder's (annotations/instances_train*.json, instances_val*.json or None)."""
    root = Path(root)
    train_json = _one(root, "instances_train*.json")
    if train_json is None:
        raise DatasetError(f"{root}: no annotations/instances_train*.json")
    return train_json, _one(root, "instances_val*.json")


def read_coco_dir(
    root: str | Path, *, strict: bool = False, skip_bad: bool = False
) -> tuple[DetectionDataset, DetectionDataset | None, list[tuple[str, str]]]:
    """A COCO folder -> (train, val or None, skipped). Both splits must list the same
    categories (same ids and names)."""
    train_json, val_json = split_files(root)
    train, skipped = read_coco(train_json, strict=strict, skip_bad=skip_bad)
    val = None
    if val_json is not None:
        val, more = read_coco(val_json, strict=strict, skip_bad=skip_bad)
        skipped += more
        if (val.classes, val.cat_ids) != (train.classes, train.cat_ids):
            raise DatasetError(
                f"{val_json}: field 'categories' differs from {train_json.name}'s "
                f"({list(zip(val.cat_ids, val.classes))[:5]} vs "
                f"{list(zip(train.cat_ids, train.classes))[:5]})"
            )
    return train, val, skipped


# ---- instance segmentation (polygons, RLE, uncompressed RLE) --------------------------------


MAX_POLYGON_PERIMETER = 4_000_000  # px: rasterising a polygon costs ~60 bytes per px of outline


def _polygon(poly: Any, k: int, size: tuple[int, int]) -> list[float]:
    """One COCO polygon [x1, y1, x2, y2, ...] checked before the C rasteriser sees it: at least 3
    finite points, none far outside the image, and an outline the rasteriser can afford (NaN or
    1e12 coordinates make it allocate without bound)."""
    h, w = size
    if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
        n = len(poly) if isinstance(poly, list) else type(poly).__name__
        raise ValueError(f"polygon {k} has {n} coordinates; need x, y pairs for at least 3 points")
    xy = [real_field(v) for v in poly]
    if None in xy:
        raise ValueError(f"polygon {k}: coordinates must be finite numbers")
    xs, ys = np.asarray(xy[0::2]), np.asarray(xy[1::2])
    if xs.min() < -w or xs.max() > 2 * w or ys.min() < -h or ys.max() > 2 * h:
        raise ValueError(f"polygon {k}: a point lies far outside the {w}x{h} image")
    steps = np.maximum(np.abs(np.diff(xs, append=xs[:1])), np.abs(np.diff(ys, append=ys[:1])))
    if steps.sum() > min(100 * (h + w), MAX_POLYGON_PERIMETER):
        raise ValueError(f"polygon {k}: outline of {steps.sum():.0f} px is too long for a "
                         f"{w}x{h} image")  # fmt: skip
    return xy


def rle_string_counts(counts: bytes) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (the format of pycocotools' `rleFrString`:
    6-bit groups, offset by 48, '0'..'o', with runs after the second coded as deltas). Raises
    ValueError for a malformed string: the C decoder trusts it.

    >>> rle_string_counts(b"52203").tolist()  # a 4x4 mask, 2x2 square in the middle
    [5, 2, 2, 2, 5]
    """
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if not c.size:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("compressed RLE 'counts' has characters outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("compressed RLE 'counts' ends in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits: no run of a decodable image is that long
        raise ValueError("compressed RLE 'counts' holds a run longer than any image")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    x = np.where((c[ends] & 0x10) != 0, x - (np.int64(1) << (5 * lengths)), x)  # sign bit
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])  # from the 3rd run on, each is a delta to the run two before
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def _check_runs(runs: Any, size: tuple[int, int]) -> None:
    h, w = size
    if len(runs) and min(runs) < 0:
        raise ValueError("RLE 'counts' has a negative run length")
    total = int(sum(runs))
    if total != h * w:
        raise ValueError(f"RLE 'counts' cover {total} pixels, not {h}x{w} = {h * w}")


def segm_to_rle(segm: Any, size: tuple[int, int]) -> dict:
    """A COCO `segmentation` (polygons, compressed or uncompressed RLE) -> one compressed RLE
    (bytes counts). Everything the C mask code would trust is checked first (finite, bounded
    polygons; RLE runs that are non-negative and cover the image exactly). Raises ValueError
    with the problem (the caller names file and field).

    >>> segm_to_rle([[1, 1, 5, 1, 5, 5]], (10, 10))["size"]
    [10, 10]
    """
    from faster_coco_eval.core import mask as mask_utils

    h, w = size
    if isinstance(segm, list):
        if not segm:
            raise ValueError("empty polygon list")
        polys = [_polygon(poly, k, size) for k, poly in enumerate(segm)]
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        rsize = segm["size"]
        if not isinstance(rsize, list) or rsize != [h, w]:
            raise ValueError(f"RLE size {repr(rsize)[:40]} differs from the image's [{h}, {w}] "
                             "(h, w)")  # fmt: skip
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
                raise ValueError("uncompressed RLE 'counts' must be a list of integers")
            _check_runs(counts, size)
            return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        if isinstance(counts, (str, bytes)):
            try:
                raw = counts.encode("ascii") if isinstance(counts, str) else counts
            except UnicodeEncodeError:
                raise ValueError("compressed RLE 'counts' has non-ASCII characters") from None
            _check_runs(rle_string_counts(raw), size)
            return {"size": [h, w], "counts": raw}
    raise ValueError(f"expected polygons or an RLE dict, got {type(segm).__name__}")


def read_coco_segmentation(
    path: str | Path, *, skip_bad: bool = False
) -> tuple[SegmentationDataset, list[tuple[str, str]]]:
    """A COCO instances JSON -> (instance `SegmentationDataset`, skipped). Masks are kept as
    compressed RLE (decoded per item). Errors name the file, the annotation id and the field:
    malformed JSON, missing fields, unknown image/category ids, missing/degenerate
    `segmentation` (polygon under 3 points, RLE of another size, empty mask), missing images
    (the last two skipped and listed with skip_bad). `ds.as_semantic()` (what `task=semantic`
    reads) rasterises the same masks into class maps: background 0, category k -> k + 1."""
    from faster_coco_eval.core import mask as mask_utils

    path = Path(path)
    raw_anns, cats, label_of, records = read_coco_header(path, image_dirs(path))
    cat_ids = sorted(cats)
    cats = {cid: str(c["name"]) for cid, c in cats.items()}
    for j, a in enumerate(raw_anns):
        if not isinstance(a, dict):
            raise DatasetError(f"{path}: annotations[{j}]: must be an object")
        where = f"annotation id {a.get('id', f'#{j}')}"
        for key in ("image_id", "category_id"):
            if key not in a:
                raise DatasetError(f"{path}: {where}: missing field {key!r}")
        img_id = int_field(a["image_id"], path, where, "image_id")
        if img_id not in records:
            raise DatasetError(f"{path}: {where}: field 'image_id': unknown image id {img_id}")
        cid = int_field(a["category_id"], path, where, "category_id")
        if cid not in label_of:
            raise DatasetError(f"{path}: {where}: field 'category_id': unknown category id {cid} "
                               f"(categories: {cat_ids[:20]})")  # fmt: skip
        records[img_id]["anns"].append((where, a, label_of[cid]))
    skipped: list[tuple[str, str]] = []
    images, anns, ids, sizes = [], [], [], []
    for img_id, r in records.items():
        where_img = f"image {r['name']!r} (id {img_id})"
        if r["file"] is None or not is_file(r["file"]):
            missing_image(path, where_img, r["file"] or r["name"], skip_bad, skipped)
            continue
        size = r["size"]
        try:
            size = size or image_size(r["file"])
        except ImageError as e:
            if not skip_bad:
                raise DatasetError(f"{path}: {where_img}: {e}") from None
            skipped.append((str(r["file"]), str(e)))
            continue
        rles, labels, crowd = [], [], []
        for where, a, label in r["anns"]:
            where = f"{where} (image {r['name']!r}) field 'segmentation'"
            try:
                if "segmentation" not in a:
                    raise ValueError("missing")
                rle = segm_to_rle(a["segmentation"], size)
                if int(mask_utils.area(rle)) == 0:
                    raise ValueError("empty mask (no pixel inside the image)")
            except (ValueError, TypeError, OverflowError, RuntimeError, MemoryError) as e:
                # ValueError: ours; the others: faster-coco-eval's C code on what we let through
                if not skip_bad:
                    raise DatasetError(f"{path}: {where}: {e}") from None
                skipped.append((f"{path}: {where}", str(e)))
                continue
            rles.append(rle)
            labels.append(label)
            crowd.append(1 if a.get("iscrowd") else 0)
        images.append(str(r["file"]))
        ids.append(img_id)
        sizes.append(size)
        anns.append(RLEMasks(rles, labels, crowd, size))
    if not images:
        raise DatasetError(f"{path}: no usable images (of {len(records)} listed)")
    ds = SegmentationDataset(images, anns, [cats[c] for c in cat_ids], kind="instance",
                             cat_ids=cat_ids, name=f"coco:{path.name}", image_ids=ids,
                             sizes=sizes)  # fmt: skip
    return ds, skipped


def read_coco_segmentation_dir(
    root: str | Path, *, skip_bad: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset | None, list[tuple[str, str]]]:
    """A COCO folder -> (train, val or None, skipped) instance segmentation datasets."""
    train_json, val_json = split_files(root)
    train, skipped = read_coco_segmentation(train_json, skip_bad=skip_bad)
    val = None
    if val_json is not None:
        val, more = read_coco_segmentation(val_json, skip_bad=skip_bad)
        skipped += more
        if (val.classes, val.cat_ids) != (train.classes, train.cat_ids):
            raise DatasetError(f"{val_json}: field 'categories' differs from {train_json.name}'s")
    return train, val, skipped


__all__ = [
    "image_dirs",
    "is_coco_dir",
    "load_json",
    "read_coco",
    "read_coco_dir",
    "read_coco_header",
    "read_coco_instances",
    "read_coco_segmentation",
    "read_coco_segmentation_dir",
    "segm_to_rle",
    "split_files",
]
