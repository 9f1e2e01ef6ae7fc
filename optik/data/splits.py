"""Train/val splits: `DataSplits` (what every `data=` resolver returns) and the seeded splitters
used when a source has no validation split of its own.

>>> train, val = random_split(10, 0.2, seed=0)
>>> len(train), len(val)
(8, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

D = TypeVar("D")


@dataclass
class DataSplits(Generic[D]):
    """A train split, an optional val split and what is known about them.

    classes: class names, index = label. description: one line for logs ("coco data/x.json (120
    images, 3 classes)"). meta: task metadata travelling with the splits (a Task's class names,
    normalisation…). skipped: (source, reason) of every item left out with `skip_bad`.
    kind, isthing: segmentation only — semantic | instance | panoptic, and per class whether it
    is a thing (panoptic, instance) or None. augment_defaults: the train augmentation that suits
    this source, for the keys a run leaves unset (classification: ``hflip``, ``scale``; see
    `optik.data.transforms.augment_settings`); empty = the task's photo defaults.
    """

    train: D
    val: D | None = None
    classes: list[str] = field(default_factory=list)
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    kind: str | None = None
    isthing: list[bool] | None = None
    augment_defaults: dict[str, Any] = field(default_factory=dict)


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


def hold_out(
    train: Any, val: Any, val_fraction: float, seed: int, *, by_class: bool = False
) -> tuple[Any, Any]:
    """A seeded ``val_fraction`` of ``train`` as val when the source has no val split (`val` is
    None): random, or per class in proportion with `by_class` (uses ``train.targets``). Both
    datasets are views of ``train`` (``subset``); no val comes back when none would be left."""
    if val is not None or val_fraction <= 0:
        return train, val
    if by_class:
        tr, va = stratified_split(train.targets, val_fraction, seed)
    else:
        tr, va = random_split(len(train), val_fraction, seed)
    if not va:
        return train, None
    return train.subset(tr), train.subset(va)


__all__ = ["DataSplits", "hold_out", "random_split", "stratified_split"]
