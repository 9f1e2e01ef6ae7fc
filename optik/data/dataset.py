"""`ClassificationDataset`: images + integer labels + class names, one torch Dataset for every
classification source (files on disk, in-memory arrays, Hugging Face datasets).

Images are held as given (paths, a stacked uint8 array, a lazy sequence) and decoded per item, so
a dataset of 10k 64 px synthetic images is one (N, H, W, 3) array, and `subset()` is an index
view over the same storage, not a copy.

>>> ds = ClassificationDataset(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], ["a", "b"])
>>> img, label = ds[1]; img.shape, img.dtype, label
(torch.Size([3, 8, 8]), torch.uint8, 1)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from optik.data.image import as_image_tensor
from optik.data.views import IndexedView
from optik.errors import DatasetError, ImageError


def checked_class_names(classes: Sequence[Any], name: str) -> list[str]:
    """Class names as strings; an empty list or duplicates are a DatasetError naming the dataset."""
    names = [str(c) for c in classes]
    if not names:
        raise DatasetError(f"{name}: empty class list")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise DatasetError(f"{name}: duplicate class names {dup}")
    return names


class ClassificationDataset(IndexedView, torch.utils.data.Dataset):
    """Images with one integer label each.

    images: a sequence of paths / PIL images / HWC arrays / CHW tensors, or one stacked
        uint8 array (N, H, W, 3) or (N, H, W), or a uint8/float tensor (N, C, H, W), or any
        lazy sequence (indexed per item; e.g. a Hugging Face column).
    labels: one int in range(len(classes)) per image (validated here).
    classes: class names, index = label.
    transform: applied to a `tv_tensors.Image` uint8 (3, H, W) in `__getitem__`.
    name: used in `source(i)` for in-memory images, e.g. "synthetic:shapes[12]".
    """

    #: True for :class:`MultiLabelDataset` (a set of labels per image, multi-hot targets).
    multilabel: bool = False

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray | torch.Tensor | Image.Image]
        | np.ndarray
        | torch.Tensor,
        labels: Sequence[int],
        classes: list[str],
        transform: Callable | None = None,
        name: str = "dataset",
    ) -> None:
        self.name = name
        self.transform = transform
        self.classes = checked_class_names(classes, name)
        if isinstance(images, (list, tuple)):
            # Paths kept as str: compact, picklable, and `source()` is free.
            images = [str(x) if isinstance(x, Path) else x for x in images]
        elif isinstance(images, np.ndarray) and images.ndim not in (3, 4):
            raise DatasetError(
                f"{name}: image array of shape {images.shape} must be (N, H, W, C) or (N, H, W)"
            )
        elif isinstance(images, torch.Tensor) and images.ndim not in (3, 4):
            raise DatasetError(
                f"{name}: image tensor of shape {tuple(images.shape)} must be (N, C, H, W) "
                "or (N, H, W)"
            )
        self._images = images
        # Positions of this dataset's items in `_images` (None: identity). `subset` composes it.
        self._index: np.ndarray | None = None
        if len(labels) != len(images):
            raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.targets: list[int] = self._validate_labels(labels)

    def _validate_labels(self, labels: Sequence[Any]) -> list[int]:
        n = len(self.classes)
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        if isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.integer):
            a = labels.reshape(-1)
            if a.size == 0 or (
                a.min() >= 0 and a.max() < n
            ):  # fast path; else loop for the message
                return [int(v) for v in a.tolist()]
        out = []
        for i, y in enumerate(labels):
            try:
                y = operator.index(y)
            except TypeError:
                raise DatasetError(
                    f"{self._source_at(i)}: label {y!r} at index {i} is not an integer class index"
                ) from None
            if not 0 <= y < n:
                raise DatasetError(
                    f"{self._source_at(i)}: label {y} at index {i} is out of range for {n} classes "
                    f"(valid 0..{n - 1}: {self.classes[:10]}{' ...' if n > 10 else ''})"
                )
            out.append(int(y))
        return out

    def __len__(self) -> int:
        return len(self.targets)

    def source(self, i: int) -> str:
        """Where item `i` came from: its file path, or f"{name}[{k}]" for in-memory images,
        with `k` the position in the original (un-subset) collection so it stays stable."""
        return self._source_at(self._position(i))

    def _source_at(self, k: int) -> str:
        if isinstance(self._images, list):
            item = self._images[k]
            if isinstance(item, str):
                return item
        return f"{self.name}[{k}]"

    def load(self, i: int) -> torch.Tensor:
        """Item `i` as a uint8 tensor (3, H, W), without the transform."""
        k = self._position(i)
        item = self._images[k]
        if isinstance(item, str):
            return as_image_tensor(item)  # ImageError from load_image already names the path
        try:
            return as_image_tensor(item)
        except ImageError as e:
            raise ImageError(f"{self.source(i)}: {e}") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """-> (image, label): image is `transform(tv_tensors.Image uint8 (3, H, W))`."""
        img = tv_tensors.Image(self.load(i))
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]

    def _subset_hook(self, parent: ClassificationDataset, idx: np.ndarray) -> None:
        self.targets = [parent.targets[int(j)] for j in idx]

    def class_counts(self) -> list[int]:
        """Number of items per class, index = label."""
        return np.bincount(np.asarray(self.targets, np.int64), minlength=len(self.classes)).tolist()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"classes={len(self.classes)}, transform={self.transform is not None})"
        )


class MultiLabelDataset(ClassificationDataset):
    """Images with a *set* of labels each (zero, one or several classes): multi-label classification.

    labels: per image an iterable of class indices (``[0, 2]``, ``()`` for an image with no label), or
        one (N, C) multi-hot array / tensor. ``targets`` keeps each set as a sorted tuple; ``__getitem__``
        gives the multi-hot float32 (C,) target that ``BCEWithLogitsLoss`` takes.

    >>> ds = MultiLabelDataset(np.zeros((2, 8, 8, 3), np.uint8), [[0, 2], []], ["a", "b", "c"])
    >>> ds.targets, ds[0][1].tolist(), ds.class_counts()
    ([(0, 2), ()], [1.0, 0.0, 1.0], [1, 0, 1])
    """

    multilabel = True

    def _validate_labels(self, labels: Sequence[Any]) -> list[tuple[int, ...]]:  # type: ignore[override]
        n = len(self.classes)
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        if isinstance(labels, np.ndarray) and labels.ndim == 2:  # multi-hot (N, C)
            if labels.shape[1] != n:
                raise DatasetError(f"{self.name}: multi-hot labels have {labels.shape[1]} columns for {n} classes")
            return [tuple(np.flatnonzero(row).tolist()) for row in labels]
        out: list[tuple[int, ...]] = []
        for i, ys in enumerate(labels):
            if isinstance(ys, (str, bytes)) or not hasattr(ys, "__iter__"):
                raise DatasetError(f"{self._source_at(i)}: labels {ys!r} at index {i} are not a list of class indices")
            try:
                found = [operator.index(y) for y in ys]
            except TypeError:
                raise DatasetError(f"{self._source_at(i)}: labels {list(ys)!r} at index {i} are not integer class indices") from None
            bad = [y for y in found if not 0 <= y < n]
            if bad:
                raise DatasetError(
                    f"{self._source_at(i)}: label {bad[0]} at index {i} is out of range for {n} classes "
                    f"(valid 0..{n - 1}: {self.classes[:10]}{' ...' if n > 10 else ''})"
                )
            if len(set(found)) != len(found):
                raise DatasetError(f"{self._source_at(i)}: labels {found} at index {i} repeat a class")
            out.append(tuple(sorted(int(y) for y in found)))
        return out

    def label_matrix(self) -> np.ndarray:
        """The targets as a bool (N, C) multi-hot matrix."""
        m = np.zeros((len(self.targets), len(self.classes)), bool)
        for i, ys in enumerate(self.targets):
            m[i, list(ys)] = True
        return m

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """-> (image, multi-hot float32 (C,) target)."""
        img = tv_tensors.Image(self.load(i))
        if self.transform is not None:
            img = self.transform(img)
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        target[list(self.targets[i])] = 1.0
        return img, target

    def class_counts(self) -> list[int]:
        """Number of images holding each class (an image counts once per class it holds)."""
        return self.label_matrix().sum(0).astype(int).tolist()


__all__ = ["ClassificationDataset", "MultiLabelDataset"]
