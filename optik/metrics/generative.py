"""Metrics for generated images: FID, KID, Inception Score and k-NN precision/recall.

Pure metrics: they take images or features and a feature network, and train nothing (the
Classification Accuracy Score, which trains a classifier, is :mod:`optik.generative.cas`; loading a
classifier's weights file as a feature network is :mod:`optik.generative.features`).

Every metric works on *features* of images, so the feature extractor is a choice:

- :class:`InceptionFeatures`: torchvision's Inception-v3 (pool3, 2048-d) with weights from a local
  file. The classic FID/IS extractor; note that published FIDs use the original TF graph
  (pytorch-fid's ``pt_inception`` weights), so numbers from torchvision weights are comparable with
  each other, not with papers.
- :class:`ClassifierFeatures`: any trained classifier module (pre-logit features + softmax). On small
  domains (digits, 32 px) an ImageNet network sees mostly upsampling artefacts; a classifier trained
  on the domain gives a *dataset-specific* FID that tracks what matters there.

>>> ext = ClassifierFeatures(classifier, imgsz=32, mean=(0.5,) * 3, std=(0.5,) * 3)   # doctest: +SKIP
>>> m = GenerativeMetrics(ext)                                         # doctest: +SKIP
>>> m.update(fake_batch, real_batch)      # float (B, C, H, W) in [-1, 1]   # doctest: +SKIP
>>> m.compute()["FID"]                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from scipy.special import xlogy
from torch import Tensor, nn

from optik.errors import ConfigError
from optik.metrics.base import Metric

__all__ = [
    "ClassifierFeatures",
    "FeatureExtractor",
    "GenerativeMetrics",
    "InceptionFeatures",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kid_from_features",
    "precision_recall",
]

log = logging.getLogger(__name__)


# --- distances on features ------------------------------------------------------------------------
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017), as pytorch-fid:

    ``|mu1 - mu2|² + tr(s1) + tr(s2) - 2 tr(sqrtm(s1 s2))``. ``scipy.linalg.sqrtm`` of the product;
    if it is not finite (singular product) ``eps·I`` is added to both covariances; a numerically
    tiny imaginary part is dropped (a large one raises ``ValueError``).

    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
    2.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mean/covariance shapes disagree: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("frechet_distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # Rank-deficient covariances (fewer samples than dimensions) are normal here: scipy's
    # "matrix is singular" warning says nothing actionable, finiteness is checked by the caller.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(a)


def _check_features(f: Any, name: str, min_n: int = 2) -> np.ndarray:
    f = np.asarray(f.detach().cpu().numpy() if isinstance(f, Tensor) else f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < min_n:
        raise ValueError(f"{name}: need features of shape (N >= {min_n}, D), got {f.shape}")
    return f


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (N1, D), (N2, D): Fréchet distance of their Gaussian fits
    (mean, unbiased covariance ``np.cov``).

    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> abs(fid_from_features(x, x)) < 1e-6
    True
    """
    f1, f2 = _check_features(f1, "f1"), _check_features(f2, "f2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature widths differ: {f1.shape[1]} vs {f2.shape[1]}")
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel ``k(a, b) = (a·b / d + 1)³``."""
    d, m, n = x.shape[1], len(x), len(y)
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def kid_from_features(
    f1: np.ndarray, f2: np.ndarray, subsets: int = 10, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial
    kernel, averaged over ``subsets`` random subsets of ``subset_size`` from each set (drawn without
    replacement; clamped to the smaller set). Returns ``(mean, std)``; unbiased, so it can be < 0.

    >>> x = np.random.default_rng(0).normal(size=(200, 8))
    >>> same = kid_from_features(x[:100], x[100:], subset_size=50)[0]
    >>> shifted = kid_from_features(x[:100], x[100:] + 1, subset_size=50)[0]
    >>> abs(same) < 0.1 < shifted
    True
    """
    f1, f2 = _check_features(f1, "f1"), _check_features(f2, "f2")
    if subsets < 1 or subset_size < 2:
        raise ConfigError(f"kid: need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    vals = [
        _poly_mmd2(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split of the
    class probabilities ``probs`` (N, K); returns (mean, std) over splits (``0·log 0 = 0``).

    >>> inception_score(np.eye(4), splits=1)[0]      # 4 confident, distinct classes: the maximum
    4.0
    """
    p = _check_features(probs, "probs", min_n=1)
    splits = max(1, min(int(splits), len(p)))
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, py)).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_nn_radius(f: Tensor, k: int, chunk: int) -> Tensor:
    """Distance of each row to its k-th nearest *other* row (column 0 of the sort is itself)."""
    return torch.cat([torch.cdist(f[i : i + chunk], f).kthvalue(k + 1, dim=1).values for i in range(0, len(f), chunk)])


def _coverage(manifold: Tensor, radii: Tensor, queries: Tensor, chunk: int) -> float:
    """Share of ``queries`` inside some ball ``(manifold[j], radii[j])``."""
    inside = [(torch.cdist(queries[i : i + chunk], manifold) <= radii[None]).any(1) for i in range(0, len(queries), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real_f: np.ndarray, fake_f: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
    balls reaching every sample's k-th nearest neighbour; precision = share of fake samples on the
    real manifold (fidelity), recall = share of real samples on the fake manifold (diversity).
    Distances in float64 with ``torch.cdist``, ``chunk`` rows at a time.

    >>> x = np.random.default_rng(0).normal(size=(40, 5))
    >>> precision_recall(x, x)
    (1.0, 1.0)
    """
    real = torch.from_numpy(_check_features(real_f, "real_f", k + 1))
    fake = torch.from_numpy(_check_features(fake_f, "fake_f", k + 1))
    if k < 1:
        raise ConfigError(f"precision_recall: k must be >= 1, got {k}")
    r_real, r_fake = _kth_nn_radius(real, k, chunk), _kth_nn_radius(fake, k, chunk)
    return _coverage(real, r_real, fake, chunk), _coverage(fake, r_fake, real, chunk)


# --- feature extractors ---------------------------------------------------------------------------
class FeatureExtractor(Protocol):
    """Images float (B, C, H, W) in [-1, 1] → (features (B, D), class probabilities (B, K) or None)."""

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor | None]: ...


def _match_channels(x: Tensor, c: int) -> Tensor:
    if x.shape[1] == c:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, c, -1, -1)
    if c == 1:
        return x.mean(1, keepdim=True)
    raise ValueError(f"cannot map {x.shape[1]}-channel images to a {c}-channel model")


