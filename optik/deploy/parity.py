"""Parity of an exported model with its eager original: how close the numbers are, and — for int8, whose
numbers differ by design — how much the two agree on what matters downstream.

The measure is the task's choice (:meth:`optik.tasks.base.Task.export_agreement`), an :class:`Agreement`:

* :data:`TOP1` (classifiers): fraction of images whose top-1 class is unchanged, int8 floor 0.8;
* :class:`LabelSetAgreement` (multi-label classifiers, kind ``labels``): fraction of images whose predicted
  label set (``sigmoid(logit) >= threshold`` per class) is unchanged, int8 floor 0.8;
* :data:`COSINE` (embeddings): mean cosine similarity of the eager and exported vectors, int8 floor 0.98;
* :data:`MIOU` (semantic logits): mean over images of the mean IoU between the eager and int8 argmax maps, floor 0.6;
* :data:`DETECTIONS` (the house detector's decoded maps): per image, overlap of the eager and int8 top-100
  (point, class) candidates (what NMS sees), floor 0.5;
* :data:`MATCHED` (one-image graphs with NMS inside: torchvision detectors, Mask R-CNN, which return a variable
  number of detections): share of the top-100 detections matched one to one between eager and exported
  (same label; fp32: same box and score within ``tol``, floor 0.98; int8: IoU ≥ 0.5, floor 0.5).

Every other case is judged per output: fp32 fails when ``max|Δ| > tol · max(1, max|eager|)`` (``tol`` default 1e-3).

>>> TOP1.score([torch.tensor([[1., 0.], [0., 1.]])], [torch.tensor([[2., 0.], [1., 0.]])])
0.5
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optik.errors import ExportError

DEFAULT_TOL = 1e-3
FP32_MATCHED_FLOOR = 0.98  # fp32 "matched" parity: rare flips at a threshold / an NMS tie are all it may differ by
TOPK_CANDIDATES = 100


class Agreement:
    """How an exported model is judged against eager: ``kind`` (its name in reports), ``floor`` (the int8
    minimum), :meth:`score` (1.0 = identical decisions) and :meth:`check` (the whole parity report)."""

    kind: str = ""
    floor: float = 0.0

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        """Agreement of the concatenated outputs of both models on the same images, in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def check(self, module: nn.Module, runtime: Any, images: Tensor, cfg: Any) -> dict[str, Any]:
        """Eager ``module`` vs exported ``runtime`` on ``images``: per output max|Δ| and max|eager|, this
        agreement's score, pass/fail (fp32: relative tolerance; int8: the floor). With a dynamic batch axis
        the first image also goes alone (batch 1 ≠ the traced batch)."""
        eager, exported = [], []
        for k in range(0, len(images), cfg.batch):
            x = images[k : k + cfg.batch]
            eager.append(as_list(module(x)))
            exported.append(runtime.run(x))
        if cfg.dynamic and len(images) > 1:
            eager.append(as_list(module(images[:1])))
            exported.append(runtime.run(images[:1]))
        names = runtime.output_names
        e_out = [torch.cat([b[i] for b in eager]).float().cpu() for i in range(len(names))]
        x_out = [torch.cat([b[i] for b in exported]).float().cpu() for i in range(len(names))]
        int8 = cfg.format == "onnx-int8"
        tol = cfg.tol if cfg.tol is not None else DEFAULT_TOL
        rows = []
        for n, e, x in zip(names, e_out, x_out):
            if e.shape != x.shape:
                return {"passed": False, "reason": f"output '{n}' has shape {tuple(x.shape)}, eager {tuple(e.shape)}", "outputs": []}
            delta, scale = float((e - x).abs().max()), float(e.abs().max())
            limit = tol * max(1.0, scale)
            rows.append({"name": n, "shape": list(e.shape), "max_abs_diff": delta, "max_abs_eager": scale,
                         "limit": None if int8 and cfg.tol is None else limit, "ok": int8 and cfg.tol is None or delta <= limit})  # fmt: skip
        score = self.score(e_out, x_out)
        report: dict[str, Any] = {"images": int(len(images)), "outputs": rows, "agreement": {"kind": self.kind, "value": score}}
        bad = [r for r in rows if not r["ok"]]
        if bad:
            r = bad[0]
            report.update(passed=False, reason=f"output '{r['name']}' max|Δ| {r['max_abs_diff']:.3g} > {r['limit']:.3g} "
                                               f"(tol {tol:g} × max(1, max|eager| {r['max_abs_eager']:.3g}))")  # fmt: skip
        elif int8 and score < self.floor:
            report.update(passed=False, reason=f"int8 {self.kind} agreement {score:.3f} < floor {self.floor}")
        else:
            report.update(passed=True, reason="")
        if int8:
            report["agreement"]["floor"] = self.floor
        return report

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, floor={self.floor})"


