"""Convolutional variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes"),
β-VAE loss (Higgins et al. 2017), a plain autoencoder mode and a conditional VAE (Sohn et al. 2015).

The encoder halves the image with stride-2 convolutions down to 4×4 and maps it to ``(mu, logvar)``;
the decoder mirrors it with transposed convolutions. The decoder's output is per-pixel Bernoulli
*logits* of ``(x + 1) / 2``, so images in model space are ``2·sigmoid(logits) − 1``.

>>> vae = ConvVAE(channels=1, img_size=16, latent_dim=8, width=16)
>>> out = vae(torch.zeros(2, 1, 16, 16))
>>> out.recon.shape, out.mu.shape
(torch.Size([2, 1, 16, 16]), torch.Size([2, 8]))
>>> sorted(vae_loss(out, torch.zeros(2, 1, 16, 16)))
['kl', 'loss', 'recon']
>>> vae.sample(4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([4, 1, 16, 16])
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ConfigError
from optik.models.generative.base import GenerativeModel, eval_mode
from optik.models.registry import register_model


class VAEOutput(NamedTuple):
    """``recon``: decoder logits ``(B, C, S, S)``; ``mu``/``logvar``: ``(B, latent_dim)``; ``z`` the code used;
    ``variational=False`` (plain autoencoder) makes :func:`vae_loss` report ``kl = 0``."""

    recon: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    variational: bool = True

    @property
    def images(self) -> Tensor:
        """Reconstructions in model space ``[-1, 1]``."""
        return logits_to_images(self.recon)


def logits_to_images(logits: Tensor) -> Tensor:
    """Bernoulli logits of ``(x + 1) / 2`` → ``[-1, 1]`` (``2σ(l) − 1 = tanh(l / 2)``)."""
    return torch.tanh(logits / 2)


def _block(c_in: int, c_out: int, transpose: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    act = nn.ReLU() if transpose else nn.LeakyReLU(0.2)
    # 4×4 kernel, stride 2, padding 1: exactly halves / doubles H and W (no checkerboard offsets)
    return nn.Sequential(conv(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), act)


class ConvVAE(GenerativeModel):
    """Conv encoder → ``(mu, logvar)`` → reparameterised ``z`` → deconv decoder (logits).

    ``img_size`` must be a power of two ≥ 8 (16, 32, 64 …); stage widths are ``width·2^i`` (capped at
    ``8·width``). ``variational=False`` is a plain (deterministic) autoencoder: ``z = mu`` and the KL
    term is 0. ``num_classes > 0`` makes a conditional VAE: a label embedding is concatenated to the
    encoder's flattened features and to ``z`` before the decoder, so ``labels`` are required.

    >>> cvae = ConvVAE(img_size=16, latent_dim=4, width=8, num_classes=3)
    >>> cvae.sample(3, labels=torch.tensor([0, 1, 2])).shape
    torch.Size([3, 1, 16, 16])
    """

    kind = "vae"
    default_lr = 1e-3
    train_options = ("beta", "recon")

    def __init__(
        self,
        channels: int = 1,
        img_size: int = 32,
        latent_dim: int = 16,
        width: int = 32,
        num_classes: int = 0,
        variational: bool = True,
    ) -> None:
        super().__init__()
        if int(img_size) < 8 or int(img_size) & (int(img_size) - 1):
            raise ConfigError(f"img_size={img_size!r}: the VAE needs a power of two >= 8 (16, 32, 64)")
        for key, value, low in (("channels", channels, 1), ("latent_dim", latent_dim, 1), ("width", width, 1),
                                ("num_classes", num_classes, 0)):
            if int(value) < low:
                raise ConfigError(f"{key}={value!r}: must be >= {low}")
        self.channels, self.img_size, self.latent_dim = int(channels), int(img_size), int(latent_dim)
        self.width, self.num_classes, self.variational = int(width), int(num_classes), bool(variational)

        n_down = int(math.log2(self.img_size)) - 2  # down to 4×4
        widths = [min(self.width * 2**i, self.width * 8) for i in range(n_down)]
        self.encoder = nn.Sequential(
            *(_block(c_in, c_out, False) for c_in, c_out in zip((self.channels, *widths[:-1]), widths))
        )
        flat = widths[-1] * 16
        emb = self.latent_dim if self.num_classes else 0
        self.enc_embed = nn.Embedding(self.num_classes, emb) if self.num_classes else None
        self.dec_embed = nn.Embedding(self.num_classes, emb) if self.num_classes else None
        self.fc_mu = nn.Linear(flat + emb, self.latent_dim)
        self.fc_logvar = nn.Linear(flat + emb, self.latent_dim) if self.variational else None
        self.fc_dec = nn.Sequential(nn.Linear(self.latent_dim + emb, flat), nn.ReLU())
        rev = widths[::-1]
        self.decoder = nn.Sequential(
            *(_block(c_in, c_out, True) for c_in, c_out in zip(rev[:-1], rev[1:])),
            nn.ConvTranspose2d(rev[-1], self.channels, 4, 2, 1),  # logits: no norm, no activation
        )
        self._top = rev[0]

    def _labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        if not self.num_classes:
            return None  # an unconditional model ignores labels (datasets always carry them)
        if labels is None:
            raise ConfigError(f"labels: required by a conditional VAE (num_classes={self.num_classes})")
        labels = torch.as_tensor(labels, device=self.fc_mu.weight.device).long().reshape(-1)
        if labels.numel() != n:
            raise ConfigError(f"labels: {labels.numel()} labels for {n} images")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"labels: values must be in [0, {self.num_classes})")
        return labels

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, S, S)`` in ``[-1, 1]`` → ``(mu, logvar)``; ``logvar`` is 0 when not variational."""
        h = self.encoder(x).flatten(1)
        y = self._labels(labels, len(x))
        if y is not None:
            h = torch.cat([h, self.enc_embed(y)], dim=1)
        mu = self.fc_mu(h)
        logvar = self.fc_logvar(h) if self.fc_logvar is not None else torch.zeros_like(mu)
        return mu, logvar

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``z`` ``(B, latent_dim)`` → Bernoulli logits ``(B, C, S, S)``."""
        y = self._labels(labels, len(z))
        if y is not None:
            z = torch.cat([z, self.dec_embed(y)], dim=1)
        return self.decoder(self.fc_dec(z).view(len(z), self._top, 4, 4))

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``z`` ``(B, latent_dim)`` → images ``(B, C, S, S)`` in ``[-1, 1]``."""
        return logits_to_images(self.decode_logits(z, labels))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> VAEOutput:
        mu, logvar = self.encode(x, labels)
        if self.variational and self.training:
            # reparameterisation trick (Kingma & Welling 2013): z = mu + σ·ε keeps z differentiable in mu, σ
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        else:
            z = mu  # eval (or plain autoencoder): the posterior mean, deterministic
        return VAEOutput(self.decode_logits(z, labels), mu, logvar, z, self.variational)

    def config_dict(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (JSON-able)."""
        return {"channels": self.channels, "img_size": self.img_size, "latent_dim": self.latent_dim,
                "width": self.width, "num_classes": self.num_classes, "variational": self.variational}

    @property
    def latent(self) -> int:
        return self.latent_dim

    def training_loss(self, images: Tensor, labels: Tensor | None, *, beta: float = 1.0, recon: str = "bce",
                      **_: Any) -> dict[str, Tensor]:  # fmt: skip
        """:func:`vae_loss` of one batch (``beta``: KL weight, ``recon``: ``bce | mse``)."""
        return vae_loss(self(images, labels), images, beta=beta, recon=recon)

    def reconstruct(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """:func:`reconstructions`: original, reconstruction, … for a panel."""
        return reconstructions(self, images, labels=labels)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        z: Tensor | None = None,
        *,
        seed: int | None = None,
        **sampling: Any,
    ) -> Tensor:
        """Decode ``n`` codes from the prior ``N(0, I)`` (or the given ``z``) → ``[-1, 1]`` images.

        A conditional model without ``labels`` cycles ``0, 1, …, num_classes − 1`` (one class per column
        of a grid with ``nrow=num_classes``). Runs in eval mode and restores the previous mode. ``seed``: a
        generator on the model's device; ``sampling`` options of other models (``steps``…) are ignored.
        """
        device = self.fc_mu.weight.device
        z = self.latent_noise(n, self.latent_dim, device, generator=generator, seed=seed, z=z)
        labels = self.class_cycle(len(z), labels, device)
        with eval_mode(self):
            return self.decode(z, labels)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, σ²) ‖ N(0, I))`` per sample, closed form (Kingma & Welling 2013, App. B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def vae_loss(out: VAEOutput, x: Tensor, beta: float = 1.0, recon: str = "bce") -> dict[str, Tensor]:
    """Negative ELBO with a β-weighted KL (β-VAE, Higgins et al. 2017): ``recon + β·kl``.

    Both terms are per-image sums averaged over the batch (the ELBO's scale, so β = 1 is the true
    bound). ``recon="bce"``: Bernoulli likelihood of ``(x + 1) / 2`` from the logits; ``"mse"``: squared
    error in model space ``[-1, 1]``. For a plain autoencoder (``out.variational`` False) ``kl`` is 0,
    so the loss is the reconstruction term alone whatever β.

    >>> out = VAEOutput(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3))
    >>> round(vae_loss(out, -torch.ones(1, 1, 2, 2))["recon"].item(), 4)   # 4 · ln 2
    2.7726
    """
    if recon not in ("bce", "mse"):
        raise ConfigError(f"recon={recon!r}: expected 'bce' or 'mse'")
    if beta < 0:
        raise ConfigError(f"beta={beta!r}: must be >= 0")
    b = len(x)
    if recon == "bce":
        target = ((x + 1) / 2).clamp(0, 1)
        rec = F.binary_cross_entropy_with_logits(out.recon, target, reduction="sum") / b
    else:
        rec = F.mse_loss(logits_to_images(out.recon), x, reduction="sum") / b
    kl = kl_divergence(out.mu, out.logvar).mean() if out.variational else rec.new_zeros(())
    # β-VAE (Higgins et al. 2017): β > 1 buys a more disentangled latent with blurrier reconstructions
    return {"loss": rec + beta * kl, "recon": rec, "kl": kl}


@torch.no_grad()
def interpolation_grid(
    vae: ConvVAE, x_a: Tensor, x_b: Tensor, steps: int = 8, labels: Tensor | None = None
) -> Tensor:
    """Decode ``steps`` codes on the line from ``mu(x_a)`` to ``mu(x_b)`` for every pair.

    ``(N·steps, C, S, S)`` in ``[-1, 1]``; row ``i`` (``nrow=steps``) morphs ``x_a[i]`` into ``x_b[i]``,
    its ends being ``decode(mu_a)`` and ``decode(mu_b)``. ``labels`` (``(N,)``) condition both ends.

    >>> vae = ConvVAE(img_size=16, latent_dim=4, width=8)
    >>> interpolation_grid(vae, torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16), steps=5).shape
    torch.Size([10, 1, 16, 16])
    """
    if steps < 2:
        raise ConfigError(f"steps={steps!r}: an interpolation needs >= 2 steps")
    with eval_mode(vae):
        mu_a, _ = vae.encode(x_a, labels)
        mu_b, _ = vae.encode(x_b, labels)
        t = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)
        z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).reshape(-1, vae.latent_dim)
        y = None if labels is None else torch.as_tensor(labels, device=z.device).reshape(-1).repeat_interleave(steps)
        return vae.decode(z, y)


@torch.no_grad()
def reconstructions(vae: ConvVAE, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """``(2N, C, S, S)``: original, reconstruction, original, … (eval mode, ``z = mu``) for a panel.

    >>> vae = ConvVAE(img_size=16, latent_dim=4, width=8)
    >>> reconstructions(vae, torch.zeros(3, 1, 16, 16)).shape
    torch.Size([6, 1, 16, 16])
    """
    with eval_mode(vae):
        rec = vae(x, labels).images
    return torch.stack([x.to(rec), rec], dim=1).reshape(-1, *rec.shape[1:])



# ----------------------------------------------------------------------------- registry entries
# ``config`` (a saved config_dict) rebuilds a trained model exactly.
def _vae(num_classes: int, in_chans: int, img_size: int | None, latent: int | None = None, width: int | None = None,
         variational: bool = True, config: dict[str, Any] | None = None, **_: Any) -> ConvVAE:  # fmt: skip
    if config:
        return ConvVAE(**config)
    return ConvVAE(channels=in_chans, img_size=img_size or 32, latent_dim=latent or 16, width=width or 32,
                   num_classes=num_classes, variational=variational)  # fmt: skip


@register_model("vae", task="generate")
def vae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, config: dict[str, Any] | None = None, **kw: Any) -> ConvVAE:
    """Convolutional VAE (Kingma & Welling 2013); beta-VAE through the ``beta`` loss weight."""
    return _vae(num_classes, in_chans, img_size, config=config, **kw)


@register_model("cvae", task="generate")
def cvae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, config: dict[str, Any] | None = None, **kw: Any) -> ConvVAE:
    """Conditional VAE (Sohn 2015)."""
    return _vae(num_classes, in_chans, img_size, config=config, **kw)


@register_model("ae", task="generate")
def ae(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, config: dict[str, Any] | None = None, **kw: Any) -> ConvVAE:
    """Plain convolutional autoencoder (the VAE without sampling or KL)."""
    return _vae(num_classes, in_chans, img_size, config=config, variational=False, **kw)


__all__ = [
    "ConvVAE",
    "VAEOutput",
    "eval_mode",
    "interpolation_grid",
    "kl_divergence",
    "logits_to_images",
    "reconstructions",
    "vae_loss",
]
