"""A CSV list of images: header with `path` and `label` columns, paths relative to the CSV.

    path,label                     optional third column `split`: train | val (valid,
    images/001.jpg,cat             validation, test count as val); without it the caller
    images/002.jpg,dog             splits by fraction.

Class names come from a `classes.txt` beside the CSV (one per line, in label order) when there
is one, else the sorted unique labels (numerically when all are integers). Row numbers in
messages are the spreadsheet's: the header is row 1.

>>> train, val, skipped = read_csv("data/labels.csv")       # doctest: +SKIP
"""

from __future__ import annotations

import csv
from pathlib import Path

from optik.data.checks import is_file, read_text
from optik.data.dataset import ClassificationDataset
from optik.data.image import check_images
from optik.errors import DatasetError

TRAIN_SPLITS = ("train",)
VAL_SPLITS = ("val", "valid", "validation", "test")


def _read_classes_txt(path: Path) -> list[str]:
    names = [line.strip() for line in read_text(path, "class list").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{path}: no class names (expected one per line)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path}: duplicate class names {dup}")
    return names


def _sorted_labels(labels: set[str]) -> list[str]:
    """Numeric order when every label is an integer ("2" before "10"), else string order."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def read_csv(
    path: str | Path, *, skip_bad: bool = False
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]]:
    """-> (train, val or None when there is no `split` column, skipped (path, reason) list).

    Raises DatasetError naming the file and the column (missing `path`/`label`), the row (empty
    cell, label not in classes.txt, unknown split) or the image (missing/unreadable; with
    skip_bad those rows are skipped and listed instead).
    """
    path = Path(path)
    try:
        rows, has_split = _read_rows(path)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    return _resolve(path, rows, has_split, skip_bad)


def _read_rows(path: Path) -> tuple[list[tuple[int, str, str, bool]], bool]:
    """The CSV's (row number, path, label, is_val) rows and whether it has a `split` column;
    DatasetErrors name the row."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise DatasetError(f"{path}: empty file; expected a header with 'path' and 'label'")
        columns = {h.strip().lower(): h for h in header if h is not None}
        for needed in ("path", "label"):
            if needed not in columns:
                raise DatasetError(
                    f"{path}: missing column {needed!r} (columns: {', '.join(map(str, header))})"
                )
        col_path, col_label, col_split = columns["path"], columns["label"], columns.get("split")
        rows = []
        for rowno, row in enumerate(reader, start=2):
            img = (row.get(col_path) or "").strip()
            label = (row.get(col_label) or "").strip()
            if not img and not label and not any((v or "").strip() for v in row.values()):
                continue  # blank line
            for key, value in (("path", img), ("label", label)):
                if not value:
                    raise DatasetError(f"{path} row {rowno}: empty {key!r}")
            split = (row.get(col_split) or "").strip().lower() if col_split else "train"
            if split not in TRAIN_SPLITS + VAL_SPLITS:
                allowed = ", ".join(TRAIN_SPLITS + VAL_SPLITS)
                raise DatasetError(f"{path} row {rowno}: split {split!r} is not one of {allowed}")
            rows.append((rowno, img, label, split in VAL_SPLITS))
    if not rows:
        raise DatasetError(f"{path}: no rows after the header")
    return rows, col_split is not None


def _resolve(
    path: Path, rows: list[tuple[int, str, str, bool]], has_split: bool, skip_bad: bool
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]]:
    classes_txt = path.parent / "classes.txt"
    classes = _read_classes_txt(classes_txt) if is_file(classes_txt) else None
    if classes is not None:
        known = set(classes)
        for rowno, _, label, _ in rows:
            if label not in known:
                raise DatasetError(f"{path}: label {label!r} at row {rowno} not in {classes_txt}")

    skipped: list[tuple[str, str]] = []
    resolved = []
    for rowno, img, label, is_val in rows:
        file = Path(img) if Path(img).is_absolute() else path.parent / img
        if not is_file(file):
            if not skip_bad:
                raise DatasetError(f"{path} row {rowno}: image {img!r} not found ({file})")
            skipped.append((str(file), f"not found (row {rowno} of {path.name})"))
            continue
        resolved.append((rowno, str(file), label, is_val))
    problems = check_images([r[1] for r in resolved], full=skip_bad)
    kept = []
    for (rowno, file, label, is_val), reason in zip(resolved, problems):
        if reason is None:
            kept.append((file, label, is_val))
        elif skip_bad:
            skipped.append((file, f"{reason} (row {rowno} of {path.name})"))
        else:
            raise DatasetError(f"{path} row {rowno}: {file}: {reason}")
    if not kept:
        raise DatasetError(f"{path}: no readable images")

    if classes is None:
        classes = _sorted_labels({label for _, label, _ in kept})
    index = {c: i for i, c in enumerate(classes)}

    def make(part: list[tuple[str, str, bool]], name: str) -> ClassificationDataset:
        return ClassificationDataset(
            [f for f, _, _ in part], [index[lab] for _, lab, _ in part], classes, name=name
        )

    train_rows = [r for r in kept if not r[2]]
    val_rows = [r for r in kept if r[2]]
    if not train_rows:
        raise DatasetError(f"{path}: no training rows (every row has a val/test split)")
    train = make(train_rows, f"{path}:train")
    val = make(val_rows, f"{path}:val") if has_split and val_rows else None
    return train, val, skipped


__all__ = ["read_csv"]
