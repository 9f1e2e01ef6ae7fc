"""Multi-label data: MultiLabelDataset, `a|b` CSVs, image folders with a multilabel.csv, and the
built-in `synthetic:shapes-multi` (its label sets are exactly the shapes drawn)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from optik.data.dataset import ClassificationDataset, MultiLabelDataset
from optik.data.formats.csvfile import read_csv
from optik.data.formats.imagefolder import read_imagefolder
from optik.data.sources import load_classification_data
from optik.data.synthetic import SHAPE_KINDS, shapes_multilabel
from optik.errors import ConfigError, DatasetError


def _png(path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def _csv(tmp_path, text: str, images: tuple[str, ...] = ("a.png", "b.png", "c.png"), name: str = "labels.csv"):
    for i, img in enumerate(images):
        _png(tmp_path / img, (40 * i) % 256)
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- the dataset ------------------------------------------------------------------------------


def test_dataset_targets_are_multi_hot_and_subsets_keep_them():
    ds = MultiLabelDataset(np.zeros((4, 8, 8, 3), np.uint8), [[2, 0], [], [1], (0, 1, 2)], ["a", "b", "c"], name="t")
    assert ds.multilabel and not ClassificationDataset.multilabel
    assert ds.targets == [(0, 2), (), (1,), (0, 1, 2)]
    img, y = ds[0]
    assert img.shape == (3, 8, 8) and y.dtype == torch.float32 and y.tolist() == [1.0, 0.0, 1.0]
    assert ds[1][1].tolist() == [0.0, 0.0, 0.0]  # no label: all negative
    assert ds.class_counts() == [2, 2, 2]
    sub = ds.subset([3, 1])
    assert isinstance(sub, MultiLabelDataset) and sub.targets == [(0, 1, 2), ()] and sub[0][1].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(sub.label_matrix(), [[True, True, True], [False, False, False]])
    same = MultiLabelDataset(np.zeros((4, 8, 8, 3), np.uint8), ds.label_matrix(), ["a", "b", "c"])  # multi-hot input
    assert same.targets == ds.targets


@pytest.mark.parametrize(
    ("labels", "match"),
    [([[0], [3]], "label 3 at index 1 is out of range for 3 classes"),
     ([[0], [1, 1]], r"labels \[1, 1\] at index 1 repeat a class"),
     ([[0], "ab"], "are not a list of class indices"),
     ([[0], [0.5]], "are not integer class indices")],
)  # fmt: skip
def test_dataset_bad_labels_name_the_item(labels, match):
    with pytest.raises(DatasetError, match=match):
        MultiLabelDataset(np.zeros((2, 8, 8, 3), np.uint8), labels, ["a", "b", "c"], name="mine")


# ---- CSV --------------------------------------------------------------------------------------


def test_csv_pipe_labels_give_label_sets(tmp_path):
    p = _csv(tmp_path, "path,label\na.png,dog|cat\nb.png,cat\nc.png,\n")
    train, val, skipped = read_csv(p)
    assert isinstance(train, MultiLabelDataset) and val is None and skipped == []
    assert train.classes == ["cat", "dog"]  # sorted union of the names
    assert train.targets == [(0, 1), (0,), ()]  # an empty cell: an image with no label
    assert train[0][1].tolist() == [1.0, 1.0] and train[2][1].tolist() == [0.0, 0.0]


def test_csv_labels_column_is_multilabel_even_with_single_names_and_split(tmp_path):
    (tmp_path / "classes.txt").write_text("zebra\ncat\ndog\n")
    p = _csv(tmp_path, "path,labels,split\na.png,cat,train\nb.png, dog | zebra ,val\nc.png,,train\n")
    train, val, _ = read_csv(p)
    assert isinstance(train, MultiLabelDataset) and isinstance(val, MultiLabelDataset)
    assert train.classes == ["zebra", "cat", "dog"]  # classes.txt order
    assert train.targets == [(1,), ()] and val.targets == [(0, 2)]  # names are stripped


def test_csv_single_label_stays_single_label(tmp_path):
    train, _, _ = read_csv(_csv(tmp_path, "path,label\na.png,cat\nb.png,dog\nc.png,cat\n"))
    assert type(train) is ClassificationDataset and train.targets == [0, 1, 0]
    with pytest.raises(DatasetError, match="row 3: empty 'label'"):
        read_csv(_csv(tmp_path, "path,label\na.png,cat\nb.png,\n", name="x.csv"))


@pytest.mark.parametrize(
    ("text", "match"),
    [("path,label\na.png,cat\nb.png,cat||dog\n", r"labels.csv row 3: empty label name in 'cat\|\|dog'"),
     ("path,label\na.png,cat|\n", r"labels.csv row 2: empty label name in 'cat\|'"),
     ("path,labels\na.png,cat\nb.png,dog|cat|dog\n", r"labels.csv row 3: label 'dog' given twice"),
     ("path,label,labels\na.png,cat,cat\n", "both 'label' and 'labels' columns"),
     ("path,labels\n,cat\n", "row 2: empty 'path'"),
     ("image,labels\na.png,cat\n", "missing column 'path'")],
)  # fmt: skip
def test_csv_label_problems_name_file_and_row(tmp_path, text, match):
    with pytest.raises(DatasetError, match=match):
        read_csv(_csv(tmp_path, text))


def test_csv_name_not_in_classes_txt_names_row(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DatasetError, match=r"labels.csv: label 'cow' at row 3 not in .*classes.txt"):
        read_csv(_csv(tmp_path, "path,labels\na.png,cat\nb.png,dog|cow\n"))


def test_csv_multilabel_refused_where_single_label_expected(tmp_path):
    with pytest.raises(DatasetError, match=r"multi-label data \(row 3: 'b\|c'\)"):
        read_csv(_csv(tmp_path, "path,label\na.png,a\nb.png,b|c\n"), multilabel=False)


def test_csv_without_any_label_needs_classes_txt(tmp_path):
    p = _csv(tmp_path, "path,labels\na.png,\nb.png,\n")
    with pytest.raises(DatasetError, match="no image has a label"):
        read_csv(p)
    (tmp_path / "classes.txt").write_text("cat\n")
    train, _, _ = read_csv(p)
    assert train.targets == [(), ()]


def test_load_classification_data_multilabel_csv(tmp_path):
    rows = "".join(f"i{k}.png,{'cat|dog' if k % 3 == 0 else 'dog' if k % 3 == 1 else ''}\n" for k in range(10))
    p = _csv(tmp_path, "filename,labels\n" + rows, images=tuple(f"i{k}.png" for k in range(10)))
    data = load_classification_data(str(p), val_fraction=0.3, seed=0)
    assert isinstance(data.train, MultiLabelDataset) and isinstance(data.val, MultiLabelDataset)
    assert data.meta == {"multilabel": True} and len(data.train) == 7 and len(data.val) == 3
    assert sorted(data.train.targets + data.val.targets) == sorted([(0, 1), (1,), ()] * 3 + [(0, 1)])
    assert load_classification_data("synthetic:shapes?n=8&size=16&classes=2").meta == {}


# ---- image folders with a multilabel.csv ------------------------------------------------------


def test_imagefolder_with_multilabel_csv(tmp_path, caplog):
    for name in ("x/1.png", "x/2.png", "3.png", "unlisted.png"):
        _png(tmp_path / name)
    (tmp_path / "multilabel.csv").write_text("filename,labels\nx/1.png,sun|sea\nx/2.png,\n3.png,sea\n")
    with caplog.at_level(logging.WARNING):
        train, val, _ = read_imagefolder(tmp_path)
    assert isinstance(train, MultiLabelDataset) and val is None
    assert train.classes == ["sea", "sun"] and train.targets == [(0, 1), (), (0,)]
    assert "1 image(s) not listed in multilabel.csv" in caplog.text and "unlisted.png" in caplog.text
    data = load_classification_data(str(tmp_path), val_fraction=0)
    assert data.meta == {"multilabel": True} and "imagefolder" in data.description


def test_imagefolder_split_layout_with_multilabel_csvs(tmp_path):
    for name in ("train/a.png", "train/b.png", "val/c.png"):
        _png(tmp_path / name)
    (tmp_path / "train" / "multilabel.csv").write_text("filename,labels\na.png,sun|sea\nb.png,sky\n")
    (tmp_path / "val" / "multilabel.csv").write_text("filename,labels\nc.png,sky|sun\n")
    train, val, _ = read_imagefolder(tmp_path)
    assert train.classes == val.classes == ["sea", "sky", "sun"]
    assert val.targets == [(1, 2)]
    (tmp_path / "val" / "multilabel.csv").write_text("filename,labels\nc.png,moon\n")
    with pytest.raises(DatasetError, match=r"val/multilabel.csv: label 'moon' at row 2 not in the train classes"):
        read_imagefolder(tmp_path)
    (tmp_path / "val" / "multilabel.csv").unlink()
    with pytest.raises(DatasetError, match="no multilabel.csv"):
        read_imagefolder(tmp_path)


# ---- synthetic:shapes-multi -------------------------------------------------------------------


def test_shapes_multi_label_sets_are_the_drawn_shapes():
    """Each labelled kind is one fully visible, non-overlapping shape whose pixels stand out from the
    background ring around it; nothing else is drawn (the masks are the generator's own drawing)."""
    x, labels, names, masks = shapes_multilabel(n=60, size=48, classes=5, difficulty=0.0, seed=3, return_masks=True)
    assert names == list(SHAPE_KINDS[:5]) and x.shape == (60, 48, 48, 3)
    for img, lab, m in zip(x, labels, masks):
        assert lab.dtype == np.int64 and list(lab) == sorted(set(lab.tolist()))  # a set: sorted, distinct kinds
        assert len(m) == len(lab)
        if not len(m):
            continue
        assert m.sum(0).max() <= 1  # no two shapes share a pixel
        for mask in m:
            assert mask.sum() >= 6
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())  # not cut
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
            inside, around = img[mask].astype(float).mean(0), img[ring].astype(float).mean(0)
            assert np.abs(inside - around).max() > 40  # difficulty 0: high contrast where the mask says


