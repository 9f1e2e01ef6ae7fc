"""Resolve the user's `data=` value into train/val datasets: the one resolver every task uses.

Classification, `load_classification_data` (ClassificationDataset splits):
    "digits"                                    scikit-learn's 8x8 digits ("digits?size=32")
    "synthetic:shapes?n=2000&classes=6"         procedural shapes (see `SHAPES_PARAMS`)
    "synthetic:shapes-multi?n=2000&classes=6"   multi-label: 0..k shapes per image (`SHAPES_MULTI_PARAMS`)
    "path/to/folder"                            image folders (formats/imagefolder.py; a multilabel.csv
                                                in it: multi-label)
    "path/to/labels.csv"                        path,label CSV (formats/csvfile.py; `a|b` labels:
                                                multi-label)
    datasets.Dataset / DatasetDict              Hugging Face (formats/hf.py)
Detection, `load_detection_data` (DetectionDataset splits):
    "synthetic:shapes-det?n=500&size=128"       procedural scenes (see `SHAPES_SCENE_PARAMS`)
    "path/to/instances.json"                    COCO JSON (formats/coco.py)
    "path/to/coco_root/"                        annotations/instances_train*.json (+ val)
    "path/to/data.yaml" or a folder holding it  YOLO (formats/yolo.py)
    "path/to/VOCdevkit/VOC2012/"                VOC: Annotations/ + JPEGImages/ (formats/voc.py)
Segmentation, `load_segmentation_data` (SegmentationDataset splits):
    "synthetic:shapes-seg?n=500&size=128"       semantic scenes (classes[0] = "background")
    "synthetic:shapes-inst?…"                   instance scenes (occluding)
    "synthetic:shapes-pan?…"                    panoptic scenes + "sky"/"ground" stuff
    "path/to/folder"    images/ + masks/ PNGs (formats/masks.py), COCO (annotations/instances_*
                        or panoptic_*.json), Pascal VOC (SegmentationClass/, formats/voc_seg.py)
    "path/to/x.json"    COCO instances (polygons/RLE) or COCO panoptic (formats/coco_panoptic.py);
                        instances also give semantic maps (`SegmentationDataset.as_semantic`)

Each loader also takes a dataset of its kind (all of it is the train split) or a `DataSplits`
holding them (returned as it is), and returns a `DataSplits`. Sources without their own
validation split are split here, seeded: by class in proportion for classification (every class
keeps a training image), at random for detection and segmentation.

>>> data = load_classification_data("synthetic:shapes?n=200&size=32")
>>> data.description, len(data.train), len(data.val)
('synthetic:shapes (200 images, 4 classes)', 160, 40)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from optik.data import synthetic
from optik.data.dataset import ClassificationDataset, MultiLabelDataset
from optik.data.detection_dataset import DetectionDataset
from optik.data.formats import coco, coco_panoptic, masks, voc, voc_seg, yolo
from optik.data.formats.csvfile import read_csv
from optik.data.formats.hf import is_hf_dataset, read_hf
from optik.data.formats.imagefolder import read_imagefolder
from optik.data.segmentation_dataset import (
    KINDS,
    SegmentationDataset,
    SegmentMap,
    SemanticMap,
)
from optik.data.splits import DataSplits, hold_out
from optik.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

Skipped = list[tuple[str, str]]  # (source, reason) of each item left out with skip_bad
ReadResult = tuple[Any, Any, Skipped, str]  # (train, val or None, skipped, format or description)

# The synthetic generators' `?key=value` parameters and their defaults; `classes` is a count or
# comma-separated shape names.
SHAPES_PARAMS: dict[str, Any] = {"n": 1000, "size": 64, "classes": 4, "difficulty": 0.5, "seed": 0}
DIGITS_PARAMS: dict[str, Any] = {"size": None}
SHAPES_MULTI_PARAMS: dict[str, Any] = {"n": 1000, "size": 64, "classes": 4, "difficulty": 0.5, "seed": 0}
SHAPES_SCENE_PARAMS: dict[str, Any] = {  # every scene: shapes-det, -seg, -inst, -pan
    "n": 500,
    "size": 128,
    "classes": 4,
    "min_objects": 1,
    "max_objects": 6,
    "difficulty": 0.5,
    "seed": 0,
}
SCENE_KINDS = {"shapes-seg": "semantic", "shapes-inst": "instance", "shapes-pan": "panoptic"}
#: Train augmentation of the built-in classification sources (`DataSplits.augment_defaults`; the keys a
#: run leaves unset; other sources get the photo defaults, `optik.data.transforms.PHOTO_AUGMENT`). No zooming
#: crop: a 0.6-1.0 random-resized crop cuts strokes and shapes off small images (shapes, 4,000 images, resnet,
#: 10 epochs: top-1 0.42 with it, 0.70 without; in multi-label scenes it would also drop a labelled shape).
#: No flips for digits (a mirrored 2 is no 2); the shapes are mirror-symmetric, so they keep the flips.
CLASSIFICATION_AUGMENT: dict[str, dict[str, Any]] = {
    "digits": {"hflip": 0.0, "scale": (1.0, 1.0)},
    "synthetic:shapes": {"scale": (1.0, 1.0)},
    "synthetic:shapes-multi": {"scale": (1.0, 1.0)},
}
_MINIMUM = {"n": 1, "seed": 0, "min_objects": 0, "max_objects": 1}  # size: per generator


# ---- synthetic:<name>?query -----------------------------------------------------------------


def parse_query(name: str, query: str, allowed: Mapping[str, Any]) -> dict[str, str]:
    """'n=10&size=32' -> {"n": "10", "size": "32"}; unknown/duplicate/valueless keys raise."""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = unquote(key).strip()
        if key not in allowed:
            raise ConfigError(f"{name}: unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        if not eq or not value.strip():
            raise ConfigError(f"{name}: parameter {key!r} needs a value ({key}=...)")
        if key in out:
            raise ConfigError(f"{name}: parameter {key!r} given twice")
        out[key] = unquote(value).strip()
    return out


def _as_int(name: str, key: str, value: str, minimum: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise ConfigError(f"{name}: parameter {key}={value!r} must be an integer") from None
    if v < minimum:
        raise ConfigError(f"{name}: parameter {key}={v} must be >= {minimum}")
    return v


def synthetic_params(
    name: str, query: str, defaults: Mapping[str, Any], *, min_size: int
) -> dict[str, Any]:
    """A ``synthetic:<name>?…`` query -> keyword arguments for its generator (`defaults` filled
    in); bad values are ConfigErrors naming the parameter.

    >>> synthetic_params("synthetic:shapes", "n=10&classes=circle,star", SHAPES_PARAMS, min_size=8)
    {'n': 10, 'size': 64, 'classes': ['circle', 'star'], 'difficulty': 0.5, 'seed': 0}
    """
    kw = dict(defaults)
    for key, value in parse_query(name, query, defaults).items():
        if key == "size":
            kw[key] = _as_int(name, key, value, min_size)
        elif key in _MINIMUM:
            kw[key] = _as_int(name, key, value, _MINIMUM[key])
        elif key == "difficulty":
            try:
                kw[key] = float(value)
            except ValueError:
                raise ConfigError(
                    f"{name}: parameter difficulty={value!r} must be a number in [0, 1]"
                ) from None
            if not 0.0 <= kw[key] <= 1.0:
                raise ConfigError(f"{name}: parameter difficulty={value} must be in [0, 1]")
        else:  # classes: a count or shape names
            kw[key] = _as_int(name, key, value, 1) if value.strip().isdigit() else value.split(",")
    return kw


def _generate(name: str, generator: Callable[..., Any], **kw: Any) -> Any:
    """Run a synthetic generator; its ConfigErrors gain the source's name."""
    try:
        return generator(**kw)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


