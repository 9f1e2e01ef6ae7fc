"""Instance / panoptic / universal segmenters: ``tv:maskrcnn``, native ``mask2former`` / ``oneformer`` and
``hf:<dir>`` speak the Segmenter protocol — forward_loss on optik targets, forward_predict per sub-task at
input size, config_dict rebuilds, save_pretrained dirs load with a new class count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import masks_to_boxes

pytest.importorskip("transformers")
from transformers import SegformerConfig, SegformerForSemanticSegmentation  # noqa: E402

from optik.errors import DatasetError, ModelError  # noqa: E402
from optik.models import create, list_models  # noqa: E402
from optik.models.segment.universal import tiny_config  # noqa: E402

C, S = 3, 64
ISTHING = [True, True, False]  # two shapes + one stuff class
ARCHS = ["mask2former", "oneformer"]


def _scene(s: int = S) -> tuple[torch.Tensor, dict]:
    """One image with a square (class 0), a disc (class 1) and the rest 'stuff' (class 2)."""
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    square = (yy >= s // 8) & (yy < s // 2) & (xx >= s // 6) & (xx < s // 2)
    disc = (yy - 0.7 * s) ** 2 + (xx - 0.65 * s) ** 2 < (0.2 * s) ** 2
    stuff = ~(square | disc)
    img = torch.full((3, s, s), 0.4)
    img[:, square] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    img[:, disc] = torch.tensor([0.1, 0.2, 0.9])[:, None]
    masks = torch.stack([square, disc, stuff])
    return img, {"masks": masks, "labels": torch.tensor([0, 1, 2]), "boxes": masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1]),
                 "iscrowd": torch.tensor([0, 0, 0])}  # fmt: skip


def _batch(s: int = S) -> tuple[torch.Tensor, list[dict]]:
    img, t = _scene(s)
    crowd = {**t, "iscrowd": torch.tensor([0, 1, 0])}  # the disc is crowd: not a training target
    empty = {"masks": torch.zeros(0, s, s, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.long),
             "boxes": torch.zeros(0, 4), "iscrowd": torch.zeros(0, dtype=torch.long)}  # fmt: skip
    return torch.stack([img, img.flip(-1), torch.rand(3, s, s)]), [t, crowd, empty]


def _things_only(t: dict) -> dict:
    return {k: v[:2] for k, v in t.items()}


def _check(out, subtask: str, b: int, s: int, c: int = C) -> None:
    if subtask == "semantic":
        assert out.shape == (b, c, s, s) and torch.isfinite(out).all()
        return
    assert len(out) == b
    for p in out:
        n = len(p["labels"])
        assert p["masks"].shape == (n, s, s) and p["scores"].shape == (n,)
        assert (p["labels"] >= 0).all() and (p["labels"] < c).all()
        assert (p["scores"][:-1] >= p["scores"][1:]).all()  # best first
        if subtask == "instance":
            assert p["masks"].dtype == torch.float32 and p["boxes"].shape == (n, 4)
            assert (p["masks"] >= 0).all() and (p["masks"] <= 1).all()
        else:
            assert p["masks"].dtype == torch.bool and (p["masks"].sum(0) <= 1).all()  # non-overlapping


def _grads_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(grads) and all(torch.isfinite(g).all() for g in grads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)


# --- tv:maskrcnn -----------------------------------------------------------------------------------
def test_maskrcnn_loss_predict_and_rebuild() -> None:
    model = create("tv:maskrcnn", task="instance", num_classes=2, img_size=S)
    images, targets = _batch()
    losses = model.forward_loss(images, [_things_only(t) for t in targets])
    assert {"loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert _grads_finite(model)

    model.eval()
    preds = model.forward_predict(images[:2], conf=0.0, max_det=5)
    _check(preds, "instance", 2, S, 2)
    assert model.subtask == "instance" and model.config_dict() == {"backbone": "resnet18", "frozen_bn": False}
    twin = create("tv:maskrcnn", task="instance", num_classes=2, img_size=S, **model.config_dict())
    twin.load_state_dict(model.state_dict())
    again = twin.eval().forward_predict(images[:2], conf=0.0, max_det=5)
    for a, b in zip(preds, again):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_maskrcnn_names_and_errors() -> None:
    with pytest.raises(ModelError, match="maskrcnn"):
        create("tv:maskrcnnn", task="instance", num_classes=2)
    with pytest.raises(ModelError, match="fixes its backbone"):
        create("tv:maskrcnn_resnet50_fpn", task="instance", num_classes=2, backbone="resnet18")
    model = create("tv:maskrcnn", task="instance", num_classes=2)
    _, t = _scene()
    with pytest.raises(DatasetError, match="outside"):
        model.forward_loss(torch.rand(1, 3, S, S), [{**_things_only(t), "labels": torch.tensor([0, 5])}])


@pytest.mark.slow
def test_maskrcnn_overfits_one_image() -> None:
    img, t = _scene()
    t = _things_only(t)
    model = create("tv:maskrcnn", task="instance", num_classes=2, img_size=S)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        model.forward_loss(img[None], [t])["loss"].backward()
        opt.step()
    pred = model.eval().forward_predict(img[None], conf=0.05)[0]
    for k in range(2):
        hits = (pred["labels"] == k).nonzero()
        assert len(hits), f"class {k} not found"
        m, gt = pred["masks"][hits[0, 0]] > 0.5, t["masks"][k]
        assert (m & gt).sum() / (m | gt).sum() > 0.5


# --- mask2former / oneformer (native) ------------------------------------------------------------------
def test_registered_for_three_subtasks() -> None:
    for subtask in ("semantic", "instance", "panoptic"):
        assert set(ARCHS) <= set(list_models(task=subtask))


@pytest.mark.parametrize("arch", ARCHS)
def test_universal_loss_backward(arch: str) -> None:
    model = create(arch, task="panoptic", num_classes=C, img_size=S, isthing=ISTHING)
    images, targets = _batch()
    losses = model.forward_loss(images, targets)
    assert {"loss", "loss_cross_entropy", "loss_mask", "loss_dice"} <= set(losses)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert _grads_finite(model)
    sem = {"semantic": torch.where(targets[0]["masks"][0], 0, 2)}  # a class map instead of masks
    assert torch.isfinite(model.forward_loss(images[:1], [sem])["loss"])


@pytest.mark.parametrize("arch", ARCHS)
def test_universal_predict_each_subtask(arch: str) -> None:
    s = 40  # not a multiple of 32: padded inside, cropped back
    images = _batch(s)[0][:2]
    base = create(arch, task="panoptic", num_classes=C, isthing=ISTHING).eval()
    for subtask in ("semantic", "instance", "panoptic"):
        model = create(arch, task=subtask, num_classes=C, isthing=ISTHING if subtask == "panoptic" else None)
        model.load_state_dict(base.state_dict())
        out = model.eval().forward_predict(images, conf=0.0 if subtask == "instance" else 0.05)
        _check(out, subtask, 2, s)
    pan = base.forward_predict(images, conf=0.0)  # untrained, a zero threshold still gives segments
    _check(pan, "panoptic", 2, s)
    assert model.config_dict()["hf_config"]["model_type"] == arch


@pytest.mark.parametrize("arch", ARCHS)
def test_universal_config_dict_rebuild(arch: str) -> None:
    model = create(arch, task="instance", num_classes=C, img_size=S, num_queries=8).eval()
    twin = create(arch, task="instance", num_classes=C, img_size=S, **model.config_dict()).eval()
    assert twin.model.config.num_queries == 8
    twin.load_state_dict(model.state_dict())
    images = _batch(32)[0][:1]
    a, b = model.forward_predict(images, conf=0.0), twin.forward_predict(images, conf=0.0)
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])


# --- hf:<dir> ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_hf_dir_new_class_count(arch: str, tmp_path: Path) -> None:
    from transformers import AutoModelForUniversalSegmentation

    source = AutoModelForUniversalSegmentation.from_config(tiny_config(arch, 5))
    source.save_pretrained(tmp_path)
    model = create(f"hf:{tmp_path}", task="panoptic", subtask="panoptic", num_classes=C, img_size=S,
                   class_names=["square", "disc", "sky"], isthing=ISTHING)  # fmt: skip
    assert model.num_classes == C and model.model.config.id2label[2] == "sky"
    assert model.get_classifier().out_features == C + 1
    loaded = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
    kept = [k for k, v in source.state_dict().items()  # the loss's own constants (logit_scale) are re-initialised
            if k in loaded and v.shape == loaded[k].shape and not k.startswith("criterion.")]
    assert len(kept) > 50 and all(torch.equal(source.state_dict()[k], loaded[k]) for k in kept)  # weights, not init
    images, targets = _batch(32)
    assert torch.isfinite(model.forward_loss(images, targets)["loss"])
    model.eval()
    twin = create("hf:anything", task="panoptic", subtask="panoptic", num_classes=C, hf_config=model.config_dict(),
                  isthing=ISTHING).eval()  # fmt: skip
    twin.load_state_dict(model.state_dict())
    a, b = model.forward_predict(images, conf=0.0), twin.forward_predict(images, conf=0.0)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_hf_segformer_semantic(tmp_path: Path) -> None:
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 1], decoder_hidden_size=16, num_labels=7)  # fmt: skip
    SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path)
    model = create(f"hf:{tmp_path}", task="semantic", num_classes=4)
    assert model.subtask == "semantic" and not hasattr(model, "forward_loss")  # a plain logits model
    assert model(torch.rand(2, 3, 40, 40)).shape == (2, 4, 40, 40)
    with pytest.raises(ModelError, match="semantic model"):
        create(f"hf:{tmp_path}", task="instance", subtask="instance", num_classes=4)


# --- post-processing == transformers' image processor ---------------------------------------------------
def _fake_outputs(side: int = 384) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (label, box): two things, two pieces of one stuff class (fused), a "no object", a weak one,
    and one hidden under a better query (fails the 80% overlap rule). 384² is the processors' working size."""
    plan = [(0, (0, 0, 150, 150), 5.0), (1, (200, 200, 380, 300), 4.0), (2, (0, 200, 150, 384), 4.0),
            (2, (300, 0, 384, 150), 3.0), (C, (160, 0, 280, 100), 5.0), (0, (160, 160, 190, 190), -1.0),
            (1, (10, 10, 120, 120), 2.0)]  # fmt: skip
    cls = torch.zeros(len(plan), C + 1)
    masks = torch.full((len(plan), side, side), -6.0)
    for q, (label, (y0, x0, y1, x1), logit) in enumerate(plan):
        cls[q, label] = logit
        masks[q, y0:y1, x0:x1] = 6.0
    return cls, masks


