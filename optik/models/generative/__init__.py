"""Generative models (``task="generate"``): DCGAN / cGAN, (c)VAE / autoencoder, DDPM — one file each, with
their losses and samplers. Importing this package registers ``dcgan cgan vae cvae ae ddpm`` and the
``hf:`` adapter (a diffusers UNet2DModel) with the model registry; diffusers itself loads on first use.

Every model is a :class:`~optik.models.generative.base.GenerativeModel`: images in ``[-1, 1]``, and the
protocol the generate task trains, samples and shows them through.

>>> from optik.models import create
>>> gan = create("cgan", task="generate", num_classes=10, in_chans=1, img_size=16, width=8)
>>> gan.conditional, gan.manual_optimization
(True, True)
"""

from __future__ import annotations

from optik.models.generative import diffusion, gan, vae  # noqa: F401  (registration on import)
from optik.models.generative.base import GenerativeModel, unwrap
from optik.models.generative.diffusion import DiffusionModel
from optik.models.generative.gan import GAN
from optik.models.generative.vae import ConvVAE

__all__ = ["GAN", "ConvVAE", "DiffusionModel", "GenerativeModel", "unwrap"]
