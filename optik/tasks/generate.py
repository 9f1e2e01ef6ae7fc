"""Generative task: GANs, VAEs and DDPMs trained, validated and sampled through the one engine.

``optik generate train model=dcgan|cgan|vae|cvae|ae|ddpm data=digits|synthetic:shapes|<folder>``.
Data is any classification source (class labels condition ``cgan``/``cvae``/``ddpm``); images are
resized to ``imgsz``, made grayscale when the source is, and scaled to ``[-1, 1]``.

The task never asks which model it holds: every model speaks the
:class:`~optik.models.generative.GenerativeModel` protocol.

* VAE / DDPM: ``model.training_loss`` (the engine back-propagates).
* GAN: ``manual_optimization`` — ``model.optimization_step`` runs the alternating D/G updates on one
  optimizer holding the model's two parameter groups (G, D); the engine keeps the loop, LR schedule,
  EMA of the weights (``ema=true``: the EMA generator is what gets saved), checkpoints and logging.
* Validation generates ``val_samples`` images (same labels as the real val images) and reports
  FID / KID / IS / precision / recall against the val split; fitness is ``-FID``. The default
  feature network is an optik classifier trained on the same data (a *dataset-specific* FID, not
  comparable with published Inception FIDs; ``features=inception:<weights>`` gives the usual one).

>>> from optik import Model
>>> m = Model("ddpm", task="generate")                                       # doctest: +SKIP
>>> m.train(data="digits", epochs=5, imgsz=16)                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from optik.config import CommonConfig, TrainConfig
from optik.config.generate import GenerateTrainConfig
from optik.errors import ConfigError, ExportError, ModelError
from optik.generative.artifacts import metric_lines, write_sample_artifacts
from optik.generative.sampling import generate_images
from optik.models.generative import GenerativeModel
from optik.tasks.base import Task, DataSplits

log = logging.getLogger(__name__)

# Models that condition on the data's classes unless conditional=false (the others only with conditional=true).
CONDITIONAL_BY_DEFAULT = {"cgan": True, "cvae": True, "ddpm": True}


class GenerateTask(Task):
    name = "generate"
    fitness_key = "fitness"
    data_kind = "classification"  # any classification source; labels condition cgan/cvae/ddpm
    smallest_model = "ae"
    pipeline_modes: ClassVar[dict[str, str]] = {"val": "eval", "predict": "sample"}  # "predict" draws images; no export

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._extractor: Any = None
        self._val_calls = 0
        self.manual_optimization = False  # set from the model by build_model
        self._loss_tracks_quality = True

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        from optik.data.sources import load_classification_data

        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=digits, data=synthetic:shapes, data=path/to/folder)")
        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        self.meta["classes"] = list(data.classes)
        self.meta["channels"] = self.channels(data.train)
        train = data.train.with_transform(self.transforms(train=True))
        val = data.val.with_transform(self.transforms(train=False)) if data.val is not None else None
        if isinstance(cfg, GenerateTrainConfig) and val is not None and len(val) > cfg.val_samples:
            val = val.subset(np.linspace(0, len(val) - 1, cfg.val_samples).round().astype(int))
        if val is not None and len(val) == 1:  # FID/KID need 2 (GenerativeMetrics gives NaN): say so once, up front
            log.warning("generate: the val split has 1 image; FID and KID need at least 2, so they are skipped (NaN) "
                        "and the latest weights count as best — use more data or a larger val_fraction to measure them")
        if isinstance(cfg, GenerateTrainConfig) and val is not None:  # the last epoch always validates
            self.feature_extractor()  # before the progress bars start: "auto" may train a classifier first
        return DataSplits(train=train, val=val, meta=self.meta, description=data.description)

    def channels(self, train: Dataset) -> int:
        """``channels=`` if given, the trained model's, else 1 when the first images are all gray."""
        if getattr(self.cfg, "channels", None):
            return int(self.cfg.channels)
        if self.meta.get("channels"):
            return int(self.meta["channels"])
        for i in range(min(16, len(train))):
            img = train.load(i)
            if img.shape[0] == 3 and not (torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])):
                return 3
        return 1

    def transforms(self, train: bool) -> Any:
        from torchvision.transforms import v2

        s, c = self.cfg.imgsz, int(self.meta.get("channels", 3))
        steps: list[Any] = [v2.Resize(s, antialias=True), v2.CenterCrop(s)]
        if c == 1:
            steps.append(v2.Grayscale(1))
        if train and getattr(self.cfg, "hflip", 0.0) > 0:
            steps.append(v2.RandomHorizontalFlip(self.cfg.hflip))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * c, [0.5] * c)]  # [0, 1] → [-1, 1]
        return v2.Compose(steps)

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """``cfg.model`` through the registry (``models.create(…, task="generate")``), or a trained model rebuilt
        exactly from its weights' ``model_config``; weights must fit exactly (no head to skip)."""
        cfg = self.cfg
        conditional = getattr(cfg, "conditional", None)
        if conditional is None:
            conditional = CONDITIONAL_BY_DEFAULT.get(cfg.model or "ddpm", False)
        classes = self.meta.get("classes") or []
        opts = {k: getattr(cfg, k) for k in ("latent", "width", "spectral_norm", "timesteps") if getattr(cfg, k, None) is not None}
        # No class names needed (0 = unconditional); a trained model is rebuilt whole from its saved config.
        model = self.create_model("ddpm", num_classes=len(classes) if conditional and len(classes) > 1 else 0, strict=True,
                                  in_chans=int(self.meta.get("channels") or 3), **opts)  # fmt: skip
        arch = self.meta["model"]
        if not isinstance(model, GenerativeModel):
            raise ModelError(f"model {arch!r}: {type(model).__name__} is not a GenerativeModel (optik.models.generative)")
        self.meta.setdefault("classes", ["image"])
        self.meta["channels"] = int(model.config_dict().get("channels", self.meta.get("channels") or 3))
        self.meta.update(model=arch, model_kind=model.kind, model_config=model.config_dict())
        self.manual_optimization = model.manual_optimization
        self._loss_tracks_quality = model.loss_tracks_quality
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The model's own groups (GAN: G and D, Adam(0.5, 0.999) as DCGAN, TTUR with ``lr_d``), else the default
        groups, at ``lr`` or the model's ``default_lr``."""
        lr = self.cfg.lr or model.default_lr
        groups = model.param_groups(lr, self.cfg.lr_d or lr)
        return groups if groups is not None else [{**g, "lr": lr} for g in super().param_groups(model)]

    # --- step -------------------------------------------------------------------------------
    def _labels(self, model: GenerativeModel, targets: Tensor) -> Tensor | None:
        return targets if model.conditional else None

    def _train_options(self, model: GenerativeModel) -> dict[str, Any]:
        return {k: getattr(self.cfg, k) for k in model.train_options}

    def train_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Any]:
        return model.training_loss(inputs, self._labels(model, targets), **self._train_options(model)), None

    def optimization_step(self, model: nn.Module, inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        return model.optimization_step(inputs, self._labels(model, targets), optimizer, **self._train_options(model))

    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:  # the steps above compute their own losses
        raise NotImplementedError

    def train_fitness(self, train_logs: dict[str, float]) -> float:
        """A loss that does not track sample quality (GANs): without validation the latest weights count as best."""
        return super().train_fitness(train_logs) if self._loss_tracks_quality else float("nan")

    # --- evaluation ---------------------------------------------------------------------------
    def sampling_options(self) -> dict[str, Any]:
        """Diffusion sampling keys of this mode (validation: ``val_steps`` / ``val_sampler``); other models ignore them."""
        cfg = self.cfg
        if isinstance(cfg, TrainConfig):
            return {"steps": cfg.val_steps, "sampler": cfg.val_sampler, "guidance_scale": cfg.guidance_scale}
        return {"steps": cfg.steps, "sampler": cfg.sampler, "guidance_scale": cfg.guidance_scale}

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Any, dict[str, Tensor] | None]:
        # The same noise every evaluation (seeded per batch) so FID moves with the model, not the draw.
        self._val_calls += 1
        fake = generate_images(model, len(inputs), targets, seed=self.cfg.seed * 100003 + self._val_calls, **self.sampling_options())
        return (fake, inputs), None

    def update_metric(self, metric: Any, outputs: Any, targets: Any) -> None:
        fake, real = outputs
        metric.update(fake, real)

    def feature_extractor(self) -> Any:
        """The FID feature network named by ``features=`` (cached on the task)."""
        if self._extractor is None:
            from optik.generative.features import resolve_features

            self._extractor = resolve_features(self.cfg)
        return self._extractor

    def metric(self) -> Any:
        from optik.metrics.generative import GenerativeMetrics

        self._val_calls = 0
        return GenerativeMetrics(self.feature_extractor())

    def postprocess(self, outputs: Any, meta: list[dict[str, Any]]) -> list[Any]:
        return []

    # --- artifacts ----------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        real, labels = _first_items(val_data, 8)
        return write_sample_artifacts(model, run_dir / "plots", seed=self.cfg.seed, real=real, real_labels=labels,
                                      **self.sampling_options())  # fmt: skip

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        return metric_lines(metrics, features=getattr(self.cfg, "features", "auto"))

    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        raise ExportError("generate: export of generative models is not implemented (sample with optik generate sample)")


def _first_items(data: Dataset | None, n: int) -> tuple[Tensor | None, Tensor | None]:
    """The first ``n`` (image, label) pairs of ``data``, stacked (``(None, None)`` without data)."""
    if data is None or len(data) == 0:
        return None, None
    pairs = [data[i] for i in range(min(n, len(data)))]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])
