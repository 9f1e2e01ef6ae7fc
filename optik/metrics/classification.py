"""Classification metrics: top-k accuracy, confusion matrix, per-class / macro / weighted P-R-F1, and
per-class one-vs-rest counts (TP, FP = type I errors, FN = type II errors, TN) with specificity and
false-positive rate.

Semantics follow scikit-learn with ``labels=range(C)`` and ``zero_division=0`` (the tests compare
against ``accuracy_score``, ``top_k_accuracy_score``, ``confusion_matrix``,
``precision_recall_fscore_support`` and ``multilabel_confusion_matrix``). All state is integer counts,
so DDP ``sync()`` is exact.

>>> m = ClassificationMetrics(num_classes=3, topk=(1, 2))
>>> m.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([1, 2]))
>>> r = m.compute()
>>> r["top1"], r["top2"], r["count"]
(0.5, 1.0, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from optik.errors import ConfigError
from optik.metrics.base import Metric

__all__ = [
    "ClassificationMetrics",
    "confusion_matrix",
    "format_per_class_table",
    "one_vs_rest",
    "precision_recall_f1",
]


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Count matrix ``cm[true, pred]`` of shape (C, C), int64, on the inputs' device.

    preds, targets: (N,) integer class indices in ``[0, C)``.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
    [[1, 1], [0, 1]]
    """
    preds, targets = preds.reshape(-1).long(), targets.reshape(-1).long()
    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ in length")
    for name, t in (("preds", preds), ("targets", targets)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got range [{int(t.min())}, {int(t.max())}]"
            )
    flat = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def precision_recall_f1(cm: np.ndarray | Tensor) -> dict:
    """Per-class and averaged precision, recall and F1 from a (C, C) confusion matrix.

    Rows are true classes, columns predicted. A 0/0 ratio is 0 (scikit-learn's default
    ``zero_division``); "macro" is the plain mean over all C classes (absent ones included, as with
    ``labels=range(C)``), "weighted" weights by support. F1 is ``2·tp / (support + predicted)``,
    the same expression scikit-learn evaluates.

    Returns ``{"precision", "recall", "f1": float64 (C,), "support": int64 (C,),
    "precision_macro", …, "f1_weighted": float}``.

    >>> r = precision_recall_f1(np.array([[1, 1], [0, 1]]))
    >>> r["precision"].tolist(), r["recall"].tolist()
    ([1.0, 0.5], [0.5, 1.0])
    """
    cm = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    tp = np.diag(cm).astype(np.int64)
    support = cm.sum(axis=1).astype(np.int64)
    predicted = cm.sum(axis=0).astype(np.int64)

    per_class = {
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "f1": _ratio(2 * tp, support + predicted),
    }
    result: dict = {**per_class, "support": support}
    total = support.sum()
    for name, values in per_class.items():
        result[f"{name}_macro"] = float(np.mean(values)) if values.size else 0.0
        result[f"{name}_weighted"] = float(np.average(values, weights=support)) if total else 0.0
    return result


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0.0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num, den = num.astype(np.float64), den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def one_vs_rest(cm: np.ndarray | Tensor) -> dict:
    """Per-class one-vs-rest counts and rates from a (C, C) confusion matrix (rows true, cols predicted).

    For class c: ``tp`` = predicted c and true c; ``fp`` (type I errors) = predicted c, true another
    class; ``fn`` (type II errors) = true c, predicted another class; ``tn`` = neither — the
    ``[[tn, fp], [fn, tp]]`` of scikit-learn's ``multilabel_confusion_matrix``. ``specificity`` =
    ``tn / (tn + fp)`` (the recall of "not c"), ``fpr`` = ``fp / (fp + tn)``. A 0/0 rate is 0.0 — this
    happens only for a class that *every* sample belongs to (no negatives), where scikit-learn's
    ``recall_score(y != c, ŷ != c, zero_division=0)`` is 0 too; so ``specificity + fpr`` is 1 for every
    class that has negatives and 0 for one that has none. A class absent from both targets and
    predictions has specificity 1 and FPR 0. ``*_macro`` is the plain mean over all C classes.

    Returns ``{"tp", "fp", "fn", "tn": int64 (C,), "specificity", "fpr": float64 (C,),
    "specificity_macro", "fpr_macro": float}``.

    >>> r = one_vs_rest(np.array([[1, 1], [0, 1]]))
    >>> r["fp"].tolist(), r["fn"].tolist(), r["specificity"].tolist(), r["fpr"].tolist()
    ([0, 1], [1, 0], [1.0, 0.5], [0.0, 0.5])
    """
    cm = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    cm = cm.astype(np.int64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    specificity, fpr = _ratio(tn, tn + fp), _ratio(fp, fp + tn)
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn, "specificity": specificity, "fpr": fpr,
        "specificity_macro": float(specificity.mean()) if specificity.size else 0.0,
        "fpr_macro": float(fpr.mean()) if fpr.size else 0.0,
    }  # fmt: skip


