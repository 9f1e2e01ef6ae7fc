"""COCO panoptic: `panoptic_<split>.json` + a folder of segment-id PNGs.

    root/annotations/panoptic_train2017.json    images, categories (with isthing),
                                                annotations [{image_id, file_name, segments_info}]
    root/annotations/panoptic_train2017/*.png   (or root/panoptic_train2017/) segment ids as
                                                id = R + 256 * G + 256**2 * B, 0 = void
    root/train2017/*.jpg                        images (same search as formats/coco.py)

Classes are the categories sorted by id (`cat_ids` keep the ids), `isthing` from each category.
Segments become the panoptic targets (crowd segments keep iscrowd=1); the semantic map paints
every segment, crowd included, with its class. Checks while reading: unknown image/category
ids, duplicate segment ids, missing PNG/image, PNG size != image size, and -- decoding every
PNG once for datasets of up to `VERIFY_MAX` images, else on load -- segment ids in the PNG
missing from `segments_info` and listed segments absent from the PNG.

>>> train, val, skipped = read_coco_panoptic_dir("coco")          # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from optik.data.checks import int_field, is_file, missing_image
from optik.data.formats.coco import load_json, read_coco_header
from optik.data.image import image_size
from optik.data.segmentation_dataset import SegmentationDataset
from optik.errors import DatasetError, ImageError

VERIFY_MAX = 2000  # up to this many images, every PNG is checked while reading (skip_bad works)
_SPLIT_RE = re.compile(r"^panoptic_(.+)\.json$")


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids, id = R + 256 G + 256^2 B (panopticapi).

    >>> rgb_to_id(np.array([[[1, 2, 0]]], np.uint8)).tolist()
    [[513]]
    """
    a = rgb.astype(np.int64)
    return a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]


class PanopticPNG:
    """One image's panoptic PNG + its segments_info [(segment id, label, iscrowd)], decoded on
    load into a compact id map (segment k -> k + 1)."""

    def __init__(self, png: str, segments: list[tuple[int, int, int]],
                 size: tuple[int, int] | None = None) -> None:  # fmt: skip
        self.png, self.segments, self.size = png, segments, size

    def decode(self) -> dict[str, np.ndarray]:
        try:
            with Image.open(self.png) as im:
                rgb = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise DatasetError(f"{self.png}: panoptic PNG not found") from None
        except Exception as e:  # noqa: BLE001 - OSError, DecompressionBombError, struct.error...
            raise DatasetError(f"{self.png}: cannot read panoptic PNG ({type(e).__name__}: {e})") from None
        seg = rgb_to_id(rgb)
        found = np.unique(seg)
        listed = np.asarray([s[0] for s in self.segments], np.int64)
        extra = np.setdiff1d(found[found != 0], listed)
        if extra.size:
            raise DatasetError(
                f"{self.png}: field 'segments_info': segment id {int(extra[0])} is in the PNG "
                "but not in segments_info"
            )
        absent = np.setdiff1d(listed, found)
        if absent.size:
            raise DatasetError(
                f"{self.png}: field 'segments_info': segment id {int(absent[0])} is listed but "
                "has no pixel in the PNG"
            )
        order = np.argsort(listed)
        pos = np.searchsorted(listed[order], seg).clip(0, max(len(listed) - 1, 0))
        ids = np.where(seg == 0, 0, order[pos] + 1) if len(listed) else np.zeros_like(seg)
        return {
            "ids": ids.astype(np.uint8 if len(listed) < 256 else np.int32),
            "labels": np.asarray([s[1] for s in self.segments], np.int64),
            "iscrowd": np.asarray([s[2] for s in self.segments], np.int64),
        }


def is_panoptic_json(path: str | Path) -> bool:
    """True for a `panoptic_*.json`, or a JSON whose annotations carry `segments_info`."""
    path = Path(path)
    if _SPLIT_RE.match(path.name):
        return True
    doc = load_json(path)
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    return isinstance(anns, list) and bool(anns) and isinstance(anns[0], dict) and "segments_info" in anns[0]


def is_panoptic_dir(root: str | Path) -> bool:
    """True when `root/annotations/` holds a `panoptic_train*.json`."""
    return any((Path(root) / "annotations").glob("panoptic_train*.json"))


def _dirs(path: Path) -> tuple[list[Path], list[Path]]:
    """(image folders, PNG folders) searched for a panoptic JSON."""
    m = _SPLIT_RE.match(path.name)
    split = m.group(1) if m else None
    imgs = [path.parent, path.parent / "images", path.parent.parent / "images"]
    pngs = [path.parent / path.stem, path.parent.parent / path.stem, path.parent / "panoptic",
            path.parent]  # fmt: skip
    if split:
        imgs += [path.parent.parent / split, path.parent.parent / "images" / split]
    return imgs, pngs


