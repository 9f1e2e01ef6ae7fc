"""`DataSplits` (what every loader returns, and what a Task hands the engine), `hold_out`, and
the loaders' shared handling of splits given as `data=`."""

from __future__ import annotations

import numpy as np
import pytest

from optik.data.dataset import ClassificationDataset
from optik.data.sources import (
    load_classification_data,
    load_detection_data,
    load_segmentation_data,
)
from optik.data.splits import DataSplits, hold_out
from optik.errors import ConfigError


def digits_like(n: int = 12) -> ClassificationDataset:
    y = np.arange(n) % 3
    return ClassificationDataset(np.zeros((n, 4, 4, 3), np.uint8), y, ["a", "b", "c"], name="t")


def test_task_style_construction_has_defaults():
    splits = DataSplits(train=[1, 2], val=None, meta={"classes": ["a"]}, description="x")
    assert splits.classes == [] and splits.skipped == [] and splits.kind is None
    assert splits.isthing is None and splits.meta == {"classes": ["a"]}


def test_hold_out_random_and_by_class():
    ds = digits_like(12)
    tr, va = hold_out(ds, None, 0.25, seed=0, by_class=True)
    assert np.bincount(va.targets).tolist() == [1, 1, 1] and len(tr) == 9
    tr, va = hold_out(ds, None, 0.25, seed=0)
    assert len(va) == 3 and len(tr) == 9
    given = digits_like(3)
    assert hold_out(ds, given, 0.25, seed=0) == (ds, given)  # the source's own val split wins
    assert hold_out(ds, None, 0.0, seed=0) == (ds, None)


def test_loaders_pass_their_own_splits_through_and_refuse_others():
    data = load_classification_data(digits_like(), val_fraction=0.25)
    assert isinstance(data, DataSplits) and load_classification_data(data) is data
    assert data.description == "t (12 images, 3 classes)" and len(data.val) == 3
    with pytest.raises(ConfigError, match="DataSplits of ClassificationDataset; detection needs"):
        load_detection_data(data)
    with pytest.raises(ConfigError, match="segmentation needs SegmentationDataset splits"):
        load_segmentation_data(data)


def test_one_resolver_one_message_per_mistake():
    for load, task in ((load_classification_data, "classification"),
                       (load_detection_data, "detection"),
                       (load_segmentation_data, "segmentation")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"unknown synthetic {task} data 'synthetic:nope'"):
            load("synthetic:nope")
        with pytest.raises(ConfigError, match=f"data of type int is not supported for {task}"):
            load(3)