# ---- the shared resolution ------------------------------------------------------------------


def resolve_source(
    spec: Any,
    *,
    dataset_cls: type,
    task: str,
    synthetic: Mapping[str, Callable[[str], Any]],
    read_path: Callable[[Path], ReadResult],
    expected: str,
    accepts: str,
    read_object: Callable[[Any], ReadResult | None] | None = None,
) -> ReadResult:
    """The `data=` resolution every task shares -> (train, val or None, skipped, description).

    A `dataset_cls` instance passes through; ``read_object`` may claim other objects (e.g. a
    Hugging Face dataset); a ``synthetic`` name (``<name>?query``) is generated; a path is read
    by ``read_path`` (-> train, val, skipped, format). `expected` lists the valid sources for
    a path that is not found, `accepts` the valid types for a spec of another type."""
    if isinstance(spec, dataset_cls):
        return spec, None, [], spec.name
    if read_object is not None and (found := read_object(spec)) is not None:
        return found
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(
            f"data of type {type(spec).__name__} is not supported for {task}; expected {accepts}"
        )
    text = str(spec).strip()
    name, _, query = text.partition("?")
    if isinstance(spec, str) and (
        name in synthetic or name.startswith("synthetic:") or name == "synthetic"
    ):
        if name not in synthetic:
            raise ConfigError(
                f"unknown synthetic {task} data {name!r}; available: {', '.join(synthetic)}"
            )
        return synthetic[name](query), None, [], name
    try:  # `~nobody/x` (unknown user) and over-long names raise from pathlib itself
        path = Path(text).expanduser()
        found = path.exists()
    except (OSError, RuntimeError, ValueError) as e:  # ValueError: an embedded NUL byte
        raise DatasetError(f"data {spec!r}: not a usable path ({e}); expected {expected}") from None
    if not found:
        raise DatasetError(f"data '{spec}' not found; expected {expected}")
    train, val, skipped, fmt = read_path(path)
    return train, val, skipped, f"{fmt} {path}"


