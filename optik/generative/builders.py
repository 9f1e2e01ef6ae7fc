"""Registry entries for ``task="generate"`` (``optik generate train model=…``).

Builders take the registry's common arguments (``num_classes`` = 0 for an unconditional model,
``in_chans``, ``img_size``) plus the generate keys (``latent``, ``width``, ``spectral_norm``,
``timesteps``); the heavy imports (diffusers) happen on first use.

>>> from optik.models import create
>>> gan = create("cgan", task="generate", num_classes=10, in_chans=1, img_size=32)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from optik.models.registry import register_model


def _gan(num_classes: int, in_chans: int, img_size: int | None, latent: int | None = None, width: int | None = None,
         spectral_norm: bool = False, **_: Any) -> nn.Module:  # fmt: skip
    from optik.generative.gan import GAN

    return GAN(nz=latent or 64, channels=in_chans, img_size=img_size or 32, width=width or 64, num_classes=num_classes,
               spectral_norm=spectral_norm)  # fmt: skip


def _vae(num_classes: int, in_chans: int, img_size: int | None, latent: int | None = None, width: int | None = None,
         variational: bool = True, **_: Any) -> nn.Module:  # fmt: skip
    from optik.generative.vae import ConvVAE

    return ConvVAE(channels=in_chans, img_size=img_size or 32, latent_dim=latent or 16, width=width or 32,
                   num_classes=num_classes, variational=variational)  # fmt: skip


@register_model("dcgan", task="generate")
def dcgan(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, **kw: Any) -> nn.Module:
    """DCGAN (Radford 2015); conditional when ``num_classes`` > 0."""
    return _gan(num_classes, in_chans, img_size, **kw)


@register_model("cgan", task="generate")
def cgan(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, **kw: Any) -> nn.Module:
    """Conditional DCGAN (Mirza & Osindero 2014): class embedding in G, projection in D."""
    return _gan(num_classes, in_chans, img_size, **kw)


@register_model("vae", task="generate")
def vae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, **kw: Any) -> nn.Module:
    """Convolutional VAE (Kingma & Welling 2013); beta-VAE through the ``beta`` loss weight."""
    return _vae(num_classes, in_chans, img_size, **kw)


@register_model("cvae", task="generate")
def cvae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, **kw: Any) -> nn.Module:
    """Conditional VAE (Sohn 2015)."""
    return _vae(num_classes, in_chans, img_size, **kw)


@register_model("ae", task="generate")
def ae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, **kw: Any) -> nn.Module:
    """Plain convolutional autoencoder (the VAE without sampling or KL)."""
    return _vae(num_classes, in_chans, img_size, variational=False, **kw)


@register_model("ddpm", task="generate")
def ddpm(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, width: int | None = None,
         timesteps: int = 1000, **_: Any) -> nn.Module:  # fmt: skip
    """DDPM (Ho 2020) on diffusers' UNet2DModel; class-conditional with CFG when ``num_classes`` > 0."""
    from optik.generative.diffusion import DiffusionModel

    extra: dict[str, Any] = {"widths": (width, 2 * width, 2 * width)} if width else {}
    return DiffusionModel(channels=in_chans, img_size=img_size or 32, num_classes=num_classes,
                          num_train_timesteps=timesteps, **extra)  # fmt: skip


def hf_unet(name: str, **_: Any) -> nn.Module:
    """``hf:<id|dir>``: a diffusers UNet2DModel (e.g. a DDPMPipeline) as an unconditional DDPM."""
    from optik.generative.diffusion import DiffusionModel

    return DiffusionModel.from_pretrained(name)

