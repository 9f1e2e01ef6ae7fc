"""COCO detection metrics with pycocotools' semantics, computed by faster-coco-eval in memory.

``coco_eval`` is a thin, input-tolerant front door to ``faster_coco_eval.COCOeval_faster`` (a C++
port of pycocotools' ``evaluateImg``/``accumulate``; the tests compare every statistic with
pycocotools to 1e-12). COCO matching is not re-implemented here: the numbers come from faster-coco-eval.
``DetectionMetrics`` accumulates per-image predictions and targets over a validation loop (and
across DDP ranks), then calls ``coco_eval`` once and adds the extras a training run plots: a
confusion matrix with a background class, the F1-maximising confidence and PR-curve data.

>>> gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}],
...       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}
>>> r = coco_eval(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}])
>>> r["AP"], r["AP50"], r["per_class_AP"]
(1.0, 1.0, {'cat': 1.0})
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils

from optik.errors import ConfigError, DatasetError
from optik.metrics.base import Metric

__all__ = [
    "DetectionMetrics",
    "coco_eval",
    "detection_confusion_matrix",
    "format_ap_table",
    "predictions_to_coco",
]

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "keypoints")
_DEFAULT_MAX_DETS = {"bbox": (1, 10, 100), "segm": (1, 10, 100), "keypoints": (20,)}
_KEYPOINT_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_F1_MAX_THRESHOLDS = 10_000  # candidate confidences for the F1 sweep (exact below this many scores)


def _silent(*_: Any, **__: Any) -> None:
    """print_function for faster-coco-eval: its summary table goes nowhere (we return numbers)."""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one evaluation (restored after, also on error).

    An evaluation allocates a few containers per detection (result dicts, box lists, faster-coco-eval's
    index tuples), none in a reference cycle; with 10^5-10^6 detections the collector's repeated passes
    over that growing heap cost about a quarter of the run and reclaim nothing. Reference counting
    still frees everything; any cycles made meanwhile wait for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    """Tensor (any device, incl. tv_tensors.BoundingBoxes) or array-like → numpy of ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().as_subclass(torch.Tensor).numpy()
    return np.asarray(x, dtype=dtype)


def _load_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: {what} is not valid JSON ({e})") from None


def _stat_names(iou_type: str, max_dets: Sequence[int]) -> list[str]:
    if iou_type == "keypoints":
        return list(_KEYPOINT_STATS)
    return ["AP", "AP50", "AP75", "APs", "APm", "APl", *[f"AR{m}" for m in max_dets], "ARs", "ARm", "ARl"]


# --- inputs → COCO dicts ----------------------------------------------------------------------
def _gt_dataset(gt: Any, iou_type: str) -> dict:
    """A private, filled-in copy of a COCO ground-truth dict (faster-coco-eval writes into it)."""
    if hasattr(gt, "to_coco"):
        gt = gt.to_coco()
    elif isinstance(gt, (str, os.PathLike)):
        gt = _load_json(gt, "ground-truth")
    if not isinstance(gt, dict):
        raise ConfigError(f"gt must be a COCO dict, a JSON path or have .to_coco(), got {type(gt).__name__}")
    for key in ("images", "categories"):
        if key not in gt:
            raise DatasetError(f"ground truth: COCO dict has no {key!r} list")
    annotations = []
    for i, ann in enumerate(gt.get("annotations", [])):
        ann = dict(ann)  # evaluation adds 'ignore' (and RLEs for segm) to annotations: not the caller's
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise DatasetError(f"ground truth: annotation #{i} has no {key!r}")
        if "area" not in ann:
            if iou_type != "bbox":  # a mask's / person's area is not its box area: ask for it
                raise DatasetError(f"ground truth: annotation id {ann['id']} has no 'area' (needed for {iou_type})")
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
        if iou_type == "segm" and "segmentation" not in ann:
            raise DatasetError(f"ground truth: annotation id {ann['id']} has no 'segmentation' (iou_type='segm')")
        annotations.append(ann)
    return {**gt, "images": [dict(im) for im in gt["images"]], "annotations": annotations}


@dataclass
class _Results:
    """COCO results as columns, one row per detection: what per-image predictions become on the way to
    faster-coco-eval, without a Python dict per detection until the one the evaluator reads."""

    image_id: np.ndarray  # (N,) int64
    category_id: np.ndarray  # (N,) int64
    score: np.ndarray  # (N,) float64
    bbox: np.ndarray | None  # (N, 4) float64 [x, y, w, h]; None: box and area come from the masks (segm)
    segmentation: list[dict] | None = None  # N RLEs

    def __len__(self) -> int:
        return len(self.score)


