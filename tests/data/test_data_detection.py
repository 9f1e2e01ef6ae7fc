"""`DetectionDataset`, `detection_collate`, `load_detection_data` and the synthetic scenes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors

from optik.data.collate import detection_collate
from optik.data.detection_dataset import DetectionDataset
from optik.data.sources import load_detection_data
from optik.data.splits import DataSplits, random_split
from optik.data.synthetic import MIN_VISIBLE, SHAPE_KINDS, shapes_detection
from optik.errors import ConfigError, DatasetError


def tiny(n: int = 3) -> DetectionDataset:
    images = np.zeros((n, 10, 20, 3), np.uint8)
    anns = [{"boxes": [[1, 2, 5, 6], [0, 0, 20, 10]][: i % 3], "labels": [1, 0][: i % 3]}
            for i in range(n)]  # fmt: skip
    return DetectionDataset(images, anns, ["a", "b"], cat_ids=[3, 7], name="tiny")


def coco_of(gt: dict) -> COCO:
    c = COCO()
    c.dataset = gt
    c.createIndex()
    return c


# ---- synthetic scenes --------------------------------------------------------------------


def test_shapes_detection_deterministic_per_image():
    x, anns, names = shapes_detection(n=6, size=64, classes=3, seed=5)
    x3, anns3, _ = shapes_detection(n=3, size=64, classes=3, seed=5)
    assert names == list(SHAPE_KINDS[:3]) and x.shape == (6, 64, 64, 3) and x.dtype == np.uint8
    assert np.array_equal(x[:3], x3)
    for a, b in zip(anns[:3], anns3):
        assert np.array_equal(a["boxes"], b["boxes"]) and np.array_equal(a["labels"], b["labels"])
    other, _, _ = shapes_detection(n=3, size=64, classes=3, seed=6)
    assert not np.array_equal(other, x3)


def test_shapes_detection_boxes_are_visible_mask_extents():
    x, anns, _ = shapes_detection(n=30, size=64, min_objects=2, max_objects=6, seed=1,
                                  return_masks=True)  # fmt: skip
    counts = [len(a["boxes"]) for a in anns]
    assert max(counts) >= 3 and sum(counts) > 60
    for a in anns:
        assert a["boxes"].dtype == np.float32 and a["labels"].dtype == np.int64
        assert a["masks"].shape == (len(a["boxes"]), 64, 64)
        for box, mask, area in zip(a["boxes"], a["masks"], a["area"]):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert area == mask.sum()
        # visible masks never overlap: each pixel belongs to at most one labelled object
        if len(a["masks"]):
            assert a["masks"].sum(0).max() <= 1


def test_shapes_detection_occlusion_rule():
    """Replays scene generation without dropping: labels are exactly the objects whose
    visible share is >= MIN_VISIBLE; an occluded object's box is its visible part."""
    import math

    from optik.data import synthetic

    size, seed, dropped, shrunk = 64, 3, 0, 0
    _, anns, names = shapes_detection(n=40, size=size, min_objects=4, max_objects=6, seed=seed,
                                      return_masks=True)  # fmt: skip
    lo, hi = (math.log(v) for v in synthetic._DET_RADIUS)
    for i, a in enumerate(anns):
        rng = np.random.default_rng([seed, 2, i])
        img = synthetic.random_background(rng, size, 0.5)
        full = []
        for _ in range(int(rng.integers(4, 7))):
            r = max(size * math.exp(rng.uniform(lo, hi)), 3.0)
            margin = min(r * 0.8, size / 2)
            cx, cy = rng.uniform(margin, size - margin, 2)
            x0, x1 = int(max(cx - r, 0)), int(min(cx + r, size)) + 1
            y0, y1 = int(max(cy - r, 0)), int(min(cy + r, size)) + 1
            colour = synthetic._shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(0), 0.5)
            label = int(rng.integers(len(names)))
            full.append(synthetic.draw_shape(img, names[label], (cx, cy), r,
                                             rng.uniform(0, 2 * math.pi), colour))  # fmt: skip
        kept = iter(a["masks"])
        for j, m in enumerate(full):
            later = np.any(full[j + 1 :], axis=0) if j + 1 < len(full) else np.zeros_like(m)
            visible = m & ~later
            if visible.sum() >= max(MIN_VISIBLE * m.sum(), 4):
                assert np.array_equal(next(kept), visible)
                shrunk += int(visible.sum() < m.sum())
            else:
                dropped += 1
        assert next(kept, None) is None
    assert dropped > 0 and shrunk > 0  # the rule was exercised both ways


def test_shapes_detection_speed_and_validation():
    t = time.perf_counter()
    shapes_detection(n=200, size=128, seed=0)
    assert time.perf_counter() - t < 3.0  # 500 images in a couple of seconds
    with pytest.raises(ConfigError, match="min_objects"):
        shapes_detection(n=2, min_objects=3, max_objects=2)
    with pytest.raises(ConfigError, match="difficulty"):
        shapes_detection(n=2, difficulty=2.0)


# ---- dataset -----------------------------------------------------------------------------


def test_dataset_item_load_and_target_contract():
    ds = tiny()
    img, t = ds[2]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, 10, 20)
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].canvas_size == (10, 20)
    assert t["labels"].tolist() == [1, 0] and t["labels"].dtype == torch.int64
    assert t["iscrowd"].tolist() == [0, 0] and t["image_id"] == 3 and t["orig_size"] == (10, 20)
    raw, t2 = ds.load(2)
    assert type(raw) is torch.Tensor and type(t2["boxes"]) is torch.Tensor
    assert t2["boxes"].tolist() == [[1, 2, 5, 6], [0, 0, 20, 10]]
    assert ds.image_ids == [1, 2, 3] and ds.source(0) == "tiny[0]" and ds.size(1) == (10, 20)


