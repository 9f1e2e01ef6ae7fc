"""ConvVAE / β-VAE loss / CVAE / autoencoder mode: shapes, hand-computed loss terms, determinism,
interpolation and reconstruction panels, and a short CPU training run that must learn."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from optik.errors import ConfigError
from optik.models.generative.vae import (
    ConvVAE,
    VAEOutput,
    interpolation_grid,
    kl_divergence,
    reconstructions,
    vae_loss,
)


def tiny(**kw) -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(**{"img_size": 16, "latent_dim": 4, "width": 8, **kw})


def squares(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Binary toy images in [-1, 1]: one bright 5×5 square at a random place on a dark background."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, 1, size, size)
    pos = torch.randint(0, size - 5, (n, 2), generator=g)
    for i, (r, c) in enumerate(pos.tolist()):
        x[i, :, r : r + 5, c : c + 5] = 1.0
    return x


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(size, channels):
    vae = tiny(img_size=size, channels=channels)
    x = torch.rand(2, channels, size, size) * 2 - 1
    out = vae(x)
    assert out.recon.shape == x.shape and out.mu.shape == out.logvar.shape == out.z.shape == (2, 4)
    img = vae.decode(out.mu)
    assert img.shape == x.shape and img.min() >= -1 and img.max() <= 1
    torch.testing.assert_close(out.images, torch.sigmoid(out.recon) * 2 - 1)
    assert vae.sample(3).shape == (3, channels, size, size)


def test_kl_closed_form_on_hand_set_values():
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # row 0: ½[(1 + 1 − 1 − 0) + (4 + 4 − 1 − ln 4)] = 4 − ln 2; row 1: standard normal → 0
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.tensor([4 - math.log(2), 0.0]))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(1)
    torch.testing.assert_close(kl_divergence(mu, logvar), ref)
    out = VAEOutput(torch.zeros(2, 1, 2, 2), mu, logvar, mu)
    torch.testing.assert_close(vae_loss(out, torch.zeros(2, 1, 2, 2))["kl"], torch.tensor((4 - math.log(2)) / 2))


def test_recon_terms_match_hand_formulas():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 4, 4, generator=g)
    x = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    out = VAEOutput(logits, torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    t = (x + 1) / 2
    bce = (F.softplus(logits) - t * logits).sum() / 3  # −log Bernoulli(t | σ(l)), per image summed
    torch.testing.assert_close(vae_loss(out, x, recon="bce")["recon"], bce)
    mse = ((2 * torch.sigmoid(logits) - 1 - x) ** 2).sum() / 3
    torch.testing.assert_close(vae_loss(out, x, recon="mse")["recon"], mse)


def test_beta_scales_only_kl():
    vae = tiny()
    x = squares(4)
    torch.manual_seed(3)
    out = vae(x)
    l0, l1, l3 = (vae_loss(out, x, beta=b) for b in (0.0, 1.0, 3.0))
    assert l1["kl"] > 0
    torch.testing.assert_close(l0["loss"], l0["recon"])
    for lb in (l1, l3):
        torch.testing.assert_close(lb["recon"], l0["recon"])
        torch.testing.assert_close(lb["kl"], l0["kl"])
    torch.testing.assert_close(l3["loss"] - l1["loss"], 2 * l1["kl"])


def test_reparameterization_train_vs_eval():
    vae = tiny()
    x = squares(4)
    vae.train()
    a, b = vae(x), vae(x)
    assert not torch.equal(a.z, b.z) and not torch.equal(a.z, a.mu)  # z = mu + σε, fresh ε
    vae_loss(a, x)["loss"].backward()
    assert vae.fc_logvar.weight.grad.abs().sum() > 0  # gradient flows through σ
    vae.eval()
    c, d = vae(x), vae(x)
    torch.testing.assert_close(c.recon, d.recon, rtol=0, atol=0)
    torch.testing.assert_close(c.z, c.mu, rtol=0, atol=0)


def test_plain_autoencoder_has_zero_kl():
    vae = tiny(variational=False)
    assert vae.fc_logvar is None
    x = squares(4)
    vae.train()
    out = vae(x)
    torch.testing.assert_close(out.z, out.mu, rtol=0, atol=0)  # deterministic even in train mode
    assert out.mu.abs().sum() > 0
    losses = vae_loss(out, x, beta=4.0)
    assert losses["kl"].item() == 0.0
    torch.testing.assert_close(losses["loss"], losses["recon"])


def test_interpolation_endpoints_and_rows():
    vae = tiny()
    x_a, x_b = squares(2, seed=1), squares(2, seed=2)
    grid = interpolation_grid(vae, x_a, x_b, steps=5)
    assert grid.shape == (10, 1, 16, 16) and vae.training  # mode restored
    vae.eval()
    mu_a, _ = vae.encode(x_a)
    mu_b, _ = vae.encode(x_b)
    with torch.no_grad():
        rows = grid.view(2, 5, 1, 16, 16)
        torch.testing.assert_close(rows[:, 0], vae.decode(mu_a))
        torch.testing.assert_close(rows[:, -1], vae.decode(mu_b))
        torch.testing.assert_close(rows[:, 2], vae.decode((mu_a + mu_b) / 2))
    assert not torch.allclose(rows[0, 0], rows[0, -1])


def test_reconstructions_interleave_originals_and_decodes():
    vae = tiny()
    x = squares(3)
    panel = reconstructions(vae, x)
    assert panel.shape == (6, 1, 16, 16)
    torch.testing.assert_close(panel[0::2], x)
    vae.eval()
    with torch.no_grad():
        torch.testing.assert_close(panel[1::2], vae.decode(vae.encode(x)[0]))


def test_sample_seeded_and_given_z():
    vae = tiny()
    s1 = vae.sample(4, generator=torch.Generator().manual_seed(7))
    s2 = vae.sample(4, generator=torch.Generator().manual_seed(7))
    s3 = vae.sample(4, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.allclose(s1, s3)
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))
    vae.eval()
    with torch.no_grad():
        torch.testing.assert_close(vae.sample(4, z=z), vae.decode(z))
        torch.testing.assert_close(s1, vae.decode(z))  # the prior draw is N(0, I) from that generator


def test_conditional_vae_uses_labels():
    vae = tiny(num_classes=3)
    vae.eval()
    z = torch.zeros(3, 4)
    imgs = vae.sample(3, labels=torch.tensor([0, 1, 2]), z=z)
    assert not torch.allclose(imgs[0], imgs[1]) and not torch.allclose(imgs[1], imgs[2])
    torch.testing.assert_close(vae.sample(3, z=z), imgs)  # default labels cycle 0, 1, 2
    x = squares(3)
    mu0, _ = vae.encode(x, torch.zeros(3, dtype=torch.long))
    mu1, _ = vae.encode(x, torch.ones(3, dtype=torch.long))
    assert not torch.allclose(mu0, mu1)  # the encoder sees the label too
    assert interpolation_grid(vae, x, x.flip(0), steps=3, labels=torch.tensor([0, 1, 2])).shape == (9, 1, 16, 16)
    with pytest.raises(ConfigError, match="labels"):
        vae(x)
    with pytest.raises(ConfigError, match="labels"):
        vae(x, torch.tensor([0, 1, 3]))


def test_config_dict_rebuilds_model():
    vae = tiny(channels=3, img_size=32, num_classes=2, variational=False)
    cfg = json.loads(json.dumps(vae.config_dict()))
    assert cfg == {"channels": 3, "img_size": 32, "latent_dim": 4, "width": 8, "num_classes": 2, "variational": False}
    clone = ConvVAE(**cfg)
    clone.load_state_dict(vae.state_dict())
    z = torch.randn(2, 4)
    torch.testing.assert_close(clone.sample(2, z=z), vae.sample(2, z=z))


def test_bad_values_raise_config_error():
    with pytest.raises(ConfigError, match="img_size"):
        ConvVAE(img_size=24)
    with pytest.raises(ConfigError, match="latent_dim"):
        ConvVAE(latent_dim=0)
    out = tiny()(squares(2))
    with pytest.raises(ConfigError, match="recon"):
        vae_loss(out, squares(2), recon="l1")


@pytest.mark.parametrize("variational", [True, False])
def test_short_training_halves_reconstruction_loss(variational):
    torch.manual_seed(0)
    vae = ConvVAE(img_size=16, latent_dim=8, width=16, variational=variational)
    data = squares(256, seed=0)
    held = squares(64, seed=99)  # unseen positions/mix: the model must generalise, not memorise

    def held_recon() -> float:
        vae.eval()
        with torch.no_grad():
            r = vae_loss(vae(held), held)["recon"].item()
        vae.train()
        return r

    before = held_recon()
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x = data[torch.randint(0, len(data), (32,), generator=g)]
        loss = vae_loss(vae(x), x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = held_recon()
    assert after < 0.5 * before, (before, after)
