"""Semantic segmentation models (U-Net, semantic FPN, U-Net on timm backbones, torchvision adapters) and SegmentationLoss:
any input size, registry names, weights round-trip and head transfer, a tiny overfit, losses vs
hand computations and torch's cross_entropy."""

from __future__ import annotations

import time
import warnings

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.models import segmentation as tvs

from optik.errors import ConfigError, ModelError
from optik.models import create, list_models, load_weights, model_data_config
from optik.models.segment.fpn import fpn as fpn_builder
from optik.models.segment.losses import SegmentationLoss, cross_entropy, dice_loss, focal_loss

SMALL_BB = "timm:mobilenetv3_small_050"  # a fast timm backbone for the FPN tests
# (name, kwargs) of every small model; the tv: ones are the fast torchvision builders.
MODELS = [
    ("unet_s", {}),
    ("unet_s", {"upsample": "bilinear", "widths": (8, 16, 32)}),
    ("fpn", {"backbone": SMALL_BB, "fpn_dim": 32, "head_dim": 32}),
    ("unet_timm", {"backbone": SMALL_BB, "decoder_channels": (32, 16, 16, 8)}),
    ("tv:lraspp_mobilenet_v3_large", {}),
]
IDS = ["unet_s", "unet_bilinear", "fpn", "unet_timm", "tv_lraspp"]


def _build(name: str, num_classes: int = 3, **kwargs) -> torch.nn.Module:
    return create(name, task="semantic", num_classes=num_classes, img_size=64, **kwargs)


def _head_keys(model: torch.nn.Module) -> set[str]:
    head = model.get_classifier()
    prefix = next(n for n, m in model.named_modules() if m is head)
    return {k for k in model.state_dict() if k.startswith(prefix + ".")}


def test_registered_names_build() -> None:
    assert {"unet", "unet_s", "unet_m", "fpn", "unet_timm"} <= set(list_models(task="semantic"))
    for name in ("unet", "unet_s", "unet_m", "fpn"):
        model = _build(name).eval()
        assert model.num_classes == 3 and model.default_cfg["input_size"] == (3, 64, 64)
        with torch.no_grad():
            assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    n_params = sum(p.numel() for p in _build("unet_s").parameters())
    assert 1e6 < n_params < 3e6  # (8, 16, 32, 64, 128, 256): ~2.0 M
    with pytest.raises(ModelError, match="num_classes"):
        _build("unet_s", num_classes=0)
    with pytest.raises(ModelError, match="upsample"):
        _build("unet_s", upsample="nearest")


