"""Hugging Face `datasets` objects as classification data (the `datasets` package is optional
and imported only when such an object is passed).

Image column `image` or `img`, label column `label` or `labels`. Class names come from the
label's `ClassLabel` feature, else the sorted unique values. A `DatasetDict` gives `train` plus
the first of `validation` / `val` / `test`. Images stay in the dataset and are decoded per item.

>>> ds = datasets.load_dataset("cifar10")                    # doctest: +SKIP
>>> train, val = read_hf(ds)                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optik.data.dataset import ClassificationDataset
from optik.errors import DatasetError

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels")
VAL_SPLITS = ("validation", "val", "test")


def is_hf_dataset(obj: Any) -> bool:
    """True for `datasets.Dataset` / `DatasetDict` (and the iterable variants), without
    importing `datasets` when the object is something else."""
    module = type(obj).__module__ or ""
    return module == "datasets" or module.startswith("datasets.")


class HFImageColumn(Sequence):
    """Lazy view of one image column: item i is decoded only when asked for.

    Indexing a one-column, unformatted view decodes just that cell (a PIL image for an `Image`
    feature; nested lists from array features become HWC arrays, uint8 when the values fit).
    """

    def __init__(self, ds: Any, column: str) -> None:
        import datasets

        feature = ds.features[column]
        if isinstance(feature, datasets.Image) and not feature.decode:
            ds = ds.cast_column(column, datasets.Image(decode=True))
        # No torch/numpy format: we want the raw PIL/array and do the conversion ourselves.
        self._ds = ds.select_columns([column]).with_format(None)
        self._column = column

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        import numpy as np

        x = self._ds[int(i)][self._column]
        if isinstance(x, list):  # list-valued features come back as nested python ints/floats
            x = np.asarray(x)
            if x.dtype.kind in "iu" and x.size and x.min() >= 0 and x.max() <= 255:
                x = x.astype(np.uint8)
        return x


def _column(ds: Any, choices: tuple[str, ...], what: str, split: str) -> str:
    for c in choices:
        if c in ds.column_names:
            return c
    raise DatasetError(
        f"hugging face dataset{f' split {split!r}' if split else ''}: no {what} column "
        f"({' or '.join(map(repr, choices))}); available columns: {', '.join(ds.column_names)}"
    )


def _class_names(ds: Any, label_col: str) -> tuple[list[str], dict[Any, int] | None]:
    """(names, value -> index map, or None when labels are already ClassLabel indices)."""
    import datasets

    feature = ds.features[label_col]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    values = set(ds[label_col])
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = sorted(values, key=str)
    return [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}


def _to_dataset(
    ds: Any, classes: list[str], mapping: dict[Any, int] | None, split: str
) -> ClassificationDataset:
    image_col = _column(ds, IMAGE_COLUMNS, "image", split)
    label_col = _column(ds, LABEL_COLUMNS, "label", split)
    raw = list(ds[label_col])
    if mapping is None:
        names = getattr(ds.features[label_col], "names", None)
        if names is not None and list(names) != classes:
            raise DatasetError(
                f"hugging face split {split!r}: ClassLabel names {list(names)} differ from the "
                f"train split's {classes}"
            )
        labels = raw
    else:
        labels = []
        for i, v in enumerate(raw):
            if v not in mapping:
                raise DatasetError(
                    f"hf:{split}[{i}]: label {v!r} not in class list ({', '.join(classes)})"
                )
            labels.append(mapping[v])
    return ClassificationDataset(HFImageColumn(ds, image_col), labels, classes, name=f"hf:{split}")


def read_hf(obj: Any) -> tuple[ClassificationDataset, ClassificationDataset | None]:
    """`datasets.Dataset` -> (all, None); `DatasetDict` -> (train, first val split or None)."""
    import datasets

    if isinstance(obj, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise DatasetError(
            "hugging face dataset: streaming (iterable) datasets are not supported; "
            "load without streaming=True"
        )
    if isinstance(obj, datasets.DatasetDict):
        if "train" not in obj:
            raise DatasetError(
                f"hugging face DatasetDict has no 'train' split; available: {', '.join(obj)}"
            )
        train_ds, split = obj["train"], "train"
        val_name = next((s for s in VAL_SPLITS if s in obj), None)
    elif isinstance(obj, datasets.Dataset):
        train_ds, split, val_name = obj, str(obj.split) if obj.split else "dataset", None
    else:
        raise DatasetError(f"unsupported hugging face object {type(obj).__name__}")
    label_col = _column(train_ds, LABEL_COLUMNS, "label", split)
    classes, mapping = _class_names(train_ds, label_col)
    train = _to_dataset(train_ds, classes, mapping, split)
    val = _to_dataset(obj[val_name], classes, mapping, val_name) if val_name else None
    return train, val


__all__ = ["HFImageColumn", "is_hf_dataset", "read_hf"]