def test_dataset_subset_keeps_ids_and_transform_is_called_with_target():
    ds = tiny(5).subset([4, 2])
    assert len(ds) == 2 and ds.image_ids == [5, 3] and ds.source(0) == "tiny[4]"
    seen = []

    def tf(img, target):
        seen.append(target["image_id"])
        return img.float() / 255, target

    img, _ = ds.with_transform(tf)[1]
    assert seen == [3] and img.dtype == torch.float32
    with pytest.raises(IndexError):
        ds[2]


def test_dataset_validates_annotations():
    img = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(DatasetError, match=r"demo\[0\].*'labels'.*out of range"):
        DetectionDataset(img, [{"boxes": [[0, 0, 2, 2]], "labels": [2]}], ["a"], name="demo")
    with pytest.raises(DatasetError, match=r"demo\[0\].*'boxes'.*zero or negative"):
        DetectionDataset(img, [{"boxes": [[3, 0, 2, 2]], "labels": [0]}], ["a"], name="demo")
    with pytest.raises(DatasetError, match="'iscrowd' has 2 entries for 1 boxes"):
        DetectionDataset(img, [{"boxes": [[0, 0, 2, 2]], "labels": [0], "iscrowd": [0, 1]}], ["a"])
    with pytest.raises(DatasetError, match="duplicate class names"):
        DetectionDataset(img, [{"boxes": [], "labels": []}], ["a", "a"])


def test_dataset_size_mismatch_names_image_and_field(tmp_path):
    from PIL import Image

    f = tmp_path / "x.png"
    Image.new("RGB", (12, 8)).save(f)
    ds = DetectionDataset([f], [{"boxes": [], "labels": []}], ["a"], sizes=[(9, 12)])
    with pytest.raises(DatasetError, match=r"x\.png.*12x8.*12x9.*width/height"):
        ds.load(0)


def test_to_coco_is_valid_for_pycocotools():
    ds = tiny(4)
    gt = ds.to_coco()
    c = coco_of(gt)
    assert sorted(c.getImgIds()) == [1, 2, 3, 4]
    assert [cat["id"] for cat in gt["categories"]] == [3, 7]
    anns = c.loadAnns(c.getAnnIds(imgIds=[3]))
    assert [a["bbox"] for a in anns] == [[1.0, 2.0, 4.0, 4.0], [0.0, 0.0, 20.0, 10.0]]
    assert [a["category_id"] for a in anns] == [7, 3] and anns[0]["area"] == 16.0
    assert min(a["id"] for a in gt["annotations"]) == 1
    assert {(i["width"], i["height"]) for i in gt["images"]} == {(20, 10)}


def test_to_coco_uses_source_area_and_header_sizes_without_decoding(tmp_path, monkeypatch):
    from PIL import Image

    f = tmp_path / "a.png"
    Image.new("RGB", (30, 20)).save(f)
    ds = DetectionDataset([f], [{"boxes": [[0, 0, 10, 10]], "labels": [0], "area": [42.0]}], ["a"])
    monkeypatch.setattr("optik.data.image.as_image_tensor", lambda *a: pytest.fail("decoded an image"))
    gt = ds.to_coco()
    assert gt["images"][0]["width"] == 30 and gt["images"][0]["height"] == 20
    assert gt["annotations"][0]["area"] == 42.0 and gt["images"][0]["file_name"] == str(f)


def test_collate_shapes_and_plain_boxes():
    from optik.data.detect_transforms import detect_transforms

    ds = tiny(3).with_transform(detect_transforms(32, train=False))
    images, targets = detection_collate([ds[0], ds[2]])
    assert images.shape == (2, 3, 32, 32) and type(images) is torch.Tensor
    assert images.dtype == torch.float32
    assert [type(t["boxes"]) for t in targets] == [torch.Tensor, torch.Tensor]
    assert targets[0]["boxes"].shape == (0, 4) and targets[1]["boxes"].shape == (2, 4)
    with pytest.raises(DatasetError, match="different sizes"):
        detection_collate([(torch.zeros(3, 4, 4), targets[0]), (torch.zeros(3, 5, 4), targets[1])])


# ---- data= resolution --------------------------------------------------------------------


def test_load_synthetic_spec_and_split():
    data = load_detection_data(
        "synthetic:shapes-det?n=30&size=64&classes=3&min_objects=2&max_objects=3&seed=1",
        val_fraction=0.2, seed=0,
    )  # fmt: skip
    assert isinstance(data, DataSplits)
    assert data.description == "synthetic:shapes-det (30 images, 3 classes)"
    assert (len(data.train), len(data.val)) == (24, 6) and data.classes == list(SHAPE_KINDS[:3])
    assert not set(data.train.image_ids) & set(data.val.image_ids)
    assert load_detection_data(data) is data
    again = load_detection_data(
        "synthetic:shapes-det?n=30&size=64&classes=3&min_objects=2&max_objects=3&seed=1",
        val_fraction=0.2, seed=0,
    )  # fmt: skip
    assert again.val.image_ids == data.val.image_ids


def test_load_errors():
    with pytest.raises(ConfigError, match="unknown parameter 'bogus'"):
        load_detection_data("synthetic:shapes-det?bogus=1")
    with pytest.raises(ConfigError, match="available: synthetic:shapes-det"):
        load_detection_data("synthetic:shapes")
    with pytest.raises(DatasetError, match="not found"):
        load_detection_data("/no/such/data.yaml")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_detection_data(tiny(), val_fraction=1.0)


def test_random_split():
    tr, va = random_split(10, 0.3, seed=1)
    assert len(va) == 3 and sorted(tr + va) == list(range(10))
    assert random_split(1, 0.5) == ([0], [])
