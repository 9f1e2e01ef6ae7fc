"""Shared fixtures: tiny procedural data and one tiny trained run reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

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