def read_coco_panoptic(
    path: str | Path, *, skip_bad: bool = False, verify: bool | None = None
) -> tuple[SegmentationDataset, list[tuple[str, str]]]:
    """A panoptic JSON -> (panoptic `SegmentationDataset`, skipped). verify: decode every PNG
    now (default: when there are at most `VERIFY_MAX` images)."""
    path = Path(path)
    img_dirs, png_dirs = _dirs(path)
    raw_anns, raw_cats, label_of, records = read_coco_header(path, img_dirs)
    cats = {cid: (str(c["name"]), bool(c.get("isthing", 1))) for cid, c in raw_cats.items()}
    cat_ids = sorted(cats)
    for r in records.values():
        r["ann"] = None
    for j, a in enumerate(raw_anns):
        where = f"annotations[{j}]"
        if not isinstance(a, dict) or not {"image_id", "file_name", "segments_info"} <= set(a):
            raise DatasetError(f"{path}: {where}: needs fields 'image_id', 'file_name', "
                               "'segments_info'")  # fmt: skip
        img_id = int_field(a["image_id"], path, where, "image_id")
        if img_id not in records:
            raise DatasetError(f"{path}: {where}: field 'image_id': unknown image id {img_id}")
        where = f"{where} ({a['file_name']!r})"
        segments, seen = [], set()
        if not isinstance(a["segments_info"], list):
            raise DatasetError(f"{path}: {where}: field 'segments_info' must be a list")
        for k, s in enumerate(a["segments_info"]):
            if not isinstance(s, dict):
                raise DatasetError(f"{path}: {where}: field 'segments_info'[{k}] must be an object")
            sid = int_field(s.get("id"), path, where, "segments_info.id")
            cid = int_field(s.get("category_id"), path, where, "segments_info.category_id")
            if cid not in label_of:
                raise DatasetError(f"{path}: {where}: field 'segments_info.category_id': unknown "
                                   f"category id {cid} (categories: {cat_ids[:20]})")  # fmt: skip
            if sid in seen or sid == 0:
                what = "duplicate" if sid else "reserved (void)"
                raise DatasetError(f"{path}: {where}: field 'segments_info.id': {what} id {sid}")
            seen.add(sid)
            segments.append((sid, label_of[cid], 1 if s.get("iscrowd") else 0))
        records[img_id]["ann"] = (str(a["file_name"]), segments)
    verify = len(records) <= VERIFY_MAX if verify is None else verify
    skipped: list[tuple[str, str]] = []
    images, anns, ids, sizes = [], [], [], []
    for img_id, r in records.items():
        where = f"image {r['name']!r} (id {img_id})"
        if r["ann"] is None:
            missing_image(path, where, f"annotation for image id {img_id}", skip_bad, skipped)
            continue
        if r["file"] is None:
            missing_image(path, where, r["name"], skip_bad, skipped)
            continue
        png_name, segments = r["ann"]
        png = next((d / png_name for d in png_dirs if is_file(d / png_name)), None)
        try:
            if png is None:
                raise DatasetError(f"{path}: {where}: panoptic PNG {png_name!r} not found "
                                   f"(searched {', '.join(map(str, png_dirs))})")  # fmt: skip
            size = r["size"] or image_size(r["file"])
            psize = image_size(png)
            if psize != size:
                raise DatasetError(f"{png}: mask is {psize[1]}x{psize[0]} but image "
                                   f"{r['name']!r} is {size[1]}x{size[0]} (WxH)")  # fmt: skip
            ann = PanopticPNG(str(png), segments, size)
            if verify:
                ann.decode()
        except (DatasetError, ImageError) as e:
            if not skip_bad:
                raise
            skipped.append((str(png or r["file"]), str(e)))
            continue
        images.append(str(r["file"]))
        anns.append(ann)
        ids.append(img_id)
        sizes.append(size)
    if not images:
        raise DatasetError(f"{path}: no usable images (of {len(records)} listed)")
    ds = SegmentationDataset(
        images, anns, [cats[c][0] for c in cat_ids], kind="panoptic",
        isthing=[cats[c][1] for c in cat_ids], cat_ids=cat_ids, name=f"coco-panoptic:{path.name}",
        image_ids=ids, sizes=sizes,
    )  # fmt: skip
    return ds, skipped


def read_coco_panoptic_dir(
    root: str | Path, *, skip_bad: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset | None, list[tuple[str, str]]]:
    """A COCO folder with annotations/panoptic_train*.json (+ panoptic_val*.json) -> (train,
    val or None, skipped)."""
    root = Path(root)
    ann_dir = root / "annotations"
    found = {s: sorted(ann_dir.glob(f"panoptic_{s}*.json")) for s in ("train", "val")}
    for s, files in found.items():
        if len(files) > 1:
            raise DatasetError(f"{root}: several panoptic_{s}*.json files; pass one as data=")
    if not found["train"]:
        raise DatasetError(f"{root}: no annotations/panoptic_train*.json")
    train, skipped = read_coco_panoptic(found["train"][0], skip_bad=skip_bad)
    val = None
    if found["val"]:
        val, more = read_coco_panoptic(found["val"][0], skip_bad=skip_bad)
        skipped += more
        if (val.classes, val.cat_ids) != (train.classes, train.cat_ids):
            raise DatasetError(f"{found['val'][0]}: field 'categories' differs from "
                               f"{found['train'][0].name}'s")  # fmt: skip
    return train, val, skipped


__all__ = [
    "VERIFY_MAX",
    "PanopticPNG",
    "is_panoptic_dir",
    "is_panoptic_json",
    "read_coco_panoptic",
    "read_coco_panoptic_dir",
    "rgb_to_id",
]
