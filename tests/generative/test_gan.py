"""DCGAN / cGAN: shapes, conditioning, losses vs hand formulas, WGAN-GP, DiffAugment, the
single-optimizer grad-None step, and a short CPU run that learns a toy distribution."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optik.errors import ConfigError
from optik.models.generative.gan import (
    GAN,
    DCGANDiscriminator,
    DCGANGenerator,
    GANStepOptions,
    dcgan_init_,
    diff_augment,
    discriminator_loss,
    flip_labels,
    gan_train_step,
    generator_loss,
    gradient_penalty,
    sample_diversity,
)


def _sp(v: float) -> float:  # softplus
    return math.log1p(math.exp(v))


@pytest.mark.parametrize("upsample", ["deconv", "nearest"])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_and_range(size, upsample):
    torch.manual_seed(0)
    gan = GAN(nz=8, channels=3, img_size=size, width=4, upsample=upsample)
    x = gan.sample(3)
    assert x.shape == (3, 3, size, size)
    assert x.abs().max() <= 1.0 and x.std() > 0
    assert gan.discriminator(x).shape == (3,)
    # number of upsampling stages = log2(size / 4): one ×2 op per stage
    ups = [m for m in gan.generator.modules() if isinstance(m, (nn.Upsample, nn.ConvTranspose2d))]
    assert len(ups) == 1 + int(math.log2(size / 4))  # + the 1×1 → 4×4 projection (a ConvTranspose)
    if upsample == "nearest":
        assert sum(isinstance(m, nn.Upsample) for m in ups) == int(math.log2(size / 4))


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="img_size"):
        GAN(img_size=24)
    with pytest.raises(ConfigError, match="upsample"):
        GAN(img_size=16, upsample="bilinear")
    with pytest.raises(ConfigError, match="labels"):
        DCGANGenerator(nz=4, img_size=16, width=4, num_classes=3)(torch.randn(2, 4))
    with pytest.raises(ConfigError, match="loss"):
        generator_loss(torch.zeros(2), "lsgan")
    with pytest.raises(ConfigError, match="diffaug"):
        diff_augment(torch.zeros(1, 1, 8, 8), "color,rotate")


def test_conditional_uses_labels():
    torch.manual_seed(0)
    gan = GAN(nz=8, img_size=16, width=4, num_classes=5)
    z = torch.randn(1, 8).expand(5, 8)  # same noise for every class
    x = gan.sample(5, labels=torch.arange(5), z=z)
    scale = x.abs().max()  # tiny at init: DCGAN weights ~ N(0, 0.02), BN in eval mode
    for i in range(1, 5):
        assert (x[i] - x[0]).abs().max() > 0.05 * scale
    assert torch.equal(gan.sample(5, labels=torch.zeros(5, dtype=torch.long), z=z)[1], x[0])
    # default labels cycle through the classes
    assert torch.equal(gan.sample(5, z=z), x)
    # the projection discriminator also depends on the label
    d = gan.discriminator.eval()
    img = x[:1].expand(5, -1, -1, -1)
    logits = d(img, torch.arange(5))
    assert logits.unique().numel() == 5


def test_sample_is_seeded_and_config_rebuilds():
    gan = GAN(nz=8, img_size=16, width=4, num_classes=3, spectral_norm=True)
    a = gan.sample(4, generator=torch.Generator().manual_seed(1))
    b = gan.sample(4, generator=torch.Generator().manual_seed(1))
    c = gan.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert gan.generator.training  # sample() restores the mode
    import json

    cfg = json.loads(json.dumps(gan.config_dict()))
    clone = GAN(**cfg)
    clone.load_state_dict(gan.state_dict())
    assert torch.equal(clone.sample(4, generator=torch.Generator().manual_seed(1)), a)


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    gan = GAN(nz=32, img_size=32, width=32, spectral_norm=True)
    conv_w = torch.cat([m.weight.flatten() for m in gan.generator.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(conv_w.mean()) < 2e-3 and abs(conv_w.std() - 0.02) < 2e-3
    bn_w = torch.cat([m.weight for m in gan.generator.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn_w.mean() - 1) < 0.01 and abs(bn_w.std() - 0.02) < 0.01
    # spectral-normalised D: the underlying weight got the init
    orig = gan.discriminator.features[0].parametrizations.weight.original
    assert abs(orig.std() - 0.02) < 5e-3
    lin = nn.Linear(100, 100)
    dcgan_init_(lin)
    assert abs(lin.weight.std() - 0.02) < 2e-3 and lin.bias.abs().max() == 0


def test_param_groups_order():
    gan = GAN(nz=8, img_size=16, width=4)
    g, d = gan.param_groups(1e-3, 4e-3)
    assert g["lr"] == 1e-3 and d["lr"] == 4e-3 and g["betas"] == (0.5, 0.999)
    assert {id(p) for p in g["params"]} == {id(p) for p in gan.generator.parameters()}
    assert {id(p) for p in d["params"]} == {id(p) for p in gan.discriminator.parameters()}


def test_losses_equal_hand_formulas():
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    t = 0.9  # one-sided smoothing: only the real target moves
    ns = ((t * _sp(-2) + (1 - t) * _sp(2)) + (t * _sp(1) + (1 - t) * _sp(-1))) / 2 + (_sp(0.5) + _sp(-3)) / 2
    assert discriminator_loss(r, f, "ns", real_label=t).item() == pytest.approx(ns, rel=1e-6)
    ns1 = (_sp(-2) + _sp(1)) / 2 + (_sp(0.5) + _sp(-3)) / 2
    assert discriminator_loss(r, f, "ns").item() == pytest.approx(ns1, rel=1e-6)
    hinge = (max(0, 1 - 2) + max(0, 1 + 1)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3)) / 2
    assert discriminator_loss(r, f, "hinge").item() == pytest.approx(hinge)
    assert discriminator_loss(r, f, "wgan").item() == pytest.approx((0.5 - 3) / 2 - (2 - 1) / 2)
    assert generator_loss(f, "ns").item() == pytest.approx((_sp(-0.5) + _sp(3)) / 2, rel=1e-6)
    assert generator_loss(f, "hinge").item() == pytest.approx(1.25)
    assert generator_loss(f, "wgan").item() == pytest.approx(1.25)


def test_flip_labels():
    r, f = torch.arange(6.0), -torch.arange(6.0) - 1
    assert flip_labels(r, f, 0.0) == (r, f)
    r2, f2 = flip_labels(r, f, 1.0)
    assert torch.equal(r2, f) and torch.equal(f2, r)
    torch.manual_seed(0)
    r3, f3 = flip_labels(torch.zeros(1000), torch.ones(1000), 0.3)
    assert 0.25 < r3.mean().item() < 0.35 and torch.equal(r3 + f3, torch.ones(1000))


def test_gradient_penalty_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    w = torch.randn(1, 3, 3)

    def critic(scale):
        return lambda x: (x * (w / w.norm() * scale)).flatten(1).sum(1)

    assert gradient_penalty(critic(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(critic(3.0), real, fake).item() == pytest.approx(4.0, rel=1e-5)  # (3-1)²
    # labels are forwarded, and the penalty is differentiable w.r.t. the critic's parameters
    d = DCGANDiscriminator(img_size=16, width=4, num_classes=2, batchnorm=False)
    gp = gradient_penalty(d, torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 0]))
    gp.backward()
    assert d.embed.weight.grad is not None and d.embed.weight.grad.abs().sum() > 0


def test_diff_augment():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(diff_augment(x, ""), x)
    x.requires_grad_(True)
    y = diff_augment(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # cutout zeroes a (clipped) square of at most half the side on each image
    z = diff_augment(torch.ones(8, 1, 16, 16), "cutout")
    zeros = (z == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()
    # translation keeps content (shifted), fills with 0; a constant image stays constant inside
    t = diff_augment(torch.ones(8, 1, 16, 16), "translation")
    assert set(t.unique().tolist()) <= {0.0, 1.0} and (t == 1).flatten(1).sum(1).min() >= 14 * 14


def test_sample_diversity():
    assert sample_diversity(torch.ones(6, 1, 4, 4)) == 0.0
    x = torch.zeros(2, 1, 2, 2)
    x[1] = 1.0
    assert sample_diversity(x) == pytest.approx(2.0)  # ‖1‖ over 4 pixels


def test_train_step_grad_none_trick():
    torch.manual_seed(0)
    gan = GAN(nz=8, img_size=16, width=4, num_classes=2)
    opt = torch.optim.Adam(gan.param_groups(1e-3, 1e-3))
    G, D = list(gan.generator.parameters()), list(gan.discriminator.parameters())
    snaps: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    real_step = opt.step

    def recording_step(*a, **k):
        before = ([p.detach().clone() for p in G], [p.detach().clone() for p in D])
        out = real_step(*a, **k)
        after = ([p.detach().clone() for p in G], [p.detach().clone() for p in D])
        snaps.append((before, after))
        return out

    opt.step = recording_step
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    out = gan_train_step(gan, real, torch.tensor([0, 1] * 4), opt, GANStepOptions(real_label=0.9, flip_prob=0.2))
    assert len(snaps) == 2

    def moved(a, b):
        return any(not torch.equal(x, y) for x, y in zip(a, b))

    (g0, d0), (g1, d1) = snaps[0]  # D step: D moves, G untouched
    assert moved(d0, d1) and not moved(g0, g1)
    (g0, d0), (g1, d1) = snaps[1]  # G step: G moves, D bit-for-bit unchanged
    assert moved(g0, g1) and not moved(d0, d1)
    # Adam took exactly one step on every parameter (it skipped the grad-None ones)
    assert all(int(opt.state[p]["step"]) == 1 for p in G + D)
    assert set(out) == {"loss", "d_loss", "g_loss", "d_real", "d_fake", "diversity"}
    assert 0 < out["diversity"].item() < 5
    assert all(v.ndim == 0 and not v.requires_grad for v in out.values())
    assert out["loss"].item() == pytest.approx(out["d_loss"].item() + out["g_loss"].item())
    assert 0 < out["d_real"].item() < 1 and 0 < out["d_fake"].item() < 1


@pytest.mark.parametrize("loss", ["hinge", "wgan"])
def test_train_step_other_losses(loss):
    torch.manual_seed(0)
    gan = GAN(nz=8, img_size=16, width=4, spectral_norm=True)
    opt = torch.optim.AdamW(gan.param_groups(1e-3, 1e-3))
    out = gan_train_step(gan, torch.rand(4, 1, 16, 16) * 2 - 1, None, opt,
                         GANStepOptions(loss=loss, diffaug="color,translation,cutout", d_steps=2))  # fmt: skip
    assert all(torch.isfinite(v) for v in out.values())
    d_params = list(gan.discriminator.parameters())
    assert all(int(opt.state[p]["step"]) == 2 for p in d_params)  # d_steps=2 D updates
    assert all(int(opt.state[p]["step"]) == 1 for p in gan.generator.parameters())
    with pytest.raises(ConfigError, match="d_steps"):
        gan_train_step(gan, torch.zeros(2, 1, 16, 16), None, opt, GANStepOptions(d_steps=0))


def _two_blobs(n: int, g: torch.Generator) -> torch.Tensor:
    """16 px images: dark background, one bright Gaussian blob at the left or the right."""
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    cx = torch.where(torch.rand(n, generator=g) < 0.5, 4.0, 11.0)[:, None, None]
    blob = torch.exp(-((xs - cx) ** 2 + (ys - 8.0) ** 2) / (2 * 2.0**2))
    return (blob * 2 - 1)[:, None]


def test_short_training_learns_toy_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = _two_blobs(512, g)
    gan = GAN(nz=16, img_size=16, width=16)
    opt = torch.optim.Adam(gan.param_groups(2e-3, 2e-3))
    fixed = torch.Generator().manual_seed(123)
    z = torch.randn(256, 16, generator=fixed)
    target = data.mean(0)

    def gap() -> float:
        return (gan.sample(256, z=z).mean(0) - target).norm().item()

    before = gap()
    for step in range(150):
        idx = torch.randint(0, len(data), (32,), generator=g)
        gan_train_step(gan, data[idx], None, opt, GANStepOptions(real_label=0.9))
    after = gap()
    # the samples' mean image moved most of the way to the data's (dark background, blob row)
    assert after < 0.25 * before, (before, after)
    # not collapsed: diverse samples, and both modes (left blob / right blob) are produced
    s = gan.sample(64, z=z[:64])
    assert sample_diversity(s) > 0.5 * sample_diversity(data[:64])
    left = (s[:, 0, 8, 4] > s[:, 0, 8, 11]).float().mean().item()
    assert 0.15 < left < 0.85, left
