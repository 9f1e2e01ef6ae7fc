"""Write detection / instance data as COCO, YOLO or Pascal VOC, and convert between them.

    write_coco(ds, "out/annotations/instances_train.json")    images -> out/annotations/images/
    write_yolo({"train": tr, "val": va}, "out")                images/<split>, labels/, data.yaml
    write_voc({"train": tr, "val": va}, "out")                 Annotations/, JPEGImages/, ImageSets/
    convert("coco_root/", "out", to="yolo")                    -> out/data.yaml

A split to write is a `DetectionDataset` (boxes), an instance `SegmentationDataset` (masks; boxes
are the masks' extents) or `Instances` (boxes + each box's mask as the source holds it: COCO
polygons / RLE, YOLO-seg polygons, VOC SegmentationObject pixels). `convert` reads the masks of
COCO, YOLO-seg and VOC sources and of `synthetic:shapes-inst` / `shapes-pan` scenes and writes them:

    COCO  polygons, RLE, uncompressed (crowd) RLE and the category records (`supercategory` …)
          exactly as read; masks from elsewhere as compressed RLE, `area` = mask pixels.
    YOLO  YOLO-seg lines `class x1 y1 x2 y2 …` (normalised). An RLE mask is traced into its
          pixel outline (cv2.findContours on the mask upsampled 2x, so the polygon follows pixel
          edges and rasterises back to the same pixels); a mask of several parts or with holes
          becomes one polygon joined by zero-width seams (YOLO-seg holds one per object). Every
          polygon is rasterised back and compared, so an inexact one is counted.
    VOC   SegmentationObject/<id>.png (object k + 1 = the k-th <object> of the XML, smaller
          objects painted on top) and SegmentationClass/<id>.png (class index + 1, 0 = background,
          255 = void: crowd / difficult regions), VOC palette PNGs, ImageSets/Segmentation/, and
          classes.txt with "background" first (formats/voc_seg.py reads it; formats/voc.py
          skips it).

What a format cannot hold is logged as one line per kind with its count (`optik.data.convert`
logger: WARNING for a loss, INFO for a change of representation) and, with `strict=True`,
refused with a ConfigError before anything is written. Lost: YOLO has no crowd flag (crowd
regions are left out) and stores a polygon, not a box (a box other than its polygon's extent
changes); VOC's object PNG holds one object per pixel (overlapping pixels go to the smaller
object) and 254 objects per image. Changed but kept: category ids and `supercategory` (YOLO and
VOC keep class names, classes 0..C-1), RLE traced into polygons, crowd masks as VOC void,
objects without a mask in a source with masks (YOLO: their box rectangle; VOC: not painted;
COCO: box only).

Images on disk are copied (or symlinked with `link=True`) under their own stem, made unique
with the image id when two share one; in-memory images are written as PNG. Every output reads
back with `load_detection_data` (and COCO / VOC with `load_segmentation_data`). Boxes are
written with 8 significant digits and polygons with 10, so COCO -> YOLO -> VOC -> COCO keeps
boxes to 1e-6 of the image side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from PIL import Image

from optik.data.detection_dataset import DetectionDataset
from optik.data.formats import coco, voc, yolo
from optik.data.formats.coco import json_file_name
from optik.data.formats.voc_seg import VOC_PALETTE
from optik.data.segmentation_dataset import SegmentationDataset
from optik.data.sources import load_detection_data, load_segmentation_data
from optik.data.splits import DataSplits
from optik.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

FORMATS = ("coco", "yolo", "voc")
INSTANCE_SCENES = ("synthetic:shapes-inst", "synthetic:shapes-pan")
VOC_MAX_OBJECTS = 254  # SegmentationObject values 1..254; 255 is void


@dataclass
class Instances:
    """One split as the converter reads and writes it.

    ds: the images and boxes (labels, iscrowd, area). segments: None when the source has no
    masks, else per image (dataset order) per box its mask as the source holds it — COCO
    polygons `[[x1, y1, …], …]` (pixels), an RLE dict (compressed or uncompressed counts), a
    bool (H, W) array — or None. categories: the source's category records in class order
    (COCO: with `supercategory` and any other field), or None."""

    ds: DetectionDataset
    segments: list[list[Any]] | None = None
    categories: list[dict] | None = None

    def __post_init__(self) -> None:
        if self.segments is not None:
            if len(self.segments) != len(self.ds):
                raise DatasetError(f"{self.ds.name}: {len(self.segments)} segment lists for "
                                   f"{len(self.ds)} images")  # fmt: skip
            for i, segs in enumerate(self.segments):
                if len(segs) != len(self.ds.annotation(i)["boxes"]):
                    raise DatasetError(f"{self.ds.source(i)}: {len(segs)} masks for "
                                       f"{len(self.ds.annotation(i)['boxes'])} boxes")  # fmt: skip
            if not any(s is not None for segs in self.segments for s in segs):
                self.segments = None

    @property
    def has_masks(self) -> bool:
        return self.segments is not None

    def masks_of(self, i: int) -> list[Any]:
        """Image `i`'s mask per box (None where there is none)."""
        if self.segments is None:
            return [None] * len(self.ds.annotation(i)["boxes"])
        return self.segments[i]


