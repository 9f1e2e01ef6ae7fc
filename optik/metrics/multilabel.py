"""Multi-label classification metrics: mAP (macro / micro average precision), P/R/F1 at per-class
thresholds, Hamming loss, subset accuracy, and the per-class thresholds that maximise F1.

Semantics follow scikit-learn (the tests compare against ``average_precision_score``, ``f1_score``,
``precision_recall_fscore_support``, ``hamming_loss`` and ``accuracy_score`` on multi-hot arrays):

* AP is scikit-learn's step-wise ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores, ties grouped.
  **A class with no positive image has AP 0** and still counts in the macro mean (scikit-learn warns
  "No positive class found in y_true" and does the same); micro AP pools every (image, class) pair.
* AP ranks the *logits*: sigmoid is monotone, and ranking before it avoids the ties float32 sigmoid
  makes when it saturates at 1.0. Decisions (F1, Hamming, subset accuracy, thresholds) use
  ``sigmoid(logits) >= threshold`` in float32, exactly what :class:`optik.results.Results` does at predict.
* P/R/F1 use ``zero_division=0``: a class never predicted has precision 0, a class with no positive
  recall 0, and one with neither F1 0.

>>> m = MultiLabelMetrics(3, class_names=["cat", "dog", "bird"])
>>> m.update(torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -2.0]]), torch.tensor([[1, 0, 1], [0, 1, 0]]))
>>> r = m.compute()
>>> r["mAP"], r["subset_accuracy"], r["hamming_loss"]
(1.0, 1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from optik.errors import ConfigError
from optik.metrics.base import Metric

__all__ = ["MultiLabelMetrics", "average_precision", "best_f1_thresholds", "format_multilabel_table"]

DEFAULT_THRESHOLD = 0.5


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True / false positives counted at each distinct score (descending) and those scores:
    scikit-learn's ``_binary_clf_curve`` (ties grouped into one step)."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = last + 1 - tps
    return tps, fps, s[last]


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one binary problem, equal to ``sklearn.metrics.average_precision_score``
    (0.0 when there is no positive, where scikit-learn warns and gives 0 too).

    >>> average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    0.8333333333333333
    """
    y = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size == 0 or not y.any():
        return 0.0
    tps, fps, _ = _curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1_thresholds(
    y_true: np.ndarray, probs: np.ndarray, default: Sequence[float] | float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the threshold on ``probs`` that maximises F1 on these images, and that F1.

    A label is predicted when ``prob >= threshold``. Every cut between two distinct scores gives the same
    F1 here, so the threshold is put midway between the lowest score kept and the highest score dropped
    (0 when none is dropped), computed in float32 so the cut falls where predict (float32 scores) puts it.
    Of equally good cuts the highest wins. A class with no positive image keeps its ``default``.

    y_true: (N, C) 0/1. probs: (N, C) scores in [0, 1]. Returns float32 thresholds (C,) and float64 F1 (C,).

    >>> t, f1 = best_f1_thresholds(np.array([[1], [1], [0]]), np.array([[0.9], [0.6], [0.3]], np.float32))
    >>> round(float(t[0]), 3), float(f1[0])
    (0.45, 1.0)
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float32)
    c = p.shape[1]
    thresholds = np.broadcast_to(np.asarray(default, np.float32), (c,)).copy()
    f1 = np.zeros(c, np.float64)
    for k in range(c):
        positives = int(y[:, k].sum())
        if positives == 0:
            continue
        tps, fps, cuts = _curve(y[:, k], p[:, k])
        scores = 2.0 * tps / (tps + fps + positives)
        best = int(np.argmax(scores))  # first maximum = highest threshold
        f1[k] = scores[best]
        keep = cuts[best]
        drop = cuts[best + 1] if best + 1 < len(cuts) else np.float32(0.0)
        mid = np.float32((np.float64(keep) + np.float64(drop)) / 2)
        thresholds[k] = mid if drop < mid <= keep else keep
    return thresholds, f1


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