def _check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must be in [0, 1)")


def _given_splits(spec: Any, dataset_cls: type, task: str) -> DataSplits | None:
    """`spec` itself when it is a DataSplits of `dataset_cls` (already resolved)."""
    if not isinstance(spec, DataSplits):
        return None
    if not isinstance(spec.train, dataset_cls):
        raise ConfigError(
            f"data: DataSplits of {type(spec.train).__name__}; {task} needs "
            f"{dataset_cls.__name__} splits"
        )
    return spec


def _report_skipped(skipped: Skipped, what: str, unit: str) -> str:
    """Log the skipped items once; the description `what` gains their count."""
    if not skipped:
        return what
    src, reason = skipped[0]
    log.warning("skipped %d bad %s (first: %s: %s)", len(skipped), unit, src, reason)
    return what + f", {len(skipped)} skipped"


def _splits(
    train: Any, val: Any, skipped: Skipped, what: str, *, val_fraction: float, seed: int,
    unit: str, by_class: bool = False, detail: str = "", **extra: Any,
) -> DataSplits:  # fmt: skip
    """The resolved source as `DataSplits`: counted in the description (before any hold-out),
    val held out when the source has none, skipped items logged once."""
    n = len(train) + (len(val) if val is not None else 0)
    what += f" ({n} images, {len(train.classes)} classes{detail})"
    train, val = hold_out(train, val, val_fraction, seed, by_class=by_class)
    what = _report_skipped(skipped, what, unit)
    return DataSplits(train, val, list(train.classes), what, skipped=skipped, **extra)


# ---- classification -------------------------------------------------------------------------


def _shapes(query: str) -> ClassificationDataset:
    name = "synthetic:shapes"
    kw = synthetic_params(name, query, SHAPES_PARAMS, min_size=8)
    x, y, classes = _generate(name, synthetic.shapes_classification, **kw)
    return ClassificationDataset(x, y, classes, name=name)


def _shapes_multi(query: str) -> MultiLabelDataset:
    name = "synthetic:shapes-multi"
    kw = synthetic_params(name, query, SHAPES_MULTI_PARAMS, min_size=16)
    x, label_sets, classes = _generate(name, synthetic.shapes_multilabel, **kw)
    return MultiLabelDataset(x, label_sets, classes, name=name)


def _digits(query: str) -> ClassificationDataset:
    kw = synthetic_params("digits", query, DIGITS_PARAMS, min_size=1)
    x, y, classes = _generate("digits", synthetic.digits, **kw)
    return ClassificationDataset(x, y, classes, name="digits")


def _read_classification_path(path: Path, skip_bad: bool) -> ReadResult:
    if path.is_dir():
        return (*read_imagefolder(path, skip_bad=skip_bad), "imagefolder")
    if path.is_file() and path.suffix.lower() == ".csv":
        return (*read_csv(path, skip_bad=skip_bad), "csv")
    raise DatasetError(
        f"data '{path}' is a {path.suffix or 'extensionless'} file; expected a directory, a "
        ".csv, 'digits', 'synthetic:shapes' or 'synthetic:shapes-multi'"
    )


def _read_hf_object(spec: Any) -> ReadResult | None:
    if not is_hf_dataset(spec):
        return None
    train, val = read_hf(spec)
    return train, val, [], f"hf:{type(spec).__name__}"