@pytest.mark.parametrize(("name", "kwargs"), MODELS, ids=IDS)
def test_any_input_size_and_gradients(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = _build(name, **kwargs)
    for h, w in ((33, 47), (32, 32)):
        x = torch.rand(2, 3, h, w)
        out = model(x)
        assert out.shape == (2, 3, h, w)
    SegmentationLoss("ce+dice")(out, torch.randint(0, 3, (2, 32, 32)))["loss"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"{name}: parameters outside the graph: {dead[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    cfg = model_data_config(model)
    assert len(cfg["mean"]) == 3 and cfg["input_size"] == (3, 64, 64)
    assert not any(k in ("mean", "std") for k in model.state_dict())  # normalisation is not a weight


@pytest.mark.parametrize(("name", "kwargs"), MODELS, ids=IDS)
def test_weights_round_trip_and_head_transfer(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    src = _build(name, **kwargs).eval()
    twin = _build(name, **src.config_dict()).eval()  # config_dict rebuilds the architecture
    assert load_weights(twin, src.state_dict()) == []
    x = torch.rand(2, 3, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), src(x))

    other = _build(name, num_classes=5, **src.config_dict())
    skipped = load_weights(other, src.state_dict())
    assert skipped and set(skipped) <= _head_keys(other)  # only the classifier is left behind
    own = other.state_dict()
    for k, v in src.state_dict().items():
        if k not in skipped:
            torch.testing.assert_close(own[k], v)


def test_unet_config_and_padding() -> None:
    model = _build("unet_s", widths=(8, 16, 32, 64, 128), upsample="bilinear", drop_rate=0.1)
    assert model.config_dict() == {"widths": (8, 16, 32, 64, 128), "upsample": "bilinear", "drop_rate": 0.1}
    assert model.stride == 16
    model.eval()
    x = torch.rand(1, 3, 50, 50)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 50, 50)
    # Traced once at 64 px, the pad/crop arithmetic still follows the input shape (ONNX-friendly).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(model, torch.rand(1, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_fpn_backbone_config_and_pretrained_file(tmp_path) -> None:
    model = _build("fpn", backbone=SMALL_BB, fpn_dim=32, head_dim=32)
    assert model.config_dict()["backbone"] == SMALL_BB
    assert model.out_stride == 4 and model.stride == 32
    # A timm classifier checkpoint loads into the feature backbone through timm's own loading code.
    classifier = timm.create_model(SMALL_BB.removeprefix("timm:"), num_classes=10)
    path = tmp_path / "bb.pth"
    torch.save(classifier.state_dict(), path)
    loaded = _build("fpn", backbone=SMALL_BB, backbone_pretrained=str(path), fpn_dim=32, head_dim=32)
    torch.testing.assert_close(loaded.backbone.conv_stem.weight, classifier.conv_stem.weight)
    assert "backbone_pretrained" not in loaded.config_dict()
    # The builder also takes `pretrained` (for the backbone), for a registry that passes it through.
    direct = fpn_builder(num_classes=3, backbone=SMALL_BB, pretrained=str(path), fpn_dim=32, head_dim=32)
    torch.testing.assert_close(direct.backbone.conv_stem.weight, classifier.conv_stem.weight)
    with pytest.raises(ModelError, match="not found"):
        _build("fpn", backbone=SMALL_BB, backbone_pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ModelError, match="timm:<name>"):
        _build("fpn", backbone="resnet18")
    with pytest.raises(ModelError, match="no such model"):
        _build("fpn", backbone="timm:not_a_model")


def test_unet_timm_decoder_levels_and_errors() -> None:
    model = _build("unet_timm", backbone=SMALL_BB, decoder_channels=(32, 16))  # a short tuple is extended by halving
    assert model.config_dict() == {"backbone": SMALL_BB, "decoder_channels": (32, 16, 8, 8), "drop_rate": 0.0}
    assert (model.stride, model.out_stride) == (32, 2) and len(model.decoder) == 4
    # Each decoder block merges the next finer backbone level: its input is the coarser block + that level.
    channels = model.backbone.feature_info.channels()
    assert [b.conv[0][0].in_channels for b in model.decoder] == [288 + 24, 32 + 16, 16 + 8, 8 + 16] == [
        c_in + c_skip for c_in, c_skip in zip([channels[-1], 32, 16, 8], channels[-2::-1])
    ]
    default = _build("unet_timm", backbone=SMALL_BB)
    assert default.config_dict()["decoder_channels"] == (128, 64, 32, 16)
    # The logits of a stride-2 decoder come back to the input size (odd sizes cropped after padding).
    with torch.no_grad():
        assert default.eval()(torch.rand(1, 3, 45, 61)).shape == (1, 3, 45, 61)
    with pytest.raises(ModelError, match="decoder_channels"):
        _build("unet_timm", backbone=SMALL_BB, decoder_channels=(32, 16, 8, 8, 8))
    with pytest.raises(ModelError, match="timm:<name>"):
        _build("unet_timm", backbone="mobilenetv3_small_050")


def test_unet_timm_pretrained_backbone_from_converted_file(lite0_weights) -> None:
    """The ImageNet EfficientNet-Lite0 of ``optik models convert`` (an optik .safetensors) initialises the
    encoder through timm's loader: every backbone tensor equals the file's, the decoder is fresh."""
    from safetensors.torch import load_file

    ref = load_file(str(lite0_weights))
    model = create("unet_timm", task="semantic", num_classes=4, pretrained=str(lite0_weights))
    own = model.backbone.state_dict()
    shared = [k for k in own if k in ref]
    assert len(shared) > 200 and all(torch.equal(own[k], ref[k]) for k in shared)
    assert model.config_dict()["backbone"] == "timm:tf_efficientnet_lite0" and "backbone_pretrained" not in model.config_dict()
    # The Lite weights' own input statistics (mean = std = 0.5), not ImageNet's, normalise the input.
    assert model.default_cfg["mean"] == (0.5, 0.5, 0.5) and model.default_cfg["std"] == (0.5, 0.5, 0.5)


def test_tv_segmenters(tmp_path) -> None:
    model = _build("tv:deeplabv3_mobilenet_v3_large").eval()
    assert model.model.aux_classifier is None
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3, 64, 64)
    # A bare torchvision checkpoint (21 classes, with its aux head) loads; the class conv is skipped.
    ref = tvs.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    loaded = _build("tv:deeplabv3_mobilenet_v3_large", pretrained=str(tmp_path / "tv.pth"))
    torch.testing.assert_close(loaded.model.classifier[0].project[0].weight, ref.classifier[0].project[0].weight)
    assert loaded.get_classifier().out_channels == 3

    start = time.perf_counter()
    big = _build("tv:fcn_resnet50")
    assert big.get_classifier().out_channels == 3 and big.model.aux_classifier is None
    assert time.perf_counter() - start < 30  # builds only (no forward: 33 M params)
    with pytest.raises(ModelError, match="did you mean"):
        _build("tv:deeplabv3_resnet")
    with pytest.raises(ModelError, match="in_chans"):
        create("tv:lraspp_mobilenet_v3_large", task="semantic", num_classes=3, in_chans=1)


