"""Write a `DetectionDataset` as COCO, YOLO or Pascal VOC, and convert between them.

    write_coco(ds, "out/annotations/instances_train.json")    images -> out/annotations/images/
    write_yolo({"train": tr, "val": va}, "out")                images/<split>, labels/, data.yaml
    write_voc({"train": tr, "val": va}, "out")                 Annotations/, JPEGImages/, ImageSets/
    convert("coco_root/", "out", to="yolo")                    -> out/data.yaml

Images on disk are copied (or symlinked with `link=True`) under their own stem, made unique
with the image id when two share one; in-memory images are written as PNG. Every output reads
back with `load_detection_data`. What each format cannot hold is dropped with a logged count:
YOLO has no crowd/difficult flag (those boxes are left out) and no category ids (classes are
written 0..C-1); VOC keeps crowd as `difficult`. Coordinates are written with 8 significant
digits, so a COCO -> YOLO -> VOC -> COCO round trip keeps boxes to ~1e-4 px at 128 px.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from PIL import Image

from optik.data.detection_dataset import DetectionDataset
from optik.data.formats.coco import image_dirs
from optik.data.sources import load_detection_data
from optik.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("coco", "yolo", "voc")
Splits = DetectionDataset | Mapping[str, DetectionDataset | None]


def _splits(datasets: Splits) -> dict[str, DetectionDataset]:
    if isinstance(datasets, DetectionDataset):
        return {"train": datasets}
    return {k: v for k, v in datasets.items() if v is not None}


def _num(v: float) -> str:
    return f"{float(v):.8g}"


def export_images(ds: DetectionDataset, out_dir: str | Path, *, link: bool = False) -> list[Path]:
    """Put every image of `ds` into `out_dir` (copy / symlink / PNG for in-memory images), one
    unique stem each; returns the new paths in dataset order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems: set[str] = set()
    ids = ds.image_ids
    prefix = ds.name.split(":")[0] or "image"
    paths = []
    for i in range(len(ds)):
        src = ds.image_path(i)
        stem = Path(src).stem if src else f"{prefix}_{ids[i]:06d}"
        while stem in stems:  # same stem from another folder, or x.jpg beside x.png
            stem = f"{stem}_{ids[i]}"
        stems.add(stem)
        dst = out_dir / (stem + (Path(src).suffix if src else ".png"))
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if src is None:
            Image.fromarray(ds.load(i)[0].permute(1, 2, 0).numpy()).save(dst)
        elif link:
            os.symlink(os.path.abspath(src), dst)
        else:
            shutil.copy2(src, dst)
        paths.append(dst)
    return paths


