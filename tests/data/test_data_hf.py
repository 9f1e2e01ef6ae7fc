"""Hugging Face `datasets` objects as `data=`, built in memory (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from optik.data.sources import load_classification_data
from optik.errors import DatasetError

datasets = pytest.importorskip("datasets")


def pil(value: int, size: tuple[int, int] = (6, 5)) -> Image.Image:
    return Image.new("RGB", size, (value, 0, 255 - value))


def classlabel_ds(n: int = 8, names=("cat", "dog")) -> datasets.Dataset:
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))}
    )
    return datasets.Dataset.from_dict(
        {"image": [pil(20 * i) for i in range(n)], "label": [i % len(names) for i in range(n)]},
        features=features,
    )


def test_dataset_with_classlabel():
    data = load_classification_data(classlabel_ds(), val_fraction=0.25, seed=0)
    assert data.classes == ["cat", "dog"]
    assert len(data.train) == 6 and len(data.val) == 2 and sorted(data.val.targets) == [0, 1]
    img, label = data.train[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 5, 6)
    assert data.train.source(0).startswith("hf:")
    assert "8 images, 2 classes" in data.description


def test_image_content_is_converted_lazily_and_correctly():
    ds = classlabel_ds(4)
    data = load_classification_data(ds, val_fraction=0)
    assert [int(data.train.load(i)[0, 0, 0]) for i in range(4)] == [0, 20, 40, 60]


def test_datasetdict_uses_train_and_validation():
    dd = datasets.DatasetDict(
        {"train": classlabel_ds(6), "test": classlabel_ds(2), "validation": classlabel_ds(4)}
    )
    data = load_classification_data(dd)
    assert len(data.train) == 6 and len(data.val) == 4  # validation preferred over test
    assert data.val.source(0) == "hf:validation[0]"
    only_test = datasets.DatasetDict({"train": classlabel_ds(6), "test": classlabel_ds(2)})
    assert len(load_classification_data(only_test).val) == 2


def test_plain_labels_and_img_column():
    ds = datasets.Dataset.from_dict(
        {
            "img": [np.full((4, 4, 3), v, np.uint8) for v in (0, 50, 100, 150)],
            "labels": ["b", "a", "b", "a"],
        }
    )
    data = load_classification_data(ds, val_fraction=0)
    assert data.classes == ["a", "b"] and data.train.targets == [1, 0, 1, 0]
    assert int(data.train.load(2)[1, 0, 0]) == 100


def test_missing_columns_name_the_available_ones():
    ds = datasets.Dataset.from_dict({"picture": [pil(0)], "label": [0]})
    with pytest.raises(DatasetError, match=r"no image column .*available columns: picture, label"):
        load_classification_data(ds)
    ds = datasets.Dataset.from_dict({"image": [pil(0)], "target": [0]})
    with pytest.raises(DatasetError, match=r"no label column .*available columns: image, target"):
        load_classification_data(ds)


def test_datasetdict_without_train():
    dd = datasets.DatasetDict({"validation": classlabel_ds(2)})
    with pytest.raises(DatasetError, match="no 'train' split; available: validation"):
        load_classification_data(dd)


def test_val_label_not_in_train_classes():
    train = datasets.Dataset.from_dict({"image": [pil(0), pil(1)], "label": ["a", "b"]})
    val = datasets.Dataset.from_dict({"image": [pil(2)], "label": ["zebra"]})
    with pytest.raises(DatasetError, match="'zebra' not in class list"):
        load_classification_data(datasets.DatasetDict({"train": train, "val": val}))


def test_torch_formatted_dataset_still_works():
    ds = classlabel_ds(4).with_format("torch")
    data = load_classification_data(ds, val_fraction=0)
    assert data.train.load(1).shape == (3, 5, 6)