def _prediction_columns(preds: Sequence[dict], cat_ids: Sequence[int]) -> _Results:
    """Per-image predictions (see ``predictions_to_coco``) → validated columns, boxes xyxy → xywh."""
    cats = np.asarray(cat_ids, dtype=np.int64)
    ids, boxes, scores, labels, segms = [], [], [], [], []
    for i, p in enumerate(preds):
        if "image_id" not in p:
            raise ConfigError(f"prediction #{i} has no 'image_id' (needed to pair it with its ground truth)")
        b = _as_numpy(p["boxes"], np.float64).reshape(-1, 4)
        s = _as_numpy(p["scores"], np.float64).reshape(-1)
        lab = _as_numpy(p["labels"], np.int64).reshape(-1)
        if not len(b) == len(s) == len(lab):
            raise ValueError(f"prediction #{i}: {len(b)} boxes, {len(s)} scores, {len(lab)} labels")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(cats)):
            raise ValueError(f"prediction #{i}: labels must lie in [0, {len(cats)}), got [{lab.min()}, {lab.max()}]")
        ids.append(np.full(len(b), int(p["image_id"]), dtype=np.int64))
        boxes.append(b)
        scores.append(s)
        labels.append(lab)
        if "segmentation" in p:
            segms.extend(p["segmentation"])
    if not ids:
        ids, boxes, scores, labels = [np.zeros(0, np.int64)], [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, np.int64)]
    # float64 before the subtraction: w, h are exactly what a float64 pycocotools pipeline computes
    xywh = np.concatenate(boxes)
    xywh[:, 2:] -= xywh[:, :2]
    res = _Results(np.concatenate(ids), cats[np.concatenate(labels)], np.concatenate(scores), xywh)
    if segms:
        if len(segms) != len(res):
            raise ValueError(f"{len(segms)} segmentations for {len(res)} predicted boxes")
        res.segmentation = segms
    return res


def predictions_to_coco(preds: Sequence[dict], cat_ids: Sequence[int]) -> list[dict]:
    """Per-image predictions → COCO result dicts (``bbox`` as ``[x, y, w, h]``).

    preds: one dict per image, ``{"image_id": int, "boxes": (N, 4) xyxy, "scores": (N,),
    "labels": (N,) int}`` (tensors or arrays; ``"segmentation"``: a list of N RLEs, optional).
    ``labels`` are 0-based class indices, mapped to ``cat_ids[label]`` (for a COCO ground truth:
    its category ids sorted ascending). Boxes and scores are converted to float64 (float32 inputs
    keep their exact values).

    >>> predictions_to_coco([{"image_id": 7, "boxes": [[1, 2, 4, 6]], "scores": [0.5], "labels": [0]}], [3])
    [{'image_id': 7, 'category_id': 3, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.5}]
    """
    res = _prediction_columns(preds, cat_ids)
    rows = zip(res.image_id.tolist(), res.category_id.tolist(), res.bbox.tolist(), res.score.tolist())
    out = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in rows]
    if res.segmentation is not None:
        for d, seg in zip(out, res.segmentation):
            d["segmentation"] = seg
    return out


def _result_anns(res: _Results, iou_type: str) -> list[dict]:
    """The annotation dicts faster-coco-eval's ``loadRes`` would make of ``res`` (ids 1..N in order,
    ``iscrowd`` 0; ``area`` the box area when there are boxes, else the mask area, as loadRes), built
    in one pass from the columns instead of loadRes' per-result loop.

    The one difference: for iou_type "bbox" a result without a segmentation gets no box polygon
    (loadRes adds one; bbox evaluation never reads it).
    """
    n = len(res)
    img, cat, score = res.image_id.tolist(), res.category_id.tolist(), res.score.tolist()
    if res.bbox is None:  # loadRes' segm branch: area and box of the mask
        if res.segmentation is None and n:
            raise ValueError("results without boxes need segmentations")
        area = mask_utils.area(res.segmentation).tolist() if n else []
        boxes = mask_utils.toBbox(res.segmentation).tolist() if n else []
    else:
        area = (res.bbox[:, 2] * res.bbox[:, 3]).tolist()  # float64 w * h: loadRes' bb[2] * bb[3]
        boxes = res.bbox.tolist()
    rows = zip(range(1, n + 1), img, cat, boxes, score, area)
    anns = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "score": s, "area": a, "iscrowd": 0}
            for k, i, c, b, s, a in rows]  # fmt: skip
    segms = res.segmentation
    if segms is None and iou_type != "bbox" and n:  # loadRes' box polygon (a "segm" run on boxes uses it)
        x1, y1 = res.bbox[:, 0], res.bbox[:, 1]
        x2, y2 = x1 + res.bbox[:, 2], y1 + res.bbox[:, 3]
        segms = [[p] for p in np.stack([x1, y1, x1, y2, x2, y2, x2, y1], 1).tolist()]
    if segms is not None:
        for d, seg in zip(anns, segms):
            d["segmentation"] = seg
    return anns


