"""Property tests: optik's box helpers against torchvision.ops, letterbox -> unletterbox round trips
for boxes and maps across extreme aspect ratios (1x500, 500x1) and tiny sizes, and the train
transforms (boxes stay inside the image and keep at least 1 px or are dropped with their labels;
masks, boxes, semantic maps and image pixels stay aligned)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fuzzkit import count, examples
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.ops import box_convert, box_iou, clip_boxes_to_image, masks_to_boxes

from optik.data.checks import BOX_TOLERANCE, BoxChecker
from optik.data.detect_transforms import (
    PAD_VALUE,
    LetterBox,
    Mosaic,
    detect_transforms,
    letterbox_shape,
)
from optik.data.detection_dataset import DetectionDataset
from optik.data.seg_transforms import seg_transforms
from optik.data.segmentation_dataset import IGNORE_INDEX, SemanticMask, mask_boxes
from optik.errors import DatasetError
from optik.models.detect.assigner import pairwise_box_iou
from optik.models.detect.head import boxes_to_distances, distances_to_boxes
from optik.results import Boxes, Masks
from optik.tasks.detect import letterbox_factors, to_original
from optik.tasks.segment_strategies import unletterbox

FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}

# Image sides: tiny, ordinary and the extreme aspect ratios the issue names (1x500, 500x1).
SIDES = st.one_of(st.integers(1, 8), st.integers(9, 80), st.sampled_from([1, 2, 3, 299, 500]))
SIZES = st.tuples(SIDES, SIDES)
IMGSZ = st.sampled_from([8, 31, 32, 64, 100, 160])


def xyxy_boxes(n_max: int = 6, lo: float = -50, hi: float = 600, degenerate: bool = False):
    """(N, 4) float32 xyxy boxes; with `degenerate`, zero-width/height boxes are allowed."""

    @st.composite
    def draw(d: st.DrawFn) -> torch.Tensor:
        n = d(st.integers(0, n_max))
        rows = []
        for _ in range(n):
            x1 = d(st.floats(lo, hi, width=32))
            y1 = d(st.floats(lo, hi, width=32))
            w = d(st.floats(0.0 if degenerate else 0.25, 300.0, width=32))
            h = d(st.floats(0.0 if degenerate else 0.25, 300.0, width=32))
            rows.append([x1, y1, x1 + w, y1 + h])
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)

    return draw()


# ---- box ops vs torchvision.ops ----------------------------------------------------------------------


@settings(max_examples=examples(150), **FAST)
@given(a=xyxy_boxes(degenerate=True), b=xyxy_boxes(degenerate=True))
@example(a=torch.tensor([[0.0, 0, 0, 0]]), b=torch.tensor([[0.0, 0, 0, 0]]))  # 0/0 union
@example(a=torch.tensor([[0.0, 0, 10, 10]]), b=torch.tensor([[10.0, 10, 20, 20]]))  # touching corner
def test_pairwise_iou_matches_torchvision(a, b):
    count("props:box-iou")
    ours = pairwise_box_iou(a[:, None], b[None])
    assert ours.shape == (len(a), len(b))
    assert bool(torch.isfinite(ours).all()) and bool((ours >= 0).all()) and bool((ours <= 1 + 1e-6).all())
    ref = box_iou(a.double(), b.double())
    ok = torch.isfinite(ref)  # torchvision: NaN for two zero-area boxes (0 / 0); ours: 0 via eps
    union = (a[:, None, 2:] - a[:, None, :2]).prod(-1) + (b[None, :, 2:] - b[None, :, :2]).prod(-1)
    ok &= union > 1e-2  # eps=1e-7 only matters for unions near zero
    torch.testing.assert_close(ours[ok].double(), ref[ok], atol=1e-5, rtol=1e-4)
    assert bool((ours[~torch.isfinite(ref)] == 0).all())


@settings(max_examples=examples(100), **FAST)
@given(boxes=xyxy_boxes(lo=0, hi=400, degenerate=True), hw=SIZES)
def test_box_conversions_match_torchvision(boxes, hw):
    count("props:box-convert")
    h, w = hw
    res = Boxes(boxes, torch.ones(len(boxes)), torch.zeros(len(boxes)), (h, w))
    torch.testing.assert_close(res.xywh, box_convert(boxes, "xyxy", "cxcywh"))
    torch.testing.assert_close(box_convert(res.xywh, "cxcywh", "xyxy"), boxes, atol=1e-3, rtol=1e-5)
    norm = torch.tensor([w, h, w, h], dtype=torch.float32)
    torch.testing.assert_close(res.xyxyn, boxes / norm)
    torch.testing.assert_close(res.xywhn * norm, res.xywh, atol=1e-3, rtol=1e-5)
    # COCO's [x, y, w, h] as DetectionDataset.to_coco writes it (non-degenerate boxes only)
    keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).numpy()
    good = boxes[torch.from_numpy(keep)]
    ds = DetectionDataset(np.zeros((1, h, w, 3), np.uint8), [{"boxes": good, "labels": [0] * len(good)}], ["a"])
    coco = torch.tensor([a["bbox"] for a in ds.to_coco()["annotations"]], dtype=torch.float32).reshape(-1, 4)
    torch.testing.assert_close(coco, box_convert(good, "xyxy", "xywh"), atol=1e-4, rtol=1e-6)


@settings(max_examples=examples(100), **FAST)
@given(boxes=xyxy_boxes(), hw=SIZES, imgsz=IMGSZ)
def test_to_original_is_the_inverse_of_letterbox_then_clip(boxes, hw, imgsz):
    count("props:to-original")
    f = letterbox_factors(hw, imgsz)
    back = to_original(boxes * f, hw, imgsz)
    ref = clip_boxes_to_image(boxes, hw)
    torch.testing.assert_close(back, ref, atol=1e-3 * max(hw) + 1e-4, rtol=1e-5)


@settings(max_examples=examples(100), **FAST)
@given(boxes=xyxy_boxes(lo=-5, hi=60, degenerate=True), hw=SIZES, strict=st.booleans())
@example(boxes=torch.tensor([[-0.005, 0.0, 4.0, 4.0]]), hw=(10, 10), strict=True)  # within tolerance
def test_box_checker_clips_like_torchvision(boxes, hw, strict):
    count("props:box-checker")
    h, w = hw
    chk = BoxChecker("f.json", strict=strict, skip_bad=True)
    for k, b in enumerate(boxes.double()):
        degenerate = bool(b[2] <= b[0] or b[3] <= b[1])
        outside = bool((b < -BOX_TOLERANCE).any() or b[[0, 2]].max() > w + BOX_TOLERANCE
                       or b[[1, 3]].max() > h + BOX_TOLERANCE)  # fmt: skip
        try:
            out = chk.check(b.tolist(), hw, f"box {k}")
        except DatasetError as e:
            assert strict and outside and not degenerate and "f.json" in str(e)
            continue
        clipped = clip_boxes_to_image(b[None], hw)[0]
        if degenerate or bool(clipped[2] <= clipped[0] or clipped[3] <= clipped[1]):
            assert out is None and chk.skipped[-1][0].startswith("f.json")  # skipped, never kept
        else:
            assert out is not None and out.dtype == np.float32
            np.testing.assert_allclose(out, clipped.numpy(), atol=1e-4)
            assert 0 <= out[0] < out[2] <= w and 0 <= out[1] < out[3] <= h


@settings(max_examples=examples(80), **FAST)
@given(hw=st.tuples(st.integers(1, 40), st.integers(1, 40)), n=st.integers(0, 4), seed=st.integers(0, 2**16))
@example(hw=(1, 500 // 10), n=2, seed=0)
def test_mask_boxes_match_masks_to_boxes(hw, n, seed):
    count("props:mask-boxes")
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, *hw, generator=g) < torch.rand(n, 1, 1, generator=g) ** 3
    if n:
        masks[0] = False  # an empty mask gets a zero box
    ours = mask_boxes(masks)
    res = Masks(masks, hw).boxes() if n else torch.zeros(0, 4)
    assert ours.shape == (n, 4)
    nonempty = masks.flatten(1).any(1)
    if bool(nonempty.any()):
        ref = masks_to_boxes(masks[nonempty]).float() + torch.tensor([0.0, 0, 1, 1])
        torch.testing.assert_close(ours[nonempty], ref)
        torch.testing.assert_close(res[nonempty], ref)
    assert bool((ours[~nonempty] == 0).all())


@settings(max_examples=examples(60), **FAST)
@given(boxes=xyxy_boxes(lo=0, hi=200), stride=st.sampled_from([8.0, 16.0, 32.0]))
def test_box_distance_round_trip(boxes, stride):
    count("props:box-distances")
    assume(len(boxes))
    points = (boxes[:, :2] + boxes[:, 2:]) / 2  # anchor points inside their boxes
    s = torch.tensor(stride)
    ltrb = boxes_to_distances(boxes, points, s)
    assert bool((ltrb >= 0).all())
    torch.testing.assert_close(distances_to_boxes(ltrb[None], points, s)[0], boxes, atol=1e-3, rtol=1e-5)


# ---- letterbox <-> unletterbox --------------------------------------------------------------------------


@settings(max_examples=examples(150), **FAST)
@given(hw=SIZES, imgsz=IMGSZ)
@example(hw=(1, 500), imgsz=32)
@example(hw=(500, 1), imgsz=32)
@example(hw=(1, 1), imgsz=8)
@example(hw=(3, 500), imgsz=64)
def test_letterbox_shape(hw, imgsz):
    count("props:letterbox-shape")
    nh, nw = letterbox_shape(hw, imgsz)
    assert 1 <= nh <= imgsz and 1 <= nw <= imgsz and max(nh, nw) == imgsz
    h, w = hw
    s = imgsz / max(h, w)
    assert abs(nh - h * s) <= 0.5 + 1e-9 or nh == 1
    assert abs(nw - w * s) <= 0.5 + 1e-9 or nw == 1


@settings(max_examples=examples(120), **FAST)
@given(hw=SIZES, imgsz=IMGSZ, boxes=xyxy_boxes(lo=0, hi=1), seed=st.integers(0, 2**16))
@example(hw=(1, 500), imgsz=32, boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]), seed=0)
@example(hw=(500, 1), imgsz=32, boxes=torch.tensor([[0.25, 0.5, 0.75, 0.75]]), seed=0)
def test_letterbox_boxes_round_trip(hw, imgsz, boxes, seed):
    """LetterBox moves boxes by its per-axis factors, pads with 114 and to_original undoes it."""
    count("props:letterbox-boxes")
    h, w = hw
    boxes = (boxes.clamp(0, 1) * torch.tensor([w, h, w, h])).float()  # inside the image
    img = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                         generator=torch.Generator().manual_seed(seed)))  # fmt: skip
    bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=hw)
    out, tb = LetterBox(imgsz)(img, bb)
    nh, nw = letterbox_shape(hw, imgsz)
    assert out.shape == (3, imgsz, imgsz) and tb.canvas_size == (imgsz, imgsz)
    assert bool((out[:, nh:, :] == PAD_VALUE).all()) and bool((out[:, :, nw:] == PAD_VALUE).all())
    torch.testing.assert_close(tb.as_subclass(torch.Tensor), boxes * letterbox_factors(hw, imgsz))
    back = to_original(tb.as_subclass(torch.Tensor), hw, imgsz)
    torch.testing.assert_close(back, boxes, atol=1e-4 * max(hw), rtol=1e-5)


@settings(max_examples=examples(120), **FAST)
@given(hw=SIZES, imgsz=IMGSZ, k=st.integers(1, 4), n=st.integers(0, 3), seed=st.integers(0, 2**16))
@example(hw=(1, 500), imgsz=64, k=1, n=2, seed=0)
@example(hw=(500, 1), imgsz=64, k=1, n=0, seed=0)  # no instance: the empty-prediction crash
@example(hw=(1, 1), imgsz=8, k=2, n=1, seed=0)
def test_unletterbox_round_trip(hw, imgsz, k, n, seed):
    """Label maps letterboxed (nearest-exact) and unletterboxed come back at the original size;
    exactly, when the letterbox is an integer upscale; float maps keep constants."""
    count("props:unletterbox")
    h, w = hw
    if k > 1:  # an exact integer upscale: imgsz = k * longer side
        imgsz = k * max(h, w)
        assume(imgsz <= 600)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n, h, w), dtype=torch.uint8, generator=g)
    lb, _ = LetterBox(imgsz)(tv_tensors.Mask(labels), tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)))
    lb = lb.as_subclass(torch.Tensor)
    assert lb.shape == (n, imgsz, imgsz)
    back = unletterbox(lb, hw, imgsz, mode="nearest-exact")
    assert back.shape == (n, h, w) and back.dtype == labels.dtype
    nh, nw = letterbox_shape(hw, imgsz)
    if k > 1 and nh == k * h and nw == k * w:
        assert torch.equal(back, labels)
    elif nh >= h and nw >= w and n:  # upscaled on both axes: every original label survives somewhere
        assert set(back.unique().tolist()) <= set(labels.unique().tolist())
    const = torch.full((n, imgsz, imgsz), 0.375)
    torch.testing.assert_close(unletterbox(const, hw, imgsz), torch.full((n, h, w), 0.375))


# ---- train transforms ------------------------------------------------------------------------------------


@st.composite
def detection_sample(draw: st.DrawFn):
    h, w = draw(SIZES)
    n = draw(st.integers(0, 5))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, max(w - 0.5, 0)))
        y1 = draw(st.floats(0, max(h - 0.5, 0)))
        boxes.append([x1, y1, draw(st.floats(min(x1 + 0.5, w), w)), draw(st.floats(min(y1 + 0.5, h), h))])
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    keep = (boxes_t[:, 2] > boxes_t[:, 0]) & (boxes_t[:, 3] > boxes_t[:, 1])
    return (h, w), boxes_t[keep]


@settings(max_examples=examples(90), **FAST)
@given(sample=detection_sample(), imgsz=IMGSZ, seed=st.integers(0, 2**16), iou_crop=st.booleans(),
       jitter=st.sampled_from([(0.5, 1.5), (1.0, 1.0), (0.1, 3.0)]))  # fmt: skip
@example(sample=((1, 500), torch.tensor([[0.0, 0.0, 500.0, 1.0]])), imgsz=32, seed=0, iou_crop=True,
         jitter=(0.5, 1.5))  # fmt: skip
@example(sample=((500, 1), torch.tensor([[0.0, 10.0, 1.0, 400.0]])), imgsz=32, seed=1, iou_crop=False,
         jitter=(0.5, 1.5))  # fmt: skip
@example(sample=((2, 2), torch.tensor([[0.0, 0.0, 2.0, 2.0]])), imgsz=8, seed=2, iou_crop=True,
         jitter=(0.1, 3.0))  # fmt: skip
def test_detect_train_transform_keeps_boxes_valid(sample, imgsz, seed, iou_crop, jitter):
    count("props:detect-train")
    hw, boxes = sample
    n = len(boxes)
    torch.manual_seed(seed)
    img = tv_tensors.Image(torch.randint(0, 256, (3, *hw), dtype=torch.uint8))
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=hw),
              "labels": torch.arange(n), "iscrowd": torch.arange(n) % 2,
              "area": torch.arange(n, dtype=torch.float32)}  # fmt: skip
    tf = detect_transforms(imgsz, train=True, iou_crop=iou_crop, scale_jitter=jitter)
    out, t = tf(img, target)
    assert out.shape == (3, imgsz, imgsz) and out.dtype == torch.float32
    assert bool((out >= 0).all()) and bool((out <= 1).all())
    b = t["boxes"].as_subclass(torch.Tensor)
    assert b.shape[1] == 4 and len(b) <= n
    assert len(t["labels"]) == len(t["iscrowd"]) == len(t["area"]) == len(b)
    # per-box tensors moved together: each surviving label keeps its own iscrowd and area
    assert torch.equal(t["iscrowd"], t["labels"] % 2) and torch.equal(t["area"], t["labels"].float())
    assert bool((b >= 0).all()) and bool((b <= imgsz).all())  # inside the image
    assert bool(((b[:, 2:] - b[:, :2]) >= 1).all())  # at least 1 px, or dropped


@settings(max_examples=examples(80), **FAST)
@given(sample=detection_sample(), imgsz=IMGSZ, flip=st.booleans())
def test_detect_train_transform_moves_each_box_with_its_label(sample, imgsz, flip):
    """Without random scale or colour: each surviving box is exactly its own original box, flipped
    (hflip=1) or not (hflip=0), times the letterbox factors; boxes under 1 px are the ones dropped."""
    count("props:detect-train-exact")
    hw, boxes = sample
    n = len(boxes)
    h, w = hw
    img = tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=hw), "labels": torch.arange(n)}
    tf = detect_transforms(imgsz, train=True, hflip=float(flip), scale_jitter=(1.0, 1.0), photometric=False)
    _, t = tf(img, target)
    exp = boxes.clone()
    if flip:
        exp[:, [0, 2]] = w - boxes[:, [2, 0]]
    exp = exp * letterbox_factors(hw, imgsz)
    big = ((exp[:, 2:] - exp[:, :2]) >= 1).all(1)
    assert t["labels"].tolist() == torch.arange(n)[big].tolist()
    torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor), exp[big], atol=1e-3, rtol=1e-5)


@st.composite
def instance_sample(draw: st.DrawFn):
    """An image whose red channel is 255 exactly on the instance pixels, non-overlapping instance
    masks (rectangles), their labels, and the semantic map painted from them (void elsewhere)."""
    h, w = draw(st.one_of(st.tuples(st.integers(4, 48), st.integers(4, 48)),
                          st.sampled_from([(2, 300), (300, 2), (1, 1), (3, 500)])))  # fmt: skip
    n = draw(st.integers(0, 4))
    ids = torch.zeros(h, w, dtype=torch.int64)
    for k in range(n):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        ids[y0:y1, x0:x1] = k + 1  # later rectangles occlude earlier ones
    present = [k for k in range(n) if bool((ids == k + 1).any())]
    masks = torch.stack([ids == k + 1 for k in present]) if present else torch.zeros(0, h, w, dtype=torch.bool)
    labels = torch.tensor([k % 3 for k in present], dtype=torch.int64)
    sem = torch.full((h, w), IGNORE_INDEX, dtype=torch.uint8)
    for m, lab in zip(masks, labels):
        sem[m] = lab
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0][ids > 0] = 255
    return img, masks, labels, sem


@settings(max_examples=examples(80), **FAST)
@given(sample=instance_sample(), imgsz=IMGSZ, seed=st.integers(0, 2**16),
       jitter=st.sampled_from([(0.75, 1.25), (1.0, 1.0), (0.3, 2.0)]))  # fmt: skip
def test_seg_train_transform_keeps_masks_aligned(sample, imgsz, seed, jitter):
    count("props:seg-train")
    img, masks, labels, sem = sample
    h, w = img.shape[1:]
    n = len(masks)
    torch.manual_seed(seed)
    target = {"masks": tv_tensors.Mask(masks.to(torch.uint8)), "labels": labels.clone(),
              "iscrowd": torch.arange(n) % 2, "semantic": SemanticMask(sem.clone()),
              "boxes": tv_tensors.BoundingBoxes(mask_boxes(masks), format="XYXY", canvas_size=(h, w))}  # fmt: skip
    tf = seg_transforms(imgsz, train=True, scale_jitter=jitter, photometric=False)
    out, t = tf(tv_tensors.Image(img), target)
    assert out.shape == (3, imgsz, imgsz)
    m, b, lab, s = t["masks"], t["boxes"], t["labels"], t["semantic"]
    assert m.dtype == torch.bool and m.shape[1:] == (imgsz, imgsz) and s.shape == (imgsz, imgsz)
    assert len(m) == len(b) == len(lab) == len(t["iscrowd"]) == len(t["area"]) <= n
    assert bool(m.flatten(1).any(1).all()), "an emptied instance was kept"
    # each box is its mask's extent (mask bbox within the box, and tight), inside the image
    torch.testing.assert_close(b, mask_boxes(m))
    assert bool((b >= 0).all()) and bool((b <= imgsz).all())
    torch.testing.assert_close(t["area"], m.flatten(1).sum(1).float())
    # the semantic map moved with the masks: every instance pixel carries its instance's class
    for mk, lk in zip(m, lab):
        assert bool((s[mk] == lk).all())
    # and with the image: instance pixels away from the mask border are red (the bilinear image and
    # the nearest masks only disagree within about one source pixel of the border)
    r = int(np.ceil(1.5 * imgsz / max(h, w) * jitter[1])) + 1  # one source pixel, in output px
    if len(m) and 2 * r + 1 <= imgsz:  # else no pixel is that far from every border
        outside = torch.nn.functional.pad((~m).float()[:, None], (r, r, r, r), value=1.0)  # canvas edge
        border = torch.nn.functional.max_pool2d(outside, 2 * r + 1, 1)[:, 0] > 0  # (affine fill blends in)
        red = out[0][(m & ~border).any(0)]
        assert red.numel() == 0 or float(red.min()) > 0.5


@settings(max_examples=examples(30), **FAST)
@given(seed=st.integers(0, 2**16), imgsz=st.sampled_from([16, 32, 64]), n_img=st.integers(1, 4),
       sides=st.lists(st.tuples(SIDES, SIDES), min_size=4, max_size=4))  # fmt: skip
def test_mosaic_boxes_stay_inside(seed, imgsz, n_img, sides):
    count("props:mosaic")
    torch.manual_seed(seed)
    images = [np.full((h, w, 3), 60, np.uint8) for h, w in sides[:n_img]]
    anns = [{"boxes": [[0, 0, w, h], [w / 4, h / 4, w / 2 + 0.5, h / 2 + 0.5]], "labels": [0, 1]}
            for h, w in sides[:n_img]]  # fmt: skip
    ds = DetectionDataset(images, anns, ["a", "b"])
    mo = Mosaic(ds, imgsz, transform=detect_transforms(imgsz, train=True))
    for i in range(n_img):
        out, t = mo[i]
        b = t["boxes"].as_subclass(torch.Tensor)
        assert out.shape == (3, imgsz, imgsz) and len(b) == len(t["labels"]) == len(t["iscrowd"])
        assert bool((b >= 0).all()) and bool((b <= imgsz).all())
        assert bool(((b[:, 2:] - b[:, :2]) >= 1).all())


@pytest.mark.parametrize("hw", [(1, 500), (500, 1), (1, 1), (3, 500)])
def test_eval_transforms_keep_every_box(hw):
    """Eval letterbox drops nothing (the ground truth stays complete), even for sliver images."""
    count("props:eval-keep", plain=True)
    h, w = hw
    boxes = torch.tensor([[0.0, 0.0, w, h], [0.0, 0.0, max(w / 3, 0.5), max(h / 3, 0.5)]])
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=hw), "labels": torch.tensor([0, 1])}
    _, t = detect_transforms(32, train=False)(tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)), target)
    assert len(t["boxes"]) == 2
    torch.testing.assert_close(to_original(t["boxes"].as_subclass(torch.Tensor), hw, 32), boxes, atol=1e-3, rtol=0)