class Top1Agreement(Agreement):
    """Fraction of images whose top-1 class (argmax of the first output's last axis) is unchanged."""

    kind, floor = "top1", 0.8

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        return float((eager[0].argmax(-1) == exported[0].argmax(-1)).float().mean())


class LabelSetAgreement(Agreement):
    """Multi-label: fraction of images whose whole predicted label set — every class with
    ``sigmoid(logit) >= threshold`` (one per class, or one for all) — is unchanged.

    >>> LabelSetAgreement([0.5, 0.5]).score([torch.tensor([[1., -1.], [1., 1.]])], [torch.tensor([[2., -3.], [1., -1.]])])
    0.5
    """

    kind, floor = "labels", 0.8

    def __init__(self, thresholds: Any = 0.5) -> None:
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32)

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        t = self.thresholds.to(eager[0].device)
        same = ((eager[0].float().sigmoid() >= t) == (exported[0].float().sigmoid() >= t)).all(-1)
        return float(same.float().mean())


class MeanIoUAgreement(Agreement):
    """Mean over images of the mean IoU (over the classes either map shows) between the two argmax maps."""

    kind, floor = "miou", 0.6

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        a, b = eager[0].argmax(1), exported[0].argmax(1)
        ious = []
        for pa, pb in zip(a, b):
            per = [float(((pa == c) & (pb == c)).sum()) / float(((pa == c) | (pb == c)).sum())
                   for c in torch.unique(torch.cat([pa.flatten(), pb.flatten()])).tolist()]  # fmt: skip
            ious.append(sum(per) / len(per))
        return float(np.mean(ious))


class CandidateAgreement(Agreement):
    """Per image, the overlap of the two models' top-100 (anchor, class) scores (second output ``(B, A, C)``)."""

    kind, floor = "detections", 0.5

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        se, sx = eager[1].flatten(1), exported[1].flatten(1)  # scores (B, A·C)
        k = min(TOPK_CANDIDATES, se.shape[1])
        te, tx = se.topk(k, dim=1).indices, sx.topk(k, dim=1).indices
        return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(te, tx)]))