def _load_results(coco_gt: COCO, anns: list[dict]) -> COCO:
    """``coco_gt.loadRes`` for annotations already in loadRes' output form (``_result_anns``)."""
    res = COCO(print_function=_silent)
    res.dataset = {"info": copy.deepcopy(coco_gt.dataset.get("info", {})), "images": list(coco_gt.dataset["images"]),
                   "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": anns}  # fmt: skip
    res.createIndex()
    return res


def _dt_list(dt: Any, cat_ids: Sequence[int]) -> list[dict] | _Results:
    if isinstance(dt, (str, os.PathLike)):
        dt = _load_json(dt, "detections")
    if not isinstance(dt, (list, tuple)):
        raise ConfigError(
            f"dt must be a list of COCO results / per-image predictions or a JSON path, got {type(dt).__name__}"
        )
    if not dt:
        return []
    if "boxes" in dt[0]:
        return _prediction_columns(dt, cat_ids)
    return list(dt)  # the caller's dicts: _evaluate copies them (loadRes writes into its input)


def _box_result_anns(dt: list[dict]) -> list[dict] | None:
    """COCO box results → loadRes' output form in one pass (copies with ``id``, ``area`` = w * h and
    ``iscrowd`` 0; no box polygon, which bbox evaluation never reads); None where loadRes would not
    take its box branch (no box in the first result, captions), so that loadRes handles those."""
    first = dt[0]
    if "caption" in first or not isinstance(first.get("bbox"), (list, tuple)) or len(first["bbox"]) != 4:
        return None
    anns = []
    for k, d in enumerate(dt, 1):
        try:
            b = d["bbox"]
            anns.append({**d, "area": b[2] * b[3], "id": k, "iscrowd": 0})
        except (KeyError, IndexError, TypeError):
            raise DatasetError(f"detection #{k - 1}: 'bbox' must be [x, y, w, h], got {d.get('bbox')!r}") from None
    return anns


# --- evaluation -------------------------------------------------------------------------------
def _evaluate(
    gt_data: dict, dt: list[dict] | _Results, iou_type: str, max_dets: Sequence[int] | None
) -> tuple[COCOeval_faster, list[int]]:
    """Run faster-coco-eval; returns the evaluator (``.eval``, ``.stats``) and the max_dets used.

    ``dt``: columns (``_Results``, from per-image predictions) or the caller's COCO result dicts; both
    go straight to the form loadRes would give them (its per-result loop is a good part of a large
    evaluation), except non-box results (segm, keypoints), which go through faster-coco-eval's loadRes."""
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    max_dets = sorted(int(m) for m in (max_dets or _DEFAULT_MAX_DETS[iou_type]))
    if not max_dets or max_dets[0] < 1:
        raise ConfigError(f"max_dets must be positive integers, got {max_dets}")
    gt_images = {im["id"] for im in gt_data["images"]}
    if isinstance(dt, _Results):
        stray = sorted(set(np.unique(dt.image_id).tolist()) - gt_images)
    else:
        stray = sorted({d["image_id"] for d in dt} - gt_images)
    if stray:
        raise DatasetError(f"detections for {len(stray)} image id(s) not in the ground truth, e.g. {stray[:5]}")
    coco_gt = COCO(gt_data, print_function=_silent)
    if isinstance(dt, _Results):
        coco_dt = _load_results(coco_gt, _result_anns(dt, iou_type))
    elif iou_type == "bbox" and dt and (anns := _box_result_anns(dt)) is not None:
        coco_dt = _load_results(coco_gt, anns)
    else:
        coco_dt = coco_gt.loadRes([dict(d) for d in dt])  # loadRes writes id/area/segmentation: copies
    ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_silent)
    ev.params.maxDets = max_dets
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev, max_dets


def _summary(ev: COCOeval_faster, names: Sequence[str], max_dets: Sequence[int], num_gt: int, num_dt: int,
             cat_names: dict[int, str]) -> dict:  # fmt: skip
    stat_names = _stat_names(ev.params.iouType, max_dets)
    result: dict[str, Any] = {k: float(v) for k, v in zip(stat_names, ev.stats)}
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)  # (T, R, K, A, M), -1 = no GT
    recall = np.asarray(ev.eval["recall"], dtype=np.float64)  # (T, K, A, M)
    per_ap, per_ap50 = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]  # area "all", largest maxDets: what "AP" averages
        per_ap[cat_names[cat_id]] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        p50 = p[0]
        per_ap50[cat_names[cat_id]] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan")
    result.update(per_class_AP=per_ap, per_class_AP50=per_ap50, precision=precision, recall=recall,
                  num_images=len(ev.params.imgIds), num_gt=num_gt, num_dt=num_dt)  # fmt: skip
    return result


