"""Box-aware transforms: letterbox and flip are exact, augmented boxes still enclose their
shapes, empty targets survive, labels stay in sync, and mosaic keeps boxes on their content."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from optik.data.detect_transforms import (
    PAD_VALUE,
    LetterBox,
    Mosaic,
    detect_transforms,
    letterbox_scale,
    target_tensors,
)
from optik.data.collate import detection_collate
from optik.data.detection_dataset import DetectionDataset
from optik.data.synthetic import shapes_detection
from optik.errors import ConfigError


def sample(img: np.ndarray, boxes, labels, **extra):
    """HWC uint8 + xyxy boxes -> (tv Image, target) as DetectionDataset yields them."""
    h, w = img.shape[:2]
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                          format="XYXY", canvas_size=(h, w)),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        "image_id": 1,
        "orig_size": (h, w),
        **extra,
    }  # fmt: skip
    return tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous()), target


def test_letterbox_scale_and_exact_boxes():
    assert letterbox_scale((30, 60), 48) == 0.8
    img = np.full((20, 40, 3), 7, np.uint8)
    out, t = LetterBox(64)(*sample(img, [[0, 0, 40, 20], [5, 2.5, 10, 7.5]], [0, 1]))
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    assert t["boxes"].canvas_size == (64, 64)
    assert t["boxes"].tolist() == [[0, 0, 64, 32], [8, 4, 16, 12]]  # scale 1.6, top-left
    assert (out[:, :32] == 7).all() and (out[:, 32:] == PAD_VALUE).all()
    # float input pads with 114/255; a square image at imgsz is untouched
    f = LetterBox(8)(tv_tensors.Image(torch.zeros(3, 4, 8)))
    assert torch.allclose(f[:, 4:], torch.tensor(PAD_VALUE / 255.0))
    same = torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8)
    assert torch.equal(LetterBox(16)(tv_tensors.Image(same)), same)


def test_val_pipeline_and_flip_are_exact():
    img = np.zeros((20, 40, 3), np.uint8)
    val = detect_transforms(32, train=False)
    out, t = val(*sample(img, [[4, 2, 10, 12]], [1]))
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32) and float(out.max()) <= 1.0
    assert t["boxes"].tolist() == [[3.2, 1.6, 8.0, 9.6]] or np.allclose(
        t["boxes"].tolist(), [[3.2, 1.6, 8.0, 9.6]]
    )
    flip = detect_transforms(40, train=True, hflip=1.0, scale_jitter=(1.0, 1.0), photometric=False)
    img[2:12, 4:10] = 255
    out, t = flip(*sample(img, [[4, 2, 10, 12]], [1]))
    assert t["boxes"].tolist() == [[30, 2, 36, 12]]  # x -> 40 - x
    assert (out[:, 2:12, 30:36] == 1.0).all() and out[:, :20].sum() == 6 * 10 * 3


def test_train_boxes_enclose_transformed_shape_pixels():
    """Synthetic masks ride along as tv_tensors.Mask; after the full train pipeline each box
    must still enclose its object's pixels, and fit them (nearest-resized masks lose thin tips,
    so up to 2.5 px, typically < 1 px)."""
    x, anns, _ = shapes_detection(n=12, size=64, min_objects=2, max_objects=4, seed=2,
                                  return_masks=True)  # fmt: skip
    tf = detect_transforms(48, train=True, scale_jitter=(0.6, 1.4), hflip=0.5)
    torch.manual_seed(0)
    gaps = []
    for img, a in zip(x, anns):
        for _ in range(3):
            im, t = sample(img, a["boxes"], a["labels"], masks=tv_tensors.Mask(torch.from_numpy(a["masks"])))
            out, t = tf(im, t)
            assert out.shape == (3, 48, 48)
            masks, boxes = t["masks"], t["boxes"]
            assert len(masks) == len(boxes) == len(t["labels"]) == len(t["iscrowd"])
            for m, b in zip(masks, boxes.tolist()):
                ys, xs = torch.nonzero(m, as_tuple=True)
                if len(xs) < 4:  # a sliver cut by the border: nothing to compare
                    continue
                ext = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
                assert b[0] <= ext[0] + 1 and b[1] <= ext[1] + 1, (b, ext)
                assert b[2] >= ext[2] - 1 and b[3] >= ext[3] - 1, (b, ext)
                # tight too, unless the border cut the shape (a clipped box keeps its extent
                # along the cut edge, the visible pixels may not)
                if min(b) > 0.5 and max(b) < 47.5:
                    gaps.append(max(abs(u - v) for u, v in zip(b, ext)))
                    assert gaps[-1] <= 2.5, (b, ext)
    assert len(gaps) > 50 and np.median(gaps) < 1.0


@pytest.mark.parametrize("iou_crop", [False, True])
def test_empty_targets_survive(iou_crop):
    tf = detect_transforms(32, train=True, iou_crop=iou_crop)
    for seed in range(5):
        torch.manual_seed(seed)
        out, t = tf(*sample(np.zeros((24, 40, 3), np.uint8), np.zeros((0, 4)), []))
        assert out.shape == (3, 32, 32) and t["boxes"].shape == (0, 4)
        assert t["labels"].shape == (0,) and t["iscrowd"].shape == (0,)
    images, targets = detection_collate([(out, t), (out, t)])
    assert images.shape == (2, 3, 32, 32) and targets[1]["labels"].numel() == 0


def test_sanitize_keeps_labels_and_iscrowd_in_sync():
    im, t = sample(np.zeros((20, 20, 3), np.uint8), [[0, 0, 5, 5], [3, 3, 3.5, 9], [6, 6, 9, 9]],
                   [0, 1, 2])  # fmt: skip
    t["iscrowd"] = torch.tensor([0, 1, 1])
    assert [x.tolist() for x in target_tensors((im, t))] == [[0, 1, 2], [0, 1, 1]]
    _, out = v2.SanitizeBoundingBoxes(labels_getter=target_tensors)(im, t)
    assert out["labels"].tolist() == [0, 2] and out["iscrowd"].tolist() == [0, 1]


def test_config_errors():
    with pytest.raises(ConfigError, match="scale_jitter"):
        detect_transforms(32, train=True, scale_jitter=(0.0, 1.0))
    with pytest.raises(ConfigError, match="hflip"):
        detect_transforms(32, train=True, hflip=2.0)
    with pytest.raises(ConfigError, match="imgsz"):
        LetterBox(0)


# ---- mosaic ------------------------------------------------------------------------------


def white_box_dataset(n: int = 6) -> DetectionDataset:
    """Black 32x32 images, each with white rectangles exactly where their boxes are."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    anns = []
    for i in range(n):
        boxes = []
        for _ in range(2):
            x0, y0 = rng.integers(0, 24, 2)
            x1, y1 = x0 + rng.integers(4, 9), y0 + rng.integers(4, 9)
            images[i, y0:y1, x0:x1] = 255
            boxes.append([x0, y0, x1, y1])
        anns.append({"boxes": boxes, "labels": [i % 2, 1], "iscrowd": [0, i % 2]})
    return DetectionDataset(images, anns, ["a", "b"], name="white")