def write_coco(
    dataset: DetectionDataset,
    out_json: str | Path,
    *,
    image_dir: str | Path | None = None,
    link: bool = False,
) -> Path:
    """COCO JSON of `dataset` with its images exported to `image_dir` (default: `images/`
    beside the JSON). `file_name`s are relative to the first folder of the COCO reader's search
    order that holds them (so the JSON reads back), else absolute. Returns `out_json`."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    files = export_images(dataset, image_dir or out_json.parent / "images", link=link)
    doc = dataset.to_coco()
    roots = [d.resolve() for d in image_dirs(out_json)]
    for entry, f in zip(doc["images"], files):
        f = f.parent.resolve() / f.name  # resolve the folder only: keep a symlink's own name
        name = str(f)
        for r in roots:
            if f.is_relative_to(r):
                name = f.relative_to(r).as_posix()
                break
        entry["file_name"] = name
    out_json.write_text(json.dumps(doc), encoding="utf-8")
    return out_json


def write_yolo(datasets: Splits, out_dir: str | Path, *, link: bool = False) -> Path:
    """YOLO layout in `out_dir`: images/<split>/, labels/<split>/*.txt (one per image, empty
    when it has no objects) and data.yaml (no `path:` key, so readers use the yaml's folder).
    A single dataset is the "train" split. Returns the data.yaml path."""
    out_dir = Path(out_dir)
    splits = _splits(datasets)
    classes = next(iter(splits.values())).classes
    doc: dict = {}
    dropped = 0
    for split, ds in splits.items():
        files = export_images(ds, out_dir / "images" / split, link=link)
        labels_dir = out_dir / "labels" / split
        labels_dir.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(files):
            h, w = ds.size(i)
            a = ds.annotation(i)
            lines = []
            for box, label, crowd in zip(a["boxes"], a["labels"], a["iscrowd"]):
                if crowd:
                    dropped += 1
                    continue
                x0, y0, x1, y1 = (float(v) for v in box)
                vals = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
                lines.append(f"{int(label)} " + " ".join(_num(v) for v in vals))
            (labels_dir / (f.stem + ".txt")).write_text(
                "".join(ln + "\n" for ln in lines), encoding="utf-8"
            )
        doc[split] = f"images/{split}"
    doc["nc"] = len(classes)
    doc["names"] = list(classes)
    if dropped:
        log.warning("write_yolo: left out %d crowd/difficult boxes (no such flag in YOLO)", dropped)
    out = out_dir / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _voc_xml(filename: str, size: tuple[int, int], a: dict, classes: list[str]) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    for box, label, crowd in zip(a["boxes"], a["labels"], a["iscrowd"]):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[int(label)]
        ET.SubElement(obj, "difficult").text = "1" if crowd else "0"
        bnd = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = (float(v) for v in box)
        for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bnd, tag).text = _num(v)  # VOC: 1-based inclusive pixels
    ET.indent(root)
    return root


def write_voc(datasets: Splits, out_dir: str | Path, *, link: bool = False) -> Path:
    """VOC layout in `out_dir`: JPEGImages/, Annotations/*.xml, ImageSets/Main/<split>.txt and
    classes.txt (class order). Image stems must be unique across splits (they are made so).
    A single dataset is the "train" split. Returns `out_dir`."""
    out_dir = Path(out_dir)
    splits = _splits(datasets)
    classes = next(iter(splits.values())).classes
    (out_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    main = out_dir / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for split, ds in splits.items():
        tmp = out_dir / ".export" / split
        files = export_images(ds, tmp, link=link)
        ids = []
        for i, f in enumerate(files):
            stem = f.stem if f.stem not in taken else f"{split}_{f.stem}"
            taken.add(stem)
            dst = out_dir / "JPEGImages" / (stem + f.suffix)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            os.replace(f, dst)
            xml = _voc_xml(dst.name, ds.size(i), ds.annotation(i), classes)
            ET.ElementTree(xml).write(out_dir / "Annotations" / f"{stem}.xml", encoding="utf-8")
            ids.append(stem)
        (main / f"{split}.txt").write_text("".join(s + "\n" for s in ids), encoding="utf-8")
    shutil.rmtree(out_dir / ".export", ignore_errors=True)
    (out_dir / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
    return out_dir


def convert(
    src_spec: str | Path,
    dst_dir: str | Path,
    to: Literal["coco", "yolo", "voc"],
    *,
    link: bool = False,
    strict: bool = False,
    skip_bad: bool = False,
) -> Path:
    """Read any detection source (its own splits kept, none invented) and write it as `to` in
    `dst_dir`. Returns what `load_detection_data` reads back: the folder (coco: it holds
    annotations/instances_<split>.json + images/<split>/; voc) or data.yaml (yolo).

    >>> convert("coco/annotations/instances_val2017.json", "out", to="yolo")  # doctest: +SKIP
    PosixPath('out/data.yaml')
    """
    if to not in FORMATS:
        raise ConfigError(f"to={to!r}: expected one of {', '.join(FORMATS)}")
    data = load_detection_data(src_spec, val_fraction=0.0, strict=strict, skip_bad=skip_bad)
    splits = {"train": data.train, "val": data.val}
    dst = Path(dst_dir)
    if to == "yolo":
        return write_yolo(splits, dst, link=link)
    if to == "voc":
        return write_voc(splits, dst, link=link)
    for split, ds in _splits(splits).items():
        write_coco(ds, dst / "annotations" / f"instances_{split}.json",
                   image_dir=dst / "images" / split, link=link)  # fmt: skip
    return dst


__all__ = ["FORMATS", "convert", "export_images", "write_coco", "write_voc", "write_yolo"]
