"""Representation quality: k-NN accuracy and a linear probe on frozen features.

* :func:`knn_predict` — cosine k-NN with the temperature-weighted vote of DINO's ``eval_knn.py`` (Caron et al.
  2021, after Wu et al. 2018): the ``k`` most similar bank features vote for their class with weight
  ``exp(cos / T)``; ``T=None`` is the plain majority vote (equal to scikit-learn's ``KNeighborsClassifier``
  with ``metric="cosine"``, tested).
* :func:`linear_probe` — scikit-learn's ``LogisticRegression`` on standardised frozen features.
* :class:`KNNMetric` — the engine's :class:`~optik.metrics.base.Metric`: collects query features, scores them
  against a bank (the training split's features) at ``compute()``.

>>> import torch
>>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]); labels = torch.tensor([0, 0, 1])
>>> knn_predict(torch.tensor([[1.0, 0.05]]), bank, labels, k=2, num_classes=2).argmax(1).tolist()
[0]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from optik.metrics.base import Metric

__all__ = ["KNNMetric", "knn_accuracy", "knn_predict", "linear_probe"]


@torch.no_grad()
def knn_predict(queries: Tensor, bank: Tensor, bank_labels: Tensor, *, k: int = 20, num_classes: int,
                temperature: float | None = 0.07, chunk: int = 1024) -> Tensor:  # fmt: skip
    """Class scores ``(Q, num_classes)`` of cosine k-NN: each query's ``k`` nearest bank rows (cosine
    similarity; features are L2-normalised here) vote ``exp(sim / temperature)`` for their label, or 1 each
    with ``temperature=None``. ``k`` is capped at the bank size. Queries go in chunks (memory ``chunk × N``)."""
    if bank.shape[0] == 0:
        raise ValueError("k-NN needs a non-empty feature bank")
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    k = min(k, bank.shape[0])
    out = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q.to(bank.device) @ bank.T).topk(k, dim=1)
        weight = torch.ones_like(sim) if temperature is None else (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=bank.device, dtype=weight.dtype)
        votes.scatter_add_(1, labels[idx], weight)  # sum of the weights of each class's neighbours
        out.append(votes.cpu())
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(queries: Tensor, labels: Tensor, bank: Tensor, bank_labels: Tensor, *, k: int = 20, num_classes: int,
                 temperature: float | None = 0.07) -> dict[str, float]:  # fmt: skip
    """Top-1 (and top-5 when there are more than 5 classes) k-NN accuracy of ``queries``.

    >>> bank = torch.eye(3); q = torch.eye(3) + 0.01
    >>> knn_accuracy(q, torch.arange(3), bank, torch.arange(3), k=1, num_classes=3)["knn_top1"]
    1.0
    """
    scores = knn_predict(queries, bank, bank_labels, k=k, num_classes=num_classes, temperature=temperature)
    labels = labels.long().cpu()
    out = {"knn_top1": float((scores.argmax(1) == labels).float().mean()) if len(labels) else float("nan")}
    if num_classes > 5 and len(labels):
        top5 = scores.topk(5, dim=1).indices
        out["knn_top5"] = float((top5 == labels[:, None]).any(1).float().mean())
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, C: float = 1.0,
                 max_iter: int = 1000, seed: int = 0) -> float:  # fmt: skip
    """Accuracy of a logistic-regression probe (scikit-learn, standardised features) trained on frozen
    ``train_x`` and scored on ``test_x``; NaN when the training features hold a single class.

    >>> rng = np.random.default_rng(0); x = rng.normal(size=(40, 4)); y = (x[:, 0] > 0).astype(int)
    >>> linear_probe(x[:30], y[:30], x[30:], y[30:]) > 0.8
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2 or len(test_y) == 0:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    clf.fit(np.asarray(train_x, np.float64), train_y)
    return float(clf.score(np.asarray(test_x, np.float64), test_y))


class KNNMetric(Metric):
    """Collects ``(features, labels)`` of the evaluated split; ``compute()`` scores them by k-NN against the
    bank set with :meth:`set_bank` (the training split's features from the same model), plus a linear probe
    when ``probe=True``. Its state is a list of features (not sums): ``sync`` gathers them across ranks."""

    fitness_key: ClassVar[str] = "knn_top1"

    def __init__(self, num_classes: int, *, k: int = 20, temperature: float | None = 0.07, probe: bool = False) -> None:
        self.num_classes, self.k, self.temperature, self.probe = num_classes, k, temperature, probe
        self.bank: Tensor | None = None
        self.bank_labels: Tensor | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.feats: list[Tensor] = []
        self.labels: list[Tensor] = []

    def set_bank(self, feats: Tensor, labels: Tensor) -> None:
        self.bank, self.bank_labels = feats.float().cpu(), labels.long().cpu()

    def update(self, preds: Tensor, targets: Tensor) -> None:
        self._check_updatable()
        self.feats.append(preds.detach().float().cpu())
        self.labels.append(torch.as_tensor(targets).long().cpu())

    def sync(self) -> None:
        import torch.distributed as dist

        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.feats, self.labels))
        self.feats = [f for fs, _ in gathered for f in fs]
        self.labels = [y for _, ys in gathered for y in ys]
        self._synced = True

    def features(self) -> tuple[Tensor, Tensor]:
        """Everything collected: ``(N, D)`` features and ``(N,)`` labels."""
        if not self.feats:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(self.feats), torch.cat(self.labels)

    def compute(self) -> dict[str, Any]:
        feats, labels = self.features()
        if self.bank is None:
            raise RuntimeError("KNNMetric.compute() before set_bank()")
        out: dict[str, Any] = {"knn_top1": float("nan"), "count": len(labels), "bank": len(self.bank_labels)}
        if len(labels):
            out.update(knn_accuracy(feats, labels, self.bank, self.bank_labels, k=self.k, num_classes=self.num_classes,
                                    temperature=self.temperature))  # fmt: skip
        if self.probe:
            out["probe_top1"] = linear_probe(self.bank.numpy(), self.bank_labels.numpy(), feats.numpy(), labels.numpy())
        return out