class MatchedAgreement(Agreement):
    """One-image graphs returning detections (``boxes``, ``scores``, ``labels``[, ``masks``]): the lists may
    differ in length (a score at the threshold, an NMS tie resolved the other way) and in the order of equal
    scores, so detections are matched one to one, best eager first, to an exported one of the same label with
    — fp32 — every box coordinate within ``tol · max(1, max|box|)`` and the score within ``tol`` (int8: box
    IoU ≥ 0.5 or every coordinate within 1 px), the closest box first. Agreement: per image, the matched share
    of eager's and exported's top :data:`TOPK_CANDIDATES` detections, averaged. fp32 passes with agreement ≥
    :data:`FP32_MATCHED_FLOOR` and matched outputs within ``tol``; int8 against ``floor``."""

    kind, floor = "matched", 0.5

    @torch.no_grad()
    def check(self, module: nn.Module, runtime: Any, images: Tensor, cfg: Any) -> dict[str, Any]:
        int8 = cfg.format == "onnx-int8"
        tol = cfg.tol if cfg.tol is not None else DEFAULT_TOL
        names = list(runtime.output_names)
        delta = dict.fromkeys(names, 0.0)
        scale = dict.fromkeys(names, 0.0)
        counts = {"eager": 0, "exported": 0, "matched": 0}
        scores = []
        for k in range(len(images)):
            x = images[k : k + 1]
            e = [t.detach().float().cpu() for t in as_list(module(x))]
            o = [t.detach().float().cpu() for t in runtime.run(x)]
            pairs = match_detections(e, o, tol, int8)
            counts["eager"] += len(e[0])
            counts["exported"] += len(o[0])
            counts["matched"] += len(pairs)
            ke, ko = min(TOPK_CANDIDATES, len(e[0])), min(TOPK_CANDIDATES, len(o[0]))
            hit = sum(i < ke for i, _ in pairs) + sum(j < ko for _, j in pairs)
            scores.append(1.0 if ke + ko == 0 else hit / (ke + ko))
            for n, a, b in zip(names, e, o):
                scale[n] = max(scale[n], float(a.abs().max()) if a.numel() else 0.0)
                if pairs:
                    i, j = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
                    delta[n] = max(delta[n], float((a[i] - b[j]).abs().max()) if a[i].numel() else 0.0)
        score = float(np.mean(scores)) if scores else 1.0
        rows = []
        for n in names:
            limit = tol * max(1.0, scale[n])
            rows.append({"name": n, "shape": [counts["eager"]], "max_abs_diff": delta[n], "max_abs_eager": scale[n],
                         "limit": None if int8 and cfg.tol is None else limit,
                         "ok": int8 and cfg.tol is None or delta[n] <= limit})  # fmt: skip
        report: dict[str, Any] = {"images": int(len(images)), "outputs": rows, "detections": counts,
                                  "agreement": {"kind": self.kind, "value": score}}  # fmt: skip
        floor = self.floor if int8 else FP32_MATCHED_FLOOR
        bad = [r for r in rows if not r["ok"]]
        if bad:
            r = bad[0]
            report.update(passed=False, reason=f"matched detections' '{r['name']}' max|Δ| {r['max_abs_diff']:.3g} > {r['limit']:.3g} "
                                               f"(tol {tol:g} × max(1, max|eager| {r['max_abs_eager']:.3g}))")  # fmt: skip
        elif score < floor:
            report.update(passed=False, reason=f"{'int8' if int8 else 'fp32'} matched-detection agreement {score:.3f} < floor {floor} "
                                               f"({counts['matched']} of {counts['eager']} eager / {counts['exported']} exported detections matched)")  # fmt: skip
        else:
            report.update(passed=True, reason="")
        report["agreement"]["floor"] = floor
        return report


def match_detections(e: list[Tensor], o: list[Tensor], tol: float, int8: bool) -> list[tuple[int, int]]:
    """One-to-one ``(eager index, exported index)`` pairs (see :class:`MatchedAgreement`), greedy, best eager first.

    >>> b = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    >>> match_detections([b, torch.tensor([.9, .8]), torch.tensor([0, 1])],
    ...                  [b.flip(0), torch.tensor([.8, .9]), torch.tensor([1, 0])], 1e-3, False)
    [(0, 1), (1, 0)]
    """
    from torchvision.ops import box_iou

    (be, se, le), (bo, so, lo) = e[:3], o[:3]
    if not len(be) or not len(bo):
        return []
    ok = le[:, None] == lo[None]
    gap = (be[:, None] - bo[None]).abs().amax(-1)  # largest coordinate difference (zero-area boxes have no IoU)
    if int8:
        ok &= (box_iou(be, bo).nan_to_num(0.0) >= 0.5) | (gap <= 1.0)
    else:
        ok &= (gap <= tol * max(1.0, float(be.abs().max()))) & ((se[:, None] - so[None]).abs() <= tol)
    cost = torch.where(ok, gap, torch.full_like(gap, float("inf")))
    pairs, used = [], torch.zeros(len(bo), dtype=torch.bool)
    for i in torch.argsort(se, descending=True, stable=True).tolist():
        cand = cost[i].masked_fill(used, float("inf"))
        j = int(cand.argmin())
        if torch.isfinite(cand[j]):
            pairs.append((i, j))
            used[j] = True
    return sorted(pairs)


