"""Detection data: `DetectionDataset` (images + boxes + class names), `detection_collate`, and
`load_detection_data`, which resolves the user's `data=` value:

    "synthetic:shapes-det?n=500&size=128"       procedural scenes (see `SHAPES_DET_PARAMS`)
    "path/to/instances.json"                    COCO JSON (formats/coco.py)
    "path/to/coco_root/"                        annotations/instances_train*.json (+ val)
    "path/to/data.yaml" or a folder holding it  YOLO (formats/yolo.py)
    "path/to/VOCdevkit/VOC2012/"                VOC: Annotations/ + JPEGImages/ (formats/voc.py)

A target follows the shared contract: `{"boxes": (N, 4) xyxy float pixels, "labels": (N,) int64
in 0..C-1, "image_id": int, "iscrowd": (N,) int64, "orig_size": (H, W)}`; inside the dataset
"boxes" is a `tv_tensors.BoundingBoxes` so transforms.v2 move it with the image, after
`detection_collate` it is a plain tensor. Image ids are the source's (COCO ids) or 1..N
(position + 1, kept through `subset`).

>>> data = load_detection_data("synthetic:shapes-det?n=20&size=64")
>>> img, target = data.train[0]
>>> img.shape, target["boxes"].shape[1], data.classes
(torch.Size([3, 64, 64]), 4, ['circle', 'square', 'triangle', 'star'])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

from optik.data.dataset import checked_class_names
from optik.data.image import image_size
from optik.data.views import ImageCollection
from optik.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

SHAPES_DET_PARAMS: dict[str, Any] = {
    "n": 500,
    "size": 128,
    "classes": 4,
    "min_objects": 1,
    "max_objects": 6,
    "difficulty": 0.5,
    "seed": 0,
}
BOX_TOLERANCE = 0.01  # px: boxes this little past the border are clipped silently (float noise)



def _as_array(x: Any, shape_tail: tuple[int, ...], dtype: type, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.size == 0:
        return np.zeros((0, *shape_tail), dtype)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        want = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise DatasetError(f"{what} has shape {a.shape}; expected {want}")
    a = a.astype(dtype, copy=True)  # own copy: frozen below without touching the caller's
    a.flags.writeable = False
    return a


class DetectionDataset(ImageCollection, torch.utils.data.Dataset):
    """Images with boxes: the one torch Dataset behind every detection source.

    images: paths, or HWC uint8 arrays, or one stacked (N, H, W, 3) uint8 array (decoded per item).
    annotations: one dict per image, `{"boxes": (N, 4) xyxy float pixels, "labels": (N,) int in
        0..C-1, "iscrowd": (N,) int (optional), "area": (N,) float (optional: the source's
        object area, e.g. COCO's mask area; default box w*h)}`.
    classes: class names, index = label. cat_ids: the source's category id per class (COCO
        export), default 0..C-1. image_ids: one int per image, default 1..N.
    sizes: optional (H, W) per image (None entries allowed); unknown sizes are read from file
        headers once, on demand, and cached (shared with subsets).
    transform: called as `transform(image, target)` in `__getitem__` with a uint8
        `tv_tensors.Image` (3, H, W) and the target dict (boxes as `BoundingBoxes`).

    >>> ds = DetectionDataset(np.zeros((1, 8, 8, 3), np.uint8),
    ...     [{"boxes": [[1, 1, 4, 5]], "labels": [0]}], ["cat"])
    >>> ds.to_coco()["annotations"][0]["bbox"]
    [1.0, 1.0, 3.0, 4.0]
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray] | np.ndarray,
        annotations: Sequence[dict],
        classes: list[str],
        cat_ids: list[int] | None = None,
        transform: Callable | None = None,
        name: str = "dataset",
        image_ids: Sequence[int] | None = None,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        self.name = name
        self.transform = transform
        self.classes = checked_class_names(classes, name)
        self.cat_ids = (
            list(range(len(self.classes))) if cat_ids is None else [int(c) for c in cat_ids]
        )
        if len(self.cat_ids) != len(self.classes) or len(set(self.cat_ids)) != len(self.cat_ids):
            raise DatasetError(
                f"{name}: cat_ids {self.cat_ids} must be {len(self.classes)} distinct ints"
            )
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise DatasetError(
                    f"{name}: image array of shape {images.shape} must be (N, H, W, C) or (N, H, W)"
                )
        else:
            images = [str(x) if isinstance(x, Path) else x for x in images]
        self._images = images
        n = len(images)
        if len(annotations) != n:
            raise DatasetError(f"{name}: {n} images but {len(annotations)} annotation dicts")
        ids = list(range(1, n + 1)) if image_ids is None else [int(v) for v in image_ids]
        if len(ids) != n:
            raise DatasetError(f"{name}: {n} images but {len(ids)} image_ids")
        if len(set(ids)) != n:
            raise DatasetError(f"{name}: duplicate image ids")
        self._ids = ids
        if sizes is not None and len(sizes) != n:
            raise DatasetError(f"{name}: {n} images but {len(sizes)} sizes")
        self._sizes: list[tuple[int, int] | None] = (
            [None if s is None else (int(s[0]), int(s[1])) for s in sizes]
            if sizes is not None
            else [None] * n
        )
        if isinstance(images, np.ndarray):  # stacked: every size is known
            self._sizes = [(int(images.shape[1]), int(images.shape[2]))] * n
        self._anns = [self._validate(k, a) for k, a in enumerate(annotations)]
        self._index: np.ndarray | None = None  # positions of this view's items (subset)

    def _validate(self, k: int, ann: dict) -> dict[str, np.ndarray]:
        where = self._source_at(k)
        if not isinstance(ann, dict) or "boxes" not in ann or "labels" not in ann:
            raise DatasetError(f"{where}: annotation must be a dict with 'boxes' and 'labels'")
        boxes = _as_array(ann["boxes"], (4,), np.float32, f"{where}: field 'boxes'")
        m = len(boxes)
        out = {"boxes": boxes}
        for key, dtype, default in (("labels", np.int64, None), ("iscrowd", np.int64, 0),
                                    ("area", np.float32, None)):  # fmt: skip
            if key not in ann or ann[key] is None:
                if default is not None:
                    out[key] = np.full(m, default, dtype)
                continue
            a = _as_array(ann[key], (), dtype, f"{where}: field {key!r}")
            if len(a) != m:
                raise DatasetError(f"{where}: field {key!r} has {len(a)} entries for {m} boxes")
            out[key] = a
        labels = out["labels"]
        raw = np.asarray(ann["labels"].cpu() if isinstance(ann["labels"], Tensor) else ann["labels"])
        if m and raw.dtype.kind not in "iub" and not np.array_equal(raw, labels):
            raise DatasetError(f"{where}: field 'labels': {raw.tolist()[:5]} are not class indices")
        c = len(self.classes)
        if m and (labels.min() < 0 or labels.max() >= c):
            bad = int(labels[(labels < 0) | (labels >= c)][0])
            raise DatasetError(
                f"{where}: field 'labels': class index {bad} out of range for {c} classes"
            )
        if m and not np.isfinite(boxes).all():
            raise DatasetError(f"{where}: field 'boxes': non-finite coordinates")
        if m and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            j = int(np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0])
            raise DatasetError(
                f"{where}: field 'boxes': box {j} {boxes[j].tolist()} has zero or negative "
                "width/height (xyxy expected)"
            )
        return out

    # ---- items -----------------------------------------------------------------------------
    def load(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """Item `i` untransformed: uint8 (3, H, W) image and a target of plain tensors in
        original pixel coordinates."""
        k = self._position(i)
        img = self._decode_at(k)
        hw = (int(img.shape[1]), int(img.shape[2]))
        known = self._sizes[k]
        if known is None:
            self._sizes[k] = hw
        elif known != hw:
            raise DatasetError(
                f"{self._source_at(k)}: image is {hw[1]}x{hw[0]} (WxH) but the annotation says "
                f"{known[1]}x{known[0]} (field width/height)"
            )
        a = self._anns[k]
        target = {
            "boxes": torch.from_numpy(a["boxes"].copy()),
            "labels": torch.from_numpy(a["labels"].copy()),
            "image_id": self._ids[k],
            "iscrowd": torch.from_numpy(a["iscrowd"].copy()),
            "orig_size": hw,
        }
        return img, target

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """-> (image, target): `transform(tv_tensors.Image uint8 (3, H, W), target)`, or the
        untransformed pair (boxes as `BoundingBoxes`) without a transform."""
        img, target = self.load(i)
        target["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=target["orig_size"]
        )
        image = tv_tensors.Image(img)
        if self.transform is not None:
            return self.transform(image, target)
        return image, target

    def annotation(self, i: int) -> dict[str, np.ndarray]:
        """Item `i`'s annotation arrays (boxes, labels, iscrowd[, area]); read-only views."""
        return self._anns[self._position(i)]

    def num_objects(self) -> int:
        return int(sum(len(self._anns[int(k)]["labels"]) for k in self._positions()))

    def to_coco(self) -> dict[str, Any]:
        """This dataset as a COCO ground-truth dict (original pixels; bbox xywh; category ids =
        `cat_ids`; area = the source's area when given, else w*h). Image sizes come from the
        cache or file headers, never a full decode. Annotation ids are 1..M (pycocotools
        treats id 0 as "unmatched")."""
        images, anns = [], []
        for k in self._positions():
            k = int(k)
            h, w = self._size_at(k)
            img_id = self._ids[k]
            images.append({"id": img_id, "file_name": self._source_at(k), "width": w, "height": h})
            a = self._anns[k]
            b = a["boxes"].astype(np.float64)
            wh = b[:, 2:] - b[:, :2]
            area = a["area"].astype(np.float64) if "area" in a else wh[:, 0] * wh[:, 1]
            for j in range(len(b)):
                anns.append({
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": self.cat_ids[int(a["labels"][j])],
                    "bbox": [float(b[j, 0]), float(b[j, 1]), float(wh[j, 0]), float(wh[j, 1])],
                    "area": float(area[j]),
                    "iscrowd": int(a["iscrowd"][j]),
                })  # fmt: skip
        cats = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.classes)]
        return {"info": {"description": self.name}, "images": images, "annotations": anns,
                "categories": cats}  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"classes={len(self.classes)}, transform={self.transform is not None})"
        )


