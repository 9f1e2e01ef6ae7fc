"""Segmentation data: synthetic shapes (three kinds), SegmentationDataset, seg_transforms
(masks stay aligned with the image), collate, load_segmentation_data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from optik.data.collate import segmentation_collate
from optik.data.seg_transforms import FinishTarget, seg_transforms
from optik.data.segmentation_dataset import (
    IGNORE_INDEX,
    SegmentationDataset,
    SemanticMask,
    mask_boxes,
)
from optik.data.sources import load_segmentation_data
from optik.data.splits import DataSplits
from optik.data.synthetic import shapes_segmentation
from optik.errors import ConfigError, DatasetError


@pytest.mark.parametrize("kind", ["semantic", "instance", "panoptic"])
def test_shapes_segmentation_prefix_and_consistency(kind):
    x, maps, labels, names, isthing = shapes_segmentation(n=5, size=32, kind=kind, seed=3)
    x3, maps3, labels3, _, _ = shapes_segmentation(n=3, size=32, kind=kind, seed=3)
    assert x.shape == (5, 32, 32, 3) and maps.shape == (5, 32, 32) and maps.dtype == np.uint8
    np.testing.assert_array_equal(x[:3], x3)  # image i depends only on (seed, i)
    np.testing.assert_array_equal(maps[:3], maps3)
    assert len(names) == len(isthing)
    if kind == "semantic":
        assert names[0] == "background" and maps.max() < len(names)
    else:
        for m, lab in zip(maps, labels):
            assert m.max() == len(lab)  # ids 1..N, all used
            assert set(np.unique(m)) - {0} == set(range(1, len(lab) + 1))
    if kind == "panoptic":
        assert names[-2:] == ["sky", "ground"] and isthing[-2:] == [False, False]
        assert all(isthing[:-2])
        stuff = [(lab >= len(names) - 2).sum() for lab in labels]
        assert min(stuff) >= 1  # the background is split into stuff segments


def test_synthetic_specs_and_dataset_targets():
    data = load_segmentation_data("synthetic:shapes-pan?n=6&size=32&classes=2&seed=1",
                                  val_fraction=0.5)  # fmt: skip
    assert isinstance(data, DataSplits) and data.kind == "panoptic"
    assert data.classes == ["circle", "square", "sky", "ground"]
    assert data.isthing == [True, True, False, False]
    assert len(data.train) == len(data.val) == 3
    ds = data.train
    img, t = ds.load(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    t2 = ds.load_target(0)
    assert torch.equal(t["semantic"], t2["semantic"]) and t["image_id"] == ds.image_ids[0]
    # the semantic map is the segments painted with their classes; void elsewhere
    sem = torch.full((32, 32), IGNORE_INDEX, dtype=torch.int64)
    for m, lab in zip(t["masks"], t["labels"]):
        sem[m] = lab
    assert torch.equal(sem, t["semantic"])
    assert (t["masks"].sum(0) <= 1).all()  # panoptic segments do not overlap
    assert torch.equal(t["boxes"], mask_boxes(t["masks"]))
    assert torch.equal(t["area"], t["masks"].flatten(1).sum(1).float())
    # a panoptic source also gives semantic or instance (things only) targets
    inst = load_segmentation_data("synthetic:shapes-pan?n=6&size=32&classes=2&seed=1",
                                  val_fraction=0.5, kind="instance").train  # fmt: skip
    assert set(inst.load_target(0)["labels"].tolist()) <= {0, 1}
    assert "semantic" not in inst.load_target(0)
    with pytest.raises(DatasetError, match="cannot give panoptic"):
        load_segmentation_data("synthetic:shapes-seg?n=4&size=32", kind="panoptic")


def test_synthetic_spec_errors():
    with pytest.raises(ConfigError, match="available: synthetic:shapes-seg"):
        load_segmentation_data("synthetic:shapes-det")
    with pytest.raises(ConfigError, match="unknown parameter 'bogus'"):
        load_segmentation_data("synthetic:shapes-seg?bogus=1")
    with pytest.raises(ConfigError, match="classes=.*expected distinct names"):
        load_segmentation_data("synthetic:shapes-inst?classes=circle,blob")
    with pytest.raises(DatasetError, match="not found"):
        load_segmentation_data("/nonexistent/folder")


def test_semantic_and_instance_kinds():
    d = load_segmentation_data("synthetic:shapes-seg?n=4&size=32&classes=3", val_fraction=0)
    t = d.train.load_target(1)
    assert d.isthing is None and set(t) == {"image_id", "orig_size", "semantic"}
    assert t["semantic"].dtype == torch.int64 and t["semantic"].max() <= 3
    d = load_segmentation_data("synthetic:shapes-inst?n=4&size=32&max_objects=8", val_fraction=0)
    t = d.train.load_target(2)
    assert d.isthing == [True] * 4 and "semantic" not in t
    assert t["masks"].dtype == torch.bool
    assert len(t["masks"]) == len(t["labels"]) == len(t["iscrowd"])
    assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all()


def _striped(h: int, w: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """An image whose grey level encodes its class (vertical bands) + the class map."""
    sem = np.repeat((np.arange(w) * classes // w)[None], h, 0).astype(np.uint8)
    sem[: h // 4, : w // 3] = IGNORE_INDEX
    grey = (sem.astype(np.int32) % 255 * 50).clip(0, 255).astype(np.uint8)
    img = np.repeat(grey[..., None], 3, 2)
    return img, sem


def test_transforms_keep_semantic_aligned_hflip_and_letterbox():
    img, sem = _striped(16, 32)
    ds = SegmentationDataset(img[None], [{"semantic": sem}], list("abcd"), kind="semantic")
    tf = seg_transforms(32, train=True, hflip=1.0, scale_jitter=(1, 1), photometric=False)
    out, t = ds.with_transform(tf)[0]
    s = t["semantic"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and s.dtype == torch.int64
    assert (s[16:] == IGNORE_INDEX).all()  # letterbox pad: void
    assert torch.allclose(out[:, 16:], torch.full_like(out[:, 16:], 114 / 255))
    np.testing.assert_array_equal(s[:16].numpy(), sem[:, ::-1])  # flipped with the image
    grey = (out[0, :16] * 255).round().long()
    valid = s[:16] != IGNORE_INDEX
    assert torch.equal(grey[valid], s[:16][valid] * 50)
    # resize (x2) + pad: masks nearest-exact, image bilinear: interiors agree
    out, t = ds.with_transform(seg_transforms(64, train=False))[0]
    s = t["semantic"]
    assert (s[32:] == IGNORE_INDEX).all() and s.shape == (64, 64)
    np.testing.assert_array_equal(s[:32:2, ::2].numpy(), sem)
    grey = (out[0, :32] * 255).round().long()
    valid = s[:32] != IGNORE_INDEX
    assert (grey[valid] == s[:32][valid] * 50).float().mean() > 0.9


def test_transforms_instances_follow_and_boxes_recomputed():
    masks = np.zeros((3, 16, 32), bool)
    masks[0, 2:6, 1:5] = True
    masks[1, 8:16, 20:32] = True
    masks[2, 0:1, 31:32] = True  # one pixel at the corner
    img = np.zeros((16, 32, 3), np.uint8)
    img[masks[0]] = 200
    ann = {"masks": masks, "labels": [0, 1, 1], "iscrowd": [0, 0, 1]}
    ds = SegmentationDataset(img[None], [ann], ["a", "b"], kind="instance")
    t0 = ds.load_target(0)
    assert t0["boxes"].tolist() == [[1, 2, 5, 6], [20, 8, 32, 16], [31, 0, 32, 1]]
    tf = seg_transforms(32, train=True, hflip=1.0, scale_jitter=(1, 1), photometric=False)
    out, t = ds.with_transform(tf)[0]
    m = t["masks"]
    assert m.dtype == torch.bool and m.shape == (3, 32, 32)
    assert not m[:, 16:].any()  # instance pad: 0
    assert t["boxes"].tolist() == [[27, 2, 31, 6], [0, 8, 12, 16], [0, 0, 1, 1]]
    assert torch.equal(t["boxes"], mask_boxes(m)) and t["iscrowd"].tolist() == [0, 0, 1]
    assert ((out[0] * 255).round() == 200)[m[0]].all()  # the object moved with its pixels
    # downscaled away: the one-pixel instance vanishes with its label/iscrowd
    out, t = ds.with_transform(seg_transforms(8, train=False))[0]
    assert len(t["masks"]) == len(t["labels"]) == len(t["iscrowd"]) == len(t["boxes"]) == 2
    assert t["labels"].tolist() == [0, 1]
    assert t["area"].tolist() == t["masks"].flatten(1).sum(1).tolist()


def test_finish_target_and_bare_image():
    image = torch.rand(3, 4, 4)
    assert FinishTarget()(image) is image
    tf = seg_transforms(16, train=True)
    assert tf(tv_tensors.Image(torch.zeros(3, 8, 12, dtype=torch.uint8))).shape == (3, 16, 16)
    bare = torch.zeros(3, 8, 12, dtype=torch.uint8)
    assert seg_transforms(16, train=False)(bare).shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="hflip"):
        seg_transforms(16, train=True, hflip=2)
    with pytest.raises(ConfigError, match="scale_jitter"):
        seg_transforms(16, train=True, scale_jitter=(2, 1))


def test_train_transforms_random_pipeline_and_collate():
    data = load_segmentation_data("synthetic:shapes-pan?n=4&size=32", val_fraction=0)
    torch.manual_seed(0)
    ds = data.train.with_transform(seg_transforms(48, train=True, scale_jitter=(0.5, 1.5)))
    images, targets = segmentation_collate([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.float32
    for t in targets:
        assert type(t["semantic"]) is torch.Tensor and t["semantic"].shape == (48, 48)
        assert t["masks"].dtype == torch.bool and t["masks"].shape[1:] == (48, 48)
        assert len(t["masks"]) == len(t["labels"]) == len(t["boxes"]) == len(t["area"])
        assert t["masks"].flatten(1).any(1).all()
        # semantic and segments moved together: painting the masks gives the semantic map
        for m, lab in zip(t["masks"], t["labels"]):
            assert (t["semantic"][m] == lab).all()
    with pytest.raises(DatasetError, match="different sizes"):
        segmentation_collate([(torch.zeros(3, 4, 4), {}), (torch.zeros(3, 5, 5), {})])
    # zoom-out border: image 114, semantic void, no instance
    tf = seg_transforms(32, train=True, scale_jitter=(0.5, 0.5), hflip=0, photometric=False)
    img, t = data.train.with_transform(tf)[0]
    assert (t["semantic"][0, 0], t["semantic"][-1, -1]) == (IGNORE_INDEX, IGNORE_INDEX)
    assert torch.allclose(img[:, 0, 0], torch.full((3,), 114 / 255))
    assert (t["semantic"] == IGNORE_INDEX).sum() == (~t["masks"].any(0)).sum()
    # untransformed items collate to plain tensors too
    _, tt = segmentation_collate([data.train[0]])
    assert tt[0]["semantic"].dtype == torch.int64 and tt[0]["masks"].dtype == torch.bool


def test_subset_views_pickle_and_passthrough():
    data = load_segmentation_data("synthetic:shapes-inst?n=6&size=32", val_fraction=0)
    ds = data.train
    sub = ds.subset([4, 1])
    assert sub.image_ids == [5, 2] and sub.kind == "instance" and len(sub) == 2
    assert torch.equal(sub.load_target(0)["masks"], ds.load_target(4)["masks"])
    assert sub.size(0) == (32, 32) and sub.source(0) == f"{ds.name}[4]"
    clone = pickle.loads(pickle.dumps(sub))  # DataLoader workers
    assert torch.equal(clone.load_target(1)["labels"], ds.load_target(1)["labels"])
    assert load_segmentation_data(data) is data
    again = load_segmentation_data(ds, val_fraction=0.5)
    assert len(again.train) == 3 and again.kind == "instance"


def test_dataset_validation_errors():
    img = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(DatasetError, match=r"field 'semantic': class index 5 out of range"):
        SegmentationDataset(img, [{"semantic": np.full((8, 8), 5, np.uint8)}], ["a", "b"],
                            kind="semantic")  # fmt: skip
    with pytest.raises(DatasetError, match=r"mask is 6x8 but the image is 8x8"):
        SegmentationDataset(img, [{"semantic": np.zeros((8, 6), np.uint8)}], ["a"], kind="semantic")
    with pytest.raises(DatasetError, match=r"field 'labels': class index 3 out of range"):
        SegmentationDataset(img, [{"ids": np.ones((8, 8), np.uint8), "labels": [3]}], ["a"],
                            kind="instance")  # fmt: skip
    with pytest.raises(DatasetError, match=r"segment id 2 has no label"):
        SegmentationDataset(img, [{"ids": np.full((8, 8), 2, np.uint8), "labels": [0]}], ["a"],
                            kind="panoptic", isthing=[True])  # fmt: skip
    with pytest.raises(ConfigError, match="kind="):
        SegmentationDataset(img, [{"semantic": np.zeros((8, 8), np.uint8)}], ["a"], kind="x")
    with pytest.raises(DatasetError, match="annotation must be"):
        SegmentationDataset(img, [[1, 2]], ["a"], kind="semantic")


def test_semantic_mask_pads_void_in_letterbox():
    from optik.data.detect_transforms import LetterBox

    m = SemanticMask(torch.zeros(4, 8, dtype=torch.uint8))
    inst = tv_tensors.Mask(torch.ones(1, 4, 8, dtype=torch.uint8))
    out_sem, out_inst = LetterBox(8)(m, inst)
    assert isinstance(out_sem, SemanticMask) and (out_sem[4:] == 255).all()
    assert (out_inst[:, 4:] == 0).all() and (out_inst[:, :4] == 1).all()
