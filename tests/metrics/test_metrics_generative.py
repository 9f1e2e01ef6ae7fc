"""Generative metrics vs straightforward NumPy references (different algorithms where possible)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optik.errors import ConfigError
from optik.generative.features import classifier_features
from optik.metrics import generative as G


# --- references ------------------------------------------------------------------------------------
def ref_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """tr sqrt(s1 s2) = tr sqrt(A s2 A) with A = s1^½, both via symmetric eigendecompositions."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(a @ s2 @ a), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def ref_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD², cubic kernel, explicit loops over pairs."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def ref_is(p: np.ndarray, splits: int) -> tuple[float, float]:
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0)
        kl = [sum(pi * math.log(pi / q) for pi, q in zip(row, py) if pi > 0) for row in part]
        scores.append(math.exp(sum(kl) / len(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def ref_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(a):
        return np.array([sorted(np.linalg.norm(a - x, axis=1))[k] for x in a])

    def cover(manifold, r, queries):
        return float(np.mean([any(np.linalg.norm(q - m) <= rj for m, rj in zip(manifold, r)) for q in queries]))

    return cover(real, radii(real), fake), cover(fake, radii(fake), real)


@pytest.fixture(scope="module")
def digit_vectors() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64) / 16.0, d.target


# --- FID -------------------------------------------------------------------------------------------
def test_fid_matches_eigen_reference():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    f2 = rng.normal(0.5, 2.0, size=(150, 6)) @ rng.normal(size=(6, 6))
    got, want = G.fid_from_features(f1, f2), ref_fid(f1, f2)
    assert want > 1.0
    assert got == pytest.approx(want, rel=1e-8)
    # frechet_distance on explicit statistics: hand value for diagonal covariances
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    hand = 1 + 4 + 1 + 4 + 9 + 1 - 2 * (3 + 2)  # |mu diff|² = 1 + 4; tr sqrt(s1 s2) = 3 + 2
    assert G.frechet_distance(np.zeros(2), s1, np.array([1.0, 2.0]), s2) == pytest.approx(hand)


def test_fid_same_set_is_zero_and_grows_with_noise(digit_vectors):
    x, _ = digit_vectors
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(G.fid_from_features(x, x)) < 1e-6 * scale
    rng = np.random.default_rng(0)
    fids = [G.fid_from_features(x, x + rng.normal(0, s, x.shape)) for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fids[-1] == pytest.approx(ref_fid(x, x + np.random.default_rng(0).normal(0, 0.4, x.shape)), rel=1e-2)


def test_fid_singular_covariance_uses_eps_offset(monkeypatch):
    calls = []
    real_sqrtm = G._sqrtm

    def flaky(a):  # first call "fails" as scipy does on a singular product: non-finite result
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(G, "_sqrtm", flaky)
    s = np.diag([1.0, 0.0])
    d = G.frechet_distance(np.zeros(2), s, np.zeros(2), s, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s + 1e-6 * np.eye(2)) @ (s + 1e-6 * np.eye(2)))
    assert math.isfinite(d) and abs(d) < 1e-2


def test_fid_rank_deficient_real_features():
    """Fewer samples than dimensions: singular covariances, still the reference value."""
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(8, 12)), rng.normal(1.0, 1.0, size=(9, 12))
    assert G.fid_from_features(f1, f2) == pytest.approx(ref_fid(f1, f2), rel=1e-4, abs=1e-6)


def test_fid_large_imaginary_part_raises(monkeypatch):
    monkeypatch.setattr(G, "_sqrtm", lambda a: np.eye(len(a)) * (1 + 1j))
    with pytest.raises(ValueError, match="imaginary"):
        G.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    monkeypatch.setattr(G, "_sqrtm", lambda a: np.eye(len(a)) * (1 + 1e-9j))
    assert G.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0.0)


def test_fid_bad_shapes():
    with pytest.raises(ValueError):
        G.fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        G.fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