Split = DetectionDataset | SegmentationDataset | Instances
Splits = Split | Mapping[str, Split | None]


# ---- what a format cannot hold: counted, logged once per kind, refused under strict ------------


class _Tally:
    """Counts per kind; `template` takes {n}, {s} (plural s), {a} ("a " when n == 1), {px}."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.kinds: dict[str, list] = {}  # template -> [count, px, lossy]

    def add(self, template: str, n: int = 1, *, px: int = 0, lossy: bool = False) -> None:
        k = self.kinds.setdefault(template, [0, 0, lossy])
        k[0] += n
        k[1] += px

    def _text(self, template: str) -> str:
        n, px, _ = self.kinds[template]
        return template.format(n=n, px=px, s="" if n == 1 else "s", a="a " if n == 1 else "",
                               es="" if n == 1 else "es", y="y" if n == 1 else "ies")  # fmt: skip

    def log(self) -> None:
        for t, (_, _, lossy) in self.kinds.items():
            log.log(logging.WARNING if lossy else logging.INFO, "%s: %s", self.where, self._text(t))

    def refuse(self, to: str) -> None:
        """ConfigError listing every loss (strict=true), before anything is written."""
        lost = [self._text(t) for t, (_, _, lossy) in self.kinds.items() if lossy]
        if lost:
            raise ConfigError(
                f"strict=true: refusing to convert to {to}, which cannot hold everything: "
                + "; ".join(lost) + " (strict=false converts with these losses logged)"
            )


CROWD_YOLO = "{n} crowd region{s} left out (iscrowd=1, VOC difficult): YOLO has no crowd flag"
TRACED = "{n} RLE mask{s} traced into {a}polygon{s} (pixel outlines, cv2.findContours)"
JOINED = ("{n} multi-part mask{s} joined into one polygon (parts / holes linked by zero-width "
          "seams: YOLO-seg holds one polygon per object)")  # fmt: skip
INEXACT = "{n} mask{s} approximated: {px} px differ after conversion to one polygon"
BOX_TO_EXTENT = ("{n} box{es} replaced by {a}polygon's extent (YOLO-seg stores the polygon, not "
                 "the box)")  # fmt: skip
RECT = "{n} object{s} without a mask in a source with masks written as {a}box rectangle{s}"
NO_MASK = "{n} object{s} without a mask in a source with masks: {written}"
OVERLAP = ("{n} object{s} lost {px} px to overlapping objects: SegmentationObject/ holds one "
           "object per pixel (smaller objects are painted on top)")  # fmt: skip
TOO_MANY = ("{n} object{s} beyond the 254 a VOC object PNG can index not painted (boxes kept "
            "in Annotations/)")  # fmt: skip
CROWD_VOID = ("{n} crowd mask{s} written as void (255) in SegmentationObject/ and "
              "SegmentationClass/, {a}box{es} as difficult (VOC's convention)")  # fmt: skip
CROWD_SHARED = ("{n} crowd mask{s} with another crowd region's void inside {a}box{es}: read "
                "back, they merge")  # fmt: skip
CAT_IDS = "category ids not kept ({fmt} numbers the {n} classes 0..C-1)"
CAT_FIELDS = "{n} categor{y}' {fields} not kept ({fmt} keeps class names only)"
EMPTY = "{n} empty mask{s} left out (no pixel)"
STUFF = "{n} stuff segment{s} of panoptic data left out (not objects; things are kept)"


def _category_notes(tally: _Tally, inst: Instances, fmt: str) -> None:
    ds = inst.ds
    if ds.cat_ids != list(range(len(ds.classes))):
        tally.add(CAT_IDS.replace("{fmt}", fmt), len(ds.classes))
    extra = sorted({k for c in inst.categories or [] for k in c} - {"id", "name"})
    if extra:
        n = sum(1 for c in inst.categories or [] if set(c) - {"id", "name"})
        tally.add(CAT_FIELDS.replace("{fmt}", fmt).replace("{fields}", "/".join(extra)), n)


# ---- reading: boxes + masks as the source holds them ----------------------------------------


def _from_segmentation(ds: SegmentationDataset, tally: _Tally | None = None) -> Instances:
    """An instance (or panoptic: its things) SegmentationDataset -> Instances (masks as RLE;
    boxes = mask extents; empty masks left out, counted)."""
    from faster_coco_eval.core import mask as mask_utils

    if ds.kind == "semantic":
        raise ConfigError(f"{ds.name}: semantic class maps hold no objects to convert; "
                          "expected instance or panoptic data")  # fmt: skip
    stuff = 0
    if ds.kind == "panoptic":
        isthing = np.asarray(ds.isthing, bool)
        labels = (ds.annotation(i).decode()["labels"] for i in range(len(ds)))
        stuff = sum(int((~isthing[lab]).sum()) for lab in labels)
        ds = ds.with_transform(None)
        ds.kind = "instance"  # things only (isthing)
    if stuff and tally is not None:
        tally.add(STUFF, stuff)
    images: list[Any] = []
    anns, segments, sizes, empty = [], [], [], 0
    for i in range(len(ds)):
        t = ds.load_target(i)
        m = t["masks"].numpy().astype(bool)
        keep = m.reshape(len(m), -1).any(1)
        empty += int((~keep).sum())
        m = m[keep]
        rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
        segments.append(list(rles) if len(m) else [])
        anns.append({k: t[k].numpy()[keep] for k in ("boxes", "labels", "iscrowd", "area")})
        path = ds.image_path(i)
        images.append(path if path else ds.load(i)[0].permute(1, 2, 0).numpy())
        sizes.append(tuple(t["orig_size"]))
    if empty and tally is not None:
        tally.add(EMPTY, empty)
    det = DetectionDataset(images, anns, list(ds.classes), cat_ids=ds.cat_ids, name=ds.name,
                           image_ids=ds.image_ids, sizes=sizes)  # fmt: skip
    return Instances(det, segments)


def _as_instances(x: Any) -> Instances:
    if isinstance(x, Instances):
        return x
    if isinstance(x, DetectionDataset):
        return Instances(x)
    if isinstance(x, SegmentationDataset):
        tally = _Tally("convert")
        out = _from_segmentation(x, tally)
        tally.log()
        return out
    raise ConfigError(f"cannot write {type(x).__name__}; expected a DetectionDataset, an instance "
                      "SegmentationDataset or Instances")  # fmt: skip


def _splits(datasets: Splits) -> dict[str, Instances]:
    if isinstance(datasets, (DetectionDataset, SegmentationDataset, Instances)):
        return {"train": _as_instances(datasets)}
    return {k: _as_instances(v) for k, v in datasets.items() if v is not None}


def _log_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        src, reason = skipped[0]
        log.warning("skipped %d bad images/annotations (first: %s: %s)", len(skipped), src, reason)


def read_instances(
    spec: Any, *, strict: bool = False, skip_bad: bool = False
) -> dict[str, Instances]:
    """Any detection source, with its masks where it has them, -> {split: Instances} (its own
    splits, none invented). COCO (.json or folder), YOLO (data.yaml or its folder) and VOC
    folders are read with their masks; `synthetic:shapes-inst|shapes-pan` and instance
    `SegmentationDataset`s give masks too; anything else `load_detection_data` reads (boxes)."""
    if isinstance(spec, DataSplits):
        return _splits({"train": spec.train, "val": spec.val})
    if isinstance(spec, (DetectionDataset, SegmentationDataset, Instances)):
        return _splits(spec)
    if isinstance(spec, str) and spec.strip().partition("?")[0] in INSTANCE_SCENES:
        data = load_segmentation_data(spec.strip(), val_fraction=0.0)  # panoptic: things kept
        return _splits({"train": data.train, "val": data.val})
    path = Path(str(spec).strip()).expanduser() if isinstance(spec, (str, os.PathLike)) else None
    out: dict[str, Instances] | None = None
    skipped: list[tuple[str, str]] = []
    kw = {"strict": strict, "skip_bad": skip_bad}
    yaml_file = None
    if path is not None and path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        yaml_file = path
    elif path is not None and path.is_dir() and not coco.is_coco_dir(path):
        found = [path / n for n in ("data.yaml", "data.yml") if (path / n).is_file()]
        yaml_file = found[0] if found else None
    if path is not None and path.is_file() and path.suffix.lower() == ".json":
        ds, segs, cats, skipped = coco.read_coco_instances(path, **kw)
        out = {"train": Instances(ds, segs, cats)}
    elif path is not None and path.is_dir() and coco.is_coco_dir(path):
        out = {}
        for split, js in zip(("train", "val"), coco.split_files(path)):
            if js is None:
                continue
            ds, segs, cats, more = coco.read_coco_instances(js, **kw)
            skipped += more
            first = out.get("train")
            if first and (ds.classes, ds.cat_ids) != (first.ds.classes, first.ds.cat_ids):
                raise DatasetError(f"{js}: field 'categories' differs from the train split's")
            out[split] = Instances(ds, segs, cats)
    elif yaml_file is not None:
        train, val, segs, skipped = yolo.read_yolo_instances(yaml_file, **kw)
        out = {"train": Instances(train, segs["train"])}
        if val is not None:
            out["val"] = Instances(val, segs["val"])
    elif path is not None and path.is_dir() and voc.is_voc_dir(path):
        train, val, segs, skipped = voc.read_voc_instances(path, **kw)
        out = {"train": Instances(train, segs["train"])}
        if val is not None:
            out["val"] = Instances(val, segs["val"])
    if out is None:
        data = load_detection_data(spec, val_fraction=0.0, **kw)
        return _splits({"train": data.train, "val": data.val})
    if skip_bad:
        _drop_bad_masks(out, skipped)
    _log_skipped(skipped)
    return out


def _drop_bad_masks(splits: dict[str, Instances], skipped: list[tuple[str, str]]) -> None:
    """skip_bad: masks that do not decode (polygon under 3 points, RLE of another size…) are
    left out, each listed in `skipped`; their boxes stay."""
    for inst in splits.values():
        for i, segs in enumerate(inst.segments or []):
            for j, segm in enumerate(segs):
                if segm is None:
                    continue
                try:
                    _rle(segm, inst.ds.size(i), _where(inst.ds, i, j))
                except DatasetError as e:
                    segs[j] = None
                    skipped.append((_where(inst.ds, i, j), str(e)))
        if inst.segments is not None and all(s is None for g in inst.segments for s in g):
            inst.segments = None


# ---- masks: RLE, tracing, joining -----------------------------------------------------------


def _where(ds: DetectionDataset, i: int, j: int) -> str:
    return f"{ds.source(i)}: object {j} field 'segmentation'"


def _rle(segm: Any, hw: tuple[int, int], where: str) -> dict:
    """A mask as the source holds it -> one compressed RLE; bad ones are DatasetErrors."""
    from faster_coco_eval.core import mask as mask_utils

    if isinstance(segm, np.ndarray):
        if segm.shape != tuple(hw):
            raise DatasetError(f"{where}: mask is {segm.shape[1]}x{segm.shape[0]} but the image is "
                               f"{hw[1]}x{hw[0]} (WxH)")  # fmt: skip
        return mask_utils.encode(np.asfortranarray(segm.astype(np.uint8)))
    try:
        return coco.segm_to_rle(segm, hw)
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from None


def _decode(rle: dict) -> np.ndarray:
    from faster_coco_eval.core import mask as mask_utils

    m = mask_utils.decode(rle)
    return (m[..., 0] if m.ndim == 3 else m).astype(bool)


def _area(rle: dict) -> int:
    from faster_coco_eval.core import mask as mask_utils

    return int(mask_utils.area(rle))


def _differ(a: dict, b: dict) -> int:
    """Pixels in exactly one of two RLE masks."""
    from faster_coco_eval.core import mask as mask_utils

    inter = int(mask_utils.area(mask_utils.merge([a, b], intersect=True)))
    return _area(a) + _area(b) - 2 * inter


def trace_mask(mask: np.ndarray) -> list[np.ndarray]:
    """A bool (H, W) mask -> its outlines (outer boundaries and holes) as (n, 2) float arrays
    of pixel-corner coordinates, largest first. Traced with cv2.findContours on the mask
    upsampled 2x, so each vertex lands on a pixel corner and the polygons rasterise (COCO's
    rule) to exactly the mask's pixels when joined (`join_polygons`)."""
    import cv2

    ys, xs = np.nonzero(mask)
    if not len(ys):
        return []
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1].astype(np.uint8)
    up = np.pad(np.repeat(np.repeat(crop, 2, 0), 2, 1), 2)  # even pad: parity of u kept
    contours, _ = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    rings = []
    for c in sorted(contours, key=lambda c: -abs(cv2.contourArea(c))):
        p = (c.reshape(-1, 2) - 1) // 2 + (x0, y0)  # upsampled pixel u -> corner ceil((u - 2) / 2)
        keep = np.ones(len(p), bool)
        keep[1:] = (np.diff(p, axis=0) != 0).any(1)
        p = p[keep]
        if len(p) > 1 and (p[0] == p[-1]).all():
            p = p[:-1]
        if len(p) >= 3:
            rings.append(p.astype(np.float64))
    return rings


