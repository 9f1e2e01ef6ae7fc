"""A CSV list of images: header with `path` and `label` columns, paths relative to the CSV.

    path,label                     optional third column `split`: train | val (valid,
    images/001.jpg,cat             validation, test count as val); without it the caller
    images/002.jpg,dog             splits by fraction.

Multi-label (detected automatically): a `labels` column, or a `label` column where any cell holds
several names separated by `|`, gives a :class:`MultiLabelDataset` — each row a set of names, an
empty cell an image with no label. `filename` is accepted for `path` (the `multilabel.csv` of an
image folder, :mod:`optik.data.formats.imagefolder`).

    path,labels
    images/001.jpg,cat|dog
    images/002.jpg,                an image with no label

Class names come from a `classes.txt` beside the CSV (one per line, in label order) when there
is one, else the sorted unique labels (numerically when all are integers). Row numbers in
messages are the spreadsheet's: the header is row 1.

>>> train, val, skipped = read_csv("data/labels.csv")       # doctest: +SKIP
"""

from __future__ import annotations

import csv
from pathlib import Path

from optik.data.checks import is_file, read_text
from optik.data.dataset import ClassificationDataset, MultiLabelDataset
from optik.data.image import check_images
from optik.errors import DatasetError

TRAIN_SPLITS = ("train",)
VAL_SPLITS = ("val", "valid", "validation", "test")
SEPARATOR = "|"  # between the names of a multi-label cell

Row = tuple[int, str, tuple[str, ...], bool]  # (row number, image path, label names, is_val)


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
    path: str | Path,
    *,
    skip_bad: bool = False,
    classes: list[str] | None = None,
    multilabel: bool | None = None,
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]]:
    """-> (train, val or None when there is no `split` column, skipped (path, reason) list).

    classes: label against these names (e.g. a val CSV against its train classes) instead of
        `classes.txt` / the names found. multilabel: None detects it (see the module docstring),
        True reads every cell as a `|`-separated set, False refuses multi-label cells.

    Raises DatasetError naming the file and the column (missing `path`/`label`), the row (empty
    cell, empty or repeated name in a `|` list, label not in classes.txt, unknown split) or the image
    (missing/unreadable; with skip_bad those rows are skipped and listed instead).
    """
    path = Path(path)
    try:
        rows, has_split, multilabel = _read_rows(path, multilabel)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    return _resolve(path, rows, has_split, skip_bad, classes, multilabel)


def _label_names(path: Path, rowno: int, cell: str) -> tuple[str, ...]:
    """A multi-label cell -> its names; an empty cell is the empty set."""
    if not cell:
        return ()
    names = tuple(n.strip() for n in cell.split(SEPARATOR))
    if any(not n for n in names):
        raise DatasetError(
            f"{path} row {rowno}: empty label name in {cell!r}; separate names with '{SEPARATOR}', e.g. cat{SEPARATOR}dog"
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path} row {rowno}: label {dup[0]!r} given twice in {cell!r}")
    return names