def detection_collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """[(image (3, S, S), target)] -> (images (B, 3, S, S) plain tensor, targets with plain
    tensor boxes). All images must share one size (use a LetterBox transform).

    >>> imgs, tgts = detection_collate([(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})])
    >>> imgs.shape, tgts[0]["boxes"].shape
    (torch.Size([1, 3, 4, 4]), torch.Size([0, 4]))
    """
    images = stack_images(batch, "detect_transforms")
    targets = []
    for _, t in batch:
        t = dict(t)
        t["boxes"] = t["boxes"].as_subclass(Tensor)
        targets.append(t)
    return images, targets


def stack_images(batch: Sequence[tuple[Tensor, Any]], transforms: str) -> Tensor:
    """The images of ``(image, target)`` pairs as one (B, 3, S, S) plain tensor; different sizes are a
    DatasetError pointing at the letterboxing ``transforms``."""
    images = [img.as_subclass(Tensor) for img, _ in batch]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise DatasetError(
            f"cannot batch images of different sizes {sorted(shapes)}; letterbox them to one "
            f"size ({transforms})"
        )
    return torch.stack(images)


# ---- box validation shared by the readers ---------------------------------------------------


class BoxChecker:
    """Validates boxes while a reader reads (set `file` to the file at hand): clips (strict=False, counted, logged once
    by `finish`) or raises for boxes past the image border; raises for degenerate boxes, or
    skips them (recorded in `skipped`) with skip_bad.

    >>> chk = BoxChecker("a.json", strict=False, skip_bad=False)
    >>> chk.check([-2, 0, 5, 5], (10, 10), "image 'x.png' field 'bbox'").tolist()
    [0.0, 0.0, 5.0, 5.0]
    """

    def __init__(self, file: str | Path, *, strict: bool, skip_bad: bool) -> None:
        self.file, self.strict, self.skip_bad = str(file), strict, skip_bad
        self.clipped = 0
        self.skipped: list[tuple[str, str]] = []

    def bad(self, where: str, problem: str) -> None:
        """Raise for a bad box/line, or record it when skip_bad."""
        msg = f"{self.file}: {where}: {problem}"
        if not self.skip_bad:
            raise DatasetError(msg)
        self.skipped.append((f"{self.file}: {where}", problem))

    def check(
        self, xyxy: Sequence[float], size_hw: tuple[int, int], where: str
    ) -> np.ndarray | None:
        """-> the (clipped) float32 box, or None when it was skipped."""
        b = np.asarray(xyxy, np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            self.bad(where, f"box {list(xyxy)} is not 4 finite numbers")
            return None
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            w, h = b[2] - b[0], b[3] - b[1]
            what = "width" if w <= 0 else "height"
            self.bad(where, f"zero or negative {what} (w={w:.4g}, h={h:.4g})")
            return None
        h, w = size_hw
        lo = np.zeros(4)
        hi = np.array([w, h, w, h], np.float64)
        if (b < lo - BOX_TOLERANCE).any() or (b > hi + BOX_TOLERANCE).any():
            if self.strict:
                raise DatasetError(
                    f"{self.file}: {where}: box xyxy {np.round(b, 3).tolist()} lies outside the "
                    f"{w}x{h} image (strict=True; strict=False clips it)"
                )
            self.clipped += 1
        b = np.clip(b, lo, hi)
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            self.bad(where, f"box lies outside the {w}x{h} image")
            return None
        return b.astype(np.float32)

    def finish(self, what: str | None = None) -> None:
        """Log the clip count once (`what` names the file set when `file` changed per file)."""
        if self.clipped:
            log.warning("%s: clipped %d boxes to the image border", what or self.file, self.clipped)


def missing_image(
    file: str | Path, where: str, path: str | Path, skip_bad: bool, skipped: list
) -> None:
    """Raise DatasetError for a missing image file, or record it in `skipped` with skip_bad."""
    msg = f"image file not found: {path}"
    if not skip_bad:
        raise DatasetError(f"{file}: {where}: {msg}")
    skipped.append((str(path), f"{file}: {where}: {msg}"))


# ---- data= resolution -----------------------------------------------------------------------


@dataclass
class DetectionData:
    """What `load_detection_data` returns: the datasets plus what happened on the way."""

    train: DetectionDataset
    val: DetectionDataset | None
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    description: str = ""


def random_split(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded split of range(n) into sorted (train, val); val has round(n * val_fraction)
    items, but train keeps at least one.

    >>> random_split(10, 0.2, seed=0)[1].__len__()
    2
    """
    k = min(int(round(n * val_fraction)), max(n - 1, 0)) if val_fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(perm[:k].tolist())
    chosen = set(val)
    return [i for i in range(n) if i not in chosen], val


def scene_params(name: str, query: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """``synthetic:<scenes>?n=…&size=…`` query → keyword arguments for the scene generator (shared by
    detection and segmentation scenes); bad values are ConfigErrors naming the parameter."""
    from optik.data.sources import _as_int, _parse_query

    raw = _parse_query(name, query, defaults)
    kw = dict(defaults)
    minimum = {"n": 1, "size": 16, "seed": 0, "min_objects": 0, "max_objects": 1}
    for key, value in raw.items():
        if key in minimum:
            kw[key] = _as_int(name, key, value, minimum[key])
        elif key == "difficulty":
            try:
                kw[key] = float(value)
            except ValueError:
                raise ConfigError(f"{name}: parameter difficulty={value!r} must be a number") from None
        else:  # classes: a count or shape names
            kw[key] = _as_int(name, key, value, 1) if value.strip().isdigit() else value.split(",")
    return kw


def _synthetic(query: str) -> DetectionDataset:
    from optik.data import synthetic

    kind = "synthetic:shapes-det"
    kw = scene_params(kind, query, SHAPES_DET_PARAMS)
    try:
        x, anns, names = synthetic.shapes_detection(**kw)
    except ConfigError as e:
        raise ConfigError(f"{kind}: {e}") from None
    return DetectionDataset(x, anns, names, name=kind)


def _read_path(
    path: Path, strict: bool, skip_bad: bool
) -> tuple[DetectionDataset, DetectionDataset | None, list[tuple[str, str]], str]:
    """A file or folder -> (train, val, skipped, kind), by what it holds."""
    from optik.data.formats import coco, voc, yolo

    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            train, skipped = coco.read_coco(path, strict=strict, skip_bad=skip_bad)
            return train, None, skipped, "coco"
        if suffix in (".yaml", ".yml"):
            return (*yolo.read_yolo(path, strict=strict, skip_bad=skip_bad), "yolo")
        raise DatasetError(
            f"data '{path}' is a {suffix or 'extensionless'} file; expected a COCO .json, a YOLO "
            "data.yaml or a dataset folder"
        )
    if coco.is_coco_dir(path):
        return (*coco.read_coco_dir(path, strict=strict, skip_bad=skip_bad), "coco")
    for name in ("data.yaml", "data.yml"):
        if (path / name).is_file():
            return (*yolo.read_yolo(path / name, strict=strict, skip_bad=skip_bad), "yolo")
    if voc.is_voc_dir(path):
        return (*voc.read_voc(path, strict=strict, skip_bad=skip_bad), "voc")
    raise DatasetError(
        f"data '{path}': folder is not a detection dataset; expected annotations/instances_*.json "
        "(COCO), data.yaml (YOLO) or Annotations/ + JPEGImages/ (VOC)"
    )


def resolve_source(
    spec: Any,
    *,
    dataset_cls: type,
    task: str,
    synthetic_names: Sequence[str],
    synthetic: Callable[[str, str], Any],
    read_path: Callable[[Path], tuple[Any, Any, list[tuple[str, str]], str]],
    expected: str,
) -> tuple[Any, Any, list[tuple[str, str]], str]:
    """The `data=` resolution detection and segmentation share: a dataset object passes through,
    ``synthetic:<name>?query`` is generated, a path is read by ``read_path`` (-> train, val, skipped,
    format). Returns (train, val or None, skipped, description)."""
    if isinstance(spec, dataset_cls):
        return spec, None, [], spec.name
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(
            f"data of type {type(spec).__name__} is not supported for {task}; expected a "
            f"path, '{synthetic_names[0]}' or a {dataset_cls.__name__}"
        )
    text = str(spec).strip()
    name, _, query = text.partition("?")
    if isinstance(spec, str) and (name.startswith("synthetic:") or name == "synthetic"):
        if name not in synthetic_names:
            raise ConfigError(f"unknown synthetic {task} data {name!r}; available: {', '.join(synthetic_names)}")
        return synthetic(name, query), None, [], name
    path = Path(text).expanduser()
    if not path.exists():
        raise DatasetError(f"data '{spec}' not found; expected {expected}")
    train, val, skipped, fmt = read_path(path)
    return train, val, skipped, f"{fmt} {path}"


def hold_out(train: Any, val: Any, val_fraction: float, seed: int) -> tuple[Any, Any]:
    """A seeded random ``val_fraction`` of ``train`` as val when the source has no val split."""
    if val is None and val_fraction > 0 and len(train) > 1:
        tr, va = random_split(len(train), val_fraction, seed)
        if va:
            train, val = train.subset(tr), train.subset(va)
    return train, val


def report_skipped(skipped: list[tuple[str, str]], what: str, unit: str) -> str:
    """Log the skipped items once; the description gains their count."""
    if not skipped:
        return what
    src, reason = skipped[0]
    log.warning("skipped %d bad %s (first: %s: %s)", len(skipped), unit, src, reason)
    return what + f", {len(skipped)} skipped"


def load_detection_data(
    spec: Any,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    skip_bad: bool = False,
) -> DetectionData:
    """Resolve `spec` (see module docstring; also a `DetectionDataset` or `DetectionData`).

    val_fraction: share held out (seeded, random) when the source has no val split (0: none).
    strict: boxes past the image border raise instead of being clipped (clips are logged).
    skip_bad: degenerate boxes, malformed label lines and missing images are skipped (listed in
        `.skipped`, logged once) instead of raising.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must be in [0, 1)")
    if isinstance(spec, DetectionData):
        return spec
    train, val, skipped, what = resolve_source(
        spec, dataset_cls=DetectionDataset, task="detection", synthetic_names=["synthetic:shapes-det"],
        synthetic=lambda _, query: _synthetic(query), read_path=lambda path: _read_path(path, strict, skip_bad),
        expected="a COCO .json, a YOLO data.yaml, a dataset folder or 'synthetic:shapes-det'",
    )
    n = len(train) + (len(val) if val is not None else 0)
    what += f" ({n} images, {len(train.classes)} classes)"
    train, val = hold_out(train, val, val_fraction, seed)
    what = report_skipped(skipped, what, "images/boxes")
    return DetectionData(train, val, list(train.classes), skipped, what)


__all__ = [
    "BoxChecker",
    "DetectionData",
    "DetectionDataset",
    "SHAPES_DET_PARAMS",
    "detection_collate",
    "stack_images",
    "image_size",
    "load_detection_data",
    "random_split",
]