def _category_names(gt_data: dict, class_names: Sequence[str] | None) -> tuple[list[int], dict[int, str]]:
    cat_ids = sorted(int(c["id"]) for c in gt_data["categories"])
    if class_names is not None:
        if len(class_names) != len(cat_ids):
            raise ConfigError(f"class_names has {len(class_names)} names, the ground truth {len(cat_ids)} categories")
        return cat_ids, {c: str(n) for c, n in zip(cat_ids, class_names)}
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in gt_data["categories"]}
    return cat_ids, by_id


def coco_eval(
    gt: Any,
    dt: Any,
    iou_type: str = "bbox",
    *,
    class_names: Sequence[str] | None = None,
    max_dets: Sequence[int] | None = None,
) -> dict:
    """COCO AP/AR exactly as pycocotools' ``COCOeval`` computes them (via faster-coco-eval, in memory).

    gt: a COCO dict (``images``, ``categories``, ``annotations``), a JSON path, or any object with
        ``.to_coco() -> dict``. Missing ``area`` is filled with the box area (bbox only) and
        ``iscrowd`` with 0; the caller's dicts are never modified.
    dt: COCO results (``image_id, category_id, bbox [x, y, w, h], score``; ``segmentation`` RLE for
        segm, ``keypoints`` for keypoints), a JSON path to such a list, or per-image predictions
        ``{"image_id", "boxes" (N, 4) xyxy, "scores", "labels"}`` whose 0-based ``labels`` index
        gt's category ids *sorted ascending* (see ``predictions_to_coco``).
    iou_type: ``"bbox"``, ``"segm"`` (both sides need ``segmentation``) or ``"keypoints"``.
    class_names: names for gt's categories in ascending id order (default: their ``name``).
    max_dets: detections kept per image and category, ascending (default pycocotools': (1, 10, 100),
        (20,) for keypoints); AP uses the largest.

    Returns a dict with
      - the summary statistics under pycocotools' names, floats, -1.0 where pycocotools reports -1
        (no ground truth in that area range): ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
        ARs, ARm, ARl`` (``AR{m}`` for each of ``max_dets``); for keypoints
        ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``;
      - ``per_class_AP`` / ``per_class_AP50``: ``{name: AP@[.50:.95] / AP@.50}`` (area all, largest
        max_dets), NaN for a category without non-crowd ground truth (pycocotools' -1 there means
        "undefined", not a score; AP is the mean of the non-NaN values);
      - ``precision``: float64 (T, R, K, A, M) = (IoU thresholds, 101 recall points, categories,
        area ranges all/small/medium/large, max_dets), -1 where undefined; ``recall``: (T, K, A, M);
      - ``num_images``, ``num_gt`` (annotations incl. crowd), ``num_dt``.

    No detections give 0.0 everywhere there is ground truth; no ground truth gives -1.0.

    Speed: per-image predictions and box results skip faster-coco-eval's per-result ``loadRes`` loop
    (the evaluator gets the same dicts, built in one pass), and Python's cyclic garbage collector is
    paused during the call (its passes over the 10^5+ result dicts cost ~25% and free nothing).

    >>> coco_eval("instances_val.json", "detections.json")["AP"]   # doctest: +SKIP
    0.372
    """
    with _gc_paused():
        gt_data = _gt_dataset(gt, iou_type)
        cat_ids, cat_names = _category_names(gt_data, class_names)
        results = _dt_list(dt, cat_ids)
        ev, used = _evaluate(gt_data, results, iou_type, max_dets)
        return _summary(ev, _stat_names(iou_type, used), used, len(gt_data["annotations"]), len(results), cat_names)