def _scene(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey image with a red rectangle (class 1) and a green circle (class 2), and its mirror image."""
    img = np.full((size, size, 3), 128, np.uint8)
    cv2.rectangle(img, (size // 8, size // 6), (size // 2, size * 5 // 8), (230, 40, 40), -1)
    cv2.circle(img, (size * 2 // 3, size * 2 // 3), size // 5, (40, 200, 40), -1)
    sem = np.zeros((size, size), np.int64)
    sem[(img == (230, 40, 40)).all(-1)] = 1
    sem[(img == (40, 200, 40)).all(-1)] = 2
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    y = torch.from_numpy(sem)[None]
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y.flip(-1)])


def test_unet_s_overfits_one_scene() -> None:
    torch.manual_seed(0)
    x, y = _scene()
    model = _build("unet_s")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = SegmentationLoss("ce+dice")
    for _ in range(20):
        loss = criterion(model(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.98  # batch statistics
        model.eval()  # running statistics have seen only 20 updates: a looser bar
        assert (model(x).argmax(1) == y).float().mean() > 0.9


# --- losses ------------------------------------------------------------------------------------


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    return logits, target


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ce_matches_torch(batch, weighted: bool, smoothing: float) -> None:
    logits, target = batch
    weight = torch.tensor([0.5, 1.0, 2.0, 0.3]) if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255, label_smoothing=smoothing)
    got = SegmentationLoss("ce", class_weights=weight, label_smoothing=smoothing)(logits, target)
    torch.testing.assert_close(got["ce"], expected)
    torch.testing.assert_close(got["loss"], expected)
    # γ = 0 makes the focal loss cross-entropy, weights and all.
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, weight=weight), F.cross_entropy(
        logits, target, weight=weight, ignore_index=255))  # fmt: skip


def test_focal_by_hand() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    p = torch.softmax(logits[0, :, 0], dim=0)[0]  # probability of class 0 at both pixels
    expected = (-(1 - p) ** 2 * p.log()).mean()
    torch.testing.assert_close(focal_loss(logits, target, gamma=2.0), expected)


def test_dice_by_hand_with_ignore_and_absent_classes() -> None:
    # 1 image, 3 classes, 4 pixels: targets 0, 1, ignore, 0; class 2 is in neither target nor argmax.
    logits = torch.tensor([[4.0, 0.0, 1.0, 3.0], [0.0, 3.0, 2.0, 0.0], [-1.0, -1.0, 5.0, -1.0]]).view(1, 3, 1, 4)
    target = torch.tensor([[[0, 1, 255, 0]]])
    p = logits.softmax(1)[0, :, 0]  # (3, 4)
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    onehot = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    dice = [2 * (p[c] * onehot[c] * valid).sum() / ((p[c] * valid).sum() + onehot[c].sum()) for c in range(3)]
    expected = ((1 - dice[0]) + (1 - dice[1])) / 2  # class 2 absent from both: excluded
    torch.testing.assert_close(dice_loss(logits, target), expected)
    out = SegmentationLoss("dice")(logits, target)
    torch.testing.assert_close(out["loss"], expected)
    # Class weights give a weighted mean over the present classes.
    weighted = dice_loss(logits, target, weight=torch.tensor([3.0, 1.0, 1.0]))
    torch.testing.assert_close(weighted, (3 * (1 - dice[0]) + (1 - dice[1])) / 4)
    # A confident, correct prediction has Dice loss ~0.
    perfect = F.one_hot(torch.tensor([[[0, 1, 2, 0]]]), 3).permute(0, 3, 1, 2).float() * 40
    assert dice_loss(perfect, target) < 1e-6


@pytest.mark.parametrize("kind", ["ce", "dice", "focal", "ce+dice", "focal+dice"])
def test_all_ignore_is_zero_and_gradients_finite(batch, kind: str) -> None:
    logits, target = batch
    criterion = SegmentationLoss(kind, class_weights=[1.0, 2.0, 1.0, 0.5])
    out = criterion(logits, target)
    assert set(out) == {"loss", *kind.split("+")}
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

    logits.grad = None
    void = criterion(logits, torch.full_like(target, 255))
    assert all(v.item() == 0.0 for v in void.values())
    void["loss"].backward()
    assert torch.isfinite(logits.grad).all()
    assert cross_entropy(logits, torch.full_like(target, 255)).item() == 0.0


def test_loss_errors(batch) -> None:
    logits, target = batch
    with pytest.raises(ConfigError, match="unknown segmentation loss"):
        SegmentationLoss("lovasz")
    with pytest.raises(ConfigError, match="class_weights"):
        SegmentationLoss("ce", class_weights=[1.0, 2.0])(logits, target)
    with pytest.raises(ValueError, match="target"):
        SegmentationLoss("ce")(logits, target[:, :3])
