"""Detector adapters: torchvision (``tv:``) and transformers DETR (``hf:`` for task="detect") speak
optik's Detector protocol — 0-based labels in and out, [0, 1] letterboxed input, xyxy pixel boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.ops import box_iou

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForObjectDetection,
    ConditionalDetrConfig,
    DetrConfig,
    DetrImageProcessor,
    ResNetConfig,
)

from optik.errors import DatasetError, ModelError  # noqa: E402
from optik.models import create  # noqa: E402
from optik.models.adapters.tv_detection import TVDetector, reset_class_head  # noqa: E402

C, S = 3, 64
TV = ["tv:fasterrcnn", "tv:retinanet", "tv:fcos", "tv:ssdlite"]
HF = ["detr", "conditional_detr"]
TERMS = {
    "tv:fasterrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "tv:retinanet": {"classification", "bbox_regression"},
    "tv:fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "tv:ssdlite": {"classification", "bbox_regression"},
    "detr": {"loss_ce", "loss_bbox", "loss_giou"},
    "conditional_detr": {"loss_ce", "loss_bbox", "loss_giou"},
}
BACKGROUND_OFFSET = {"tv:fasterrcnn": 1, "tv:ssdlite": 1, "tv:retinanet": 0, "tv:fcos": 0}  # torchvision's label spaces


def _tiny_hf(kind: str) -> nn.Module:
    backbone = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage4"],
    )
    config_cls = DetrConfig if kind == "detr" else ConditionalDetrConfig
    cfg = config_cls(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_labels=5,
    )
    return AutoModelForObjectDetection.from_config(cfg)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for kind in HF:
        dirs[kind] = tmp_path_factory.mktemp(kind)
        torch.manual_seed(0)
        _tiny_hf(kind).save_pretrained(dirs[kind])
    return dirs


def _make(name: str, hf_dirs: dict[str, Path], **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    if name in HF:
        return create(f"hf:{hf_dirs[name]}", task="detect", num_classes=C, class_names=["a", "b", "c"], **kwargs)
    return create(name, task="detect", num_classes=C, img_size=S, **kwargs)


def _batch() -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Two 64² images: one with boxes of the first and the last class (a dataset-style BoundingBoxes), one empty."""
    images = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(0))
    xyxy = [[8.0, 10.0, 40.0, 44.0], [30.0, 20.0, 60.0, 62.0]]
    boxes = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(S, S))
    targets = [
        {"boxes": boxes, "labels": torch.tensor([0, C - 1]), "image_id": 0},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1},
    ]
    return images, targets


@pytest.mark.parametrize("name", TV + HF)
def test_loss_terms_are_finite_and_one_step_trains(name: str, hf_dirs: dict[str, Path]) -> None:
    model = _make(name, hf_dirs)
    assert model.training and model.num_classes == C
    images, targets = _batch()
    losses = model.forward_loss(images, targets)
    assert TERMS[name] <= set(losses) and "loss" in losses
    assert all(torch.isfinite(v).all() for v in losses.values())
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses["loss"].backward()
    opt.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert changed > len(before) // 2


@pytest.mark.parametrize("name", TV + HF)
def test_forward_detect_follows_the_contract(name: str, hf_dirs: dict[str, Path]) -> None:
    model = _make(name, hf_dirs).eval()
    images, _ = _batch()
    preds = model.forward_detect(images, conf=0.0, max_det=50)
    assert len(preds) == 2
    for p in preds:
        assert set(p) == {"boxes", "scores", "labels"}
        n = len(p["scores"])
        assert 0 < n <= 50 and p["boxes"].shape == (n, 4) and p["labels"].dtype == torch.int64
        assert p["boxes"].dtype == p["scores"].dtype == torch.float32
        assert ((p["labels"] >= 0) & (p["labels"] < C)).all()
        assert (p["boxes"] >= 0).all() and (p["boxes"] <= S).all()
        assert (p["boxes"][:, 2:] >= p["boxes"][:, :2]).all()
        assert torch.equal(p["scores"], p["scores"].sort(descending=True).values)
    assert all(len(p["scores"]) <= 2 for p in model.forward_detect(images, conf=0.0, max_det=2))
    assert all(len(p["scores"]) == 0 for p in model.forward_detect(images, conf=1.01))
    kept = model.forward_detect(images, conf=0.0, max_det=50, agnostic=True, iou=0.1)
    for p in kept:  # class-agnostic NMS at IoU 0.1: what is left barely overlaps
        overlaps = box_iou(p["boxes"], p["boxes"]).fill_diagonal_(0)
        assert (overlaps <= 0.1 + 1e-6).all()


