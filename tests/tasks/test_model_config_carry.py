"""A run started from a weights file keeps the architecture arguments the file was built with (``model_config``),
also for models without ``config_dict()`` (timm), so the run's own weights rebuild the same network."""

from __future__ import annotations

import pytest
import torch

from optik import Model, models
from optik.weights import read_meta, save_weights

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def test_training_from_a_timm_weights_file_keeps_its_model_config(tmp_path) -> None:
    pytest.importorskip("timm")
    classes = [str(i) for i in range(10)]
    torch.manual_seed(0)
    net = models.create("timm:vit_tiny_patch16_224", task="classify", num_classes=10, img_size=32, **TINY_VIT)
    seed = tmp_path / "seed.safetensors"
    save_weights(net.state_dict(), seed, {"model": "timm:vit_tiny_patch16_224", "task": "classify", "classes": classes,
                                          "model_config": TINY_VIT, "imgsz": 32})  # fmt: skip
    Model(str(seed)).train(data="digits", epochs=1, imgsz=32, batch=64, plots=False, project=str(tmp_path), name="run")
    best = tmp_path / "classify" / "run" / "weights" / "best.safetensors"
    meta = read_meta(best)
    assert meta["model_config"] == TINY_VIT
    # …so the run's weights load back into the same small ViT (the default ViT would not fit them).
    rebuilt = Model(str(best)).predict(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy())
    assert len(rebuilt[0].probs.data) == 10
