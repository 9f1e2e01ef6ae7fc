"""Patch (dense) features: ``optik embed predict patches=true`` — a CNN's last map / a ViT's patch tokens, one vector
per location, checked against the backbone's own pooled output and timm's forward_features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from optik import models
from optik.config import build_config
from optik.embed.patches import patch_features
from optik.embed.run import predict
from optik.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(out / f"{i}.png")
    return out


def test_cnn_patches_average_to_the_pooled_feature() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for name in ("cnn", "timm:resnet10t"):
        net = models.create(name, task="classify", num_classes=0, img_size=32).eval()
        tokens, grid = patch_features(net, x)
        assert tokens.shape[:2] == (2, grid[0] * grid[1])
        with torch.no_grad():
            pooled = net(x)
        torch.testing.assert_close(tokens.mean(1), pooled, rtol=1e-5, atol=1e-5)  # both heads average-pool this map


def test_vit_patches_are_the_tokens_without_the_class_token() -> None:
    torch.manual_seed(0)
    net = models.create("timm:vit_tiny_patch16_224", task="classify", num_classes=0, img_size=32, patch_size=8, embed_dim=32,
                        depth=1, num_heads=2).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    tokens, grid = patch_features(net, x)
    assert grid == (4, 4) and tokens.shape == (2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(tokens, net.forward_features(x)[:, net.num_prefix_tokens :])


def test_predict_writes_patches_next_to_the_pooled_features(folder: Path, tmp_path: Path) -> None:
    cfg = build_config("embed", "predict", {"model": "cnn", "source": str(folder), "imgsz": 32, "patches": True, "save": True,
                                            "project": str(tmp_path)})  # fmt: skip
    out = predict(cfg)
    saved = load_file(str(Path(out["run_dir"]) / "features.safetensors"))
    info = json.loads((Path(out["run_dir"]) / "index.json").read_text())
    h, w = info["patch_grid"]
    assert saved["patches"].shape == (3, h * w, saved["features"].shape[1])
    torch.testing.assert_close(saved["patches"].mean(1), saved["features"], rtol=1e-4, atol=1e-5)
    plain = predict(build_config("embed", "predict", {"model": "cnn", "source": str(folder), "imgsz": 32}))
    assert "patches" not in plain and torch.equal(plain["features"], out["features"])


def test_models_without_a_spatial_map_are_refused() -> None:
    mlp = models.create("mlp", task="classify", num_classes=0, img_size=8)
    with pytest.raises(ConfigError, match="patches"):
        patch_features(mlp, torch.zeros(1, 3, 8, 8))