@pytest.mark.parametrize("name", TV + ["conditional_detr"])
def test_every_class_comes_back_zero_based(name: str, hf_dirs: dict[str, Path]) -> None:
    # With no score threshold these models emit every (box, class) pair, so an unshifted background
    # offset would show up as label C (Faster R-CNN, SSD) or a missing class 0.
    model = _make(name, hf_dirs).eval()
    preds = model.forward_detect(_batch()[0][:1], conf=0.0, iou=1.0, max_det=1000)
    assert set(preds[0]["labels"].tolist()) == set(range(C))


@pytest.mark.parametrize("name", TV)
def test_labels_reach_torchvision_in_its_own_label_space(name: str, hf_dirs: dict[str, Path]) -> None:
    model = _make(name, hf_dirs)
    seen: list[list[dict[str, torch.Tensor]]] = []
    inner_forward = model.model.forward

    def spy(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        seen.append(targets)
        return inner_forward(images, targets)

    model.model.forward = spy
    images, targets = _batch()
    model.forward_loss(images, targets)
    assert seen[0][0]["labels"].tolist() == [0 + BACKGROUND_OFFSET[name], C - 1 + BACKGROUND_OFFSET[name]]
    assert type(seen[0][0]["boxes"]) is torch.Tensor and seen[0][1]["boxes"].shape == (0, 4)


def test_detr_targets_become_normalised_cxcywh(hf_dirs: dict[str, Path]) -> None:
    model = _make("detr", hf_dirs)
    seen: list[Any] = []
    inner_forward = model.model.forward

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["labels"])
        return inner_forward(**kwargs)

    model.model.forward = spy
    images, targets = _batch()
    model.forward_loss(images, targets)
    assert seen[0][0]["class_labels"].tolist() == [0, C - 1]
    torch.testing.assert_close(seen[0][0]["boxes"][0], torch.tensor([24.0, 27.0, 32.0, 34.0]) / S)
    assert seen[0][1]["boxes"].shape == (0, 4)


def test_detr_drops_the_no_object_column(hf_dirs: dict[str, Path]) -> None:
    model = _make("detr", hf_dirs).eval()
    bias = model.model.class_labels_classifier.bias
    images = _batch()[0]
    with torch.no_grad():
        bias.zero_()
        bias[C - 1] = 20.0  # the last real class wins every query
    assert all((p["labels"] == C - 1).all() and len(p["labels"]) == 10 for p in model.forward_detect(images, conf=0.5))
    with torch.no_grad():
        bias.zero_()
        bias[C] = 20.0  # "no object" wins: nothing above a small threshold
    assert all(len(p["labels"]) == 0 for p in model.forward_detect(images, conf=0.01))


@pytest.mark.parametrize("name", ["tv:fasterrcnn", "tv:ssdlite"])
def test_eval_mode_loss_keeps_batchnorm_statistics(name: str, hf_dirs: dict[str, Path]) -> None:
    model = _make(name, hf_dirs).eval()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    losses = model.forward_loss(*_batch())
    assert torch.isfinite(losses["loss"]) and not model.training and not model.model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_input_is_not_resized_again(hf_dirs: dict[str, Path]) -> None:
    model = _make("tv:retinanet", hf_dirs).eval()
    image_list, _ = model.model.transform(list(_batch()[0].unbind(0)))
    assert image_list.image_sizes == [(S, S), (S, S)] and image_list.tensors.shape[-2:] == (S, S)


def test_tv_config_dict_rebuilds_and_pretrained_path_skips_resized_head(
    tmp_path: Path, hf_dirs: dict[str, Path]
) -> None:
    model = _make("tv:fasterrcnn", hf_dirs)
    cfg = json.loads(json.dumps(model.config_dict()))  # what a checkpoint stores
    assert cfg == {"backbone": "resnet18", "frozen_bn": False}
    twin = create("tv:fasterrcnn", task="detect", num_classes=C, img_size=S, **cfg)
    twin.load_state_dict(model.state_dict())  # same architecture, strictly
    torch.save(model.state_dict(), tmp_path / "det.pt")
    torch.save(model.model.state_dict(), tmp_path / "bare_tv.pt")  # torchvision's own key names
    for file in ("det.pt", "bare_tv.pt"):
        bigger = create("tv:fasterrcnn", task="detect", num_classes=5, img_size=S, pretrained=str(tmp_path / file))
        assert bigger.model.roi_heads.box_predictor.cls_score.out_features == 6  # 5 classes + background
        assert torch.equal(bigger.model.backbone.body.conv1.weight, model.model.backbone.body.conv1.weight)


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet", "fcos", "ssdlite"])
def test_reset_class_head_turns_a_coco_sized_model_into_c_classes(family: str) -> None:
    torch.manual_seed(0)
    coco = create(f"tv:{family}", task="detect", num_classes=90, img_size=S)  # stands in for downloaded weights
    backbone = next(iter(coco.model.backbone.parameters())).clone()
    reset_class_head(coco.model, C)
    model = TVDetector(coco.model, C, img_size=S)
    assert torch.isfinite(model.forward_loss(*_batch())["loss"])
    labels = torch.cat([p["labels"] for p in model.eval().forward_detect(_batch()[0], conf=0.0, iou=1.0, max_det=1000)])
    assert set(labels.tolist()) == set(range(C))
    assert torch.equal(next(iter(model.model.backbone.parameters())), backbone)