def test_shapes_multi_is_seeded_per_image_and_covers_all_subsets():
    x, labels, _ = shapes_multilabel(n=400, size=16, classes=3, seed=1)
    x10, labels10, _ = shapes_multilabel(n=10, size=16, classes=3, seed=1)
    np.testing.assert_array_equal(x[:10], x10)  # image i depends only on (seed, i)
    assert [a.tolist() for a in labels[:10]] == [a.tolist() for a in labels10]
    sets = {tuple(a.tolist()) for a in labels}
    assert len(sets) == 8  # every subset of 3 classes, the empty one included
    freq = np.mean([[k in a for k in range(3)] for a in labels], axis=0)
    assert np.all(np.abs(freq - 0.5) < 0.1)
    other, _, _ = shapes_multilabel(n=10, size=16, classes=3, seed=2)
    assert not np.array_equal(other, x10)


def test_shapes_multi_source_and_its_parameters():
    data = load_classification_data("synthetic:shapes-multi?n=20&size=24&classes=circle,star&seed=4", val_fraction=0.25)
    assert isinstance(data.train, MultiLabelDataset) and data.classes == ["circle", "star"]
    assert data.description == "synthetic:shapes-multi (20 images, 2 classes)" and len(data.val) == 5
    img, y = data.train[0]
    assert img.shape == (3, 24, 24) and y.shape == (2,)
    for query, match in (("size=8", "size=8 must be >= 16"), ("k=2", "unknown parameter 'k'"),
                         ("classes=blob", "expected distinct names")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            load_classification_data(f"synthetic:shapes-multi?{query}")