def load_classification_data(
    spec: Any, *, val_fraction: float = 0.2, seed: int = 0, skip_bad: bool = False
) -> DataSplits[ClassificationDataset]:
    """Resolve `spec` (see the module docstring) into train/val `ClassificationDataset`s.

    val_fraction: share held out for validation when the source has no val split (0: none).
    seed: the split's seed (the synthetic generator has its own `seed=` parameter).
    skip_bad: skip unreadable images / empty class folders (listed in `.skipped`, logged once)
        instead of raising.

    Multi-label sources (a set of labels per image: `synthetic:shapes-multi`, a CSV with `a|b`
    labels, a folder with a `multilabel.csv`) give `MultiLabelDataset` splits, `meta["multilabel"]`
    True, and are held out at random (stratifying label sets is not attempted).
    """
    _check_val_fraction(val_fraction)
    if (given := _given_splits(spec, ClassificationDataset, "classification")) is not None:
        return given
    train, val, skipped, what = resolve_source(
        spec, dataset_cls=ClassificationDataset, task="classification",
        synthetic={"digits": _digits, "synthetic:shapes": _shapes, "synthetic:shapes-multi": _shapes_multi},
        read_path=partial(_read_classification_path, skip_bad=skip_bad),
        read_object=_read_hf_object,
        expected="a directory, a .csv, 'digits', 'synthetic:shapes' or 'synthetic:shapes-multi'",
        accepts="a directory, a .csv, 'digits', 'synthetic:shapes' or a Hugging Face dataset",
    )  # fmt: skip
    multilabel = bool(getattr(train, "multilabel", False))
    augment = CLASSIFICATION_AUGMENT.get(what, {}) if isinstance(spec, str) else {}  # `what`: a built-in's name
    return _splits(train, val, skipped, what, val_fraction=val_fraction, seed=seed, unit="files",
                   by_class=not multilabel, meta={"multilabel": True} if multilabel else {},
                   augment_defaults=dict(augment))  # fmt: skip


# ---- detection ------------------------------------------------------------------------------


def _shapes_det(query: str) -> DetectionDataset:
    name = "synthetic:shapes-det"
    kw = synthetic_params(name, query, SHAPES_SCENE_PARAMS, min_size=16)
    x, anns, names = _generate(name, synthetic.shapes_detection, **kw)
    return DetectionDataset(x, anns, names, name=name)


def _read_detection_path(path: Path, strict: bool, skip_bad: bool) -> ReadResult:
    """A file or folder -> (train, val, skipped, format), by what it holds."""
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


def load_detection_data(
    spec: Any,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    skip_bad: bool = False,
) -> DataSplits[DetectionDataset]:
    """Resolve `spec` (see the module docstring) into train/val `DetectionDataset`s.

    val_fraction: share held out (seeded, random) when the source has no val split (0: none).
    strict: boxes past the image border raise instead of being clipped (clips are logged).
    skip_bad: degenerate boxes, malformed label lines and missing images are skipped (listed in
        `.skipped`, logged once) instead of raising.

    >>> data = load_detection_data("synthetic:shapes-det?n=20&size=64")
    >>> img, target = data.train[0]
    >>> img.shape, target["boxes"].shape[1], data.classes
    (torch.Size([3, 64, 64]), 4, ['circle', 'square', 'triangle', 'star'])
    """
    _check_val_fraction(val_fraction)
    if (given := _given_splits(spec, DetectionDataset, "detection")) is not None:
        return given
    train, val, skipped, what = resolve_source(
        spec, dataset_cls=DetectionDataset, task="detection",
        synthetic={"synthetic:shapes-det": _shapes_det},
        read_path=partial(_read_detection_path, strict=strict, skip_bad=skip_bad),
        expected="a COCO .json, a YOLO data.yaml, a dataset folder or 'synthetic:shapes-det'",
        accepts="a path, 'synthetic:shapes-det' or a DetectionDataset",
    )  # fmt: skip
    return _splits(train, val, skipped, what, val_fraction=val_fraction, seed=seed,
                   unit="images/boxes")  # fmt: skip


# ---- segmentation ---------------------------------------------------------------------------


def _shapes_seg(name: str, query: str) -> SegmentationDataset:
    kind = SCENE_KINDS[name.partition(":")[2]]
    kw = synthetic_params(name, query, SHAPES_SCENE_PARAMS, min_size=16)
    x, maps, labels, names, isthing = _generate(name, synthetic.shapes_segmentation, **kw,
                                                kind=kind)  # fmt: skip
    if kind == "semantic":
        anns: list[Any] = [SemanticMap(m) for m in maps]
        isthing = None
    else:
        anns = [SegmentMap(m, lab) for m, lab in zip(maps, labels)]
    return SegmentationDataset(x, anns, names, kind=kind, isthing=isthing, name=name)


