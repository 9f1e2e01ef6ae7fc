"""Generative task: GANs, VAEs and DDPMs trained, validated and sampled through the one engine.

``optik generate train model=dcgan|cgan|vae|cvae|ae|ddpm data=digits|synthetic:shapes|<folder>``.
Data is any classification source (class labels condition ``cgan``/``cvae``/``ddpm``); images are
resized to ``imgsz``, made grayscale when the source is, and scaled to ``[-1, 1]``.

* VAE / DDPM: the standard step (forward + loss; the engine back-propagates).
* GAN: ``manual_optimization`` — :func:`optik.generative.gan.gan_train_step` runs the alternating
  D/G updates on one optimizer holding two parameter groups (G, D); the engine keeps the loop,
  LR schedule, EMA of the weights (``ema=true``: the EMA generator is what gets saved), checkpoints
  and logging.
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
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from optik.config import CommonConfig, TrainConfig
from optik.config.generate import GenerateTrainConfig
from optik.errors import ConfigError, ModelError
from optik.tasks.base import Task, TaskData

log = logging.getLogger(__name__)

CONDITIONAL_BY_DEFAULT = {"dcgan": False, "cgan": True, "vae": False, "cvae": True, "ae": False, "ddpm": True}
DEFAULT_LR = {"gan": 2e-4, "vae": 1e-3, "ddpm": 5e-4}


def model_kind(model: nn.Module) -> str:
    """``"gan"``, ``"vae"`` or ``"ddpm"`` for a generative model (EMA/DDP wrappers unwrapped)."""
    from optik.generative.diffusion import DiffusionModel
    from optik.generative.gan import GAN
    from optik.generative.vae import ConvVAE

    model = getattr(model, "module", model)
    for cls, kind in ((GAN, "gan"), (ConvVAE, "vae"), (DiffusionModel, "ddpm")):
        if isinstance(model, cls):
            return kind
    raise ModelError(f"{type(model).__name__} is not a generative model (GAN, ConvVAE or DiffusionModel)")


def model_class(kind: str) -> type[nn.Module]:
    if kind == "gan":
        from optik.generative.gan import GAN

        return GAN
    if kind == "vae":
        from optik.generative.vae import ConvVAE

        return ConvVAE
    from optik.generative.diffusion import DiffusionModel

    return DiffusionModel


def num_classes_of(model: nn.Module) -> int:
    """Classes a conditional model was trained with (0 = unconditional)."""
    model = getattr(model, "module", model)
    return int(model.config_dict().get("num_classes", 0) or 0)


@torch.no_grad()
def generate_images(
    model: nn.Module, n: int, labels: Tensor | None = None, *, seed: int = 0, steps: int = 25,
    guidance_scale: float = 2.0, scheduler: str = "ddim", trajectory: int = 0, progress: bool = False,
) -> tuple[Tensor, list[Tensor]]:
    """``n`` images in ``[-1, 1]`` from any generative model (+ DDPM trajectory snapshots).

    ``labels`` condition a conditional model (ignored by an unconditional one); the same ``seed``
    gives the same images.
    """
    kind = model_kind(model)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    if labels is not None:
        labels = labels.to(device) if num_classes_of(model) else None
    try:
        if kind == "ddpm":
            from optik.generative.diffusion import sample

            return sample(model, n, labels=labels, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler,
                          seed=seed, trajectory=trajectory, progress=progress)  # fmt: skip
        g = torch.Generator(device=device).manual_seed(seed)
        return model.sample(n, labels=labels, generator=g), []
    finally:
        model.train(was)


def balanced_labels(n: int, num_classes: int) -> Tensor:
    """0, 1, …, K-1, 0, 1, … (``n`` labels): every class equally often."""
    return torch.arange(n) % max(1, num_classes)


class GenerateTask(Task):
    name = "generate"
    fitness_key = "fitness"

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._extractor: Any = None
        self._val_calls = 0
        self.manual_optimization = False

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> TaskData:
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
        if isinstance(cfg, GenerateTrainConfig) and val is not None:  # the last epoch always validates
            self.feature_extractor()  # before the progress bars start: "auto" may train a classifier first
        return TaskData(train=train, val=val, meta=self.meta, description=data.description)

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
        from optik import models
        from optik.weights import load_state_dict, resolve_model_arg

        cfg = self.cfg
        arch, weights, wmeta = resolve_model_arg(cfg.model or "ddpm")
        if weights is not None and wmeta.get("task") not in (None, "generate"):
            raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{wmeta['task']}', not 'generate'")
        classes = self.meta.get("classes") or wmeta.get("classes") or ["image"]
        self.meta["classes"] = list(classes)
        saved = wmeta.get("model_config")
        if saved:  # rebuild exactly what was trained
            kind = wmeta["model_kind"]
            model = model_class(kind)(**saved)
            self.meta["channels"] = int(saved.get("channels", self.meta.get("channels") or 3))
        else:
            conditional = getattr(cfg, "conditional", None)
            if conditional is None:
                conditional = CONDITIONAL_BY_DEFAULT.get(arch, False)
            nc = len(classes) if conditional and len(classes) > 1 else 0
            opts = {k: getattr(cfg, k) for k in ("latent", "width", "spectral_norm", "timesteps") if getattr(cfg, k, None) is not None}
            model = models.create(arch, task="generate", num_classes=nc, in_chans=int(self.meta.get("channels") or 3),
                                  img_size=cfg.imgsz, **opts)  # fmt: skip
            kind = model_kind(model)
        if weights is not None:
            state = load_state_dict(weights)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelError(f"model: '{weights}' does not fit {arch} ({len(missing)} missing, {len(unexpected)} unexpected keys)")
        self.meta.update(model=arch, model_kind=kind, model_config=model.config_dict())
        self.manual_optimization = kind == "gan"
        self.kind = kind
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        cfg = self.cfg
        lr = cfg.lr or DEFAULT_LR[self.kind]
        if self.kind == "gan":  # G and D: Adam(0.5, 0.999) as DCGAN; TTUR with lr_d
            return model.param_groups(lr_g=lr, lr_d=cfg.lr_d or lr, betas=(0.5, 0.999))
        return [{**g, "lr": lr} for g in super().param_groups(model)]

    # --- step -------------------------------------------------------------------------------
    def _labels(self, model: nn.Module, targets: Tensor) -> Tensor | None:
        return targets if num_classes_of(model) else None

    def train_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Any]:
        labels = self._labels(model, targets)
        if self.kind == "vae":
            from optik.generative.vae import vae_loss

            out = model(inputs, labels)
            return vae_loss(out, inputs, beta=self.cfg.beta, recon=self.cfg.recon), out
        if self.kind == "ddpm":
            from optik.generative.diffusion import diffusion_loss

            return diffusion_loss(model, inputs, labels, cond_drop=self.cfg.cond_drop), None
        raise ConfigError("a GAN trains through optimization_step")

    def optimization_step(self, model: nn.Module, inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        from optik.generative.gan import GANStepOptions, gan_train_step

        cfg = self.cfg
        opts = GANStepOptions(
            loss="wgan" if cfg.gan_loss == "wgan-gp" else cfg.gan_loss, real_label=1.0 - cfg.label_smoothing,
            flip_prob=cfg.label_flip, diffaug=cfg.diffaug, gp_weight=cfg.gp_weight if cfg.gan_loss == "wgan-gp" else 0.0,
            d_steps=cfg.d_steps,
        )  # fmt: skip
        return gan_train_step(model, inputs, self._labels(model, targets), optimizer, opts)

    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:  # the steps above compute their own losses
        raise NotImplementedError

    def train_fitness(self, train_logs: dict[str, float]) -> float:
        """GAN losses do not track sample quality, so without validation the latest weights count as best."""
        return float("nan") if self.kind == "gan" else super().train_fitness(train_logs)

    # --- evaluation ---------------------------------------------------------------------------
    def sampling_options(self) -> dict[str, Any]:
        cfg = self.cfg
        if isinstance(cfg, TrainConfig):
            return {"steps": cfg.val_steps, "scheduler": cfg.val_sampler, "guidance_scale": cfg.guidance_scale}
        return {"steps": cfg.steps, "scheduler": cfg.sampler, "guidance_scale": cfg.guidance_scale}

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Any, dict[str, Tensor] | None]:
        # The same noise every evaluation (seeded per batch) so FID moves with the model, not the draw.
        self._val_calls += 1
        fake, _ = generate_images(model, len(inputs), targets, seed=self.cfg.seed * 100003 + self._val_calls, **self.sampling_options())
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
        from optik.generative.run import write_sample_artifacts

        opts = self.sampling_options()
        real, labels = _first_items(val_data, 8)
        return write_sample_artifacts(model, run_dir / "plots", seed=self.cfg.seed, real=real, real_labels=labels, **opts)

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        from optik.generative.run import metric_lines

        return metric_lines(metrics, features=getattr(self.cfg, "features", "auto"))

    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        from optik.errors import ExportError

        raise ExportError("generate: export of generative models is not implemented (sample with optik generate sample)")


def _first_items(data: Dataset | None, n: int) -> tuple[Tensor | None, Tensor | None]:
    """The first ``n`` (image, label) pairs of ``data``, stacked (``(None, None)`` without data)."""
    if data is None or len(data) == 0:
        return None, None
    pairs = [data[i] for i in range(min(n, len(data)))]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])
