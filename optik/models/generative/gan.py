"""DCGAN and conditional GAN, the losses that train them, and one alternating training step.

A generator ``G`` maps noise ``z`` (and optionally a class label) to an image in ``[-1, 1]``; a
discriminator ``D`` scores images as real or fake. They are trained in turns: ``D`` learns to tell
data from ``G(z)``, then ``G`` learns to fool ``D``. What lives here:

* :class:`DCGANGenerator` / :class:`DCGANDiscriminator` — the all-convolutional pair of
  Radford et al. 2015, "Unsupervised representation learning with deep convolutional GANs";
  ``num_classes > 0`` makes them conditional (label embedding in ``G``, projection in ``D``).
* :class:`GAN` — the :class:`~optik.models.generative.base.GenerativeModel` the engine trains and
  checkpoints (``.generator``, ``.discriminator``, :meth:`GAN.sample`, :meth:`GAN.param_groups`,
  :meth:`GAN.optimization_step`, :meth:`GAN.config_dict`); registered as ``dcgan`` and ``cgan``.
* losses: non-saturating (``"ns"``), hinge and Wasserstein (``"wgan"``) plus the WGAN-GP
  :func:`gradient_penalty`; :func:`diff_augment` for small data sets; :func:`sample_diversity`.
* :func:`gan_train_step` — one D update and one G update with a *single* optimizer.

>>> gan = GAN(nz=16, channels=1, img_size=16, width=8)
>>> gan.sample(4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([4, 1, 16, 16])
>>> opt = torch.optim.Adam(gan.param_groups(2e-4, 2e-4))
>>> sorted(gan_train_step(gan, torch.rand(8, 1, 16, 16) * 2 - 1, None, opt, GANStepOptions()))
['d_fake', 'd_loss', 'd_real', 'diversity', 'g_loss', 'loss']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from optik.errors import ConfigError
from optik.models.generative.base import GenerativeModel, eval_mode
from optik.models.registry import register_model

LOSSES = ("ns", "hinge", "wgan")
UPSAMPLE = ("deconv", "nearest")
AUGMENTS = ("color", "translation", "cutout")


def _num_stages(img_size: int) -> int:
    """Upsampling stages from the 4×4 seed: ``log2(img_size / 4)`` (16 → 2, 32 → 3, 64 → 4)."""
    n = math.log2(img_size / 4) if img_size > 0 else -1
    if n < 1 or n != int(n):
        raise ConfigError(f"img_size: must be a power of two >= 8 for a DCGAN, got {img_size}")
    return int(n)


def _check_labels(labels: Tensor | None, num_classes: int) -> None:
    if num_classes and labels is None:
        raise ConfigError(f"labels: the model is conditional (num_classes={num_classes}) and needs labels")
    if not num_classes and labels is not None:
        raise ConfigError("labels: given to an unconditional model (num_classes=0)")


class DCGANGenerator(nn.Module):
    """``z (B, nz)`` [+ ``labels (B,)``] → ``(B, channels, img_size, img_size)`` through ``tanh``.

    A 4×4 seed with ``width · 2^(n-1)`` channels, then ``n = log2(img_size/4)`` stages that each
    double the resolution and halve the channels (BatchNorm + ReLU, Radford 2015). ``upsample``:
    ``"deconv"`` = ConvTranspose 4×4 stride 2 (the original); ``"nearest"`` = nearest-neighbour ×2
    then a 3×3 conv, which avoids checkerboard artefacts (Odena et al. 2016). Conditional: a learned
    label embedding of size ``max(8, nz/4)`` is concatenated to ``z``.

    >>> DCGANGenerator(nz=16, img_size=32, width=8)(torch.randn(2, 16)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        nz: int = 64,
        channels: int = 1,
        img_size: int = 32,
        width: int = 64,
        num_classes: int = 0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE:
            raise ConfigError(f"upsample: expected one of {UPSAMPLE}, got {upsample!r}")
        n = _num_stages(img_size)
        self.nz, self.num_classes = nz, num_classes
        # A label embedding narrower than z (nz/4): as wide as z, G learned one image per class and ignored z
        # (measured on digits: within-class diversity 0.8-2.9 vs 4.6 at nz/4; real digits 5.9).
        self.embed_dim = max(8, nz // 4) if num_classes else 0
        self.embed = nn.Embedding(num_classes, self.embed_dim) if num_classes else None
        c = width * 2 ** (n - 1)
        # the 1×1 → 4×4 transposed conv is a fully connected projection of z, reshaped
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz + self.embed_dim, c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        for i in range(n):
            last = i == n - 1
            c_out = channels if last else c // 2
            if upsample == "deconv":
                layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1, bias=last))
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c_out, 3, 1, 1, bias=last)]
            # no BatchNorm on the output layer (Radford 2015): tanh sees the raw conv output
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        _check_labels(labels, self.num_classes)
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """``x (B, C, S, S)`` [+ ``labels (B,)``] → real/fake logits ``(B,)``.

    The mirror of the generator: stride-2 4×4 convs with LeakyReLU(0.2) down to 4×4 (no BatchNorm
    on the first layer, Radford 2015), then a 4×4 conv to one logit. ``spectral_norm=True`` wraps
    every weight in spectral normalisation (Miyato et al. 2018), which bounds D's Lipschitz constant;
    use ``batchnorm=False`` with the WGAN-GP penalty, which is defined per sample.

    Conditional (``num_classes > 0``): a *projection* discriminator (Miyato & Koyama 2018):
    ``logit = ψ(φ(x)) + embed(y) · φ(x)`` with ``φ(x)`` the spatially averaged last features — the
    label asks "does this image look like class y?" instead of being pasted onto the pixels.

    >>> DCGANDiscriminator(img_size=16, width=8)(torch.zeros(3, 1, 16, 16)).shape
    torch.Size([3])
    """

    def __init__(
        self,
        channels: int = 1,
        img_size: int = 32,
        width: int = 64,
        num_classes: int = 0,
        spectral_norm: bool = False,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        n = _num_stages(img_size)
        self.num_classes = num_classes
        sn: Callable[[nn.Module], nn.Module] = _spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for i in range(n):
            layers.append(sn(nn.Conv2d(c_in, c, 4, 2, 1, bias=not batchnorm or i == 0)))
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers)
        self.out = sn(nn.Conv2d(c_in, 1, 4, 1, 0))  # 4×4 → 1×1: one logit per image
        self.embed = sn(nn.Embedding(num_classes, c_in)) if num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        _check_labels(labels, self.num_classes)
        h = self.features(x)
        logits = self.out(h).flatten()
        if self.embed is not None:  # projection term (Miyato & Koyama 2018)
            # spatial mean, not SNGAN's sum: without spectral norm the sum made logits ~50 at init (D loss ~78)
            logits = logits + (self.embed(labels) * h.mean(dim=(2, 3))).sum(dim=1)
        return logits


