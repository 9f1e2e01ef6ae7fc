"""The one interface every generative model speaks, so the generate task, sampling and artifacts never
ask *which* model they hold (GAN, VAE, diffusion…) — they ask what it can do.

A :class:`GenerativeModel` is an ``nn.Module`` producing float ``(B, C, H, W)`` images in ``[-1, 1]``
("model space") that says:

* how it trains: :meth:`training_loss` (the engine back-propagates ``"loss"``) or, with
  ``manual_optimization``, :meth:`optimization_step` (backward + ``optimizer.step()`` itself, e.g. a GAN's
  alternating D/G updates); :meth:`param_groups` for special optimizer groups; ``train_options`` names the
  training keys its step reads (``beta``, ``cond_drop``, ``gan_loss`` …); ``default_lr``;
  ``loss_tracks_quality`` (False: a lower loss is not a better model, so "best" is the latest);
* how it samples: :meth:`sample` (``seed`` + model-specific options such as a diffusion ``sampler``,
  ``steps`` and ``guidance_scale``, which others ignore);
* what it can show: :meth:`trajectory` (denoising snapshots), ``latent`` + :meth:`decode` (latent
  interpolation), :meth:`reconstruct` (autoencoders) — empty / None where the model has no such view;
* how to rebuild it: :meth:`config_dict` (stored in the weights metadata with ``kind``, a label only).

>>> from optik.models.generative import GAN
>>> gan = GAN(nz=16, channels=1, img_size=16, width=8)
>>> isinstance(gan, GenerativeModel), gan.manual_optimization, gan.latent
(True, True, 16)
>>> gan.sample(2, seed=0).shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError


class GenerativeModel(nn.Module, metaclass=ABCMeta):
    """Base class of the models registered for ``task="generate"``; see the module docstring."""

    #: A label stored in the weights metadata (``model_kind``); nothing branches on it.
    kind: ClassVar[str]
    #: Peak learning rate when ``lr=`` is not given.
    default_lr: ClassVar[float]
    #: True: :meth:`optimization_step` runs backward and the optimizer step itself (the engine keeps the rest).
    manual_optimization: ClassVar[bool] = False
    #: False when the training loss says nothing about sample quality (GAN losses): the latest weights count as best.
    loss_tracks_quality: ClassVar[bool] = True
    #: Training keys (``GenerateTrainConfig`` field names) passed to the step as keyword arguments.
    train_options: ClassVar[tuple[str, ...]] = ()

    num_classes: int

    @property
    def conditional(self) -> bool:
        """Class-conditional: :meth:`sample` and the step take labels."""
        return bool(self.num_classes)

    @property
    def latent(self) -> int | None:
        """Size of the latent code :meth:`decode` takes (None: no latent space to walk, e.g. diffusion)."""
        return None

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this model: ``type(m)(**m.config_dict())``."""

    @abstractmethod
    def sample(self, n: int, labels: Tensor | None = None, *, seed: int | None = None, **sampling: Any) -> Tensor:
        """``n`` images in ``[-1, 1]`` (eval mode; the previous mode is restored); the same ``seed`` gives the
        same images. A conditional model without ``labels`` cycles through the classes."""

    # --- helpers for latent-variable models (GAN, VAE) ----------------------------------------
    @staticmethod
    def latent_noise(n: int, dim: int, device: torch.device, *, generator: torch.Generator | None = None,
                     seed: int | None = None, z: Tensor | None = None) -> Tensor:  # fmt: skip
        """``z`` on ``device``: the given one, else ``N(0, I)`` noise ``(n, dim)`` from ``generator`` (or a generator
        on ``device`` seeded with ``seed``), drawn on the generator's own device."""
        if z is None:
            if generator is None and seed is not None:
                generator = torch.Generator(device=device).manual_seed(seed)
            z = torch.randn(n, dim, generator=generator, device=generator.device if generator is not None else device)
        return z.to(device)

    def class_cycle(self, n: int, labels: Tensor | None, device: torch.device) -> Tensor | None:
        """``labels`` on ``device``; a conditional model without them cycles ``0, 1, …, num_classes − 1, 0, …``."""
        if getattr(self, "num_classes", 0) and labels is None:
            labels = torch.arange(n) % self.num_classes
        return labels.to(device) if labels is not None else None

    # --- views (optional) ---------------------------------------------------------------------
    def trajectory(self, n: int, labels: Tensor | None = None, *, seed: int = 0, snapshots: int = 8, **sampling: Any) -> list[Tensor]:
        """``snapshots`` predicted images along the sampling process (a denoising strip); [] when the model
        generates in one step."""
        return []

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Latent codes ``(B, latent)`` → images; only for models with a ``latent`` size."""
        raise NotImplementedError(f"{type(self).__name__} has no latent space")

    def reconstruct(self, images: Tensor, labels: Tensor | None = None) -> Tensor | None:
        """Autoencoders: ``(2N, C, H, W)`` original, reconstruction, original, …; None for other models."""
        return None

    # --- training -----------------------------------------------------------------------------
    def training_loss(self, images: Tensor, labels: Tensor | None, **options: Any) -> dict[str, Tensor]:
        """Loss terms of one batch (``"loss"`` is back-propagated by the engine); ``options``: ``train_options``."""
        raise ConfigError(f"{type(self).__name__} trains through optimization_step (manual_optimization)")

    def optimization_step(
        self, images: Tensor, labels: Tensor | None, optimizer: torch.optim.Optimizer, **options: Any
    ) -> dict[str, Tensor]:
        """``manual_optimization`` models: one full update on ``optimizer`` (built from :meth:`param_groups`);
        returns detached loss terms including ``"loss"``."""
        raise NotImplementedError(f"{type(self).__name__} trains through training_loss")

    def param_groups(self, lr: float, lr_d: float | None = None) -> list[dict[str, Any]] | None:
        """Optimizer groups at peak ``lr`` (``lr_d``: a second network's, e.g. a discriminator's); None = no
        special groups (the task's default: no weight decay on norms and biases)."""
        return None


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily ``module.eval()`` (BatchNorm running stats, VAE z = mu), then restore the mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def unwrap(model: nn.Module) -> GenerativeModel:
    """The :class:`GenerativeModel` inside ``model`` (a DDP / EMA wrapper's ``.module``); a ModelError otherwise."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, GenerativeModel):
        raise ModelError(f"{type(inner).__name__} is not a generative model (optik.models.generative.GenerativeModel)")
    return inner


__all__ = ["GenerativeModel", "unwrap"]