# --- confusion matrix and F1 ------------------------------------------------------------------
def detection_confusion_matrix(
    preds: Sequence[dict], targets: Sequence[dict], num_classes: int, *, conf: float = 0.25, iou: float = 0.45
) -> np.ndarray:
    """(C+1, C+1) int64 count matrix with a background class at index C.

    Rows are true classes, columns predicted (as ``classification.confusion_matrix``):
    ``cm[t, p]`` a detection of class p matched to a ground truth of class t, ``cm[C, p]`` an
    unmatched detection (false positive on background), ``cm[t, C]`` a missed ground truth.
    Detections with score >= ``conf`` are matched class-agnostically, greedily in descending score
    order (stable), each to the still-unmatched ground truth of highest IoU >= ``iou``. Crowd
    ground truth (``iscrowd``) is neither counted nor matched, and an unmatched detection lying on
    a crowd region (intersection / detection area >= ``iou``, COCO's crowd overlap) is not counted
    either.

    The thresholds are Ultralytics' defaults and the layout is its transpose; Ultralytics uses
    ``>`` for both thresholds and resolves competing matches by IoU instead of score, so counts can
    differ when boxes overlap.

    >>> detection_confusion_matrix([{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}],
    ...                            [{"boxes": [[0, 0, 10, 10]], "labels": [0]}], 2).tolist()
    [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    """
    # torchvision costs seconds to import; only this needs it
    from torchvision.ops import box_iou

    c = num_classes
    cm = np.zeros((c + 1, c + 1), dtype=np.int64)
    for p, t in zip(preds, targets, strict=True):
        scores = _as_numpy(p["scores"], np.float64).reshape(-1)
        keep = scores >= conf
        order = np.argsort(-scores[keep], kind="stable")
        pb = _as_numpy(p["boxes"], np.float64).reshape(-1, 4)[keep][order]
        pl = _as_numpy(p["labels"], np.int64).reshape(-1)[keep][order]
        tb = _as_numpy(t["boxes"], np.float64).reshape(-1, 4)
        tl = _as_numpy(t["labels"], np.int64).reshape(-1)
        crowd = _as_numpy(t.get("iscrowd", np.zeros(len(tl))), np.int64).reshape(-1).astype(bool)
        gb, gl = tb[~crowd], tl[~crowd]
        ious = np.zeros((len(pb), len(gb)))
        if len(pb) and len(gb):
            ious = box_iou(torch.from_numpy(pb), torch.from_numpy(gb)).numpy()
        crowd_hit = (_ioa(pb, tb[crowd]) >= iou).any(1) if crowd.any() else np.zeros(len(pb), dtype=bool)
        taken = np.zeros(len(gb), dtype=bool)
        for d in range(len(pb)):
            cand = np.where(taken, -1.0, ious[d])
            g = int(cand.argmax()) if len(cand) else -1
            if g >= 0 and cand[g] >= iou:
                taken[g] = True
                cm[gl[g], pl[d]] += 1
            elif not crowd_hit[d]:
                cm[c, pl[d]] += 1
        np.add.at(cm, (gl[~taken], c), 1)
    return cm


