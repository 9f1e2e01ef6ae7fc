"""Image folders: one sub-folder per class, optionally under `train/` + `val/` split folders.

    root/cat/001.jpg, root/dog/002.png, ...                  one pool, split later by fraction
    root/train/cat/..., root/val/cat/...                      explicit split (val/ may also be
                                                              valid/, validation/ or test/)

Class names are the train folder names, sorted. Files are picked by extension
(`IMAGE_EXTENSIONS`, case-insensitive, sub-folders included); hidden files and folders are
ignored. Each image is checked while scanning (see `check_images`).

Multi-label: a `multilabel.csv` (`filename,labels`; names separated by `|`, an empty cell = no
label; paths relative to the folder; optional `split` column) in the root, or in `train/` (+ `val/`),
makes the folder a multi-label dataset (:func:`optik.data.formats.csvfile.read_csv`). The CSV is
the index: images it does not list are left out (their count is logged).

    root/multilabel.csv, root/<images, any sub-folders>     one pool (or a `split` column)
    root/train/multilabel.csv, root/val/multilabel.csv        explicit split

>>> train, val, skipped = read_imagefolder("data/pets")      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from optik.data.dataset import ClassificationDataset
from optik.data.formats.csvfile import read_csv
from optik.data.image import IMAGE_EXTENSIONS, check_images, is_image_file
from optik.errors import DatasetError, ImageError

VAL_DIR_NAMES = ("val", "valid", "validation", "test")  # first present wins
MULTILABEL_CSV = "multilabel.csv"

log = logging.getLogger(__name__)


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    """Image files under `folder` (recursive, sorted, hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and is_image_file(f)
        ]
    return found


def split_dirs(root: Path) -> tuple[Path, Path | None] | None:
    """(train_dir, val_dir or None) when `root` uses split folders, else None.

    A `train/` that itself holds sub-folders marks the split layout (a class that happens to be
    called "train" holds images instead).
    """
    train = root / "train"
    if not (train.is_dir() and _subdirs(train)):
        return None
    val = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
    return train, val


def scan_class_folders(
    root: Path,
    *,
    classes: list[str] | None = None,
    skip_bad: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[list[str], list[int], list[str]]:
    """Scan `root/<class>/<images>` -> (paths, labels, classes).

    classes: the class list to label against (for a val folder); None: the folder names here.
    Empty class folders and unreadable images raise `DatasetError`/`ImageError` naming them, or
    with skip_bad are appended to `skipped` as (path, reason); a train class left without images
    is dropped. A folder whose name is not in `classes` raises `DatasetError`.
    """
    skipped = skipped if skipped is not None else []
    dirs = _subdirs(root)
    if not dirs:
        raise DatasetError(f"{root}: no class folders; expected {root}/<class name>/<image files>")
    per_class: list[tuple[str, list[str]]] = []
    for d in dirs:
        if classes is not None and d.name not in classes:
            raise DatasetError(
                f"{d}: label {d.name!r} not in class list (train classes: {', '.join(classes)})"
            )
        files = _image_files(d)
        if not files:
            reason = f"class folder has no images ({'/'.join(sorted(IMAGE_EXTENSIONS))})"
            if not skip_bad:
                raise DatasetError(f"{d}: {reason}")
            skipped.append((str(d), reason))
            continue
        per_class.append((d.name, files))

    # One pass over all files so the thread pool stays busy across classes.
    all_files = [f for _, files in per_class for f in files]
    problems = iter(check_images(all_files, full=skip_bad))
    names = classes if classes is not None else []
    paths: list[str] = []
    found: list[tuple[str, list[str]]] = []
    for name, files in per_class:
        good = []
        for f in files:
            reason = next(problems)
            if reason is None:
                good.append(f)
            elif skip_bad:
                skipped.append((f, reason))
            else:
                raise ImageError(f"{f}: {reason}")
        if good:
            found.append((name, good))
        elif classes is None:
            skipped.append((str(root / name), "class folder has no readable images; class dropped"))
    if classes is None:
        names = [name for name, _ in found]
    labels: list[int] = []
    for name, good in found:
        paths += good
        labels += [names.index(name)] * len(good)
    if not paths:
        raise DatasetError(f"{root}: no readable images in {len(dirs)} class folders")
    return paths, labels, names


def read_imagefolder(
    root: str | Path, *, skip_bad: bool = False
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]]:
    """-> (train, val or None when there is no split folder, skipped (path, reason) list)."""
    root = Path(root)
    found = read_multilabel_folder(root, skip_bad=skip_bad)
    if found is not None:
        return found
    skipped: list[tuple[str, str]] = []
    layout = split_dirs(root)
    train_dir, val_dir = layout if layout is not None else (root, None)
    paths, labels, classes = scan_class_folders(train_dir, skip_bad=skip_bad, skipped=skipped)
    train = ClassificationDataset(paths, labels, classes, name=str(train_dir))
    val = None
    if val_dir is not None:
        vpaths, vlabels, _ = scan_class_folders(
            val_dir, classes=classes, skip_bad=skip_bad, skipped=skipped
        )
        val = ClassificationDataset(vpaths, vlabels, classes, name=str(val_dir))
    return train, val, skipped


def _warn_unlisted(
    folder: Path, listed: list[ClassificationDataset | None], csv_file: Path, skipped: list[tuple[str, str]]
) -> None:
    """Log how many images under `folder` the multi-label CSV does not list (they are not used)."""
    names = {os.path.normpath(ds.source(i)) for ds in listed if ds is not None for i in range(len(ds))}
    names |= {os.path.normpath(p) for p, _ in skipped}
    unlisted = [f for f in _image_files(folder) if os.path.normpath(f) not in names]
    if unlisted:
        log.warning("%s: %d image(s) not listed in %s are left out (first: %s)", folder, len(unlisted), csv_file.name, unlisted[0])


def read_multilabel_folder(
    root: str | Path, *, skip_bad: bool = False
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]] | None:
    """The multi-label layouts (see the module docstring) -> (train, val or None, skipped), or None when
    `root` holds no `multilabel.csv`. The val CSV is labelled against the train classes."""
    root = Path(root)
    if (root / MULTILABEL_CSV).is_file():
        csv_file = root / MULTILABEL_CSV
        train, val, skipped = read_csv(csv_file, skip_bad=skip_bad, multilabel=True)
        _warn_unlisted(root, [train, val], csv_file, skipped)
        return train, val, skipped
    if not (root / "train" / MULTILABEL_CSV).is_file():
        return None
    train, _, skipped = read_csv(root / "train" / MULTILABEL_CSV, skip_bad=skip_bad, multilabel=True)
    _warn_unlisted(root / "train", [train], root / "train" / MULTILABEL_CSV, skipped)
    val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
    val = None
    if val_dir is not None:
        if not (val_dir / MULTILABEL_CSV).is_file():
            raise DatasetError(f"{val_dir}: no {MULTILABEL_CSV} (the train split {root / 'train'} has one)")
        val, _, more = read_csv(val_dir / MULTILABEL_CSV, skip_bad=skip_bad, classes=list(train.classes), multilabel=True)
        _warn_unlisted(val_dir, [val], val_dir / MULTILABEL_CSV, more)
        skipped += more
    return train, val, skipped


__all__ = ["MULTILABEL_CSV", "VAL_DIR_NAMES", "read_imagefolder", "read_multilabel_folder", "scan_class_folders",
           "split_dirs"]  # fmt: skip
