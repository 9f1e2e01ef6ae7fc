"""`load_classification_data`: every `data=` form, its split and its error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optik.data.sources import load_classification_data
from optik.data.splits import DataSplits, stratified_split
from optik.errors import ConfigError, DatasetError, ImageError


def png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        for i in range(n):
            png(root / cls / f"{cls}_{i}.png", i)
    return root


# ---- split -----------------------------------------------------------------------------------


def test_stratified_split_proportions_and_train_minimum():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr + va) == list(range(16)) and not set(tr) & set(va)
    per_class_val = np.bincount([labels[i] for i in va], minlength=3)
    assert per_class_val[0] == 2 and per_class_val[1] == 1 and per_class_val[2] == 0
    assert len(va) == round(16 * 0.2)
    # even at 0.9 every class keeps a training image
    tr, va = stratified_split(labels, 0.9, seed=0)
    assert set(labels[i] for i in tr) == {0, 1, 2}


def test_stratified_split_seeded():
    labels = [i % 3 for i in range(60)]
    assert stratified_split(labels, 0.3, 1) == stratified_split(labels, 0.3, 1)
    assert stratified_split(labels, 0.3, 1) != stratified_split(labels, 0.3, 2)


# ---- built-ins -------------------------------------------------------------------------------


def test_digits_split():
    data = load_classification_data("digits", val_fraction=0.25, seed=0)
    assert isinstance(data, DataSplits)
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train) + len(data.val) == 1797
    assert len(data.val) == round(1797 * 0.25)
    assert set(data.val.targets) == set(range(10))
    assert data.description == "digits (1797 images, 10 classes)"
    assert data.train[0][0].shape == (3, 8, 8)
    assert load_classification_data("digits?size=16").train.load(0).shape == (3, 16, 16)


def test_synthetic_defaults():
    data = load_classification_data("synthetic:shapes?n=100&size=16")
    assert data.description == "synthetic:shapes (100 images, 4 classes)"
    assert data.classes == ["circle", "square", "triangle", "star"]
    assert len(data.train) == 80 and len(data.val) == 20
    assert np.bincount(data.val.targets).tolist() == [5, 5, 5, 5]
    assert data.train.source(0).startswith("synthetic:shapes[")


def test_synthetic_query_parameters():
    data = load_classification_data(
        "synthetic:shapes?n=30&size=24&classes=circle,square,star&difficulty=0.3&seed=1",
        val_fraction=0.0,
    )
    assert data.classes == ["circle", "square", "star"] and data.val is None
    assert len(data.train) == 30 and data.train.load(0).shape == (3, 24, 24)
    assert (
        load_classification_data("synthetic:shapes?n=12&size=16&classes=6").classes[-1] == "hexagon"
    )
    a = load_classification_data("synthetic:shapes?n=4&size=16&seed=1", val_fraction=0).train.load(
        0
    )
    b = load_classification_data("synthetic:shapes?n=4&size=16&seed=2", val_fraction=0).train.load(
        0
    )
    assert not (a == b).all()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("synthetic:shapes?count=10", ["'count'", "n, size, classes, difficulty, seed"]),
        ("synthetic:shapes?n=ten", ["n=", "'ten'", "integer"]),
        ("synthetic:shapes?difficulty=2", ["difficulty"]),
        ("synthetic:shapes?classes=circle,blob", ["classes", "blob"]),
        ("synthetic:shapes?n", ["'n'", "value"]),
        ("synthetic:shapes?n=5&n=6", ["'n'", "twice"]),
        ("synthetic:circles", ["synthetic:shapes"]),
        ("digits?n=3", ["'n'", "size"]),
    ],
)
def test_synthetic_bad_parameters(spec, words):
    with pytest.raises(ConfigError) as err:
        load_classification_data(spec)
    for w in words:
        assert w in str(err.value)


def test_bad_val_fraction():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_classification_data("digits", val_fraction=1.0)


def test_missing_path(tmp_path):
    with pytest.raises(
        DatasetError, match=r"data '.*nowhere' not found; expected a directory, a \.csv"
    ):
        load_classification_data(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="expected a directory"):
        load_classification_data(str(tmp_path / "notes.txt"))


# ---- image folders ---------------------------------------------------------------------------


def test_imagefolder_split_dirs(tmp_path):
    make_folder(tmp_path / "train", {"dog": 3, "cat": 2})
    make_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    data = load_classification_data(tmp_path)
    assert data.classes == ["cat", "dog"]  # sorted
    assert len(data.train) == 5 and len(data.val) == 2
    assert data.val.targets == [0, 1] and data.val.source(0).endswith("cat_0.png")
    assert data.train.class_counts() == [2, 3]
    assert "imagefolder" in data.description and "7 images" in data.description


@pytest.mark.parametrize("val_name", ["valid", "test"])
def test_imagefolder_val_fallback_names(tmp_path, val_name):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / val_name, {"a": 1})
    data = load_classification_data(tmp_path)
    assert len(data.val) == 1 and data.val.source(0).split("/")[-3] == val_name


def test_imagefolder_single_dir_split_is_stratified_and_seeded(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 10, "c": 2})
    data = load_classification_data(tmp_path, val_fraction=0.5, seed=0)
    assert data.classes == ["a", "b", "c"]
    assert np.bincount(data.val.targets, minlength=3).tolist() == [5, 5, 1]
    assert set(data.train.targets) == {0, 1, 2}
    same = load_classification_data(tmp_path, val_fraction=0.5, seed=0)
    other = load_classification_data(tmp_path, val_fraction=0.5, seed=1)
    sources = lambda d: sorted(d.val.source(i) for i in range(len(d.val)))  # noqa: E731
    assert sources(same) == sources(data)
    assert sources(other) != sources(data)


def test_imagefolder_extensions_case_insensitive_and_others_ignored(tmp_path):
    png(tmp_path / "a" / "UPPER.PNG")
    png(tmp_path / "a" / "nested" / "deep.png")
    (tmp_path / "a" / "notes.txt").write_text("ignore me")
    (tmp_path / "a" / ".hidden.png").write_text("not even an image")
    png(tmp_path / "b" / "x.png")
    data = load_classification_data(tmp_path, val_fraction=0)
    names = sorted(Path(data.train.source(i)).name for i in range(len(data.train)))
    assert names == ["UPPER.PNG", "deep.png", "x.png"]


def test_imagefolder_empty_class_dir(tmp_path, caplog):
    make_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: class folder has no images"):
        load_classification_data(tmp_path)
    with caplog.at_level(logging.WARNING, logger="optik.data.sources"):
        data = load_classification_data(tmp_path, skip_bad=True)
    assert data.classes == ["a", "b"]
    assert len(data.skipped) == 1 and data.skipped[0][0].endswith("empty")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("skipped 1 bad files (first: ")


def test_imagefolder_bad_file_error_and_skip(tmp_path, caplog):
    make_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match=r"broken\.png"):
        load_classification_data(tmp_path)
    with caplog.at_level(logging.WARNING, logger="optik.data.sources"):
        data = load_classification_data(tmp_path, skip_bad=True, val_fraction=0)
    assert len(data.train) == 6
    assert [Path(s).name for s, _ in data.skipped] == ["broken.png"]
    msg = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msg) == 1 and "broken.png" in msg[0] and "skipped 1 bad files" in msg[0]


def test_imagefolder_skip_bad_catches_truncated_jpeg(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    path = tmp_path / "a" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        path
    )
    path.write_bytes(path.read_bytes()[:400])
    data = load_classification_data(tmp_path, skip_bad=True, val_fraction=0)
    assert [Path(s).name for s, _ in data.skipped] == ["cut.jpg"] and len(data.train) == 4


def test_imagefolder_val_class_not_in_train(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "val", {"a": 1, "zebra": 1})
    with pytest.raises(DatasetError, match=r"val/zebra: label 'zebra' not in class list"):
        load_classification_data(tmp_path)


def test_imagefolder_without_class_dirs(tmp_path):
    png(tmp_path / "loose.png")
    with pytest.raises(DatasetError, match="no class folders"):
        load_classification_data(tmp_path)


# ---- CSV -------------------------------------------------------------------------------------


def write_csv(tmp_path: Path, rows: list[str], header: str = "path,label") -> Path:
    for i in range(4):
        png(tmp_path / "imgs" / f"{i}.png", 40 * i)
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    return csv


def test_csv_good(tmp_path):
    csv = write_csv(
        tmp_path, ["imgs/0.png,dog", "imgs/1.png,cat", "imgs/2.png,dog", "imgs/3.png,cat"]
    )
    data = load_classification_data(csv, val_fraction=0.5, seed=0)
    assert data.classes == ["cat", "dog"]
    assert len(data.train) == 2 and len(data.val) == 2
    assert sorted(data.val.targets) == [0, 1]
    all_sources = [data.train.source(i) for i in range(2)] + [data.val.source(i) for i in range(2)]
    assert sorted(Path(s).name for s in all_sources) == ["0.png", "1.png", "2.png", "3.png"]
    assert "csv" in data.description


def test_csv_numeric_labels_sort_numerically(tmp_path):
    csv = write_csv(tmp_path, ["imgs/0.png,10", "imgs/1.png,2", "imgs/2.png,1"])
    assert load_classification_data(csv, val_fraction=0).classes == ["1", "2", "10"]


def test_csv_split_column(tmp_path):
    csv = write_csv(
        tmp_path,
        ["imgs/0.png,a,train", "imgs/1.png,b,train", "imgs/2.png,a,val"],
        "path,label,split",
    )
    data = load_classification_data(csv)
    assert len(data.train) == 2 and len(data.val) == 1 and data.val.targets == [0]


def test_csv_missing_column(tmp_path):
    csv = write_csv(tmp_path, ["imgs/0.png,dog"], header="file,label")
    with pytest.raises(
        DatasetError, match=r"labels\.csv: missing column 'path' \(columns: file, label\)"
    ):
        load_classification_data(csv)


def test_csv_missing_image_names_row(tmp_path):
    csv = write_csv(tmp_path, ["imgs/0.png,a", "imgs/1.png,b", "imgs/gone.png,a", "imgs/2.png,b"])
    with pytest.raises(DatasetError, match=r"labels\.csv row 4: image 'imgs/gone\.png' not found"):
        load_classification_data(csv)
    data = load_classification_data(csv, skip_bad=True, val_fraction=0)
    assert len(data.train) == 3 and len(data.skipped) == 1
    assert data.skipped[0][0].endswith("gone.png") and "row 4" in data.skipped[0][1]


def test_csv_unreadable_image_names_row(tmp_path):
    csv = write_csv(tmp_path, ["imgs/0.png,a", "imgs/bad.png,b"])
    (tmp_path / "imgs" / "bad.png").write_text("nope")
    with pytest.raises(DatasetError, match=r"row 3: .*bad\.png"):
        load_classification_data(csv)


def test_csv_classes_txt(tmp_path):
    csv = write_csv(tmp_path, ["imgs/0.png,dog", "imgs/1.png,cat", "imgs/2.png,dog"])
    (tmp_path / "classes.txt").write_text("dog\ncat\nbird\n")
    data = load_classification_data(csv, val_fraction=0)
    assert data.classes == ["dog", "cat", "bird"]  # file order, not sorted
    assert data.train.targets == [0, 1, 0]
    csv.write_text("path,label\nimgs/0.png,dog\nimgs/1.png,cat\nimgs/2.png,x\n")
    with pytest.raises(DatasetError, match=r"label 'x' at row 4 not in .*classes\.txt"):
        load_classification_data(csv)