def _ioa(det: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) intersection over the *detection's* area: COCO's overlap with a crowd region."""
    lt = np.maximum(det[:, None, :2], crowd[None, :, :2])
    rb = np.minimum(det[:, None, 2:], crowd[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = ((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]))[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def _f1_at(thresholds: np.ndarray, scores: list[np.ndarray], cum_tp: list[np.ndarray], n_gt: np.ndarray) -> np.ndarray:
    """Per-class (K, len(thresholds)) precision, recall, F1 counting detections with score >= threshold."""
    k = len(scores)
    p, r = np.zeros((k, len(thresholds))), np.zeros((k, len(thresholds)))
    for j in range(k):
        if not len(scores[j]):
            continue
        n_above = np.searchsorted(-scores[j], -thresholds, side="right")  # scores[j] sorted descending
        tp = np.where(n_above > 0, cum_tp[j][np.maximum(n_above - 1, 0)], 0)
        p[j] = np.divide(tp, n_above, out=np.zeros(len(thresholds)), where=n_above > 0)
        r[j] = tp / n_gt[j] if n_gt[j] else 0.0
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return np.stack([p, r, f1])


# --- the accumulating metric ------------------------------------------------------------------
class DetectionMetrics(Metric):
    """COCO mAP (pycocotools semantics) and training-run extras, accumulated over a validation loop.

    ``update(preds, targets)`` takes per-image lists in the detection contract: predictions
    ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,) int}`` and targets ``{"boxes", "labels",
    "iscrowd" (optional), "image_id" (optional), "orig_size" (optional)}`` in the same pixel frame
    (original image, where COCO's area ranges apply). For ``iou_type="segm"`` both also carry
    ``"masks"`` (N, H, W) bool. Everything is stored as CPU numpy; images without an ``image_id``
    get ids after the largest given one, in update order. A repeated ``image_id`` with identical
    ground truth (DistributedSampler pads the last batch by repeating images) is evaluated once.

    ``sync()`` gathers every rank's images (``all_gather_object``). ``compute()`` returns
    ``coco_eval``'s dict plus
      - ``confusion_matrix``: (C+1, C+1) int64, background last (``detection_confusion_matrix``:
        conf >= 0.25, IoU >= 0.45);
      - ``f1_conf``, ``f1``, ``precision_at_f1``, ``recall_at_f1``: the confidence threshold
        maximising the mean F1 over classes with ground truth, and the mean F1 / precision / recall
        there. True positives are COCO's own matches at IoU 0.50 (area all, largest max_dets;
        detections matched to crowd are ignored); candidate thresholds are the detection scores
        (at most 10,000 of them, evenly spaced by rank), the lowest wins ties; 0.0 without
        detections or ground truth;
      - ``pr_curve``: ``{"recall": (101,), "precision": (C, 101)}`` at IoU 0.50 from the precision
        array (NaN rows for classes without ground truth);
      - ``f1_curve``: ``{"conf": (101,), "f1": (C, 101)}`` per-class F1 on a 0..1 confidence grid.

    >>> m = DetectionMetrics(num_classes=2, class_names=["cat", "dog"])
    >>> m.update([{"boxes": torch.tensor([[0., 0., 10., 10.]]), "scores": torch.tensor([0.9]),
    ...            "labels": torch.tensor([0])}],
    ...          [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "labels": torch.tensor([0])}])
    >>> r = m.compute(); r["AP"], r["per_class_AP"]
    (1.0, {'cat': 1.0, 'dog': nan})
    """

    fitness_key: ClassVar[str] = "AP"

    def __init__(self, num_classes: int, class_names: list[str] | None = None, iou_type: str = "bbox") -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if iou_type not in ("bbox", "segm"):
            raise ConfigError(f"DetectionMetrics supports iou_type 'bbox' or 'segm', got {iou_type!r}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.iou_type = iou_type
        self.reset()

    def _reset_state(self) -> None:
        self._images: list[dict[str, Any]] = []

    def update(self, preds: list[dict], targets: list[dict]) -> None:  # type: ignore[override]
        """Add a batch: one prediction dict and one target dict per image (see the class docstring)."""
        self._check_updatable()
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        for i, (p, t) in enumerate(zip(preds, targets)):
            rec: dict[str, Any] = {
                "image_id": int(t["image_id"]) if t.get("image_id") is not None else None,
                "gt_boxes": _as_numpy(t["boxes"], np.float64).reshape(-1, 4),
                "gt_labels": _as_numpy(t["labels"], np.int64).reshape(-1),
                "dt_boxes": _as_numpy(p["boxes"], np.float64).reshape(-1, 4),
                "dt_scores": _as_numpy(p["scores"], np.float64).reshape(-1),
                "dt_labels": _as_numpy(p["labels"], np.int64).reshape(-1),
            }
            n, m = len(rec["gt_labels"]), len(rec["dt_labels"])
            rec["iscrowd"] = _as_numpy(t.get("iscrowd", np.zeros(n)), np.uint8).reshape(-1)
            if len(rec["gt_boxes"]) != n or len(rec["iscrowd"]) != n:
                raise ValueError(f"target #{i}: {len(rec['gt_boxes'])} boxes, {n} labels, {len(rec['iscrowd'])} iscrowd")
            if len(rec["dt_boxes"]) != m or len(rec["dt_scores"]) != m:
                raise ValueError(f"prediction #{i}: {len(rec['dt_boxes'])} boxes, {len(rec['dt_scores'])} scores, {m} labels")
            for name, lab in (("target", rec["gt_labels"]), ("prediction", rec["dt_labels"])):
                if len(lab) and (lab.min() < 0 or lab.max() >= self.num_classes):
                    raise ValueError(
                        f"{name} #{i}: labels must lie in [0, {self.num_classes}), got [{lab.min()}, {lab.max()}]"
                    )
            if t.get("orig_size") is not None:
                rec["orig_size"] = tuple(int(v) for v in _as_numpy(t["orig_size"], np.int64).reshape(-1)[:2])
            if t.get("area") is not None:  # the annotation's own area (e.g. a mask's) decides s/m/l
                rec["gt_area"] = _as_numpy(t["area"], np.float64).reshape(-1)
                if len(rec["gt_area"]) != n:
                    raise ValueError(f"target #{i}: {len(rec['gt_area'])} areas for {n} boxes")
            if self.iou_type == "segm":
                rec["gt_rles"], size = self._encode(t, "target", i, n)
                rec["dt_rles"], _ = self._encode(p, "prediction", i, m)
                rec.setdefault("orig_size", size)
            self._images.append(rec)

    @staticmethod
    def _encode(d: dict, what: str, i: int, n: int) -> tuple[list[dict], tuple[int, int]]:
        if "masks" not in d:
            raise ValueError(f"{what} #{i}: iou_type='segm' needs 'masks' (N, H, W)")
        masks = _as_numpy(d["masks"], np.uint8)
        if masks.ndim != 3 or len(masks) != n:
            raise ValueError(f"{what} #{i}: masks must be ({n}, H, W), got {masks.shape}")
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if n else []
        return list(rles), (int(masks.shape[1]), int(masks.shape[2]))

    def sync(self) -> None:
        """Gather every rank's images into each rank (rank order); a no-op without a process group."""
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[list[dict]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, self._images)
        self._images = [rec for part in gathered for rec in part]
        self._synced = True

    def _unique_images(self) -> list[tuple[int, dict]]:
        given = [r["image_id"] for r in self._images if r["image_id"] is not None]
        next_id = max(given, default=-1) + 1
        seen: dict[int, dict] = {}
        out = []
        for rec in self._images:
            image_id = rec["image_id"]
            if image_id is None:
                image_id, next_id = next_id, next_id + 1
            elif image_id in seen:
                first = seen[image_id]
                same = all(np.array_equal(first[k], rec[k]) for k in ("gt_boxes", "gt_labels", "iscrowd"))
                if not same:
                    raise DatasetError(f"image_id {image_id} was given to two images with different ground truth")
                continue  # a padded repeat (DistributedSampler): evaluate once
            seen[image_id] = rec
            out.append((image_id, rec))
        return out

    def _coco_inputs(self, images: list[tuple[int, dict]]) -> tuple[dict, _Results]:
        gt_images, anns = [], []
        for image_id, rec in images:
            im: dict[str, Any] = {"id": image_id}
            if "orig_size" in rec:
                im["height"], im["width"] = rec["orig_size"]
            gt_images.append(im)
            xywh = rec["gt_boxes"].copy()
            xywh[:, 2:] -= xywh[:, :2]
            if self.iou_type == "segm" and len(xywh):
                areas = mask_utils.area(rec["gt_rles"]).tolist()
            elif "gt_area" in rec:
                areas = rec["gt_area"].tolist()
            else:
                areas = (xywh[:, 2] * xywh[:, 3]).tolist()
            rows = zip(xywh.tolist(), rec["gt_labels"].tolist(), rec["iscrowd"].tolist(), areas)
            for j, (box, label, crowd, area) in enumerate(rows):
                ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": label, "bbox": box, "area": area,
                       "iscrowd": crowd}  # fmt: skip
                if self.iou_type == "segm":
                    ann["segmentation"] = rec["gt_rles"][j]
                anns.append(ann)
        categories = [{"id": k, "name": n} for k, n in enumerate(self.class_names)]
        preds = [{"image_id": image_id, "boxes": rec["dt_boxes"], "scores": rec["dt_scores"], "labels": rec["dt_labels"],
                  **({"segmentation": rec["dt_rles"]} if self.iou_type == "segm" else {})}
                 for image_id, rec in images]  # fmt: skip
        gt = {"images": gt_images, "annotations": anns, "categories": categories}
        dt = _prediction_columns(preds, range(self.num_classes))
        if self.iou_type == "segm":  # with boxes, loadRes takes the box area for the area ranges, not the mask's
            dt.bbox = None
        return gt, dt

    @_gc_paused()
    def compute(self) -> dict:
        images = self._unique_images()
        gt, dt = self._coco_inputs(images)
        cat_names = dict(enumerate(self.class_names))
        ev, used = _evaluate(gt, dt, self.iou_type, None)
        result = _summary(ev, _stat_names(self.iou_type, used), used, len(gt["annotations"]), len(dt), cat_names)
        result["confusion_matrix"] = detection_confusion_matrix(
            [{"boxes": r["dt_boxes"], "scores": r["dt_scores"], "labels": r["dt_labels"]} for _, r in images],
            [{"boxes": r["gt_boxes"], "labels": r["gt_labels"], "iscrowd": r["iscrowd"]} for _, r in images],
            self.num_classes,
        )
        result.update(self._f1(ev, gt, dt, used[-1]))
        p50 = result["precision"][0, :, :, 0, -1].T  # (K, R) at IoU .50, area all
        result["pr_curve"] = {"recall": np.linspace(0.0, 1.0, 101), "precision": np.where(p50 > -1, p50, np.nan)}
        return result

    def _f1(self, ev: COCOeval_faster, gt: dict, dt: _Results, max_det: int) -> dict:
        """F1 vs confidence, true positives being COCO's own matches at IoU 0.50 (area all)."""
        k = self.num_classes
        crowd = np.array([a["iscrowd"] for a in gt["annotations"]], dtype=bool)
        gt_cat = np.array([a["category_id"] for a in gt["annotations"]], dtype=np.int64)
        n_gt = np.bincount(gt_cat[~crowd], minlength=k) if len(gt_cat) else np.zeros(k, dtype=np.int64)
        grid = np.linspace(0.0, 1.0, 101)
        empty = {"f1_conf": 0.0, "f1": 0.0, "precision_at_f1": 0.0, "recall_at_f1": 0.0,
                 "f1_curve": {"conf": grid, "f1": np.full((k, len(grid)), np.nan)}}  # fmt: skip
        if not len(dt) or not n_gt.any():
            return empty
        score, cat = dt.score, dt.category_id
        # eval["matched"] of the full run is the union over all IoU thresholds and area ranges, so
        # a second, IoU-0.50 / area-all run gives exactly pycocotools' dtMatches[0] (tested).
        ev50 = COCOeval_faster(ev.cocoGt, ev.cocoDt, ev.params.iouType, print_function=_silent, extra_calc=True)
        ev50.params.iouThrs = np.array([0.5])
        ev50.params.areaRng, ev50.params.areaRngLbl, ev50.params.maxDets = [[0.0, 1e10]], ["all"], [max_det]
        ev50.evaluate()
        ev50.accumulate()
        # Unmatched detections are false positives only if evaluated (top max_det per image and
        # category); the others are in no "matched" entry, and so handled by rank below.
        img = dt.image_id
        order = np.lexsort((np.arange(len(dt)), -score, cat, img))  # pycocotools' stable score sort
        grp = np.stack([img[order], cat[order]], 1)
        starts = np.r_[True, (grp[1:] != grp[:-1]).any(1)]
        rank = np.arange(len(order)) - np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
        evaluated = np.zeros(len(dt), dtype=bool)
        evaluated[order] = rank < max_det
        tp, ignored = np.zeros(len(dt), dtype=bool), np.zeros(len(dt), dtype=bool)
        for key in ev50.eval["matched"]:  # "dtId_gtId"; both ids are 1-based list positions here
            d, g = (int(v) - 1 for v in key.split("_", 1))
            ignored[d], tp[d] = crowd[g], not crowd[g]
        use = evaluated & ~ignored
        scores, cum_tp = [], []
        for j in range(k):
            sel = use & (cat == j)
            o = np.argsort(-score[sel], kind="stable")
            scores.append(score[sel][o])
            cum_tp.append(np.cumsum(tp[sel][o]))
        has_gt = n_gt > 0
        cand = np.unique(score[use])
        if len(cand) > _F1_MAX_THRESHOLDS:
            cand = cand[np.linspace(0, len(cand) - 1, _F1_MAX_THRESHOLDS).round().astype(np.int64)]
        if not len(cand):
            return empty
        p, r, f1 = _f1_at(cand, scores, cum_tp, n_gt)
        mean_f1 = f1[has_gt].mean(0)
        best = int(np.argmax(mean_f1))  # first maximum = lowest confidence among ties
        curve = _f1_at(grid, scores, cum_tp, n_gt)[2]
        curve[~has_gt] = np.nan
        return {"f1_conf": float(cand[best]), "f1": float(mean_f1[best]),
                "precision_at_f1": float(p[has_gt, best].mean()), "recall_at_f1": float(r[has_gt, best].mean()),
                "f1_curve": {"conf": grid, "f1": curve}}  # fmt: skip