def _read_rows(path: Path, multilabel: bool | None) -> tuple[list[Row], bool, bool]:
    """The CSV's (row number, path, label names, is_val) rows, whether it has a `split` column and
    whether it is multi-label; DatasetErrors name the row."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise DatasetError(f"{path}: empty file; expected a header with 'path' and 'label'")
        columns = {h.strip().lower(): h for h in header if h is not None}
        col_path = columns.get("path") or columns.get("filename")
        if "label" in columns and "labels" in columns:
            raise DatasetError(f"{path}: both 'label' and 'labels' columns; keep one ('labels': '{SEPARATOR}'-separated names)")
        col_label = columns.get("labels") or columns.get("label")
        for needed, col in (("path", col_path), ("label", col_label)):
            if col is None:
                raise DatasetError(f"{path}: missing column {needed!r} (columns: {', '.join(map(str, header))})")
        col_split = columns.get("split")
        raw = []
        for rowno, row in enumerate(reader, start=2):
            img = (row.get(col_path) or "").strip()
            label = (row.get(col_label) or "").strip()
            cells = [v if isinstance(v, str) else " ".join(v or []) for v in row.values()]  # extra fields: a list
            if not img and not label and not any(c.strip() for c in cells):
                continue  # blank line
            split = (row.get(col_split) or "").strip().lower() if col_split else "train"
            if split not in TRAIN_SPLITS + VAL_SPLITS:
                allowed = ", ".join(TRAIN_SPLITS + VAL_SPLITS)
                raise DatasetError(f"{path} row {rowno}: split {split!r} is not one of {allowed}")
            raw.append((rowno, img, label, split in VAL_SPLITS))
    if not raw:
        raise DatasetError(f"{path}: no rows after the header")
    found = col_label.strip().lower() == "labels" or any(SEPARATOR in label for _, _, label, _ in raw)
    if multilabel is False and found:
        where = next((r for r in raw if SEPARATOR in r[2]), None)
        at = f" (row {where[0]}: {where[2]!r})" if where else f" (column {col_label!r})"
        raise DatasetError(f"{path}: multi-label data{at} where one label per image is expected")
    multilabel = found if multilabel is None else multilabel
    rows = []
    for rowno, img, label, is_val in raw:
        if not img:
            raise DatasetError(f"{path} row {rowno}: empty 'path'")
        if multilabel:
            rows.append((rowno, img, _label_names(path, rowno, label), is_val))
        elif not label:
            raise DatasetError(f"{path} row {rowno}: empty 'label'")
        else:
            rows.append((rowno, img, (label,), is_val))
    return rows, col_split is not None, multilabel


def _resolve(
    path: Path, rows: list[Row], has_split: bool, skip_bad: bool, classes: list[str] | None, multilabel: bool
) -> tuple[ClassificationDataset, ClassificationDataset | None, list[tuple[str, str]]]:
    classes_txt = path.parent / "classes.txt"
    source = "the train classes"
    if classes is None and is_file(classes_txt):
        classes, source = _read_classes_txt(classes_txt), str(classes_txt)
    if classes is not None:
        known = set(classes)
        for rowno, _, labels, _ in rows:
            for label in labels:
                if label not in known:
                    raise DatasetError(f"{path}: label {label!r} at row {rowno} not in {source}")

    skipped: list[tuple[str, str]] = []
    resolved = []
    for rowno, img, labels, is_val in rows:
        file = Path(img) if Path(img).is_absolute() else path.parent / img
        if not is_file(file):
            if not skip_bad:
                raise DatasetError(f"{path} row {rowno}: image {img!r} not found ({file})")
            skipped.append((str(file), f"not found (row {rowno} of {path.name})"))
            continue
        resolved.append((rowno, str(file), labels, is_val))
    problems = check_images([r[1] for r in resolved], full=skip_bad)
    kept = []
    for (rowno, file, labels, is_val), reason in zip(resolved, problems):
        if reason is None:
            kept.append((file, labels, is_val))
        elif skip_bad:
            skipped.append((file, f"{reason} (row {rowno} of {path.name})"))
        else:
            raise DatasetError(f"{path} row {rowno}: {file}: {reason}")
    if not kept:
        raise DatasetError(f"{path}: no readable images")

    if classes is None:
        classes = _sorted_labels({label for _, labels, _ in kept for label in labels})
        if not classes:
            raise DatasetError(f"{path}: no image has a label (add classes.txt to name the classes)")
    index = {c: i for i, c in enumerate(classes)}

    def make(part: list[tuple[str, tuple[str, ...], bool]], name: str) -> ClassificationDataset:
        files = [f for f, _, _ in part]
        if multilabel:
            return MultiLabelDataset(files, [[index[n] for n in labs] for _, labs, _ in part], classes, name=name)
        return ClassificationDataset(files, [index[labs[0]] for _, labs, _ in part], classes, name=name)

    train_rows = [r for r in kept if not r[2]]
    val_rows = [r for r in kept if r[2]]
    if not train_rows:
        raise DatasetError(f"{path}: no training rows (every row has a val/test split)")
    train = make(train_rows, f"{path}:train")
    val = make(val_rows, f"{path}:val") if has_split and val_rows else None
    return train, val, skipped


__all__ = ["SEPARATOR", "read_csv"]
