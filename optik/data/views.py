"""Cheap views of in-memory datasets: another transform, or a subset by index, sharing storage."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from optik.data.image import as_image_tensor, image_size
from optik.errors import ImageError

V = TypeVar("V", bound="IndexedView")


class IndexedView:
    """Mixin for datasets that keep ``name``, ``transform`` and ``_index`` (the positions of this
    view's items in the shared storage, or None for all of them)."""

    name: str
    transform: Callable | None
    _index: np.ndarray | None

    def __len__(self) -> int:  # pragma: no cover - every dataset defines it
        raise NotImplementedError

    def _position(self, i: int) -> int:
        """Index ``i`` of this view (negatives from the end) → position in the shared storage."""
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} images")
        return int(self._index[i]) if self._index is not None else i

    def with_transform(self: V, transform: Callable | None) -> V:
        """A shallow copy sharing the storage, with another transform."""
        new = copy.copy(self)
        new.transform = transform
        return new

    def subset(self: V, indices: Sequence[int]) -> V:
        """The items at ``indices`` (in that order, negatives from the end), sharing storage."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.name}: subset index out of range for {n} images")
        idx = np.where(idx < 0, idx + n, idx)
        new = copy.copy(self)
        new._index = self._index[idx] if self._index is not None else idx
        new._subset_hook(self, idx)
        return new

    def _subset_hook(self, parent: Any, idx: np.ndarray) -> None:
        """Update per-item state kept outside the shared storage (e.g. a label list)."""


class ImageCollection(IndexedView):
    """Indexing shared by the annotated image datasets (detection, segmentation): items live at
    positions of shared storage — ``_images`` (paths or arrays), ``_ids`` (image ids), ``_sizes``
    ((H, W) or None until read) — and a view holds ``_index`` (its positions, or None for all)."""

    _images: Any
    _ids: list[int]
    _sizes: list[tuple[int, int] | None]

    def __len__(self) -> int:
        return len(self._ids) if self._index is None else len(self._index)

    def _positions(self) -> range | np.ndarray:
        return range(len(self._ids)) if self._index is None else self._index

    @property
    def image_ids(self) -> list[int]:
        """Image id of each item (the source's ids, e.g. COCO's, or position + 1)."""
        return [self._ids[int(k)] for k in self._positions()]

    def _source_at(self, k: int) -> str:
        if isinstance(self._images, list) and isinstance(self._images[k], str):
            return self._images[k]
        return f"{self.name}[{k}]"

    def source(self, i: int) -> str:
        """Item `i`'s file path, or f"{name}[{k}]" for in-memory images (k: original position)."""
        return self._source_at(self._position(i))

    def image_path(self, i: int) -> str | None:
        """Item `i`'s file path, or None for in-memory images."""
        k = self._position(i)
        if isinstance(self._images, list) and isinstance(self._images[k], str):
            return self._images[k]
        return None

    def _size_at(self, k: int) -> tuple[int, int]:
        s = self._sizes[k]
        if s is None:
            item = self._images[k]
            s = image_size(item) if isinstance(item, str) else tuple(as_image_tensor(item).shape[1:])
            self._sizes[k] = s  # the list is shared with subsets: each size is read once
        return s

    def size(self, i: int) -> tuple[int, int]:
        """(H, W) of item `i`, without decoding it when the source gave it."""
        return self._size_at(self._position(i))

    def _decode_at(self, k: int) -> Any:
        """The uint8 (3, H, W) image at position ``k``; an in-memory image's error names its item."""
        item = self._images[k]
        try:
            return as_image_tensor(item)
        except ImageError as e:
            if isinstance(item, str):
                raise
            raise ImageError(f"{self._source_at(k)}: {e}") from None
