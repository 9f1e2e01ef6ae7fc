"""The house detector: raw-map shapes, task-aligned assignment, loss, overfitting two images,
postprocessing, timm backbones and ONNX export."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from optik.errors import DatasetError, ModelError
from optik.models import create, list_models
from optik.models.detect import HouseDetector, TaskAlignedAssigner, postprocess
from optik.models.detect.head import make_anchors

COLORS = [(230, 40, 40), (40, 200, 40), (40, 40, 230)]


def _target(boxes: list[list[float]], labels: list[int]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def _scenes(size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Two grey images with 2 and 3 filled rectangles/circles; class = colour (0 red, 1 green, 2 blue)."""
    specs = [
        [("rect", (8, 10, 30, 40), 0), ("circle", (44, 44, 12), 1)],
        [("circle", (20, 22, 10), 1), ("rect", (36, 6, 58, 26), 0), ("rect", (34, 36, 60, 58), 2)],
    ]
    images, targets = [], []
    for spec in specs:
        img = np.full((size, size, 3), 128, np.uint8)
        boxes, labels = [], []
        for kind, p, c in spec:
            if kind == "rect":
                x1, y1, x2, y2 = p
                cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), COLORS[c], -1)  # cv2 corners are inclusive
                boxes.append([x1, y1, x2, y2])
            else:
                cx, cy, r = p
                cv2.circle(img, (cx, cy), r, COLORS[c], -1)
                boxes.append([cx - r, cy - r, cx + r + 1, cy + r + 1])
            labels.append(c)
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        targets.append(_target(boxes, labels))
    return torch.stack(images), targets


def test_registered_for_detect() -> None:
    assert {"house", "house_s", "house_m"} <= set(list_models(task="detect"))
    model = create("house", task="detect", num_classes=3, img_size=128)
    assert isinstance(model, HouseDetector) and model.num_classes == 3
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 2.5e6
    with pytest.raises(ModelError, match="num_classes"):
        create("house", task="detect", num_classes=0)


@pytest.mark.parametrize("size", [64, 128])
def test_raw_maps_shapes(size: int) -> None:
    model = create("house", task="detect", num_classes=5)
    maps = model(torch.rand(2, 3, size, size))
    assert [tuple(m.shape) for m in maps] == [(2, 4 * 16 + 5, size // s, size // s) for s in (8, 16, 32)]
    with pytest.raises(ModelError, match="multiple of 32"):
        model(torch.rand(1, 3, 48, 64))


def test_head_starts_at_prior_probability() -> None:
    model = create("house_s", task="detect", num_classes=2).eval()
    _, scores = model.decode(model(torch.rand(1, 3, 64, 64)))
    assert 0.002 < scores.mean().item() < 0.05  # prior 0.01: not drowned in easy negatives at step 0


# --- assigner --------------------------------------------------------------------------------


def _points(size: int = 64) -> torch.Tensor:
    maps = [torch.zeros(1, 1, size // s, size // s) for s in (8, 16, 32)]
    return make_anchors(maps, [8, 16, 32])[0]


def test_assigner_positives_inside_gt_only() -> None:
    torch.manual_seed(0)
    points = _points()
    a, c = len(points), 3
    pred_boxes = torch.cat([points - 10, points + 10], dim=-1)[None]  # 20 px boxes around every point
    gt = torch.tensor([[[10.0, 14.0, 42.0, 50.0]]])
    one = torch.ones(1, 1, dtype=torch.bool)
    out = TaskAlignedAssigner(topk=10)(torch.rand(1, a, c), pred_boxes, points, torch.tensor([[2]]), gt, one)

    fg = out.fg[0]
    inside = (points[:, 0] > 10) & (points[:, 0] < 42) & (points[:, 1] > 14) & (points[:, 1] < 50)
    assert 1 <= fg.sum() <= 10
    assert inside[fg].all()
    assert (out.labels[0, fg] == 2).all() and torch.equal(out.boxes[0, fg], gt[0].expand(int(fg.sum()), 4))
    # IoU-aware targets: only the GT's class, only at positives, the best one equals its best IoU
    assert (out.scores[0, ~fg] == 0).all() and (out.scores[0, :, :2] == 0).all()
    best_iou = box_iou(gt[0], pred_boxes[0, fg]).max()
    torch.testing.assert_close(out.scores[0, fg, 2].max(), best_iou)


def test_assigner_zero_gt() -> None:
    points = _points()
    scores, boxes = torch.rand(2, len(points), 3), torch.cat([points - 4, points + 4], -1).expand(2, -1, -1)
    assigner = TaskAlignedAssigner()
    no_labels, no_mask = torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool)
    empty = assigner(scores, boxes, points, no_labels, torch.zeros(2, 0, 4), no_mask)
    assert not empty.fg.any() and not empty.scores.any()
    # padded batch: image 1 has only a padding slot
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0]], [[0.0, 0.0, 0.0, 0.0]]])
    mixed = assigner(scores, boxes, points, torch.zeros(2, 1, dtype=torch.long), gt, torch.tensor([[True], [False]]))
    assert mixed.fg[0].any() and not mixed.fg[1].any() and not mixed.scores[1].any()


