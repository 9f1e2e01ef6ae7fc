"""Segmentation metrics: semantic (IoU / Dice / accuracy), panoptic quality, COCO instance masks.

- ``SemanticMetrics``: one (C, C) confusion matrix (rows true, columns predicted) of int64 counts,
  so a DDP ``sync()`` is exact; IoU / Dice / accuracy per class and their means (the tests compare
  with scikit-learn's ``confusion_matrix`` / ``jaccard_score`` / ``f1_score`` / ``recall_score``).
- ``PanopticMetrics`` / ``panoptic_quality``: PQ, SQ, RQ with the semantics of the COCO panoptic
  reference implementation (panopticapi's ``pq_compute``), kept as per-class tp / fp / fn / IoU-sum
  tensors (summable, exact sync).
- ``InstanceMetrics``: COCO mask AP (pycocotools semantics via ``DetectionMetrics(iou_type="segm")``)
  plus the box AP of the same predictions.

>>> m = SemanticMetrics(3, class_names=["bg", "cat", "dog"])
>>> m.update(torch.tensor([[[0, 1], [1, 2]]]), torch.tensor([[[0, 1], [2, 255]]]))
>>> r = m.compute()
>>> r["mIoU"], r["pixel_acc"], r["per_class_IoU"]["dog"]
(0.5, 0.6666666666666666, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from optik.errors import ConfigError
from optik.metrics.base import Metric
from optik.metrics.classification import confusion_matrix
from optik.metrics.detection import DetectionMetrics

__all__ = [
    "InstanceMetrics",
    "PanopticMetrics",
    "SemanticMetrics",
    "format_iou_table",
    "format_pq_table",
    "panoptic_quality",
]


def _check_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    return [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0 (the value is undefined, not zero)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(v: np.ndarray) -> float:
    """Mean over the defined (non-NaN) entries; 0.0 when none is defined (fitness must be a number)."""
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else 0.0


# --- semantic -----------------------------------------------------------------------------------
class SemanticMetrics(Metric):
    """Confusion-matrix metrics of semantic segmentation (class maps), accumulated over batches.

    ``update(preds, targets)``:
      - targets: (B, H, W) integer class maps, pixels equal to ``ignore_index`` skipped;
      - preds: (B, H, W) integer class maps or (B, C, H, W) scores (logits / probabilities: argmax
        over C — an input with one more dimension than its target is read as scores);
      - or lists of per-image (H, W) targets and (H, W) / (C, H, W) predictions of different sizes.
    The state follows the inputs' device (no host copy per batch on a GPU).

    ``compute()`` keys (``cm`` = confusion matrix, rows true ``t``, columns predicted ``p``):
      - ``per_class_IoU``: ``tp / (t + p - tp)``, ``per_class_Dice``: ``2 tp / (t + p)``,
        ``per_class_acc``: ``tp / t`` (recall) — ``{name: float}``, NaN where undefined (IoU / Dice:
        the class is in neither targets nor predictions; acc: the class has no target pixel);
      - ``mIoU`` (``fitness_key``), ``mDice``, ``mean_acc``: means over the defined classes only
        (0.0 when there is none);
      - ``pixel_acc``: ``trace(cm) / cm.sum()``; ``fwIoU``: ``Σ_c t_c · IoU_c / Σ_c t_c``
        (frequency-weighted IoU, Long et al. 2015); 0.0 without pixels;
      - ``confusion_matrix``: int64 ndarray (C, C); ``pixels``: the number of counted pixels.

    >>> m = SemanticMetrics(2)
    >>> m.update(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    >>> sorted(k for k in m.compute() if not k.startswith("per_class"))
    ['confusion_matrix', 'fwIoU', 'mDice', 'mIoU', 'mean_acc', 'pixel_acc', 'pixels']
    """

    fitness_key: ClassVar[str] = "mIoU"
    _state_names: ClassVar[tuple[str, ...]] = ("_cm",)

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int | None = 255
    ) -> None:
        self.class_names = _check_names(num_classes, class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def _reset_state(self) -> None:
        self._cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(  # type: ignore[override]
        self, preds: Tensor | Sequence[Tensor], targets: Tensor | Sequence[Tensor]
    ) -> None:
        """Add a batch (see the class docstring for the accepted shapes)."""
        self._check_updatable()
        if isinstance(preds, (list, tuple)) or isinstance(targets, (list, tuple)):
            if len(preds) != len(targets):
                raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
            for p, t in zip(preds, targets):
                self._add(torch.as_tensor(p), torch.as_tensor(t))
        else:
            self._add(torch.as_tensor(preds), torch.as_tensor(targets))

    def _add(self, pred: Tensor, target: Tensor) -> None:
        if target.is_floating_point():
            raise ValueError(f"targets must be integer class maps, got {target.dtype}")
        if pred.ndim == target.ndim + 1:  # scores: (…, C, H, W)
            if pred.shape[-3] != self.num_classes:
                raise ValueError(f"scores have {pred.shape[-3]} channels but num_classes is {self.num_classes}")
            pred = pred.detach().argmax(-3)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred, target = pred.reshape(-1).long(), target.reshape(-1).to(pred.device).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        self._cm = self._cm.to(pred.device)
        self._cm += confusion_matrix(pred, target, self.num_classes)

    def compute(self) -> dict:
        cm = self._cm.cpu().numpy().copy()  # the state is updated in place; never hand it out
        tp = np.diag(cm).astype(np.float64)
        true, pred = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
        iou, dice, acc = _ratio(tp, true + pred - tp), _ratio(2 * tp, true + pred), _ratio(tp, true)
        total = true.sum()
        # Long et al.'s fwIoU: classes without target pixels have weight 0 (their IoU may be NaN).
        fw = float((true[true > 0] * iou[true > 0]).sum() / total) if total else 0.0
        names = self.class_names
        return {
            "mIoU": _nanmean(iou),
            "pixel_acc": float(tp.sum() / total) if total else 0.0,
            "mean_acc": _nanmean(acc),
            "fwIoU": fw,
            "mDice": _nanmean(dice),
            "per_class_IoU": dict(zip(names, iou.tolist())),
            "per_class_Dice": dict(zip(names, dice.tolist())),
            "per_class_acc": dict(zip(names, acc.tolist())),
            "confusion_matrix": cm,
            "pixels": int(total),
        }


def format_iou_table(result: dict, digits: int = 3) -> str:
    """Plain-text per-class IoU / Dice / accuracy table from ``SemanticMetrics.compute()``.

    Undefined values (class absent) show ``-``; the last row holds ``mIoU`` / ``mDice`` / ``mean_acc``.

    >>> print(format_iou_table({"per_class_IoU": {"bg": 0.9, "cat": float("nan")},
    ...                         "per_class_Dice": {"bg": 0.947, "cat": float("nan")},
    ...                         "per_class_acc": {"bg": 0.95, "cat": float("nan")},
    ...                         "mIoU": 0.9, "mDice": 0.947, "mean_acc": 0.95}))
    class      IoU     Dice      acc
    --------------------------------
    bg       0.900    0.947    0.950
    cat          -        -        -
    --------------------------------
    mean     0.900    0.947    0.950
    """
    per_class = {k: result[f"per_class_{k}"] for k in ("IoU", "Dice", "acc")}
    summary = [("mean", (result["mIoU"], result.get("mDice"), result.get("mean_acc")))] if "mIoU" in result else []
    return _per_class_table(per_class, summary, digits)


def _per_class_table(per_class: dict[str, dict], summary: list[tuple[str, tuple]], digits: int) -> str:
    """Columns ``per_class`` ({column: {class: value}}, classes from the first column) and summary rows
    below a rule; NaN/None print as "-"."""
    cols = list(per_class)
    names = list(per_class[cols[0]])
    width = max([len("class")] + [len(str(n)) for n in names] + [len(label) for label, _ in summary])
    col = max(9, digits + 4)

    def fmt(v: float | None) -> str:
        return f"{v:>{col}.{digits}f}" if v is not None and np.isfinite(v) else f"{'-':>{col}}"

    header = f"{'class':<{width}}" + "".join(f"{c:>{col}}" for c in cols)
    rule = "-" * len(header)
    lines = [header, rule]
    lines += [f"{str(n):<{width}}" + "".join(fmt(per_class[c].get(n)) for c in cols) for n in names]
    lines.append(rule)
    lines += [f"{label:<{width}}" + "".join(fmt(v) for v in values) for label, values in summary]
    return "\n".join(lines)


# --- panoptic -----------------------------------------------------------------------------------
def _bool_masks(masks: Any, what: str) -> Tensor:
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"{what}: masks must be (N, H, W), got shape {tuple(masks.shape)}")
    return masks > 0.5 if masks.is_floating_point() else masks.bool()


def _segment_map(masks: Tensor, what: str) -> Tensor:
    """(N, H, W) non-overlapping bool masks → (H, W) int64 map: 0 = no segment, i + 1 = segment i."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(h, w, dtype=torch.int64, device=masks.device)
    count = masks.sum(0)
    if bool((count > 1).any()):
        raise ValueError(f"{what}: panoptic segments overlap on {int((count > 1).sum())} pixels (must be disjoint)")
    return torch.where(count > 0, masks.to(torch.uint8).argmax(0).long() + 1, 0)


def _labels(d: dict, key: str, n: int, num_classes: int | None, what: str) -> Tensor:
    lab = torch.as_tensor(d.get(key, torch.zeros(n, dtype=torch.int64))).reshape(-1).long()
    if len(lab) != n:
        raise ValueError(f"{what}: {n} masks but {len(lab)} {key}")
    if num_classes is not None and n and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(f"{what}: labels must lie in [0, {num_classes}), got [{int(lab.min())}, {int(lab.max())}]")
    return lab


def _pq_image(pred: dict, target: dict, num_classes: int, i: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's per-class (tp, fp, fn, IoU sum), as panopticapi's ``pq_compute_single_core``.

    Segments with no pixel are dropped (a panopticapi PNG cannot hold them).
    """
    pm, gm = _bool_masks(pred["masks"], f"prediction #{i}"), _bool_masks(target["masks"], f"target #{i}")
    if pm.shape[1:] != gm.shape[1:]:
        raise ValueError(f"image #{i}: prediction masks {tuple(pm.shape[1:])} and target masks "
                         f"{tuple(gm.shape[1:])} differ in size")  # fmt: skip
    device = gm.device
    pm = pm.to(device)
    pl = _labels(pred, "labels", len(pm), num_classes, f"prediction #{i}").to(device)
    gl = _labels(target, "labels", len(gm), num_classes, f"target #{i}").to(device)
    crowd = _labels(target, "iscrowd", len(gm), None, f"target #{i}").to(device).bool()
    n, m = len(gm), len(pm)
    gid, pid = _segment_map(gm, f"target #{i}"), _segment_map(pm, f"prediction #{i}")
    # inter[a, b]: pixels of target segment a (0 = void) and predicted segment b (0 = none).
    inter = torch.bincount((gid * (m + 1) + pid).reshape(-1), minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    g_area, p_area, void = inter[1:].sum(1), inter[:, 1:].sum(0), inter[0, 1:]
    both = inter[1:, 1:]
    # union excludes the prediction's void pixels; IoU > 0.5 ⟺ 2·inter > union (exact in integers,
    # and the same decision as panopticapi's float division for any realistic pixel count).
    union = p_area[None, :] + g_area[:, None] - both - void[None, :]
    cand = (gl[:, None] == pl[None, :]) & ~crowd[:, None] & (both > 0)
    match = cand & (2 * both > union)  # a segment matches at most one other (IoU > 0.5, disjoint segments)
    iou = torch.where(match, both.double() / union.clamp(min=1).double(), 0.0)
    g_hit, p_hit = match.any(1), match.any(0)
    zeros = lambda dtype: torch.zeros(num_classes, dtype=dtype, device=device)  # noqa: E731
    tp = zeros(torch.int64).index_add_(0, gl[g_hit], torch.ones_like(gl[g_hit]))
    iou_sum = zeros(torch.float64).index_add_(0, gl[g_hit], iou.sum(1)[g_hit])
    missed = ~g_hit & ~crowd & (g_area > 0)
    fn = zeros(torch.int64).index_add_(0, gl[missed], torch.ones_like(gl[missed]))
    # An unmatched prediction is not a false positive when more than half of it is void or lies on
    # a crowd region of its class. panopticapi keeps ONE crowd segment per class (the last one in
    # segments_info order; COCO panoptic stores one per class and image): the same here.
    ignored_px = void.clone()
    crowd_of: dict[int, int] = {int(gl[g]): g for g in torch.nonzero(crowd & (g_area > 0)).reshape(-1).tolist()}
    for c, g in crowd_of.items():
        same = pl == c
        ignored_px[same] += both[g, same]
    extra = ~p_hit & (p_area > 0) & ~(2 * ignored_px > p_area)
    fp = zeros(torch.int64).index_add_(0, pl[extra], torch.ones_like(pl[extra]))
    return tp, fp, fn, iou_sum


class PanopticMetrics(Metric):
    """Panoptic quality (Kirillov et al. 2019) with panopticapi's semantics, accumulated over images.

    ``update(preds, targets)``: per-image lists of dicts ``{"masks": (N, H, W) bool, "labels": (N,)}``
    (targets also ``"iscrowd": (N,)``, default 0). Segments of one image must not overlap; target
    pixels in no segment are VOID. Per image, as panopticapi's ``pq_compute_single_core``:
      - a non-crowd target and a prediction of the same class match when IoU > 0.5, the union
        leaving out the prediction's void pixels; a match adds 1 to tp and its IoU to the class's sum;
      - unmatched non-crowd targets are false negatives (crowd targets never count);
      - an unmatched prediction is a false positive unless more than half of its pixels are void
        or in the crowd segment of its class (the last one listed, as panopticapi).
    Masks may be float (> 0.5 taken); segments without pixels are dropped.

    ``compute()``: per class ``PQ = Σ IoU / (tp + fp/2 + fn/2)``, ``SQ = Σ IoU / tp`` (0 without tp),
    ``RQ = tp / (tp + fp/2 + fn/2)``; ``PQ``/``SQ``/``RQ`` (``PQ`` = fitness) are their means over the
    classes with tp + fp + fn > 0, ``PQ_th``… over such thing classes, ``PQ_st``… over stuff classes
    (NaN when the group has none — panopticapi would divide by zero; the overall means are 0.0
    then), ``n``/``n_th``/``n_st`` the class counts, ``per_class_PQ``/``_SQ``/``_RQ``
    ``{name: float}`` (NaN for classes not counted), ``tp``/``fp``/``fn`` int64 and ``iou_sum``
    float64 arrays (C,), ``num_images``.

    >>> m = PanopticMetrics(2, isthing=[True, False], class_names=["car", "road"])
    >>> road = torch.zeros(1, 4, 4, dtype=torch.bool); road[0, 2:] = True
    >>> m.update([{"masks": road, "labels": torch.tensor([1])}], [{"masks": road, "labels": torch.tensor([1])}])
    >>> r = m.compute(); r["PQ"], r["PQ_st"], r["n_th"]
    (1.0, 1.0, 0)
    """

    fitness_key: ClassVar[str] = "PQ"
    _state_names: ClassVar[tuple[str, ...]] = ("_tp", "_fp", "_fn", "_iou", "_images")

    def __init__(self, num_classes: int, isthing: Sequence[bool], class_names: Sequence[str] | None = None) -> None:
        self.class_names = _check_names(num_classes, class_names)
        if len(isthing) != num_classes:
            raise ConfigError(f"isthing has {len(isthing)} entries but num_classes is {num_classes}")
        self.num_classes = num_classes
        self.isthing = np.array([bool(v) for v in isthing])
        self.reset()

    def _reset_state(self) -> None:
        c = self.num_classes
        self._tp, self._fp, self._fn = (torch.zeros(c, dtype=torch.int64) for _ in range(3))
        self._iou = torch.zeros(c, dtype=torch.float64)
        self._images = torch.zeros((), dtype=torch.int64)

    def update(self, preds: Sequence[dict], targets: Sequence[dict]) -> None:  # type: ignore[override]
        """Add a batch: one prediction dict and one target dict per image (see the class docstring)."""
        self._check_updatable()
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        for i, (p, t) in enumerate(zip(preds, targets)):
            tp, fp, fn, iou = _pq_image(p, t, self.num_classes, i)
            for name, v in (("_tp", tp), ("_fp", fp), ("_fn", fn), ("_iou", iou)):
                setattr(self, name, getattr(self, name).to(v.device) + v)
            self._images = self._images.to(tp.device) + 1

    def compute(self) -> dict:
        tp, fp, fn = (t.cpu().numpy().astype(np.int64) for t in (self._tp, self._fp, self._fn))
        iou = self._iou.cpu().numpy().astype(np.float64)
        counted = (tp + fp + fn) > 0
        den = tp + 0.5 * fp + 0.5 * fn
        pq = np.where(counted, _ratio(iou, den), np.nan)
        sq = np.where(counted, np.where(tp > 0, _ratio(iou, tp.astype(np.float64)), 0.0), np.nan)
        rq = np.where(counted, _ratio(tp.astype(np.float64), den), np.nan)
        result: dict[str, Any] = {}
        for suffix, group in (("", np.ones_like(counted)), ("_th", self.isthing), ("_st", ~self.isthing)):
            sel = np.flatnonzero(counted & group)
            empty = 0.0 if not suffix else math.nan
            for key, v in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                # sequential sum in class order, as panopticapi's pq_average
                result[key + suffix] = sum(float(x) for x in v[sel]) / len(sel) if len(sel) else empty
            result["n" + suffix] = len(sel)
        names = self.class_names
        result.update(per_class_PQ=dict(zip(names, pq.tolist())), per_class_SQ=dict(zip(names, sq.tolist())),
                      per_class_RQ=dict(zip(names, rq.tolist())), tp=tp, fp=fp, fn=fn, iou_sum=iou,
                      num_images=int(self._images))  # fmt: skip
        return result


def panoptic_quality(
    preds: Sequence[dict], targets: Sequence[dict], isthing: Sequence[bool], class_names: Sequence[str] | None = None
) -> dict:
    """PQ / SQ / RQ of per-image panoptic predictions against targets (``PanopticMetrics`` in one call).

    preds / targets: per-image ``{"masks": (N, H, W) bool, "labels": (N,)}`` (+ ``"iscrowd"`` for
    targets); ``isthing``: one bool per class. Returns ``PanopticMetrics.compute()``'s dict.

    >>> gt = {"masks": torch.ones(1, 8, 8, dtype=torch.bool), "labels": torch.tensor([0])}
    >>> half = torch.zeros(1, 8, 8, dtype=torch.bool); half[0, :5] = True
    >>> panoptic_quality([{"masks": half, "labels": torch.tensor([0])}], [gt], isthing=[True])["PQ"]
    0.625
    """
    m = PanopticMetrics(len(isthing), isthing, class_names)
    m.update(preds, targets)
    return m.compute()


def format_pq_table(result: dict, digits: int = 3) -> str:
    """Plain-text per-class PQ / SQ / RQ table from ``PanopticMetrics.compute()``.

    Classes not counted show ``-``; the last rows hold the overall / things / stuff means.

    >>> print(format_pq_table({"per_class_PQ": {"car": 0.5}, "per_class_SQ": {"car": 0.8},
    ...                        "per_class_RQ": {"car": 0.625}, "PQ": 0.5, "SQ": 0.8, "RQ": 0.625}))
    class       PQ       SQ       RQ
    --------------------------------
    car      0.500    0.800    0.625
    --------------------------------
    all      0.500    0.800    0.625
    """
    per_class = {k: result[f"per_class_{k}"] for k in ("PQ", "SQ", "RQ")}
    summary = [(name, tuple(result.get(f"{k}{suffix}") for k in ("PQ", "SQ", "RQ")))
               for name, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")) if f"PQ{suffix}" in result]  # fmt: skip
    return _per_class_table(per_class, summary, digits)


# --- instance -----------------------------------------------------------------------------------
def _with_boxes_and_masks(d: dict, what: str, i: int) -> dict:
    """A copy with bool masks, boxes derived from the masks when missing (pixel j spans [j, j+1))."""
    masks = _bool_masks(d["masks"], f"{what} #{i}") if "masks" in d else None
    if masks is None:
        raise ValueError(f"{what} #{i}: instance metrics need 'masks' (N, H, W)")
    out = {**d, "masks": masks}
    if out.get("boxes") is None:
        boxes = torch.zeros(len(masks), 4, device=masks.device)
        nonempty = masks.flatten(1).any(1)
        if nonempty.any():
            from torchvision.ops import masks_to_boxes  # torchvision is slow to import; only this needs it

            boxes[nonempty] = masks_to_boxes(masks[nonempty]).float() + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
        out["boxes"] = boxes
    return out


class InstanceMetrics(Metric):
    """COCO mask AP and box AP of instance-segmentation predictions over the same updates.

    Two ``DetectionMetrics`` (``iou_type="segm"`` and ``"bbox"``) fed the same per-image lists:
    predictions ``{"boxes": (N, 4) xyxy, "scores", "labels", "masks": (N, H, W) bool (float > 0.5)}``
    and targets ``{"boxes", "labels", "masks", "iscrowd", "image_id", "orig_size"}`` (boxes are derived
    from the masks when missing). The box metric's area ranges use each target's ``area`` (default:
    its mask's pixel count), as COCO's bbox evaluation uses the annotation's (mask) area.

    ``compute()`` returns the segm result under ``DetectionMetrics``' names (``AP`` = fitness,
    ``AP50``, …, ``per_class_AP``, ``confusion_matrix``, F1 extras) plus ``box_AP``, ``box_AP50``,
    ``box_AP75`` and ``box_per_class_AP``.

    >>> m = InstanceMetrics(1, ["cat"])
    >>> mask = torch.zeros(1, 8, 8, dtype=torch.bool); mask[0, 2:6, 2:6] = True
    >>> m.update([{"masks": mask, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
    ...          [{"masks": mask, "labels": torch.tensor([0])}])
    >>> r = m.compute(); r["AP"], r["box_AP"]
    (1.0, 1.0)
    """

    fitness_key: ClassVar[str] = "AP"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.class_names = _check_names(num_classes, class_names)
        self.num_classes = num_classes
        self.segm = DetectionMetrics(num_classes, self.class_names, iou_type="segm")
        self.bbox = DetectionMetrics(num_classes, self.class_names, iou_type="bbox")
        self._synced = False

    def _reset_state(self) -> None:
        self.segm.reset()
        self.bbox.reset()

    def update(self, preds: Sequence[dict], targets: Sequence[dict]) -> None:  # type: ignore[override]
        """Add a batch: one prediction dict and one target dict per image (see the class docstring)."""
        self._check_updatable()
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        preds = [_with_boxes_and_masks(p, "prediction", i) for i, p in enumerate(preds)]
        targets = [_with_boxes_and_masks(t, "target", i) for i, t in enumerate(targets)]
        for i, (p, t) in enumerate(zip(preds, targets)):
            if p["masks"].shape[1:] != t["masks"].shape[1:]:
                raise ValueError(f"image #{i}: prediction masks {tuple(p['masks'].shape[1:])} and target masks "
                                 f"{tuple(t['masks'].shape[1:])} differ in size")  # fmt: skip
        self.segm.update(preds, targets)
        box_targets = [{**t, "area": t["masks"].flatten(1).sum(1)} if t.get("area") is None else t for t in targets]
        strip = lambda d: {k: v for k, v in d.items() if k != "masks"}  # noqa: E731
        self.bbox.update([strip(p) for p in preds], [strip(t) for t in box_targets])

    def sync(self) -> None:
        """Gather every rank's images into both metrics; a no-op without a process group."""
        if self._synced:
            return
        self.segm.sync()
        self.bbox.sync()
        self._synced = self.segm._synced

    def compute(self) -> dict:
        result = self.segm.compute()
        box = self.bbox.compute()
        for k in ("AP", "AP50", "AP75", "per_class_AP"):
            result[f"box_{k}"] = box[k]
        return result
