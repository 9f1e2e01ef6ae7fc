"""timm adapter: any timm architecture through create("timm:<name>", …)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from optik.errors import ModelError
from optik.models import create, freeze_backbone, model_data_config, split_head


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:convnext_atto"])
def test_timm_convnets_grey_input(name: str) -> None:
    model = create(name, num_classes=5, in_chans=1, img_size=32)  # convnets drop img_size
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5)
    out.sum().backward()
    cfg = model_data_config(model)
    assert cfg["input_size"] == (1, 32, 32) and len(cfg["mean"]) == 1


def test_timm_vit_takes_img_size() -> None:
    model = create("timm:vit_tiny_patch16_224", num_classes=5, img_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.patch_embed.img_size == (32, 32)
    assert model_data_config(model)["input_size"] == (3, 32, 32)


def test_unknown_timm_name_suggests() -> None:
    with pytest.raises(ModelError, match="timm:resnet18"):
        create("timm:resnet181")


def test_timm_split_head_is_get_classifier() -> None:
    model = create("timm:convnext_atto", num_classes=5)
    _, head = split_head(model)
    assert {id(p) for p in head} == {id(p) for p in model.head.fc.parameters()}
    freeze_backbone(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.fc.weight", "head.fc.bias"}


def test_timm_pretrained_file_skips_head(tmp_path: Path) -> None:
    source = create("timm:resnet18", num_classes=10, in_chans=1)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    model = create("timm:resnet18", num_classes=5, in_chans=1, pretrained=str(tmp_path / "r18.safetensors"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (5, 512)
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_pretrained_hub_id_goes_through_timm_and_fails_clearly_offline(monkeypatch):
    import huggingface_hub.constants

    # The env var is read at import time; patch the constant so the hub fails fast, not after retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="resnet18.*hub"):
        create("timm:resnet18", num_classes=3, pretrained="timm/resnet18.a1_in1k")