class MultiLabelMetrics(Metric):
    """mAP, P/R/F1 at thresholds, Hamming loss and subset accuracy over batches of multi-hot targets.

    ``update(logits, targets)``: logits (B, C) (before sigmoid); targets (B, C) multi-hot (0/1, bool or
    float; soft values are binarised at 0.5). ``thresholds``: one per class (or one for all) applied to
    ``sigmoid(logits)``; default 0.5.

    AP needs every score, so the state is the list of batches (not sums): :meth:`sync` gathers the other
    ranks' batches (rank order) instead of summing — the result equals one process over all images.

    ``compute()`` keys: ``mAP`` (macro AP, the ``fitness_key``), ``mAP_micro``, ``f1_macro``,
    ``f1_micro``, ``precision_macro``, ``recall_macro``, ``precision_micro``, ``recall_micro``,
    ``hamming_loss``, ``subset_accuracy`` (the whole label set right), ``f1_macro_tuned`` (macro F1 at
    :attr:`tuned_thresholds` — optimistic: tuned on the very images it is measured on), ``count``,
    ``thresholds`` (those used), ``tuned_thresholds`` (per class F1-maximising, see
    :func:`best_f1_thresholds`) and ``per_class`` (lists ``ap``, ``precision``, ``recall``, ``f1``,
    ``support``, ``threshold``, ``names``).
    """

    fitness_key: ClassVar[str] = "mAP"

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        thresholds: Sequence[float] | float | None = None,
    ) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        t = np.asarray(DEFAULT_THRESHOLD if thresholds is None else thresholds, np.float64).reshape(-1)
        if t.size not in (1, num_classes) or not np.all((t >= 0) & (t <= 1)):
            raise ConfigError(f"thresholds must be one value or {num_classes} values in [0, 1], got {t.tolist()}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.thresholds = np.broadcast_to(t.astype(np.float32), (num_classes,)).copy()
        self.reset()

    def _reset_state(self) -> None:
        self._logits: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._result: dict[str, Any] | None = None

    def update(self, logits: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch: logits (B, C) float, targets (B, C) multi-hot."""
        self._check_updatable()
        logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
        c = self.num_classes
        if logits.ndim != 2 or logits.shape[1] != c:
            raise ValueError(f"logits must have shape (B, {c}), got {tuple(logits.shape)}")
        if targets.shape != logits.shape:
            raise ValueError(f"targets must be multi-hot of shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
        self._logits.append(logits.detach().float())
        self._targets.append(targets.detach() >= 0.5 if targets.is_floating_point() else targets.detach() != 0)
        self._result = None

    def sync(self) -> None:
        """Gather every rank's batches into each rank (rank order); a no-op without a process group."""
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        logits, targets = self._arrays()
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (logits, targets))
        self._logits = [torch.from_numpy(g[0]) for g in gathered]
        self._targets = [torch.from_numpy(g[1]) for g in gathered]
        self._result = None
        self._synced = True

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything accumulated: logits float32 (N, C) and targets bool (N, C), on the CPU."""
        if not self._logits:
            return np.zeros((0, self.num_classes), np.float32), np.zeros((0, self.num_classes), bool)
        return torch.cat(self._logits).cpu().numpy(), torch.cat(self._targets).cpu().numpy()

    def compute(self) -> dict[str, Any]:
        if self._result is not None:  # computed once per state: checkpoint metadata asks again
            return dict(self._result)
        logits, y = self._arrays()
        n, c = y.shape
        # The same float32 sigmoid and comparison as predict (Results): decisions match it bit for bit.
        probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
        pred = probs >= self.thresholds
        tp = (pred & y).sum(0)
        support, predicted = y.sum(0), pred.sum(0)
        ap = np.array([average_precision(y[:, k], logits[:, k]) for k in range(c)])
        tuned, tuned_f1 = best_f1_thresholds(y, probs, self.thresholds)
        precision, recall, f1 = _ratio(tp, predicted), _ratio(tp, support), _ratio(2 * tp, support + predicted)
        TP, P, S = tp.sum(), predicted.sum(), support.sum()  # micro: pooled counts
        result: dict[str, Any] = {
            "mAP": float(ap.mean()),
            "mAP_micro": average_precision(y.reshape(-1), logits.reshape(-1)),
            "f1_macro": float(f1.mean()),
            "f1_micro": float(_ratio(2 * TP, S + P)),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "precision_micro": float(_ratio(TP, P)),
            "recall_micro": float(_ratio(TP, S)),
            "hamming_loss": float((pred != y).mean()) if n else 0.0,
            "subset_accuracy": float((pred == y).all(1).mean()) if n else 0.0,
            "f1_macro_tuned": float(tuned_f1.mean()),
            "count": int(n),
            "thresholds": self.thresholds.tolist(),
            "tuned_thresholds": tuned.tolist(),
            "per_class": {
                "ap": ap.tolist(), "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                "support": support.astype(np.int64).tolist(), "threshold": self.thresholds.tolist(),
                "names": list(self.class_names),
            },
        }  # fmt: skip
        self._result = result
        return dict(result)

    @property
    def tuned_thresholds(self) -> list[float]:
        """Per-class F1-maximising thresholds on everything accumulated (see :func:`best_f1_thresholds`)."""
        return list(self.compute()["tuned_thresholds"])


def format_multilabel_table(result: dict[str, Any], digits: int = 3) -> str:
    """Plain-text per-class table of :meth:`MultiLabelMetrics.compute`'s result (AP, P, R, F1 at the
    threshold, support, threshold) with the macro / micro rows.

    >>> print(format_multilabel_table(m.compute()))          # doctest: +SKIP
    class        AP  precision  recall     f1  support  threshold
    cat       1.000      1.000   1.000  1.000        1      0.500
    ...
    """
    pc = result["per_class"]
    names = pc.get("names") or [str(i) for i in range(len(pc["ap"]))]
    width = max([len("macro avg"), len("class")] + [len(str(x)) for x in names])
    col = max(10, digits + 3)  # "precision" and "threshold" need 9 characters plus a space
    heads = ("AP", "precision", "recall", "f1", "support", "threshold")
    header = f"{'class':<{width}}" + "".join(f"{h:>{col}}" for h in heads)
    lines = [header, "-" * len(header)]
    for i, name in enumerate(names):
        vals = (pc["ap"][i], pc["precision"][i], pc["recall"][i], pc["f1"][i])
        lines.append(f"{name!s:<{width}}" + "".join(f"{v:>{col}.{digits}f}" for v in vals)
                     + f"{int(pc['support'][i]):>{col}d}{pc['threshold'][i]:>{col}.{digits}f}")  # fmt: skip
    lines.append("-" * len(header))
    total = int(sum(pc["support"]))
    for avg, ap_key in (("macro", "mAP"), ("micro", "mAP_micro")):
        vals = (result[ap_key], result[f"precision_{avg}"], result[f"recall_{avg}"], result[f"f1_{avg}"])
        lines.append(f"{avg + ' avg':<{width}}" + "".join(f"{v:>{col}.{digits}f}" for v in vals) + f"{total:>{col}d}")
    return "\n".join(lines)