def test_mosaic_boxes_in_range_and_on_their_content():
    ds = white_box_dataset()
    mosaic = Mosaic(ds, 64, p=1.0)  # 32 px images scale by exactly 2: integer boxes
    torch.manual_seed(0)
    total = 0
    for i in list(range(6)) * 2:
        img, t = mosaic[i]
        assert isinstance(img, tv_tensors.Image) and img.shape == (3, 64, 64)
        b = t["boxes"]
        assert isinstance(b, tv_tensors.BoundingBoxes) and b.canvas_size == (64, 64)
        assert len(b) == len(t["labels"]) == len(t["iscrowd"]) and t["image_id"] == i + 1
        assert (b >= 0).all() and (b <= 64).all()
        assert ((b[:, 2:] - b[:, :2]) >= mosaic.min_size).all()
        for x0, y0, x1, y1 in b.round().int().tolist():
            # the box sits on its white rectangle (edges are antialiased by the 2x resize)
            assert (img[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] == 255).all()
            assert img[:, y0:y1, x0:x1].float().mean() > 200
        total += len(b)
    assert total > 12


def test_mosaic_deterministic_and_switchable():
    ds = white_box_dataset()
    tf = detect_transforms(64, train=True)
    mosaic = Mosaic(ds, 64, p=1.0, transform=tf)
    torch.manual_seed(3)
    a = mosaic[2]
    torch.manual_seed(3)
    b = mosaic[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert a[0].dtype == torch.float32 and a[0].shape == (3, 64, 64)
    mosaic = Mosaic(ds, 64, p=1.0)
    mosaic.enabled = False  # close_mosaic: plain items
    img, t = mosaic[4]
    assert img.shape == (3, 32, 32) and torch.equal(t["boxes"], ds[4][1]["boxes"])
    assert len(mosaic) == len(ds) and mosaic.classes == ["a", "b"]
    with pytest.raises(ConfigError, match="mosaic"):
        Mosaic(ds, 64, p=1.5)