def format_ap(value: float | None, digits: int = 4) -> str:
    """One AP/AR value for people: ``"-"`` where COCO has none (-1: no ground truth of that area or class;
    NaN / None: not computed), so a summary never prints "mAP -1.0000".

    >>> format_ap(0.51234), format_ap(-1.0), format_ap(float("nan"), 3)
    ('0.5123', '-', '-')
    """
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) and value >= 0 else "-"


def format_ap_table(result: dict, digits: int = 3) -> str:
    """Plain-text per-class AP@[.50:.95] / AP@.50 table from ``coco_eval``/``DetectionMetrics`` results.

    Classes without ground truth show ``-``; the last row is the overall ``AP`` / ``AP50``.

    >>> print(format_ap_table({"per_class_AP": {"cat": 0.5}, "per_class_AP50": {"cat": 0.8}, "AP": 0.5, "AP50": 0.8}))
    class  AP50:95     AP50
    -----------------------
    cat      0.500    0.800
    -----------------------
    all      0.500    0.800
    """
    ap, ap50 = result["per_class_AP"], result["per_class_AP50"]
    width = max([len("class"), len("all")] + [len(str(n)) for n in ap])
    col = max(9, digits + 4)

    def fmt(v: float) -> str:
        return f"{format_ap(v, digits):>{col}}"

    header = f"{'class':<{width}}{'AP50:95':>{col}}{'AP50':>{col}}"
    lines = [header, "-" * len(header)]
    lines += [f"{n!s:<{width}}{fmt(ap[n])}{fmt(ap50.get(n, float('nan')))}" for n in ap]
    lines.append("-" * len(header))
    if "AP" in result:
        lines.append(f"{'all':<{width}}{fmt(result['AP'])}{fmt(result.get('AP50', float('nan')))}")
    return "\n".join(lines)