def dcgan_init_(module: nn.Module) -> None:
    """Radford 2015 init, in place: conv/linear weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0.

    Spectrally normalised layers get the init on their underlying (un-normalised) weight.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d)):
            w = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            nn.init.normal_(w, 1.0 if isinstance(m, nn.BatchNorm2d) else 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GAN(GenerativeModel):
    """Generator + discriminator, as one module the engine trains and checkpoints.

    ``num_classes > 0`` gives a conditional GAN (cGAN, Mirza & Osindero 2014). The discriminator
    drops BatchNorm when ``spectral_norm`` is on (SN already conditions it, and per-batch statistics
    would couple real and fake samples). Trains through :meth:`optimization_step` (``manual_optimization``):
    alternating D and G updates on one optimizer with two parameter groups.

    >>> gan = GAN(nz=16, img_size=16, width=8, num_classes=10)
    >>> gan.sample(10, labels=torch.arange(10)).shape
    torch.Size([10, 1, 16, 16])
    >>> GAN(**gan.config_dict()).config_dict() == gan.config_dict()
    True
    """

    def __init__(
        self,
        nz: int = 64,
        channels: int = 1,
        img_size: int = 32,
        width: int = 64,
        num_classes: int = 0,
        spectral_norm: bool = False,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        self._config = dict(
            nz=nz, channels=channels, img_size=img_size, width=width,
            num_classes=num_classes, spectral_norm=spectral_norm, upsample=upsample,
        )  # fmt: skip
        self.nz, self.num_classes = nz, num_classes
        self.generator = DCGANGenerator(nz, channels, img_size, width, num_classes, upsample)
        self.discriminator = DCGANDiscriminator(
            channels, img_size, width, num_classes, spectral_norm=spectral_norm, batchnorm=not spectral_norm
        )
        dcgan_init_(self)

    kind = "gan"
    default_lr = 2e-4
    manual_optimization = True
    loss_tracks_quality = False  # D and G losses chase each other; they do not fall as samples improve
    train_options = ("gan_loss", "label_smoothing", "label_flip", "diffaug", "gp_weight", "d_steps")

    def config_dict(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (JSON-able)."""
        return dict(self._config)

    @property
    def latent(self) -> int:
        return self.nz

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z, labels)

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
        """``n`` images in ``[-1, 1]`` from the generator in eval mode (BN running statistics).

        Conditional models without ``labels`` cycle through the classes (``0, 1, …, K-1, 0, …``).
        ``generator`` (or ``seed``: a generator on the model's device) seeds ``z``; pass ``z`` to reuse the
        same noise (e.g. across labels). ``sampling`` options of other models (``steps``…) are ignored.
        """
        device = next(self.parameters()).device
        z = self.latent_noise(n, self.nz, device, generator=generator, seed=seed, z=z)
        labels = self.class_cycle(len(z), labels, device)
        with eval_mode(self.generator):
            return self.generator(z, labels)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Noise ``z`` ``(B, nz)`` → images (the generator in eval mode)."""
        return self.sample(len(z), labels=labels, z=z)

    def param_groups(self, lr_g: float, lr_d: float | None = None, betas: tuple[float, float] = (0.5, 0.999)) -> list[dict]:
        """Two optimizer groups: 0 = generator at ``lr_g``, 1 = discriminator at ``lr_d`` (default ``lr_g``;
        different: TTUR), β1 = 0.5 as in Radford 2015."""
        lr_d = lr_g if lr_d is None else lr_d
        return [
            {"params": list(self.generator.parameters()), "lr": lr_g, "betas": betas, "name": "generator"},
            {"params": list(self.discriminator.parameters()), "lr": lr_d, "betas": betas, "name": "discriminator"},
        ]

    def optimization_step(
        self,
        images: Tensor,
        labels: Tensor | None,
        optimizer: torch.optim.Optimizer,
        *,
        gan_loss: str = "ns",
        label_smoothing: float = 0.0,
        label_flip: float = 0.0,
        diffaug: str | None = None,
        gp_weight: float = 10.0,
        d_steps: int = 1,
        **_: Any,
    ) -> dict[str, Tensor]:
        """:func:`gan_train_step` with the training keys: ``gan_loss`` ``ns | hinge | wgan-gp`` (the gradient
        penalty, weighted ``gp_weight``, only with ``wgan-gp``), one-sided ``label_smoothing``, ``label_flip``,
        ``diffaug`` policy, ``d_steps`` D updates per G update."""
        wgan = gan_loss == "wgan-gp"
        opts = GANStepOptions(
            loss="wgan" if wgan else gan_loss, real_label=1.0 - label_smoothing, flip_prob=label_flip, diffaug=diffaug,
            gp_weight=gp_weight if wgan else 0.0, d_steps=d_steps,
        )  # fmt: skip
        return gan_train_step(self, images, labels, optimizer, opts)


# ----------------------------------------------------------------------------- DiffAugment
# Zhao et al. 2020, "Differentiable augmentation for data-efficient GAN training": augment BOTH real
# and fake images (in D's and in G's step) with differentiable ops, so D cannot memorise a small data
# set and G still gets gradients through the augmentation.


def _rand(x: Tensor, *shape: int) -> Tensor:
    return torch.rand(x.shape[0], *shape, dtype=x.dtype, device=x.device)


def _color(x: Tensor) -> Tensor:
    x = x + (_rand(x, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, 1, 1, 1) * 2) + mean  # saturation (no-op on greyscale)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1) + 0.5) + mean  # contrast


def _translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ``ratio`` of its size; uncovered pixels become 0 (mid-grey)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device),
        indexing="ij",
    )  # fmt: skip
    gy = (gy + dy + 1).clamp(0, h + 1)  # +1: index into the 1-px zero-padded image
    gx = (gx + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[gb, gy, gx].permute(0, 3, 1, 2)  # gather is differentiable w.r.t. x


def _cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero one random square of side ``ratio · size`` per image (may be clipped at the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~inside).to(x.dtype)[:, None]


_AUGMENT_FNS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: Tensor, policy: str = "color,translation,cutout") -> Tensor:
    """DiffAugment (Zhao 2020): differentiable random colour / translation / cutout, fresh per call.

    Apply the same ``policy`` to real and to fake images, in both the D and the G step. ``""`` is
    the identity.

    >>> x = torch.zeros(2, 1, 8, 8, requires_grad=True)
    >>> diff_augment(x, "translation,cutout").sum().backward(); x.grad.shape
    torch.Size([2, 1, 8, 8])
    """
    for name in (p.strip() for p in policy.split(",")):
        if not name:
            continue
        if name not in _AUGMENT_FNS:
            raise ConfigError(f"diffaug: unknown policy {name!r}, expected a comma list of {AUGMENTS}")
        x = _AUGMENT_FNS[name](x)
    return x


# ----------------------------------------------------------------------------- losses


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ConfigError(f"loss: expected one of {LOSSES}, got {kind!r}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "ns", real_label: float = 1.0) -> Tensor:
    """D's loss on its logits for a real and a fake batch (each term a batch mean, summed).

    * ``"ns"``: binary cross-entropy, real → ``real_label``, fake → 0. ``real_label < 1`` is
      one-sided label smoothing (Salimans et al. 2016): only the real target is softened, so D is
      never rewarded for being confident on fakes (``real_label`` is ignored by hinge / wgan).
    * ``"hinge"``: ``relu(1 - D(x)) + relu(1 + D(G(z)))`` (Lim & Ye 2017; Miyato 2018).
    * ``"wgan"``: ``D(G(z)) - D(x)``, the critic's Wasserstein estimate (Arjovsky 2017); pair it
      with :func:`gradient_penalty`.

    >>> float(discriminator_loss(torch.tensor([2.0]), torch.tensor([-2.0]), "hinge"))
    0.0
    """
    _check_kind(kind)
    if kind == "ns":
        real_t = torch.full_like(real_logits, real_label)
        return F.binary_cross_entropy_with_logits(real_logits, real_t) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def generator_loss(fake_logits: Tensor, kind: str = "ns") -> Tensor:
    """G's loss: ``"ns"`` = non-saturating ``softplus(-D(G(z)))`` (Goodfellow 2014: strong gradients
    while D still wins), ``"hinge"`` / ``"wgan"`` = ``-D(G(z))``.

    >>> round(float(generator_loss(torch.zeros(4), "ns")), 4)   # log 2
    0.6931
    """
    _check_kind(kind)
    if kind == "ns":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def gradient_penalty(
    disc: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP (Gulrajani 2017): ``E[(‖∇ D(x̂)‖₂ - 1)²]`` at random points ``x̂`` between real and fake.

    Soft 1-Lipschitz constraint for the critic; the graph is kept (``create_graph``) so the
    penalty itself is differentiated in D's backward pass.

    >>> w = torch.full((1, 2, 2), 0.5)                          # ‖w‖ = 1: already 1-Lipschitz
    >>> float(gradient_penalty(lambda x: (x * w).flatten(1).sum(1), torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)))
    0.0
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator,
                       device=generator.device if generator else real.device).to(real)  # fmt: skip
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = disc(x_hat) if labels is None else disc(x_hat, labels)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@torch.no_grad()
def sample_diversity(x: Tensor) -> float:
    """Mean pairwise L2 distance between flattened samples; → 0 under mode collapse.

    >>> sample_diversity(torch.ones(5, 1, 4, 4))
    0.0
    """
    if x.shape[0] < 2:
        return 0.0
    return float(torch.pdist(x.flatten(1).double()).mean())


# ----------------------------------------------------------------------------- training step


@dataclass
class GANStepOptions:
    """Knobs of :func:`gan_train_step`.

    ``loss``: ``"ns"`` | ``"hinge"`` | ``"wgan"`` (``"wgan"`` adds ``gp_weight ×`` the gradient
    penalty); ``real_label < 1``: one-sided label smoothing (``"ns"`` only); ``flip_prob``: fraction
    of the D batch whose real/fake targets are swapped (noisy labels keep D from winning too fast);
    ``diffaug``: a :func:`diff_augment` policy or ``None``; ``d_steps``: D updates per G update.
    """

    loss: str = "ns"
    real_label: float = 1.0
    flip_prob: float = 0.0
    diffaug: str | None = None
    gp_weight: float = 10.0
    d_steps: int = 1


def flip_labels(real_logits: Tensor, fake_logits: Tensor, prob: float) -> tuple[Tensor, Tensor]:
    """Swap real/fake targets for a random fraction ``prob`` of the batch.

    Swapping the *logits* between the two terms is the same as swapping the targets, and works
    for every loss kind (needs equal real and fake batch sizes).
    """
    if prob <= 0:
        return real_logits, fake_logits
    flip = torch.rand(real_logits.shape[0], device=real_logits.device) < prob
    return torch.where(flip, fake_logits, real_logits), torch.where(flip, real_logits, fake_logits)


def gan_train_step(
    gan: GAN,
    real: Tensor,
    labels: Tensor | None,
    optimizer: torch.optim.Optimizer,
    opts: GANStepOptions,
) -> dict[str, Tensor]:
    """One round of alternating updates: ``opts.d_steps`` D steps, then one G step.

    ``optimizer`` holds both models (:meth:`GAN.param_groups`). The trick that makes one optimizer
    enough: Adam/AdamW *skip* parameters whose ``.grad`` is ``None``. In the D step G's grads are
    None (fresh ``zero_grad(set_to_none=True)``, and ``fake.detach()`` keeps them so). In the G step
    the backward pass also fills D's grads, so they are set to None before ``step()`` — zero grads
    would not do: Adam's momentum would still move D. (BatchNorm running statistics and spectral-norm
    power-iteration buffers of D still update in the G forward; those are buffers, not parameters.)

    Returns detached scalars ``loss`` (= d + g), ``d_loss``, ``g_loss``, ``d_real`` / ``d_fake``
    (mean ``sigmoid`` of D's logits on real / fake in the last D step) and ``diversity`` (mean pairwise
    distance of the fakes / of the real batch: a mode-collapse symptom when it falls towards 0).
    """
    _check_kind(opts.loss)
    if opts.d_steps < 1:
        raise ConfigError(f"d_steps: must be >= 1, got {opts.d_steps}")
    G, D = gan.generator, gan.discriminator
    gan.train()
    b, device = real.shape[0], real.device

    def aug(x: Tensor) -> Tensor:
        return diff_augment(x, opts.diffaug) if opts.diffaug else x

    for _ in range(opts.d_steps):
        optimizer.zero_grad(set_to_none=True)
        fake = G(torch.randn(b, gan.nz, device=device), labels)
        real_logits = D(aug(real), labels)
        fake_logits = D(aug(fake.detach()), labels)  # detach: no graph into G, G grads stay None
        d_real, d_fake = torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()
        r, f = flip_labels(real_logits, fake_logits, opts.flip_prob)
        d_loss = discriminator_loss(r, f, opts.loss, opts.real_label)
        if opts.loss == "wgan" and opts.gp_weight > 0:
            d_loss = d_loss + opts.gp_weight * gradient_penalty(D, real, fake, labels)
        d_loss.backward()
        optimizer.step()

    # G step: reuse the last fake (its graph through G is intact; G has not changed since)
    optimizer.zero_grad(set_to_none=True)
    g_loss = generator_loss(D(aug(fake), labels), opts.loss)
    g_loss.backward()
    for p in D.parameters():
        p.grad = None  # Adam skips grad-None params: D stays exactly where the D step left it
    optimizer.step()

    d_loss, g_loss = d_loss.detach(), g_loss.detach()
    # Mode-collapse symptom, logged every step: the fakes' spread relative to the real batch's (→ 0 when collapsed).
    diversity = sample_diversity(fake.detach()) / max(sample_diversity(real), 1e-8)
    return {
        "loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
        "d_real": d_real.detach(), "d_fake": d_fake.detach(), "diversity": torch.tensor(diversity),
    }  # fmt: skip


# ----------------------------------------------------------------------------- registry entries
# Builders take the registry's arguments (num_classes = 0: unconditional) plus the generate keys;
# ``config`` (a saved config_dict) rebuilds a trained model exactly.
def _gan(num_classes: int, in_chans: int, img_size: int | None, latent: int | None = None, width: int | None = None,
         spectral_norm: bool = False, config: dict[str, Any] | None = None, **_: Any) -> GAN:  # fmt: skip
    if config:
        return GAN(**config)
    return GAN(nz=latent or 64, channels=in_chans, img_size=img_size or 32, width=width or 64, num_classes=num_classes,
               spectral_norm=spectral_norm)  # fmt: skip


@register_model("dcgan", task="generate")
def dcgan(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, config: dict[str, Any] | None = None, **kw: Any) -> GAN:
    """DCGAN (Radford 2015); conditional when ``num_classes`` > 0."""
    return _gan(num_classes, in_chans, img_size, config=config, **kw)


@register_model("cgan", task="generate")
def cgan(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, config: dict[str, Any] | None = None, **kw: Any) -> GAN:
    """Conditional DCGAN (Mirza & Osindero 2014): class embedding in G, projection in D."""
    return _gan(num_classes, in_chans, img_size, config=config, **kw)


__all__ = [
    "DCGANGenerator",
    "DCGANDiscriminator",
    "GAN",
    "GANStepOptions",
    "dcgan_init_",
    "diff_augment",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "sample_diversity",
    "flip_labels",
    "gan_train_step",
]