def test_assigner_two_gts_and_overlap_goes_to_best_iou() -> None:
    points = _points()
    a = len(points)
    gt_a, gt_b = [4.0, 4.0, 36.0, 36.0], [20.0, 20.0, 60.0, 60.0]  # overlapping
    pred = torch.tensor(gt_a).expand(1, a, 4)  # every point predicts box A exactly
    labels, gts, mask = torch.tensor([[0, 1]]), torch.tensor([[gt_a, gt_b]]), torch.ones(1, 2, dtype=torch.bool)
    out = TaskAlignedAssigner(topk=13)(torch.full((1, a, 2), 0.5), pred, points, labels, gts, mask)
    idx = out.gt_index[0, out.fg[0]]
    assert (idx == 0).any() and (idx == 1).any()  # both GTs get positives
    assert torch.equal(out.labels[0, out.fg[0]], idx)
    # points inside both boxes that are positive belong to A (their predicted box overlaps A, not B, most)
    pts = points[out.fg[0]]
    in_both = (pts > 20).all(1) & (pts < 36).all(1)
    assert in_both.any() and (idx[in_both] == 0).all()


# --- loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"cls_loss": "focal", "iou_loss": "giou"}, {"cls_loss": "varifocal"}])
def test_loss_terms_finite_with_and_without_gt(kw: dict) -> None:
    torch.manual_seed(0)
    model = create("house_s", task="detect", num_classes=3, **kw)
    images, targets = _scenes()
    out = model.forward_loss(images, targets)
    assert set(out) == {"loss", "box", "cls", "dfl"}
    assert all(torch.isfinite(v) and v > 0 for v in out.values())
    torch.testing.assert_close(out["loss"].detach(), out["box"] + out["cls"] + out["dfl"])
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    empty = model.forward_loss(images, [_target([], []), _target([], [])])
    assert torch.isfinite(empty["loss"]) and empty["box"] == 0 and empty["dfl"] == 0 and empty["cls"] > 0
    empty["loss"].backward()


def test_bad_targets_name_the_image() -> None:
    model = create("house_s", task="detect", num_classes=2)
    bad = {**_target([[0, 0, 8, 8]], [2]), "image_id": 17}
    with pytest.raises(DatasetError, match="image 17.*labels"):
        model.forward_loss(torch.rand(1, 3, 64, 64), [bad])
    with pytest.raises(Exception, match="iou_loss"):
        create("house_s", task="detect", num_classes=2, iou_loss="l1")


def test_overfits_two_images() -> None:
    torch.manual_seed(0)
    images, targets = _scenes(64)
    model = create("house_s", task="detect", num_classes=3, img_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        out = model.forward_loss(images, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-10:]) < 0.25 * np.mean(losses[:5])

    model.eval()
    for det, gt in zip(model.forward_detect(images, conf=0.25), targets):
        iou = box_iou(gt["boxes"], det["boxes"])
        best = iou.argmax(1)
        assert (iou.max(1).values > 0.7).all(), iou  # every object found …
        assert torch.equal(det["labels"][best], gt["labels"])  # … with its class
        confident = det["scores"] > 0.5
        assert (iou[:, confident].max(0).values > 0.7).all(), det  # no confident false positive


# --- postprocess ------------------------------------------------------------------------------


def test_postprocess_conf_max_det_agnostic() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 90, 50]])
    scores = torch.tensor([[0.9, 0.0], [0.0, 0.8], [0.3, 0.1], [0.6, 0.0]])
    out = postprocess(boxes, scores, (64, 64), conf=0.25)
    assert out["labels"].tolist() == [0, 1, 0, 0] and out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.6, 0.3])
    assert out["boxes"][2].tolist() == [40, 40, 64, 50]  # clipped to the image
    assert postprocess(boxes, scores, (64, 64), conf=0.5)["scores"].tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert len(postprocess(boxes, scores, (64, 64), conf=0.25, max_det=2)["boxes"]) == 2
    agnostic = postprocess(boxes, scores, (64, 64), conf=0.25, agnostic=True)
    assert agnostic["labels"].tolist() == [0, 0, 0]  # the class-1 duplicate of box 0 is suppressed
    assert len(postprocess(boxes, scores, (64, 64), conf=0.95)["boxes"]) == 0


def test_forward_detect_format() -> None:
    model = create("house_s", task="detect", num_classes=4).eval()
    dets = model.forward_detect(torch.rand(2, 3, 64, 64), conf=0.0, max_det=7)
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape == (7, 4) and d["scores"].shape == (7,) and d["labels"].dtype == torch.int64
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 64).all() and (d["labels"] < 4).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all()


# --- backbones, checkpoints, export -------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050"])
def test_timm_backbone(name: str) -> None:
    torch.manual_seed(0)
    model = create("house_s", task="detect", num_classes=3, backbone=f"timm:{name}")
    images, targets = _scenes()
    assert [m.shape[-1] for m in model(images)] == [8, 4, 2]
    out = model.forward_loss(images, targets)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_bad_backbone() -> None:
    with pytest.raises(ModelError, match="timm has no such model"):
        create("house", task="detect", num_classes=2, backbone="timm:not_a_model")
    with pytest.raises(ModelError, match="unknown backbone"):
        create("house", task="detect", num_classes=2, backbone="resnet18")


def test_config_dict_rebuilds_the_model() -> None:
    model = create("house_s", task="detect", num_classes=3, neck_width=32).eval()
    rebuilt = create("house", task="detect", num_classes=3, **model.config_dict()).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            torch.testing.assert_close(a, b)


def test_onnx_export_matches_eager(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create("house_s", task="detect", num_classes=3).eval()
    path = tmp_path / "house.onnx"
    torch.onnx.export(
        model, (torch.rand(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
        input_names=["images"], output_names=["p3", "p4", "p5"], dynamic_axes={"images": {0: "batch", 2: "h", 3: "w"}},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 96, 64)  # another batch and size than traced
    with torch.no_grad():
        eager = model(x)
    for got, want in zip(session.run(None, {"images": x.numpy()}), eager):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
