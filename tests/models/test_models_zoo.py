"""Native zoo: every architecture maps (B, C, H, W) to (B, num_classes) logits via its pooled features."""

from __future__ import annotations

import pytest
import torch

from optik.errors import ModelError
from optik.models import create, model_data_config

NATIVE = ["mlp", "cnn", "vgg", "resnet", "mobilenet", "tiny_vit"]


def _build(name: str, in_chans: int = 3, num_classes: int = 7):
    kwargs = {"patch_size": 4} if name == "tiny_vit" else {}
    return create(name, num_classes=num_classes, in_chans=in_chans, img_size=32, **kwargs)


@pytest.mark.parametrize("in_chans", [3, 1])
@pytest.mark.parametrize("name", NATIVE)
def test_forward_backward_shapes(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    model = _build(name, in_chans)
    x = torch.randn(2, in_chans, 32, 32)

    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 7)

    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters outside the graph: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # forward is head(forward_features) — in eval mode both paths see identical BN/dropout behaviour
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.forward_features(x)))


@pytest.mark.parametrize("name", NATIVE)
def test_eval_output_does_not_depend_on_batch(name: str) -> None:
    # BatchNorm must use running statistics in eval mode: sample 0 alone == sample 0 in a batch.
    model = _build(name).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NATIVE)
def test_data_config_matches_channels(name: str) -> None:
    cfg = model_data_config(_build(name, in_chans=1))
    assert len(cfg["mean"]) == len(cfg["std"]) == 1
    assert 0 < cfg["mean"][0] < 1 and 0 < cfg["std"][0] < 1
    assert cfg["interpolation"] == "bilinear"


def test_num_classes_zero_returns_features() -> None:
    model = create("resnet", num_classes=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


def test_mlp_needs_img_size() -> None:
    with pytest.raises(ModelError, match="img_size"):
        create("mlp", num_classes=3)


def test_conv_models_take_any_size() -> None:
    for name in ("cnn", "resnet", "mobilenet", "vgg"):
        model = create(name, num_classes=3).eval()
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 3)


def test_tiny_vit_grid_and_resized_inputs() -> None:
    model = create("tiny_vit", num_classes=4, img_size=32, patch_size=4)
    assert model.pos_embed.shape[1] == 1 + 8 * 8  # CLS + 8×8 patches
    # Another input size works through resized position embeddings.
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 4)
    # Default patch size gives an 8×8 grid.
    assert create("tiny_vit", num_classes=4, img_size=64).patch_size == 8


def test_tiny_vit_rejects_indivisible_size() -> None:
    with pytest.raises(ModelError, match="patch_size"):
        create("tiny_vit", num_classes=4, img_size=30, patch_size=4)


def test_resnet_blocks_start_as_identity() -> None:
    # The zero-initialised last BN of each basic block makes the residual branch zero at init.
    from optik.models.zoo.resnet import BasicBlock

    model = create("resnet", num_classes=3)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8  # ResNet-18 layout [2, 2, 2, 2]
    assert all(not b.conv2[1].weight.any() for b in blocks)


@pytest.mark.parametrize("name", NATIVE)
def test_export_matches_eager(name: str) -> None:
    # Deployment (ONNX via torch.export, TorchScript) needs a graph-capturable forward.
    model = _build(name).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x))
