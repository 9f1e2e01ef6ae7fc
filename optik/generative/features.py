"""The feature network behind FID/KID/IS/precision-recall (``features=`` key).

* ``auto`` (default): an optik ``cnn`` classifier trained on the same data at the same size,
  cached under ``<project>/generate/features/`` and reused by later runs on that data. Its FID is
  *dataset-specific*: it ranks models on this data well (its features know the classes), but the
  numbers are not comparable with published Inception-v3 FIDs.
* ``inception:<weights file>``: torchvision's Inception-v3 with the given weights (the usual FID;
  optik never downloads them).
* a classifier's weights / run dir: any optik classifier trained on the data
  (:func:`classifier_features`).

Training and loading classifiers goes through the engine, which is why this lives here and the
feature networks themselves (:mod:`optik.metrics.generative`) stay pure.

>>> extractor = resolve_features(cfg)                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from optik.errors import ConfigError

log = logging.getLogger(__name__)

FEATURE_EPOCHS = 8


def resolve_features(cfg: Any) -> Any:
    """``cfg.features`` → a feature extractor (:mod:`optik.metrics.generative`)."""
    from optik.metrics.generative import InceptionFeatures

    spec = str(getattr(cfg, "features", "auto") or "auto")
    if spec.startswith("inception:"):
        path = Path(spec.split(":", 1)[1])
        if not path.is_file():
            raise ConfigError(f"bad value for 'features': Inception-v3 weights '{path}' not found (optik does not download them)")
        return InceptionFeatures(path)
    if spec != "auto":
        return classifier_features(spec)
    from optik.engine.checkpoint import rng_state, set_rng_state

    # Training the classifier draws random numbers; restore them so a run is the same whether or not
    # the classifier was already cached (the model is initialised after this).
    state = rng_state()
    try:
        return classifier_features(feature_classifier(cfg))
    finally:
        set_rng_state(state)


def classifier_features(path: str | Path, device: str = "cpu") -> Any:
    """An optik classifier (``.safetensors`` or run dir) as a :class:`~optik.metrics.generative.ClassifierFeatures`
    with the imgsz and mean/std it was trained with.

    >>> feats, probs = classifier_features("runs/classify/train")(images)   # doctest: +SKIP
    """
    from torch import nn

    from optik.config import build_config
    from optik.device import model_device
    from optik.engine.inference import load_trained
    from optik.metrics.generative import ClassifierFeatures

    cfg = build_config("classify", "predict", {"model": str(path), "device": device})
    task, model, cfg = load_trained(cfg)
    if not isinstance(model, nn.Module) or not hasattr(model, "get_classifier"):
        raise ConfigError(f"bad value for 'model': '{path}' is not an eager classifier with a head (exported files are not supported)")
    ext = ClassifierFeatures(model, imgsz=cfg.imgsz, mean=task.meta.get("mean"), std=task.meta.get("std"))
    return ext.to(model_device(model))


def _slug(data: Any, imgsz: int) -> str | None:
    if not isinstance(data, (str, Path)):
        return None
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(data)).strip("_")[-80:]
    return f"{s}-{imgsz}px"


def feature_classifier(cfg: Any) -> Path:
    """Weights of the dataset-specific feature classifier for ``cfg.data`` (trained on first use)."""
    from optik.config import build_config
    from optik.engine.trainer import Trainer

    slug = _slug(cfg.data, cfg.imgsz)
    project = Path(cfg.project) / "generate" / "features"
    if slug is not None:
        best = project / "classify" / slug / "weights" / "best.safetensors"
        if best.is_file():
            log.info("FID features: reusing the classifier %s", best)
            return best
    from optik import distributed as dist

    if dist.world_size() > 1:  # every rank would train it into one directory, and its Trainer ends the process group
        raise ConfigError("features=auto under torchrun: train the feature classifier first (one process, e.g. "
                          "optik generate train … epochs=1) or pass features=<classifier weights>")  # fmt: skip
    log.info("FID features: training a cnn classifier on %s (%d epochs, once per dataset and size)", cfg.data, FEATURE_EPOCHS)
    tcfg = build_config("classify", "train", {
        "data": cfg.data, "model": "cnn", "epochs": FEATURE_EPOCHS, "imgsz": cfg.imgsz, "batch": 64, "lr": 3e-3,
        "project": str(project), "name": slug or "features", "exist_ok": slug is not None, "plots": False,
        "val_fraction": cfg.val_fraction, "seed": cfg.seed, "device": cfg.device, "hflip": 0.0,
    })  # fmt: skip
    result = Trainer(tcfg).fit()
    acc = result["metrics"].get("top1")
    log.info("FID features: classifier val top-1 %s (%s)", f"{acc:.3f}" if acc is not None else "n/a", result["best"])
    return Path(result["best"])
