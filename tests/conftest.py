"""Shared fixtures: tiny procedural data and one tiny trained run reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores, two xdist workers: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_SHAPES = "synthetic:shapes?n=96&size=32&classes=3&seed=0"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch cnn run on 96 synthetic images (≈3 s); returns the trainer's result dict."""
    from optik.config import build_config
    from optik.engine.trainer import Trainer

    project = tmp_path_factory.mktemp("runs")
    cfg = build_config(
        "classify", "train",
        {"data": TINY_SHAPES, "model": "cnn", "epochs": 2, "imgsz": 32, "batch": 32, "project": str(project)},
    )
    return Trainer(cfg).fit()


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    """An ImageFolder with 2 classes × 6 PNGs (train/ and val/ splits)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(0, 20, (24, 24, 3)) + color, 0, 255).astype("uint8")
                Image.fromarray(a).save(d / f"{i}.png")
    return tmp_path / "imgs"


SAM_S = 64  # tiny SAM input size: 4×4 image embedding, 16×16 low-res masks


def tiny_sam() -> torch.nn.Module:
    """A ~60k-parameter SamModel; weights re-drawn at unit fan-in scale (transformers' SAM init is
    ~1e-10, which gives all-zero logits) and the mask hypernetworks scaled so logits span a few units."""
    from transformers import SamConfig, SamModel

    vision = dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=SAM_S,
                  patch_size=16, window_size=2, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64)  # fmt: skip
    prompt = dict(hidden_size=32, image_size=SAM_S, patch_size=16, mask_input_channels=4)
    decoder = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16)
    torch.manual_seed(0)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and "positional_embedding" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:])))
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(8)
    return model


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory: pytest.TempPathFactory):
    from optik.sam.predictor import processor_for

    d = tmp_path_factory.mktemp("tiny-sam")
    model = tiny_sam()
    model.save_pretrained(d)
    processor_for(model.config).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Random (untrained) `cnn` classifier weights, 3 classes at 32 px: predict / prune / export need only a
    self-describing file, not a trained model."""
    from optik import models
    from optik.weights import save_weights

    torch.manual_seed(0)
    model = models.create("cnn", task="classify", num_classes=3)
    meta = {"task": "classify", "model": "cnn", "classes": ["circle", "square", "triangle"], "imgsz": 32}
    return str(save_weights(model.state_dict(), tmp_path_factory.mktemp("w") / "cnn.safetensors", meta))