def join_polygons(polygons: list[np.ndarray]) -> np.ndarray:
    """Several (n, 2) rings -> one ring: each next ring is linked to the ring so far at their
    closest vertices by a seam walked there and back (zero width), so the even-odd fill of the
    result is the union of disjoint parts with holes cut out."""
    ring = polygons[0]
    for p in polygons[1:]:
        d = ((ring[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        a, b = np.unravel_index(int(d.argmin()), d.shape)
        q = np.roll(p, -int(b), axis=0)
        ring = np.concatenate([ring[: a + 1], q, q[:1], ring[a:]])
    return ring


def _polygon_rle(ring: np.ndarray, hw: tuple[int, int]) -> dict:
    from faster_coco_eval.core import mask as mask_utils

    return mask_utils.merge(mask_utils.frPyObjects([ring.ravel().tolist()], hw[0], hw[1]))


def _rectangle(box: Any) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _yolo_polygon(segm: Any, box: np.ndarray, hw: tuple[int, int], where: str,
                  tally: _Tally) -> np.ndarray:  # fmt: skip
    """One object's YOLO-seg polygon (n, 2) in pixels: its own polygon; several polygons joined;
    an RLE traced. Every joined or traced polygon is rasterised back and compared with the
    mask; what changed is counted."""
    h, w = hw
    if segm is None:
        tally.add(RECT)
        return _rectangle(box)
    rle = _rle(segm, hw, where)
    if isinstance(segm, list):
        rings = [np.asarray(p, np.float64).reshape(-1, 2) for p in segm]
    else:
        tally.add(TRACED)
        rings = trace_mask(_decode(rle))
        if not rings:
            tally.add(EMPTY)
            tally.add(RECT)
            return _rectangle(box)
    ring = rings[0]
    if len(rings) > 1:
        tally.add(JOINED)
        ring = join_polygons(rings)
        if isinstance(segm, list) and _differ(_polygon_rle(ring, hw), rle):
            rings = trace_mask(_decode(rle))  # overlapping parts: even-odd cut them out; trace
            ring = join_polygons(rings) if len(rings) > 1 else rings[0]
    if len(rings) > 1 or not isinstance(segm, list):
        off = _differ(_polygon_rle(ring, hw), rle)
        if off:
            tally.add(INEXACT, px=off)
    ext = np.array([ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()])
    ext = ext.clip(0, [w, h, w, h])
    if np.abs(ext - np.asarray(box, np.float64)).max() > 1e-6 * max(h, w):
        tally.add(BOX_TO_EXTENT, lossy=True)
    return ring


# ---- writers --------------------------------------------------------------------------------


def _num(v: float) -> str:
    return f"{float(v):.8g}"


def _coord(v: float) -> str:
    return f"{float(v):.10g}"


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


def _coco_segmentation(segm: Any, rle: dict) -> Any:
    """The JSON form of a mask: polygons and RLE dicts as they are (bytes counts as text);
    arrays as compressed RLE."""
    if isinstance(segm, list):
        return segm
    if isinstance(segm, dict):
        counts = segm["counts"]
        return {**segm, "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_coco(
    dataset: Split,
    out_json: str | Path,
    *,
    image_dir: str | Path | None = None,
    link: bool = False,
) -> Path:
    """COCO JSON of `dataset` with its images exported to `image_dir` (default: `images/`
    beside the JSON). `file_name`s are relative to the first folder of the COCO reader's search
    order that holds them (so the JSON reads back), else absolute. Masks (see `Instances`) are
    written as `segmentation` — polygons and RLE as the source holds them — and category records
    as given. Returns `out_json`."""
    inst = _as_instances(dataset)
    ds = inst.ds
    tally = _Tally("write_coco")
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    files = export_images(ds, image_dir or out_json.parent / "images", link=link)
    doc = ds.to_coco()
    for entry, f in zip(doc["images"], files):
        entry["file_name"] = json_file_name(f, out_json)
    if inst.categories is not None:
        records = zip(inst.categories, ds.cat_ids, ds.classes)
        doc["categories"] = [{**c, "id": cid, "name": name} for c, cid, name in records]
    if inst.has_masks:
        k = 0
        for i in range(len(ds)):
            hw, a = ds.size(i), ds.annotation(i)
            for j, segm in enumerate(inst.masks_of(i)):
                entry = doc["annotations"][k]
                k += 1
                if segm is None:
                    tally.add(NO_MASK.replace("{written}", "written box-only"))
                    continue
                rle = _rle(segm, hw, _where(ds, i, j))
                entry["segmentation"] = _coco_segmentation(segm, rle)
                if "area" not in a:
                    entry["area"] = float(_area(rle))
    out_json.write_text(json.dumps(doc), encoding="utf-8")
    tally.log()
    return out_json


def _yolo_labels(inst: Instances, i: int, masked: bool, tally: _Tally) -> str:
    ds = inst.ds
    h, w = ds.size(i)
    a = ds.annotation(i)
    lines = []
    for j, (box, label, crowd, segm) in enumerate(
        zip(a["boxes"], a["labels"], a["iscrowd"], inst.masks_of(i))
    ):
        if crowd:
            tally.add(CROWD_YOLO, lossy=True)
            continue
        if masked:
            ring = _yolo_polygon(segm, box, (h, w), _where(ds, i, j), tally) / (w, h)
            lines.append(f"{int(label)} " + " ".join(_coord(v) for v in ring.ravel()))
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        vals = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
        lines.append(f"{int(label)} " + " ".join(_num(v) for v in vals))
    return "".join(ln + "\n" for ln in lines)


def write_yolo(
    datasets: Splits, out_dir: str | Path, *, link: bool = False, strict: bool = False
) -> Path:
    """YOLO layout in `out_dir`: images/<split>/, labels/<split>/*.txt (one per image, empty
    when it has no objects) and data.yaml (no `path:` key, so readers use the yaml's folder).
    A single dataset is the "train" split. With masks, label lines are YOLO-seg polygons.
    strict: refuse (ConfigError, nothing written) when something would be lost. Returns the
    data.yaml path."""
    out_dir = Path(out_dir)
    splits = _splits(datasets)
    first = next(iter(splits.values()))
    classes = first.ds.classes
    masked = any(s.has_masks for s in splits.values())
    tally = _Tally("write_yolo")
    labels = {split: [_yolo_labels(inst, i, masked, tally) for i in range(len(inst.ds))]
              for split, inst in splits.items()}  # fmt: skip
    _category_notes(tally, first, "YOLO")
    if strict:
        tally.refuse("yolo")
    doc: dict = {}
    for split, inst in splits.items():
        files = export_images(inst.ds, out_dir / "images" / split, link=link)
        labels_dir = out_dir / "labels" / split
        labels_dir.mkdir(parents=True, exist_ok=True)
        for f, text in zip(files, labels[split]):
            (labels_dir / (f.stem + ".txt")).write_text(text, encoding="utf-8")
        doc[split] = f"images/{split}"
    doc["nc"] = len(classes)
    doc["names"] = list(classes)
    out = out_dir / "data.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tally.log()
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


def _voc_maps(inst: Instances, i: int, tally: _Tally) -> tuple[np.ndarray, np.ndarray]:
    """Image `i`'s (SegmentationClass, SegmentationObject) uint8 maps; counts what is lost.
    Masks are decoded one at a time (twice: to paint, then to count lost pixels)."""
    ds = inst.ds
    h, w = ds.size(i)
    a = ds.annotation(i)
    cls = np.zeros((h, w), np.uint8)
    obj = np.zeros((h, w), np.uint8)
    rles: dict[int, dict] = {}
    for j, segm in enumerate(inst.masks_of(i)):
        rle = None if segm is None else _rle(segm, (h, w), _where(ds, i, j))
        if rle is not None and not _area(rle):
            tally.add(EMPTY)
            rle = None
        if rle is None:
            tally.add(NO_MASK.replace("{written}", "box only, not painted"))
        else:
            rles[j] = rle
    crowd = [j for j in rles if a["iscrowd"][j]]
    things = [j for j in rles if not a["iscrowd"][j]]
    for j in crowd:
        m = _decode(rles[j])
        obj[m] = cls[m] = 255
        tally.add(CROWD_VOID)
    over = [j for j in things if j + 1 > VOC_MAX_OBJECTS]
    if over:
        tally.add(TOO_MANY, len(over), lossy=True)
    things = [j for j in things if j + 1 <= VOC_MAX_OBJECTS]
    area = {j: _area(rles[j]) for j in things}
    for j in sorted(things, key=lambda j: (-area[j], j)):  # larger first: smaller on top
        m = _decode(rles[j])
        obj[m] = j + 1
        cls[m] = int(a["labels"][j]) + 1
    for j in things:
        lost = area[j] - int((obj[_decode(rles[j])] == j + 1).sum())
        if lost:
            tally.add(OVERLAP, px=lost, lossy=True)
    for j in crowd:
        m = _decode(rles[j])
        kept = int((obj[m] == 255).sum())
        if kept < int(m.sum()):
            tally.add(OVERLAP, px=int(m.sum()) - kept, lossy=True)
        x0, y0 = (max(int(np.floor(v)), 0) for v in a["boxes"][j][:2])
        x1, y1 = (int(np.ceil(v)) for v in a["boxes"][j][2:])
        if int((obj[y0:y1, x0:x1] == 255).sum()) > kept:
            tally.add(CROWD_SHARED)
    return cls, obj


def _save_palette_png(path: Path, a: np.ndarray) -> None:
    im = Image.fromarray(a)  # mode L; putpalette makes it P with the same indices
    im.putpalette(VOC_PALETTE)
    im.save(path)


def write_voc(
    datasets: Splits, out_dir: str | Path, *, link: bool = False, strict: bool = False
) -> Path:
    """VOC layout in `out_dir`: JPEGImages/, Annotations/*.xml, ImageSets/Main/<split>.txt and
    classes.txt (class order); with masks also SegmentationObject/ and SegmentationClass/ palette
    PNGs, ImageSets/Segmentation/<split>.txt and "background" first in classes.txt. Image stems
    must be unique across splits (they are made so). A single dataset is the "train" split.
    strict: refuse (ConfigError, nothing written) when something would be lost. Returns
    `out_dir`."""
    out_dir = Path(out_dir)
    splits = _splits(datasets)
    first = next(iter(splits.values()))
    classes = first.ds.classes
    masked = any(s.has_masks for s in splits.values())
    if masked:
        if any(c.lower() == "background" for c in classes):
            raise ConfigError("write_voc: a class named 'background' clashes with VOC "
                              "segmentation's index 0; rename it to write masks")  # fmt: skip
        if len(classes) >= 255:
            raise ConfigError(f"write_voc: {len(classes)} classes do not fit SegmentationClass "
                              "PNGs (index 1..254, 0 background, 255 void)")  # fmt: skip
    tally = _Tally("write_voc")
    if strict:  # a dry pass: refuse before writing anything
        for inst in splits.values():
            for i in range(len(inst.ds) if masked else 0):
                _voc_maps(inst, i, tally)
        tally.refuse("voc")
        tally = _Tally("write_voc")
    (out_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    main = out_dir / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    if masked:
        for sub in ("SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for split, inst in splits.items():
        ds = inst.ds
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
            if masked:
                cls, obj = _voc_maps(inst, i, tally)
                _save_palette_png(out_dir / "SegmentationClass" / f"{stem}.png", cls)
                _save_palette_png(out_dir / "SegmentationObject" / f"{stem}.png", obj)
            ids.append(stem)
        listing = "".join(s + "\n" for s in ids)
        (main / f"{split}.txt").write_text(listing, encoding="utf-8")
        if masked:
            seg_list = out_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
            seg_list.write_text(listing, encoding="utf-8")
    shutil.rmtree(out_dir / ".export", ignore_errors=True)
    names = ["background", *classes] if masked else list(classes)
    (out_dir / "classes.txt").write_text("".join(c + "\n" for c in names), encoding="utf-8")
    _category_notes(tally, first, "VOC")
    tally.log()
    return out_dir


def convert(
    src_spec: Any,
    dst_dir: str | Path,
    to: Literal["coco", "yolo", "voc"],
    *,
    link: bool = False,
    strict: bool = False,
    skip_bad: bool = False,
) -> Path:
    """Read any detection source with its instance masks (its own splits kept, none invented;
    see `read_instances`) and write it as `to` in `dst_dir`. Returns what `load_detection_data`
    reads back: the folder (coco: it holds annotations/instances_<split>.json +
    images/<split>/; voc) or data.yaml (yolo).

    strict: boxes past the image border raise instead of being clipped, and a conversion that
    would lose annotations (see the module docstring) is refused with a ConfigError before
    anything is written. Every loss or change is logged with a count either way.

    >>> convert("coco/annotations/instances_val2017.json", "out", to="yolo")  # doctest: +SKIP
    PosixPath('out/data.yaml')
    """
    if to not in FORMATS:
        raise ConfigError(f"to={to!r}: expected one of {', '.join(FORMATS)}")
    splits = read_instances(src_spec, strict=strict, skip_bad=skip_bad)
    dst = Path(dst_dir)
    if to == "yolo":
        return write_yolo(splits, dst, link=link, strict=strict)
    if to == "voc":
        return write_voc(splits, dst, link=link, strict=strict)
    for split, inst in splits.items():
        write_coco(inst, dst / "annotations" / f"instances_{split}.json",
                   image_dir=dst / "images" / split, link=link)  # fmt: skip
    return dst


__all__ = [
    "FORMATS",
    "Instances",
    "convert",
    "export_images",
    "join_polygons",
    "read_instances",
    "trace_mask",
    "write_coco",
    "write_voc",
    "write_yolo",
]
