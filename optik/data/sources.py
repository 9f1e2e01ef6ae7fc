"""Resolve the user's `data=` value into train/val classification datasets.

    "digits"                                   scikit-learn's 8x8 digits ("digits?size=32")
    "synthetic:shapes?n=2000&classes=6"        procedural shapes (see `SHAPES_PARAMS`)
    "path/to/folder"                           image folders (formats/imagefolder.py)
    "path/to/labels.csv"                       path,label CSV (formats/csvfile.py)
    datasets.Dataset / DatasetDict             Hugging Face (formats/hf.py)

Sources without their own validation split are split here: seeded, stratified by class, every
class keeping at least one training image.

>>> data = load_classification_data("synthetic:shapes?n=200&size=32")
>>> data.description, len(data.train), len(data.val)
('synthetic:shapes (200 images, 4 classes)', 160, 40)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from optik.data.dataset import ClassificationDataset
from optik.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

# name -> (parser, default); `classes` is an int or comma-separated shape names.
SHAPES_PARAMS: dict[str, Any] = {"n": 1000, "size": 64, "classes": 4, "difficulty": 0.5, "seed": 0}
DIGITS_PARAMS: dict[str, Any] = {"size": None}


@dataclass
class ClassificationData:
    """What `load_classification_data` returns: the datasets plus what happened on the way."""

    train: ClassificationDataset
    val: ClassificationDataset | None
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    description: str = ""


def stratified_split(
    labels: list[int] | np.ndarray, val_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split indices into (train, val), each class in proportion, seeded.

    The val size is round(N * val_fraction) overall (largest-remainder over classes), but every
    class keeps at least one training item. Index lists come back sorted.

    >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.5, seed=0)
    >>> len(train), len(val)
    (4, 4)
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size == 0 or val_fraction <= 0:
        return list(range(y.size)), []
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    sizes = np.array([len(m) for m in members])
    caps = sizes - 1  # at most this many per class go to val
    exact = sizes * val_fraction
    take = np.minimum(np.floor(exact).astype(np.int64), caps)
    extra = int(round(y.size * val_fraction)) - int(take.sum())
    # Hand the remaining val slots to the classes with the largest fractional remainders.
    for c in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if extra <= 0:
            break
        if take[c] < caps[c]:
            take[c] += 1
            extra -= 1
    val: list[int] = []
    for m, k in zip(members, take):
        val += rng.permutation(m)[:k].tolist()
    val_set = set(val)
    return [i for i in range(y.size) if i not in val_set], sorted(val)


def _parse_query(kind: str, query: str, allowed: dict[str, Any]) -> dict[str, Any]:
    """'n=10&size=32' -> {"n": "10", "size": "32"}; unknown/duplicate/valueless keys raise."""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = unquote(key).strip()
        if key not in allowed:
            raise ConfigError(f"{kind}: unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        if not eq or not value.strip():
            raise ConfigError(f"{kind}: parameter {key!r} needs a value ({key}=...)")
        if key in out:
            raise ConfigError(f"{kind}: parameter {key!r} given twice")
        out[key] = unquote(value).strip()
    return out


def _as_int(kind: str, key: str, value: str, minimum: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise ConfigError(f"{kind}: parameter {key}={value!r} must be an integer") from None
    if v < minimum:
        raise ConfigError(f"{kind}: parameter {key}={v} must be >= {minimum}")
    return v


def _shapes_kwargs(query: str) -> dict[str, Any]:
    kind = "synthetic:shapes"
    raw = _parse_query(kind, query, SHAPES_PARAMS)
    kw = dict(SHAPES_PARAMS)
    for key, value in raw.items():
        if key in ("n", "size", "seed"):
            kw[key] = _as_int(kind, key, value, {"n": 1, "size": 8, "seed": 0}[key])
        elif key == "difficulty":
            try:
                kw[key] = float(value)
            except ValueError:
                raise ConfigError(
                    f"{kind}: parameter difficulty={value!r} must be a number in [0, 1]"
                ) from None
            if not 0.0 <= kw[key] <= 1.0:
                raise ConfigError(f"{kind}: parameter difficulty={value} must be in [0, 1]")
        else:  # classes: a count or shape names
            kw[key] = _as_int(kind, key, value, 1) if value.strip().isdigit() else value.split(",")
    return kw


def _builtin(spec: str) -> tuple[ClassificationDataset, str] | None:
    """'digits[?..]' / 'synthetic:shapes[?..]' -> (dataset, description); None for other strings."""
    from optik.data import synthetic

    name, _, query = spec.partition("?")
    if name == "digits":
        raw = _parse_query("digits", query, DIGITS_PARAMS)
        size = _as_int("digits", "size", raw["size"], 1) if "size" in raw else None
        x, y, classes = synthetic.digits(size)
        label = "digits"
    elif name.startswith("synthetic:") or name == "synthetic":
        if name != "synthetic:shapes":
            raise ConfigError(f"unknown synthetic data {name!r}; available: synthetic:shapes")
        try:
            x, y, classes = synthetic.shapes_classification(**_shapes_kwargs(query))
        except ConfigError as e:
            raise ConfigError(f"synthetic:shapes: {e}") from None
        label = "synthetic:shapes"
    else:
        return None
    ds = ClassificationDataset(x, y, classes, name=label)
    return ds, f"{label} ({len(ds)} images, {len(classes)} classes)"


def _split(
    train: ClassificationDataset, val_fraction: float, seed: int
) -> tuple[ClassificationDataset, ClassificationDataset | None]:
    tr, va = stratified_split(train.targets, val_fraction, seed)
    if not va:
        return train, None
    return train.subset(tr), train.subset(va)


def load_classification_data(
    spec: Any, *, val_fraction: float = 0.2, seed: int = 0, skip_bad: bool = False
) -> ClassificationData:
    """Resolve `spec` (see module docstring) into a `ClassificationData`.

    val_fraction: share held out for validation when the source has no val split (0: none).
    seed: the split's seed (the synthetic generator has its own `seed=` parameter).
    skip_bad: skip unreadable images / empty class folders (listed in `.skipped`, logged once)
        instead of raising.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must be in [0, 1)")
    if isinstance(spec, ClassificationData):
        return spec
    skipped: list[tuple[str, str]] = []
    val: ClassificationDataset | None = None
    from optik.data.formats.hf import is_hf_dataset

    if isinstance(spec, ClassificationDataset):
        train, what = spec, f"{spec.name} ({len(spec)} images, {len(spec.classes)} classes)"
    elif is_hf_dataset(spec):
        from optik.data.formats.hf import read_hf

        train, val = read_hf(spec)
        n = len(train) + (len(val) if val is not None else 0)
        what = f"hf:{type(spec).__name__} ({n} images, {len(train.classes)} classes)"
    elif isinstance(spec, (str, os.PathLike)):
        built = _builtin(spec.strip()) if isinstance(spec, str) else None
        if built is not None:
            train, what = built
        else:
            path = Path(spec).expanduser()
            if path.is_dir():
                from optik.data.formats.imagefolder import read_imagefolder

                train, val, skipped = read_imagefolder(path, skip_bad=skip_bad)
                kind = "imagefolder"
            elif path.is_file() and path.suffix.lower() == ".csv":
                from optik.data.formats.csvfile import read_csv

                train, val, skipped = read_csv(path, skip_bad=skip_bad)
                kind = "csv"
            elif path.exists():
                raise DatasetError(
                    f"data '{spec}' is a {path.suffix or 'extensionless'} file; expected a "
                    "directory, a .csv, 'digits' or 'synthetic:shapes'"
                )
            else:
                raise DatasetError(
                    f"data '{spec}' not found; expected a directory, a .csv, 'digits' or "
                    "'synthetic:shapes'"
                )
            n = len(train) + (len(val) if val is not None else 0)
            what = f"{kind} {path} ({n} images, {len(train.classes)} classes)"
    else:
        raise ConfigError(
            f"data of type {type(spec).__name__} is not supported; expected a directory, a .csv, "
            "'digits', 'synthetic:shapes' or a Hugging Face dataset"
        )
    if val is None and val_fraction > 0:
        train, val = _split(train, val_fraction, seed)
    if skipped:
        what += f", {len(skipped)} skipped"
        src, reason = skipped[0]
        log.warning("skipped %d bad files (first: %s: %s)", len(skipped), src, reason)
    return ClassificationData(train, val, list(train.classes), skipped, what)


__all__ = ["ClassificationData", "load_classification_data", "stratified_split"]