# --- KID -------------------------------------------------------------------------------------------
def test_kid_matches_double_loop_reference():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.2, size=(12, 5))
    # subset_size = set size: every subset is a permutation, and MMD² is permutation invariant
    mean, std = G.kid_from_features(x, y, subsets=3, subset_size=12)
    assert mean == pytest.approx(ref_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    # clamped to the smaller set
    assert G.kid_from_features(x, y[:7], subsets=1, subset_size=50)[0] != 0.0


def test_kid_zero_on_same_distribution_positive_when_shifted(digit_vectors):
    x, _ = digit_vectors
    a, b = x[::2], x[1::2]
    same, _ = G.kid_from_features(a, b, subsets=10, subset_size=100)
    shifted, _ = G.kid_from_features(a, b + 0.3, subsets=10, subset_size=100)
    assert abs(same) < 0.05 * shifted
    assert shifted > 0
    with pytest.raises(ConfigError):
        G.kid_from_features(a, b, subsets=0)


# --- Inception Score -------------------------------------------------------------------------------
def test_inception_score_matches_hand_computation():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(5, 0.3), size=40)
    p[0] = [1, 0, 0, 0, 0]  # a zero probability: 0·log 0 = 0
    got = G.inception_score(p, splits=4)
    want = ref_is(p, 4)
    assert got[0] == pytest.approx(want[0], rel=1e-10) and got[1] == pytest.approx(want[1], rel=1e-8)
    assert G.inception_score(np.full((10, 4), 0.25), splits=2) == pytest.approx((1.0, 0.0))
    assert G.inception_score(np.eye(4)[[0, 1, 2, 3] * 5], splits=1)[0] == pytest.approx(4.0)


# --- precision / recall ----------------------------------------------------------------------------
def test_precision_recall_matches_loops_and_chunking():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 4)), rng.normal(1.5, 0.6, size=(25, 4))
    want = ref_pr(real, fake, 3)
    assert G.precision_recall(real, fake, k=3) == pytest.approx(want)
    assert G.precision_recall(real, fake, k=3, chunk=7) == pytest.approx(want)
    assert 0 < want[0] < 1 and 0 < want[1] < 1


def test_precision_recall_identical_then_shifted(digit_vectors):
    x, _ = digit_vectors
    assert G.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    p, r = G.precision_recall(x, x + 1.5, k=3)
    assert p < 0.5 and r < 0.5
    # mode collapse: fakes from one class only → high precision, low recall
    _, y = digit_vectors
    p, r = G.precision_recall(x[y != 0], x[y == 0], k=3)
    assert r < 0.3


# --- classifier features (dataset-specific FID) ----------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from optik.config import build_config
    from optik.engine.trainer import Trainer

    project = tmp_path_factory.mktemp("gen_runs")
    cfg = build_config(
        "classify", "train",
        {"data": "digits", "model": "cnn", "epochs": 1, "imgsz": 16, "batch": 32, "project": str(project), "plots": False},
    )  # fmt: skip
    return Trainer(cfg).fit()


@pytest.fixture(scope="module")
def digit_images() -> tuple[torch.Tensor, np.ndarray]:
    from optik.data.synthetic import digits

    x, y, _ = digits(16)
    grey = torch.from_numpy(x[..., 0]).float()[:, None] / 127.5 - 1  # (N, 1, 16, 16) in [-1, 1]
    return grey, y


def test_classifier_features_match_manual_pipeline(digits_run, digit_images):
    from optik.engine.checkpoint import read_meta

    ext = classifier_features(digits_run["run_dir"])
    meta = read_meta(digits_run["best"])
    assert ext.imgsz == 16 and ext.in_chans == 3
    x, y = digit_images[0][:64], digit_images[1][:64]
    feats, probs = ext(x)
    assert feats.shape == (64, 64) and probs.shape == (64, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(64))
    # by hand: [-1,1] → [0,1] → RGB → normalise with the weights' mean/std → forward_features → head
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    inp = (((x + 1) / 2).repeat(1, 3, 1, 1) - mean) / std
    with torch.no_grad():
        want = ext.model.forward_features(inp)
        torch.testing.assert_close(feats, want)
        torch.testing.assert_close(probs, ext.model(inp).softmax(1))
    # RGB input of the same grey image: same features; a larger image is resized to imgsz
    torch.testing.assert_close(ext(x.repeat(1, 3, 1, 1))[0], feats)
    assert ext(torch.nn.functional.interpolate(x, size=32, mode="bilinear"))[0].shape == (64, 64)
    assert (probs.argmax(1).numpy() == y).mean() > 0.3  # it learned something in one epoch


