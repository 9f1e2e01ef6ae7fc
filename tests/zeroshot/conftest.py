"""A tiny CLIP trained once per session on synthetic:captions (shared by the fine-tuning and DeViSE tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optik import Model

    m = Model("cnn", task="zeroshot")
    m.train(data="synthetic:captions?n=128&val=20", epochs=1, imgsz=32, batch=32, embed_dim=16, text_width=16, text_layers=1,
            text_heads=2, holdout="green:triangle,blue:circle", project=str(tmp_path_factory.mktemp("clip")), plots=False)  # fmt: skip
    return Path(m.run_dir)
