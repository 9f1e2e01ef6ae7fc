"""Hugging Face adapter: local transformers classifiers as pixels → logits, rebuildable from config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import AutoModelForImageClassification, ResNetConfig, ViTConfig, ViTImageProcessor  # noqa: E402

from optik.errors import ModelError  # noqa: E402
from optik.models import create, freeze_backbone, model_data_config, split_head  # noqa: E402


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hf_vit")
    cfg = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )
    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(cfg).save_pretrained(path)
    processor = ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3, size={"height": 32, "width": 32})
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hf_resnet")
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    AutoModelForImageClassification.from_config(cfg).save_pretrained(path)
    return path


def test_hf_vit_logits_and_new_head(vit_dir: Path) -> None:
    model = create(f"hf:{vit_dir}", num_classes=5, class_names=list("abcde"))
    assert model.training
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.model.config.id2label[4] == "e"
    # Other input sizes work (position embeddings interpolated).
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 5)


def test_hf_body_weights_come_from_the_directory(vit_dir: Path) -> None:
    saved = AutoModelForImageClassification.from_pretrained(vit_dir)
    model = create(f"hf:{vit_dir}", num_classes=5)
    assert torch.equal(
        model.model.vit.embeddings.patch_embeddings.projection.weight,
        saved.vit.embeddings.patch_embeddings.projection.weight,
    )


def test_hf_data_config_from_image_processor(vit_dir: Path, resnet_dir: Path) -> None:
    cfg = model_data_config(create(f"hf:{vit_dir}", num_classes=5))
    assert cfg["mean"] == pytest.approx((0.5,) * 3) and cfg["std"] == pytest.approx((0.25,) * 3)
    assert cfg["input_size"] == (3, 32, 32)
    # No preprocessor_config.json: ImageNet statistics.
    assert model_data_config(create(f"hf:{resnet_dir}", num_classes=5))["mean"] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("which", ["vit", "resnet"])
def test_hf_rebuild_from_config_dict_reproduces_outputs(which: str, vit_dir: Path, resnet_dir: Path) -> None:
    model = create(f"hf:{vit_dir if which == 'vit' else resnet_dir}", num_classes=5).eval()
    config = json.loads(json.dumps(model.config_dict()))  # what a checkpoint stores
    twin = create("hf:gone/away/dir", hf_config=config, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model(x), twin.eval()(x))  # random init differs…
        twin.load_state_dict(model.state_dict())
        assert torch.equal(model(x), twin(x))  # …until the weights load
    assert model_data_config(twin) == model_data_config(model)


def test_hf_split_head_and_freeze(resnet_dir: Path) -> None:
    model = create(f"hf:{resnet_dir}", num_classes=5)
    backbone, head = split_head(model)
    assert [p.shape for p in head] == [torch.Size([5, 16]), torch.Size([5])]
    assert len(backbone) + len(head) == len(list(model.parameters()))
    freeze_backbone(model)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert all(p.requires_grad == any(p is h for h in head) for p in model.parameters())


def test_hf_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        create(f"hf:{tmp_path / 'missing' / 'model'}", num_classes=2)
    with pytest.raises(ModelError, match="config.json"):
        create(f"hf:{tmp_path}", num_classes=2)


def test_hf_config_without_model_type() -> None:
    with pytest.raises(ModelError, match="model_type"):
        create("hf:x", hf_config={"hidden_size": 8}, num_classes=2)
