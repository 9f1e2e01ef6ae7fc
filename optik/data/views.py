"""Cheap views of in-memory datasets: another transform, or a subset by index, sharing storage."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

V = TypeVar("V", bound="IndexedView")


class IndexedView:
    """Mixin for datasets that keep ``name``, ``transform`` and ``_index`` (the positions of this
    view's items in the shared storage, or None for all of them)."""

    name: str
    transform: Callable | None
    _index: np.ndarray | None

    def __len__(self) -> int:  # pragma: no cover - every dataset defines it
        raise NotImplementedError

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
