"""ClassificationDataset: storage kinds, label validation, subsets and transforms."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from optik.data.dataset import ClassificationDataset
from optik.errors import DatasetError, ImageError


def stack(n: int = 6, size: int = 8) -> np.ndarray:
    """(n, size, size, 3) uint8 where image i is filled with value 10 * i."""
    return np.stack([np.full((size, size, 3), 10 * i, np.uint8) for i in range(n)])


def test_array_storage_items_and_targets():
    ds = ClassificationDataset(stack(), np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], name="mem")
    assert len(ds) == 6 and ds.targets == [0, 1, 2, 0, 1, 2]
    assert all(type(t) is int for t in ds.targets)
    img, label = ds[4]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    assert label == 1 and int(img[0, 0, 0]) == 40
    assert ds.source(4) == "mem[4]"
    assert ds.class_counts() == [2, 2, 2]


def test_path_storage_source_and_load(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (5, 4), (i * 50, 0, 0)).save(p)
        paths.append(p)
    ds = ClassificationDataset(paths, [0, 1, 1], ["x", "y"])
    assert ds.source(2) == str(paths[2])
    t = ds.load(2)
    assert type(t) is torch.Tensor and t.shape == (3, 4, 5) and int(t[0, 0, 0]) == 100


def test_mixed_in_memory_sequence():
    items = [
        np.zeros((4, 4), np.uint8),
        Image.new("L", (4, 4), 9),
        torch.full((3, 4, 4), 0.5),
    ]
    ds = ClassificationDataset(items, [0, 0, 1], ["a", "b"], name="mix")
    assert [ds.load(i).shape for i in range(3)] == [(3, 4, 4)] * 3
    assert int(ds.load(1)[1, 0, 0]) == 9 and int(ds.load(2)[0, 0, 0]) == 128


def test_nchw_tensor_storage():
    x = torch.zeros(4, 3, 6, 6, dtype=torch.uint8)
    x[2] = 77
    ds = ClassificationDataset(x, [0, 1, 0, 1], ["a", "b"])
    assert int(ds.load(2).max()) == 77


@pytest.mark.parametrize("bad", [3, -1])
def test_label_out_of_range_names_index_and_label(bad):
    labels = [0, 1, 2, bad] if bad != 3 else [0, 1, 3, 0]
    with pytest.raises(DatasetError) as err:
        ClassificationDataset(stack(4), labels, ["a", "b", "c"], name="toy")
    msg = str(err.value)
    idx = labels.index(bad)
    assert f"toy[{idx}]" in msg and f"label {bad}" in msg and f"index {idx}" in msg


def test_label_out_of_range_names_file(tmp_path):
    p = tmp_path / "cat.png"
    Image.new("RGB", (2, 2)).save(p)
    with pytest.raises(DatasetError, match=r"cat\.png: label 5"):
        ClassificationDataset([p], [5], ["a", "b"])


def test_non_integer_label_and_length_mismatch():
    with pytest.raises(DatasetError, match="'cat'.*not an integer"):
        ClassificationDataset(stack(2), [0, "cat"], ["a", "b"])
    with pytest.raises(DatasetError, match="2 images but 3 labels"):
        ClassificationDataset(stack(2), [0, 1, 1], ["a", "b"])
    with pytest.raises(DatasetError, match="duplicate"):
        ClassificationDataset(stack(2), [0, 1], ["a", "a"])


def test_subset_shares_storage_and_keeps_original_source():
    x = stack(6)
    ds = ClassificationDataset(x, [0, 1, 0, 1, 0, 1], ["a", "b"], name="mem")
    sub = ds.subset([5, 1])
    assert len(sub) == 2 and sub.targets == [1, 1]
    assert int(sub.load(0)[0, 0, 0]) == 50 and sub.source(0) == "mem[5]"
    subsub = sub.subset([1])
    assert subsub.source(0) == "mem[1]" and int(subsub.load(0)[0, 0, 0]) == 10
    assert sub._images is x  # no copy of the pixels
    with pytest.raises(IndexError):
        sub[2]
    with pytest.raises(IndexError):
        ds.subset([6])


def test_with_transform_is_a_copy():
    ds = ClassificationDataset(stack(2), [0, 1], ["a", "b"])
    flipped = ds.with_transform(lambda img: img.flip(-1).float())
    assert ds.transform is None and ds[0][0].dtype == torch.uint8
    assert flipped[1][0].dtype == torch.float32 and flipped[1][1] == 1


def test_transform_receives_tv_image():
    seen = []
    ds = ClassificationDataset(
        stack(1), [0], ["a"], transform=lambda img: seen.append(type(img)) or img
    )
    ds[0]
    assert seen == [tv_tensors.Image]


def test_bad_in_memory_item_error_names_source():
    ds = ClassificationDataset([np.zeros((4, 4, 2), np.uint8)], [0], ["a"], name="odd")
    with pytest.raises(ImageError, match=r"odd\[0\].*\(4, 4, 2\)"):
        ds[0]


def test_pickles_for_dataloader_workers():
    ds = ClassificationDataset(stack(3), [0, 1, 0], ["a", "b"]).subset([2, 0])
    back = pickle.loads(pickle.dumps(ds))
    assert back.targets == [0, 0] and torch.equal(back.load(0), ds.load(0))