class CosineAgreement(Agreement):
    """Embeddings: mean over images of the cosine similarity between the eager and exported vectors (the first
    output); what a nearest-neighbour index or a zero-shot dot product sees. int8 floor 0.98.

    >>> CosineAgreement().score([torch.tensor([[1., 0.], [0., 2.]])], [torch.tensor([[2., 0.], [1., 0.]])])
    0.5
    """

    kind, floor = "cosine", 0.98

    def score(self, eager: list[Tensor], exported: list[Tensor]) -> float:
        e, x = eager[0].float().flatten(1), exported[0].float().flatten(1)
        return float(torch.nn.functional.cosine_similarity(e, x, dim=1, eps=1e-12).mean()) if len(e) else 1.0


def as_list(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


TOP1, MIOU, DETECTIONS, MATCHED = Top1Agreement(), MeanIoUAgreement(), CandidateAgreement(), MatchedAgreement()
LABELS = LabelSetAgreement()  # at 0.5; a multi-label task hands export one with its own thresholds
COSINE = CosineAgreement()
#: Every built-in measure by kind (reports name the kind; a task hands export the object itself).
AGREEMENTS: dict[str, Agreement] = {a.kind: a for a in (TOP1, MIOU, DETECTIONS, MATCHED, LABELS, COSINE)}
INT8_FLOORS = {k: a.floor for k, a in AGREEMENTS.items()}


def as_agreement(agreement: Agreement | str) -> Agreement:
    """An :class:`Agreement`, or a built-in one by its kind; :class:`ExportError` for an unknown kind."""
    if isinstance(agreement, Agreement):
        return agreement
    if agreement not in AGREEMENTS:
        raise ExportError(f"unknown parity agreement kind {agreement!r} (expected {', '.join(AGREEMENTS)})")
    return AGREEMENTS[agreement]


def parity(module: nn.Module, runtime: Any, images: Tensor, cfg: Any, agreement: Agreement | str) -> dict[str, Any]:
    """The parity report of ``runtime`` against eager ``module`` on ``images``, judged by ``agreement``."""
    return as_agreement(agreement).check(module, runtime, images, cfg)


def matched_parity(module: nn.Module, runtime: Any, images: Tensor, cfg: Any) -> dict[str, Any]:
    """:data:`MATCHED`'s parity report (one-image detection graphs)."""
    return MATCHED.check(module, runtime, images, cfg)


def agreement_score(kind: str, eager: list[Tensor], exported: list[Tensor]) -> float:
    """The built-in agreement ``kind``'s score (1.0 = identical decisions).

    >>> agreement_score("top1", [torch.tensor([[1., 0.], [0., 1.]])], [torch.tensor([[2., 0.], [1., 0.]])])
    0.5
    """
    return as_agreement(kind).score(eager, exported)


__all__ = [
    "AGREEMENTS",
    "COSINE",
    "DEFAULT_TOL",
    "DETECTIONS",
    "FP32_MATCHED_FLOOR",
    "INT8_FLOORS",
    "LABELS",
    "MATCHED",
    "MIOU",
    "TOP1",
    "Agreement",
    "CosineAgreement",
    "LabelSetAgreement",
    "agreement_score",
    "as_agreement",
    "match_detections",
    "matched_parity",
    "parity",
]  # fmt: skip
