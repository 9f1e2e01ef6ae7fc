"""Serve fixtures: tiny trained detect / segment runs (the classify one is ``tiny_run``), PNG bytes
of synthetic images, and a TestClient per served model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DET_DATA = "synthetic:shapes-det?n=16&size=64&classes=2&max_objects=2&seed=0"
SEG_DATA = "synthetic:shapes-seg?n=12&size=32&classes=2&seed=0"


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def shape_png() -> bytes:
    """A 48×40 synthetic shape image (not square: the server must keep the original size)."""
    from optik.data.synthetic import shapes_classification

    imgs, _, _ = shapes_classification(n=3, size=48, classes=3, seed=7)
    return png(np.ascontiguousarray(imgs[1][:40]))


@pytest.fixture(scope="session")
def scene_png() -> bytes:
    from optik.data.synthetic import shapes_detection

    imgs, _, _ = shapes_detection(n=1, size=64, classes=2, max_objects=2, seed=3)
    return png(imgs[0])


@pytest.fixture(scope="session")
def det_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """house_s trained 1 epoch on 16 synthetic scenes (≈3 s)."""
    from optik import Model

    m = Model("house_s", task="detect")
    m.train(data=DET_DATA, epochs=1, imgsz=64, batch=8, mosaic=0.0, plots=False, project=str(tmp_path_factory.mktemp("det")))
    return m.weights


@pytest.fixture(scope="session")
def seg_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """unet_s trained 1 epoch on 12 synthetic semantic scenes (<1 s)."""
    from optik import Model

    m = Model("unet_s", task="segment")
    m.train(data=SEG_DATA, epochs=1, imgsz=32, batch=6, plots=False, project=str(tmp_path_factory.mktemp("seg")))
    return m.weights


def _serve_config(model: str | Path, task: str = "classify", **kw):
    from optik.config import build_config

    return build_config(task, "serve", {"model": str(model), **kw})


@pytest.fixture(scope="session")
def serve_config():
    """``serve_config(model, task, **keys)`` → a validated ServeConfig."""
    return _serve_config


@pytest.fixture()
def make_client():
    """``make_client(model, task, **serve_keys)`` → an entered TestClient (closed after the test)."""
    from fastapi.testclient import TestClient

    from optik.serve.app import create_app

    clients = []

    def make(model, task="classify", **kw):
        c = TestClient(create_app(_serve_config(model, task, **kw)))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)