def test_classifier_fid_and_generative_metrics(digits_run, digit_images):
    ext = classifier_features(digits_run["best"])
    x, y = digit_images
    a, b = x[0:600:2], x[1:600:2]
    gen = torch.Generator().manual_seed(0)
    noisy = (b + 0.5 * torch.randn(b.shape, generator=gen)).clamp(-1, 1)
    fa, fb, fn = ext(a)[0].double().numpy(), ext(b)[0].double().numpy(), ext(noisy)[0].double().numpy()
    assert G.fid_from_features(fa, fb) < G.fid_from_features(fa, fn)

    m = G.GenerativeMetrics(ext, kid_subset_size=50)
    for i in range(0, len(b), 100):  # batches, fake and real interleaved
        m.update(noisy[i : i + 100], a[i : i + 100])
    r = m.compute()
    assert r["n_fake"] == r["n_real"] == 300
    assert r["FID"] == pytest.approx(ref_fid(fn, fa), rel=1e-4)
    assert r["fitness"] == -r["FID"] and m.fitness_key == "fitness"
    assert (r["KID"], r["KID_std"]) == pytest.approx(G.kid_from_features(fn, fa, subset_size=50))
    assert (r["precision"], r["recall"]) == pytest.approx(G.precision_recall(fa, fn, k=3))
    assert (r["IS"], r["IS_std"]) == pytest.approx(G.inception_score(ext(noisy)[1].double().numpy()))
    assert 1.0 <= r["IS"] <= 10.0

    m.reset(keep_real=True)
    m.update(b)  # real kept: FID(b, a) is now the small same-distribution value
    assert m.compute()["FID"] < r["FID"]
    m.reset()
    with pytest.raises(ValueError, match="fake and real"):
        m.compute()


def test_classifier_features_timm_and_head_hook_paths():
    from optik import models

    torch.manual_seed(0)
    x = torch.rand(3, 1, 20, 20) * 2 - 1
    timm_model = models.create("timm:resnet18", num_classes=5, img_size=32).eval()
    ext = G.ClassifierFeatures(timm_model, imgsz=32)
    feats, probs = ext(x)
    inp = ext.preprocess(x)
    with torch.no_grad():
        torch.testing.assert_close(feats, timm_model.forward_head(timm_model.forward_features(inp), pre_logits=True))
        torch.testing.assert_close(probs, timm_model(inp).softmax(1))

    class Plain(torch.nn.Module):  # no forward_features: the input of get_classifier() is the feature
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 6))
            self.fc = torch.nn.Linear(6, 4)

        def get_classifier(self):
            return self.fc

        def forward(self, x):
            return self.fc(self.body(x))

    plain = Plain().eval()
    ext = G.ClassifierFeatures(plain, imgsz=8, mean=(0.5,), std=(0.25,), in_chans=1)
    feats, probs = ext(x.repeat(1, 3, 1, 1))  # RGB averaged back to grey
    inp = (torch.nn.functional.interpolate((x + 1) / 2, size=8, mode="bilinear", antialias=True) - 0.5) / 0.25
    with torch.no_grad():
        torch.testing.assert_close(feats, plain.body(inp))
        torch.testing.assert_close(probs, plain(inp).softmax(1))


# --- Inception features ----------------------------------------------------------------------------
def test_inception_features_from_local_random_weights(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    path = tmp_path / "inception.pt"
    torch.save(net.state_dict(), path)
    ext = G.InceptionFeatures(path)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats, probs = ext(x)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1000)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    # by hand: grey → RGB, bilinear 299, the network with its fc removed gives pool3
    inp = torch.nn.functional.interpolate(x.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False)
    net.transform_input = False
    with torch.no_grad():
        logits = net(inp)
        net.fc = torch.nn.Identity()
        pool = net(inp)
    torch.testing.assert_close(feats, pool, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs, logits.softmax(1), rtol=1e-4, atol=1e-6)

    with pytest.raises(ConfigError, match="not found"):
        G.InceptionFeatures(tmp_path / "missing.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="inception_v3"):
        G.InceptionFeatures(tmp_path / "other.pt")