class ClassifierFeatures(nn.Module):
    """A trained classifier as feature extractor: pre-logit features + softmax probabilities.

    Images in [-1, 1] are mapped to [0, 1], their channels expanded (grey → RGB) or averaged to
    the model's ``in_chans``, resized to ``imgsz`` (bilinear, antialiased: the eval transform's
    Resize) and normalised with ``mean``/``std`` — the preprocessing the classifier was trained with.
    Features: native models ``forward_features``; timm ``forward_head(pre_logits=True)``; anything
    else with ``get_classifier()``: the input of its head.

    ``imgsz``, ``mean``, ``std``, ``in_chans`` default to the model's data config
    (:func:`optik.models.model_data_config`); :func:`optik.generative.features.classifier_features` loads
    an optik weights file / run dir with the values it was trained with.

    >>> ext = ClassifierFeatures(model, imgsz=32)                          # doctest: +SKIP
    >>> feats, probs = ext(torch.rand(4, 1, 32, 32) * 2 - 1)               # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, imgsz: int | None = None, mean: Any = None, std: Any = None, in_chans: int | None = None
    ) -> None:
        super().__init__()
        from optik.models import model_data_config

        norm = model_data_config(model)
        size = norm.get("input_size")
        self.model = model.eval()
        self.imgsz = int(imgsz or (size[-1] if size else 0)) or None
        self.in_chans = int(in_chans or (size[0] if size else 3))
        mean = _match_stats(mean if mean is not None else norm["mean"], self.in_chans)
        std = _match_stats(std if std is not None else norm["std"], self.in_chans)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] images → the model's normalised input."""
        x = ((images.float() + 1) / 2).clamp(0, 1)
        x = _match_channels(x, self.in_chans)
        if self.imgsz and tuple(x.shape[-2:]) != (self.imgsz, self.imgsz):
            x = F.interpolate(x, size=(self.imgsz, self.imgsz), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.preprocess(images.to(self.mean.device))
        m = self.model
        if hasattr(m, "forward_head"):  # timm: unpooled maps → pooled pre-logits
            maps = m.forward_features(x)
            feats, logits = m.forward_head(maps, pre_logits=True), m.forward_head(maps)
        elif hasattr(m, "forward_features"):  # native ImageClassifier: pooled features
            feats = m.forward_features(x)
            logits = m.get_classifier()(feats)
        else:  # e.g. HF: whatever enters the head
            got: list[Tensor] = []
            handle = m.get_classifier().register_forward_pre_hook(lambda _mod, args: got.append(args[0]))
            try:
                logits = m(x)
            finally:
                handle.remove()
            feats = got[0]
        return feats.flatten(1).float(), logits.float().softmax(1)


def _match_stats(v: Any, c: int) -> tuple[float, ...]:
    v = tuple(float(a) for a in v)
    return v if len(v) == c else (sum(v) / len(v),) * c


class InceptionFeatures(nn.Module):
    """torchvision Inception-v3 (pool3 features, 2048-d, + softmax over its classes) with weights
    from a local ``.pt``/``.pth``/``.safetensors`` torchvision state dict — never downloaded.

    Images in [-1, 1] go in unchanged (Inception's own input range; ``transform_input=False``),
    grey is repeated to RGB, and the size becomes 299×299 by bilinear resizing (as pytorch-fid).

    >>> ext = InceptionFeatures("weights/inception_v3.pth")             # doctest: +SKIP
    >>> ext(torch.zeros(2, 3, 64, 64))[0].shape                         # doctest: +SKIP
    torch.Size([2, 2048])
    """

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        super().__init__()
        from torchvision.models import inception_v3

        from optik.weights import load_state_dict

        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"bad value for 'weights': Inception weights file '{path}' not found (nothing is downloaded)")
        state = load_state_dict(path)
        fc = state.get("fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None else 1000
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False, num_classes=num_classes)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("AuxLogits.")]  # the aux head is never used
        if missing or unexpected:
            raise ConfigError(
                f"bad value for 'weights': '{path}' is not a torchvision inception_v3 state dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        self.net = net.eval().to(device)
        self._pool: list[Tensor] = []
        self.net.avgpool.register_forward_hook(lambda _m, _a, out: self._pool.append(out))

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = _match_channels(images.float().to(next(self.net.parameters()).device), 3)
        if tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        self._pool.clear()
        logits = self.net(x)
        feats = self._pool.pop().flatten(1)
        return feats.float(), logits.float().softmax(1)


# --- accumulating metric --------------------------------------------------------------------------
class GenerativeMetrics(Metric):
    """FID, KID, IS and k-NN precision/recall over batches of generated and real images.

    ``update(fake, real)`` takes float (B, C, H, W) in [-1, 1] (either may be None) and stores their
    features (these metrics need whole sets, not sums). ``compute()`` returns ``FID``, ``KID``,
    ``KID_std``, ``IS``, ``IS_std`` (NaN when the extractor gives no probabilities), ``precision``,
    ``recall``, ``n_fake``, ``n_real`` and ``fitness`` = -FID. ``reset(keep_real=True)`` keeps the
    real features (they do not change between epochs). FID and KID need two images of each set (a
    covariance, an unbiased MMD): with fewer they are NaN — so is ``fitness``, which the trainer reads
    as "the latest weights are the best guess" — rather than an error (a one-image val split, issue 17).

    >>> m = GenerativeMetrics(extractor)                    # doctest: +SKIP
    >>> m.update(gan.sample(64), real_batch); m.compute()["FID"]   # doctest: +SKIP
    """

    fitness_key: ClassVar[str] = "fitness"

    def __init__(self, extractor: FeatureExtractor, kid_subset_size: int = 100, pr_k: int = 3, kid_subsets: int = 10) -> None:
        self.extractor = extractor
        self.kid_subset_size, self.kid_subsets, self.pr_k = kid_subset_size, kid_subsets, pr_k
        self._real: list[np.ndarray] = []
        self.reset()

    def _reset_state(self) -> None:
        self._fake: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def reset(self, keep_real: bool = False) -> None:  # type: ignore[override]
        """Forget the fake features (and the real ones unless ``keep_real``)."""
        super().reset()
        if not keep_real:
            self._real = []

    def _extract(self, images: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        feats, probs = self.extractor(images)
        return feats.detach().double().cpu().numpy(), None if probs is None else probs.detach().double().cpu().numpy()

    def update(self, fake: Tensor | None, real: Tensor | None = None) -> None:  # type: ignore[override]
        """Add a batch of generated and/or real images (float, [-1, 1])."""
        self._check_updatable()
        if fake is not None and len(fake):
            feats, probs = self._extract(fake)
            self._fake.append(feats)
            if probs is not None:
                self._probs.append(probs)
        if real is not None and len(real):
            self._real.append(self._extract(real)[0])

    def sync(self) -> None:
        """Gather every rank's features (``all_gather_object``); a no-op without a process group."""
        import torch.distributed as dist

        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self._fake, self._probs, self._real))
        self._fake = [a for g in gathered for a in g[0]]
        self._probs = [a for g in gathered for a in g[1]]
        self._real = [a for g in gathered for a in g[2]]
        self._synced = True

    def compute(self) -> dict:
        if not self._fake or not self._real:
            raise ValueError("GenerativeMetrics.compute(): needs both fake and real images (call update first)")
        fake, real = np.concatenate(self._fake), np.concatenate(self._real)
        if min(len(fake), len(real)) >= 2:
            fid = fid_from_features(fake, real)
            kid, kid_std = kid_from_features(fake, real, subsets=self.kid_subsets, subset_size=self.kid_subset_size)
        else:  # the task says why, once, before training (GenerateTask.datasets)
            log.debug("FID/KID skipped: %d generated and %d real images (need >= 2 each)", len(fake), len(real))
            fid = kid = kid_std = float("nan")
        is_mean, is_std = inception_score(np.concatenate(self._probs)) if self._probs else (float("nan"),) * 2
        k = min(self.pr_k, len(fake) - 1, len(real) - 1)
        precision, recall = precision_recall(real, fake, k=k) if k >= 1 else (float("nan"),) * 2
        return {
            "FID": fid, "KID": kid, "KID_std": kid_std, "IS": is_mean, "IS_std": is_std,
            "precision": precision, "recall": recall, "fitness": -fid, "n_fake": len(fake), "n_real": len(real),
        }  # fmt: skip