def _read_segmentation_path(path: Path, skip_bad: bool, kind: str | None) -> ReadResult:
    """A file or folder -> (train, val, skipped, format), by what it holds."""
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(
                f"data '{path}' is a {path.suffix or 'extensionless'} file; expected a COCO "
                "instances/panoptic .json or a dataset folder"
            )
        if coco_panoptic.is_panoptic_json(path):
            train, skipped = coco_panoptic.read_coco_panoptic(path, skip_bad=skip_bad)
            return train, None, skipped, "coco-panoptic"
        train, skipped = coco.read_coco_segmentation(path, skip_bad=skip_bad)
        return train, None, skipped, "coco"
    if coco_panoptic.is_panoptic_dir(path):
        return (*coco_panoptic.read_coco_panoptic_dir(path, skip_bad=skip_bad), "coco-panoptic")
    if coco.is_coco_dir(path):
        return (*coco.read_coco_segmentation_dir(path, skip_bad=skip_bad), "coco")
    if voc_seg.is_voc_seg_dir(path):
        return (*voc_seg.read_voc_seg(path, skip_bad=skip_bad, instances=kind == "instance"),
                "voc")  # fmt: skip
    if masks.is_mask_dir(path):
        return (*masks.read_mask_dir(path, skip_bad=skip_bad), "masks")
    raise DatasetError(
        f"data '{path}': folder is not a segmentation dataset; expected images/ + masks/, "
        "annotations/instances_*.json or panoptic_*.json (COCO) or SegmentationClass/ (VOC)"
    )


def _as_kind(ds: SegmentationDataset | None, kind: str | None) -> SegmentationDataset | None:
    """A view of `ds` giving `kind` targets (a panoptic source gives all three; instances, e.g.
    COCO polygons/RLE, also give class maps: background 0, overlaps and crowd void)."""
    if ds is None or kind is None or kind == ds.kind:
        return ds
    if ds.kind == "instance" and kind == "semantic":
        return ds.as_semantic()
    if ds.kind != "panoptic":  # only panoptic segments hold both a class map and instances
        raise DatasetError(f"{ds.name}: holds {ds.kind} annotations; cannot give {kind} targets")
    new = ds.with_transform(ds.transform)
    new.kind = kind
    if kind == "semantic":
        new.isthing = None
    return new


def load_segmentation_data(
    spec: Any,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    skip_bad: bool = False,
    kind: str | None = None,
) -> DataSplits[SegmentationDataset]:
    """Resolve `spec` (see the module docstring) into train/val `SegmentationDataset`s; the
    result's `kind` and `isthing` are the train split's.

    val_fraction: share held out (seeded, random) when the source has no val split (0: none).
    strict: kept for symmetry with detection (mask data has no boxes to clip).
    skip_bad: images with bad annotations (wrong mask size, class out of range, unknown colour,
        degenerate polygon, unknown category, inconsistent segments) or missing files are skipped
        (listed in `.skipped`, logged once) instead of raising.
    kind: the targets wanted, when not the source's own: a panoptic source also gives
        "semantic" or "instance" (things) targets; VOC gives instances from SegmentationObject/.

    >>> data = load_segmentation_data("synthetic:shapes-seg?n=10&size=32")
    >>> img, target = data.train[0]
    >>> img.shape, target["semantic"].shape, data.classes[0]
    (torch.Size([3, 32, 32]), torch.Size([32, 32]), 'background')
    """
    del strict
    _check_val_fraction(val_fraction)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    if (given := _given_splits(spec, SegmentationDataset, "segmentation")) is not None:
        return given
    scenes = {f"synthetic:{k}": partial(_shapes_seg, f"synthetic:{k}") for k in SCENE_KINDS}
    train, val, skipped, what = resolve_source(
        spec, dataset_cls=SegmentationDataset, task="segmentation", synthetic=scenes,
        read_path=partial(_read_segmentation_path, skip_bad=skip_bad, kind=kind),
        expected="a mask folder, a COCO .json or folder, a VOC folder or "
                 "'synthetic:shapes-seg|shapes-inst|shapes-pan'",
        accepts="a path, 'synthetic:shapes-seg' or a SegmentationDataset",
    )  # fmt: skip
    train, val = _as_kind(train, kind), _as_kind(val, kind)
    return _splits(train, val, skipped, what, val_fraction=val_fraction, seed=seed,
                   unit="images/annotations", detail=f", {train.kind}", kind=train.kind,
                   isthing=train.isthing)  # fmt: skip



__all__ = [
    "DIGITS_PARAMS",
    "SCENE_KINDS",
    "SHAPES_MULTI_PARAMS",
    "SHAPES_PARAMS",
    "SHAPES_SCENE_PARAMS",
    "DataSplits",
    "load_classification_data",
    "load_detection_data",
    "load_segmentation_data",
    "parse_query",
    "resolve_source",
    "synthetic_params",
]