class ClassificationMetrics(Metric):
    """Top-k accuracy, confusion matrix and P/R/F1 accumulated over batches.

    ``update(logits, targets)``: logits (B, C) scores (logits or probabilities — only their order
    matters); targets (B,) integer class indices or (B, C) soft / one-hot targets, reduced with
    argmax. The predicted class is ``argmax`` (first maximum on ties). Top-k uses a *stable*
    descending sort, so ties are broken toward the lower class index — the same rule as argmax,
    which makes ``top1`` equal ``trace(cm) / count`` and top-k monotone in k. (``torch.topk`` leaves
    the order of ties unspecified and device-dependent, hence not used; scikit-learn's
    ``top_k_accuracy_score`` breaks ties toward the *higher* index, so the two agree whenever the
    scores have no ties.)

    ``compute()`` keys: ``top{k}`` for each k in ``topk`` with k <= C (larger k are skipped;
    ``top1`` is always present, it is the ``fitness_key``),
    ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_weighted``,
    ``recall_weighted``, ``f1_weighted``, ``specificity_macro``, ``fpr_macro``, ``per_class`` (lists
    ``precision``, ``recall``, ``f1``, ``support``, ``specificity``, ``fpr``, ``tp``, ``fp`` (type I
    errors), ``fn`` (type II errors), ``tn`` — see :func:`one_vs_rest` — and ``names``),
    ``confusion_matrix`` (np.int64 (C, C), rows true, cols predicted) and ``count``.
    """

    fitness_key: ClassVar[str] = "top1"
    _state_names: ClassVar[tuple[str, ...]] = ("_cm", "_correct", "_count")

    def __init__(
        self,
        num_classes: int,
        topk: tuple[int, ...] = (1, 5),
        class_names: list[str] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if any(int(k) < 1 for k in topk):
            raise ConfigError(f"topk values must be >= 1, got {tuple(topk)}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        self.num_classes = num_classes
        # k > C is meaningless (always 1.0): skipped. top1 is always kept: it is the fitness key.
        self.topk = tuple(sorted({1} | {int(k) for k in topk if int(k) <= num_classes}))
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.reset()

    def _reset_state(self) -> None:
        self._cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._correct = torch.zeros(len(self.topk), dtype=torch.int64)
        self._count = torch.zeros((), dtype=torch.int64)

    def update(self, logits: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Add a batch: logits (B, C) float, targets (B,) int or (B, C) soft/one-hot."""
        self._check_updatable()
        logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (B, {self.num_classes}), got {tuple(logits.shape)}")
        if targets.ndim == 2:
            targets = targets.argmax(dim=1)
        elif targets.ndim != 1 or targets.is_floating_point():
            raise ValueError(
                f"targets must be (B,) integer class indices or (B, {self.num_classes}) soft targets, "
                f"got {tuple(targets.shape)} {targets.dtype}"
            )
        targets = targets.to(logits.device).long()
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"logits have {logits.shape[0]} rows but targets {targets.shape[0]}")

        # State follows the inputs' device, so a GPU eval loop never syncs with the host per batch.
        device = logits.device
        self._cm, self._correct, self._count = (t.to(device) for t in (self._cm, self._correct, self._count))
        if logits.shape[0] == 0:
            return
        maxk = self.topk[-1]
        ranked = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices[:, :maxk]
        hits = ranked == targets[:, None]
        self._correct += torch.stack([hits[:, :k].any(dim=1).sum() for k in self.topk])
        self._cm += confusion_matrix(ranked[:, 0], targets, self.num_classes)
        self._count += targets.shape[0]

    def compute(self) -> dict:
        cm = self._cm.cpu().numpy().copy()  # the state is updated in place; never hand it out
        count = int(self._count)
        prf = precision_recall_f1(cm)
        result: dict = {
            f"top{k}": (int(c) / count if count else 0.0) for k, c in zip(self.topk, self._correct.tolist())
        }
        ovr = one_vs_rest(cm)
        for avg in ("macro", "weighted"):
            for name in ("precision", "recall", "f1"):
                result[f"{name}_{avg}"] = prf[f"{name}_{avg}"]
        result["specificity_macro"], result["fpr_macro"] = ovr["specificity_macro"], ovr["fpr_macro"]
        result["per_class"] = {
            "precision": prf["precision"].tolist(),
            "recall": prf["recall"].tolist(),
            "f1": prf["f1"].tolist(),
            "support": prf["support"].tolist(),
            **{k: ovr[k].tolist() for k in ("specificity", "fpr", "tp", "fp", "fn", "tn")},
            "names": list(self.class_names),
        }
        result["confusion_matrix"] = cm
        result["count"] = count
        return result


def format_per_class_table(result: dict, digits: int = 3, max_rows: int | None = None) -> str:
    """Plain-text per-class table (like scikit-learn's ``classification_report``), with specificity,
    false-positive rate and the one-vs-rest counts when ``per_class`` has them (FP = type I errors,
    FN = type II errors). ``max_rows``: with more classes than that, only the ``max_rows`` lowest-F1 classes are
    listed (worst first) and a line says how many are left out — a 1000-class model's table stays readable.

    ``result`` is ``ClassificationMetrics.compute()``'s dict (needs ``per_class``; the macro /
    weighted rows and ``top1`` are printed when present).

    >>> m = ClassificationMetrics(num_classes=2, topk=(1,), class_names=["cat", "dog"])
    >>> m.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    >>> print(format_per_class_table(m.compute()))
    class       precision   recall       f1  support  specif.      FPR  TP  FP(I)  FN(II)  TN
    -----------------------------------------------------------------------------------------
    cat             1.000    0.500    0.667        2    1.000    0.000   1      0       1   1
    dog             0.500    1.000    0.667        1    0.500    0.500   1      1       0   1
    -----------------------------------------------------------------------------------------
    macro avg       0.750    0.750    0.667        3    0.750    0.250
    weighted avg    0.833    0.667    0.667        3
    accuracy                          0.667        3
    """
    pc = result["per_class"]
    names: Sequence[str] = pc.get("names") or [str(i) for i in range(len(pc["precision"]))]
    width = max([len("weighted avg"), len("class")] + [len(str(n)) for n in names])
    col = max(9, digits + 3)
    has_ovr = all(k in pc for k in ("specificity", "fpr", "tp", "fp", "fn", "tn"))
    counts = [("TP", "tp"), ("FP(I)", "fp"), ("FN(II)", "fn"), ("TN", "tn")] if has_ovr else []
    cw = {key: max(len(h), *(len(str(int(v))) for v in pc[key])) + 2 for h, key in counts} if pc["precision"] else {}
    rates = ("specif.", "FPR") if has_ovr else ()
    header = (f"{'class':<{width}}" + "".join(f"{h:>{col}}" for h in ("precision", "recall", "f1", "support", *rates))
              + "".join(f"{h:>{cw.get(key, len(h) + 2)}}" for h, key in counts))  # fmt: skip
    lines = [header, "-" * len(header)]

    def num(v: float | None) -> str:
        return f"{'':>{col}}" if v is None else f"{v:>{col}.{digits}f}"

    def row(name: str, p: float, r: float, f: float, s: int, spec: float | None = None, fpr: float | None = None) -> str:
        out = f"{name:<{width}}{num(p)}{num(r)}{num(f)}{s:>{col}d}"
        return out + (num(spec) + num(fpr) if spec is not None else "")

    shown = list(range(len(names)))
    if max_rows is not None and len(names) > max_rows:
        shown = sorted(shown, key=lambda i: (pc["f1"][i], i))[:max_rows]
    for i in shown:
        line = row(str(names[i]), pc["precision"][i], pc["recall"][i], pc["f1"][i], int(pc["support"][i]),
                   *((pc["specificity"][i], pc["fpr"][i]) if has_ovr else ()))  # fmt: skip
        lines.append(line + "".join(f"{int(pc[key][i]):>{cw[key]}d}" for _, key in counts))
    if len(shown) < len(names):
        lines.append(f"… {len(names) - len(shown)} more classes (the {len(shown)} lowest-F1 are listed; per_class in the metrics has every class)")
    total = int(sum(pc["support"]))
    lines.append("-" * len(header))
    for avg in ("macro", "weighted"):
        if f"f1_{avg}" in result:
            extra = (result["specificity_macro"], result["fpr_macro"]) if avg == "macro" and has_ovr and "fpr_macro" in result else ()
            lines.append(row(f"{avg} avg", result[f"precision_{avg}"], result[f"recall_{avg}"], result[f"f1_{avg}"], total, *extra))
    if "top1" in result:
        lines.append(f"{'accuracy':<{width}}{'':>{2 * col}}{result['top1']:>{col}.{digits}f}{total:>{col}d}")
    return "\n".join(lines)