def test_panoptic_postprocess_matches_transformers() -> None:
    from transformers import Mask2FormerImageProcessor
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

    model = create("mask2former", task="panoptic", num_classes=C, isthing=ISTHING)
    cls, masks = _fake_outputs()
    ours = model._panoptic(cls.softmax(-1), masks, conf=0.3, max_det=100)
    out = Mask2FormerForUniversalSegmentationOutput(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    ref = Mask2FormerImageProcessor().post_process_panoptic_segmentation(out, threshold=0.3, label_ids_to_fuse={2})[0]
    seg, info = ref["segmentation"], {s["id"]: s["label_id"] for s in ref["segments_info"]}
    assert len(ours["labels"]) == len(info) > 1
    expected = sorted((label, int((seg == i).sum())) for i, label in info.items())
    assert sorted(zip(ours["labels"].tolist(), ours["masks"].flatten(1).sum(1).tolist())) == expected
    assert (ours["masks"].sum(0) <= 1).all()


def test_instance_postprocess_matches_transformers() -> None:
    from transformers import Mask2FormerImageProcessor
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

    model = create("mask2former", task="instance", num_classes=C)
    cls, masks = _fake_outputs()
    ours = model._instances(cls.softmax(-1)[:, :-1], masks, conf=0.2, max_det=100)
    out = Mask2FormerForUniversalSegmentationOutput(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    ref = Mask2FormerImageProcessor().post_process_instance_segmentation(out, threshold=0.2, return_binary_maps=True)[0]
    # Same (score, label, mask) set; ties make the order between equal scores arbitrary.
    triples = zip(ours["scores"], ours["labels"], ours["masks"])
    mine = sorted((round(float(sc), 5), int(lb), int((m > 0.5).sum())) for sc, lb, m in triples)
    theirs = sorted((round(i["score"], 5), i["label_id"], int(m.sum())) for i, m in zip(ref["segments_info"], ref["segmentation"]))
    assert len(mine) > 3 and mine == theirs
    assert (ours["scores"][:-1] >= ours["scores"][1:]).all()