def test_frozen_batchnorm_is_recorded_and_rebuilt(hf_dirs: dict[str, Path]) -> None:
    # torchvision freezes BatchNorm in pretrained backbones; a checkpoint of one must rebuild the same way.
    model = create("tv:retinanet", task="detect", num_classes=C, img_size=S, frozen_bn=True)
    assert model.config_dict() == {"backbone": "resnet18", "frozen_bn": True}
    stats = {k: v.clone() for k, v in model.model.backbone.body.state_dict().items() if "running_" in k}
    model.forward_loss(*_batch())  # train mode: frozen statistics stay put
    assert stats and all(torch.equal(v, model.model.backbone.body.state_dict()[k]) for k, v in stats.items())
    twin = create("tv:retinanet", task="detect", num_classes=C, img_size=S, **model.config_dict())
    twin.load_state_dict(model.state_dict())
    images = _batch()[0]
    a, b = model.eval().forward_detect(images, conf=0.0), twin.eval().forward_detect(images, conf=0.0)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_torchvision_builder_names_and_backbones_build_offline(hf_dirs: dict[str, Path]) -> None:
    images, targets = _batch()
    variants = [("tv:fasterrcnn_mobilenet_v3_large_320_fpn", {}), ("tv:fasterrcnn", {"backbone": "mobilenet_v3_large"})]
    for name, kwargs in variants:
        model = create(name, task="detect", num_classes=C, img_size=S, **kwargs)
        assert torch.isfinite(model.forward_loss(images, targets)["loss"])
        assert len(model.eval().forward_detect(images, conf=0.0)) == 2


def test_tv_errors_name_the_problem(hf_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="did you mean tv:fasterrcnn"):
        create("tv:fasterrcnnn", task="detect", num_classes=C)
    with pytest.raises(ModelError, match="fixes its backbone"):
        create("tv:retinanet_resnet50_fpn", task="detect", num_classes=C, backbone="resnet18")
    with pytest.raises(ModelError, match="not supported"):
        create("tv:retinanet", task="detect", num_classes=C, backbone="mobilenet_v3_large")
    with pytest.raises(ModelError, match="img_size >= 268"):
        create("tv:ssd300_vgg16", task="detect", num_classes=C, img_size=S)
    with pytest.raises(ModelError, match="no tv: model"):
        create("tv:fasterrcnn", task="classify", num_classes=C)
    model = _make("tv:retinanet", hf_dirs)
    images, targets = _batch()
    targets[1] = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([C]), "image_id": 7}
    with pytest.raises(DatasetError, match=r"image 7.*outside 0\.\.2"):
        model.forward_loss(images, targets)
    with pytest.raises(ModelError, match="eval mode"):
        model.forward_detect(images)


@pytest.mark.parametrize("name", HF)
def test_hf_detector_rebuilds_from_config_dict(name: str, hf_dirs: dict[str, Path]) -> None:
    model = _make(name, hf_dirs).eval()
    assert model.model.config.id2label == {0: "a", 1: "b", 2: "c"}
    config = json.loads(json.dumps(model.config_dict()))  # what a checkpoint stores
    twin = create("hf:gone/away/dir", task="detect", hf_config=config, num_classes=C).eval()
    images = _batch()[0]
    twin.load_state_dict(model.state_dict())
    for a, b in zip(model.forward_detect(images, conf=0.0), twin.forward_detect(images, conf=0.0)):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_hf_detector_normalises_with_the_saved_image_processor(tmp_path: Path) -> None:
    _tiny_hf("detr").save_pretrained(tmp_path)
    DetrImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(tmp_path)
    model = create(f"hf:{tmp_path}", task="detect", num_classes=C)
    assert model.pixel_mean.flatten().tolist() == [0.5] * 3 and model.pixel_std.flatten().tolist() == [0.25] * 3
    assert model.config_dict()["optik_data_config"]["std"] == [0.25] * 3


def test_hf_detect_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        create(f"hf:{tmp_path / 'missing'}", task="detect", num_classes=C)
    with pytest.raises(ModelError, match="backbone comes from the transformers config"):
        create(f"hf:{tmp_path}", task="detect", num_classes=C, backbone="resnet18")
    with pytest.raises(ModelError, match="model_type"):
        create("hf:x", task="detect", num_classes=C, hf_config={"d_model": 32})
