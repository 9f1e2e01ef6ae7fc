"""Classification Accuracy Score (Ravuri & Vinyals 2019): how useful generated images are as training
data. An optik classifier is trained on generated images with the labels they were generated for, then
tested on *real* images. It trains through the engine, so it lives here, not in :mod:`optik.metrics`.

>>> classification_accuracy_score(to_uint8(x), y, real_x, real_y, ["0", "1"], epochs=5)["CAS"]  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor


def classification_accuracy_score(
    fake_images_uint8: Tensor | np.ndarray,
    fake_labels: Any,
    real_images_uint8: Tensor | np.ndarray,
    real_labels: Any,
    classes: list[str],
    *,
    model: str = "cnn",
    epochs: int = 10,
    imgsz: int = 32,
    project: str | Path | None = None,
    seed: int = 0,
    **train_args: Any,
) -> dict[str, Any]:
    """Train a classifier on generated images, measure its top-1 accuracy on real ones.

    Images: uint8 tensors (N, C, H, W) or arrays (N, H, W, C). Training goes through optik's
    :class:`~optik.engine.trainer.Trainer` (in-memory datasets, real images as the val split, no
    plots); ``train_args`` are extra train keys (e.g. ``hflip=0.0``, ``batch=64``). ``project=None``
    trains in a temporary directory that is removed afterwards.

    Returns ``{"CAS": top-1 on real of the final weights, "CAS_best": the best epoch's top-1
    (optimistic: selected on the same real images), "n_fake", "n_real", "run_dir" (None if temporary)}``.
    """
    from optik.config import build_config
    from optik.data.dataset import ClassificationDataset
    from optik.data.sources import DataSplits
    from optik.engine.trainer import Trainer

    fake = ClassificationDataset(fake_images_uint8, _labels(fake_labels), classes, name="generated")
    real = ClassificationDataset(real_images_uint8, _labels(real_labels), classes, name="real")
    data = DataSplits(fake, real, list(classes), description=f"CAS: {len(fake)} generated / {len(real)} real images")
    tmp = tempfile.TemporaryDirectory(prefix="optik-cas-") if project is None else None
    try:
        overrides = {
            "data": data, "model": model, "epochs": epochs, "imgsz": imgsz, "seed": seed, "plots": False,
            "val": True, "project": str(project if project is not None else tmp.name), "name": "cas", **train_args,
        }  # fmt: skip
        result = Trainer(build_config("classify", "train", overrides)).fit()
        with open(Path(result["run_dir"]) / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        return {
            "CAS": float(last["val/top1"]), "CAS_best": float(result["metrics"]["top1"]),
            "n_fake": len(fake), "n_real": len(real), "run_dir": None if tmp else result["run_dir"],
        }  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()


def _labels(y: Any) -> list[int]:
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    return [int(v) for v in np.asarray(y).reshape(-1)]


__all__ = ["classification_accuracy_score"]
