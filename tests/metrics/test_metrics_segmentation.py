"""Segmentation metrics against their references: scikit-learn, panopticapi's logic, pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as py_mask
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from optik.errors import ConfigError
from optik.metrics import (
    InstanceMetrics,
    PanopticMetrics,
    SemanticMetrics,
    format_iou_table,
    format_pq_table,
    panoptic_quality,
)

IGNORE = 255
COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


# --- semantic: == scikit-learn ------------------------------------------------------------------
@st.composite
def semantic_batches(draw):
    """Per-image (pred, target) pairs of random sizes: ignore pixels, classes missing on either side."""
    c = draw(st.integers(2, 7))
    g = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    as_scores = draw(st.booleans())
    present = g.choice(c, size=int(g.integers(1, c + 1)), replace=False)  # targets use a subset
    predicted = g.choice(c, size=int(g.integers(1, c + 1)), replace=False)
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        h, w = int(g.integers(1, 9)), int(g.integers(1, 9))
        target = g.choice(present, size=(h, w))
        target[g.random((h, w)) < g.uniform(0, 0.4)] = IGNORE
        pred = np.where(g.random((h, w)) < 0.6, np.where(target == IGNORE, 0, target), g.choice(predicted, (h, w)))
        pred = torch.from_numpy(pred)
        if as_scores:  # distinct scores per pixel whose argmax is pred
            scores = torch.from_numpy(g.random((c, h, w)))
            scores.scatter_(0, pred[None], 2.0)
            pred = scores
        pairs.append((pred, torch.from_numpy(target)))
    return c, pairs


def _flat(pairs):
    ys, ps = [], []
    for p, t in pairs:
        p = p.argmax(0) if p.ndim == 3 else p
        keep = t != IGNORE
        ys.append(t[keep].numpy())
        ps.append(p[keep].numpy())
    return np.concatenate(ys), np.concatenate(ps)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(semantic_batches())
def test_semantic_matches_sklearn(batch):
    c, pairs = batch
    m = SemanticMetrics(c)
    m.update([p for p, _ in pairs], [t for _, t in pairs])
    r = m.compute()
    y, yp = _flat(pairs)
    labels = np.arange(c)
    assert r["pixels"] == len(y)
    if not len(y):  # every pixel ignored
        assert r["mIoU"] == r["pixel_acc"] == r["fwIoU"] == 0.0 and not r["confusion_matrix"].any()
        return
    cm = sk_confusion_matrix(y, yp, labels=labels)
    np.testing.assert_array_equal(r["confusion_matrix"], cm)
    # 0/0 is undefined (NaN) in optik: a class in neither y nor yp (IoU, Dice), not in y (acc)
    in_y, in_either = np.isin(labels, y), np.isin(labels, np.concatenate([y, yp]))
    iou = np.where(in_either, jaccard_score(y, yp, labels=labels, average=None, zero_division=0), np.nan)
    dice = np.where(in_either, f1_score(y, yp, labels=labels, average=None, zero_division=0), np.nan)
    acc = np.where(in_y, recall_score(y, yp, labels=labels, average=None, zero_division=0), np.nan)
    for key, ref in (("per_class_IoU", iou), ("per_class_Dice", dice), ("per_class_acc", acc)):
        np.testing.assert_allclose(list(r[key].values()), ref, rtol=0, atol=1e-12, err_msg=key)
    assert r["mIoU"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert r["mDice"] == pytest.approx(np.nanmean(dice), abs=1e-12)
    assert r["mean_acc"] == pytest.approx(np.nanmean(acc), abs=1e-12)
    assert r["pixel_acc"] == pytest.approx(accuracy_score(y, yp), abs=1e-12)
    support = cm.sum(1)
    fw = sum(support[k] * iou[k] for k in range(c) if support[k]) / support.sum()  # Long et al. 2015
    assert r["fwIoU"] == pytest.approx(fw, abs=1e-12)


def test_semantic_batch_tensor_list_and_chunks_agree():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (4, 6, 7), generator=g)
    target[:, 0] = IGNORE
    whole = SemanticMetrics(5, ignore_index=IGNORE)
    whole.update(scores, target)
    chunks = SemanticMetrics(5)
    chunks.update(scores[:1], target[:1])
    chunks.update(list(scores[1:].argmax(1)), list(target[1:]))  # class maps, list form
    a, b = whole.compute(), chunks.compute()
    np.testing.assert_array_equal(a["confusion_matrix"], b["confusion_matrix"])
    assert a["mIoU"] == b["mIoU"] and a["pixels"] == 4 * 5 * 7
    no_ignore = SemanticMetrics(256, ignore_index=None)  # every value is a class
    no_ignore.update(target, target)
    assert no_ignore.compute()["pixel_acc"] == 1.0 and no_ignore.compute()["per_class_IoU"]["255"] == 1.0


def test_semantic_absent_classes_are_nan_and_excluded():
    m = SemanticMetrics(4, class_names=["bg", "a", "b", "never"])
    # targets: bg bg a a ; preds: bg a a b  -> b predicted but absent from targets, "never" nowhere
    m.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 0, 1, 1]]))
    r = m.compute()
    assert r["per_class_IoU"]["bg"] == 0.5 and r["per_class_IoU"]["a"] == pytest.approx(1 / 3)
    assert r["per_class_IoU"]["b"] == 0.0 and np.isnan(r["per_class_IoU"]["never"])
    assert np.isnan(r["per_class_acc"]["b"]) and np.isnan(r["per_class_Dice"]["never"])
    assert r["mIoU"] == pytest.approx((0.5 + 1 / 3 + 0) / 3)
    assert r["mean_acc"] == pytest.approx((0.5 + 0.5) / 2)
    assert r["fwIoU"] == pytest.approx((2 * 0.5 + 2 / 3) / 4)
    table = format_iou_table(r).splitlines()
    assert table[0].split() == ["class", "IoU", "Dice", "acc"] and len(table) == 4 + 4
    assert table[5].split() == ["never", "-", "-", "-"]
    assert table[-1].split() == ["mean", f"{r['mIoU']:.3f}", f"{r['mDice']:.3f}", f"{r['mean_acc']:.3f}"]
    m.reset()
    assert m.compute()["pixels"] == 0 and m.compute()["mIoU"] == 0.0


def test_semantic_validation():
    m = SemanticMetrics(3)
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="predictions but"):
        m.update([torch.zeros(2, 2)], [])
    with pytest.raises(ConfigError):
        SemanticMetrics(2, class_names=["a"])


def _simulated_sync(monkeypatch, ranks) -> None:
    """Metric.sync() on each rank, all_reduce(SUM) simulated from every rank's pre-sync state."""
    states = [[getattr(m, n).clone() for n in m._state_names] for m in ranks]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "get_world_size", lambda: len(ranks))
    for m in ranks:
        calls = iter(range(len(m._state_names)))  # sync() reduces the states in _state_names order

        def all_reduce(buf, op=None, calls=calls):
            i = next(calls)  # StopIteration if a second sync() reduced again
            buf.copy_(sum(s[i] for s in states))

        monkeypatch.setattr(dist, "all_reduce", all_reduce)
        m.sync()
        m.sync()  # idempotent


def test_semantic_sync_is_exact(monkeypatch):
    g = torch.Generator().manual_seed(1)
    preds, targets = torch.randint(0, 4, (6, 5, 5), generator=g), torch.randint(0, 4, (6, 5, 5), generator=g)
    ref = SemanticMetrics(4)
    ref.update(preds, targets)
    ranks = [SemanticMetrics(4), SemanticMetrics(4)]
    for rank, m in enumerate(ranks):
        m.update(preds[rank::2], targets[rank::2])
    _simulated_sync(monkeypatch, ranks)
    for m in ranks:
        np.testing.assert_array_equal(m.compute()["confusion_matrix"], ref.compute()["confusion_matrix"])
        with pytest.raises(RuntimeError, match="reset"):
            m.update(preds[:1], targets[:1])


# --- panoptic: hand-checked and == panopticapi's pq_compute_single_core ----------------------------
def _masks(idmap: np.ndarray, ids: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([idmap == i for i in ids]) if ids else np.zeros((0, *idmap.shape), bool))


def test_panoptic_hand_checked_case():
    """Classes: person (thing), car (thing), sky (stuff).

    Image 1 (10 x 10): target sky = rows 0-3 (40 px); person = rows 4-9 x cols 0-3 (24 px); a car
    CROWD region = rows 4-9 x cols 6-9 (24 px); cols 4-5 of rows 4-9 are VOID (12 px).
    Predictions:
      sky  rows 0-4 (50 px): ∩ sky 40, void 2 → union 50 + 40 - 40 - 2 = 48, IoU 40/48 = 5/6 → TP
      person rows 5-9 x cols 0-2 (15 px): ∩ 15, union 15 + 24 - 15 = 24, IoU 0.625 → TP
      car  rows 5-9 x cols 5-9 (25 px): no car target; void 5 + car crowd 20 = 25/25 > 0.5 → ignored
      person rows 5-9 x cols 3-4 (10 px): unmatched; void 5/10 = 0.5, not > 0.5 → FP (person)
    Image 2 (10 x 10): a car (rows 0-1, 20 px), the rest void; nothing predicted → FN (car).
    Per class: person tp 1, fp 1, IoU 0.625 → PQ 0.625/1.5 = 0.41667, SQ 0.625, RQ 2/3
               car    fn 1                 → PQ 0, SQ 0, RQ 0
               sky    tp 1, IoU 5/6         → PQ = SQ = 5/6, RQ 1
    PQ = (0.41667 + 0 + 0.83333)/3 = 0.41667, SQ = (0.625 + 0.83333)/3 = 0.48611, RQ = (2/3 + 1)/3 = 0.55556
    PQ_th = 0.41667/2 = 0.20833, PQ_st = 0.83333.
    """
    gt = np.zeros((10, 10), np.int64)
    gt[:4] = 1
    gt[4:, :4] = 2
    gt[4:, 6:] = 3
    pred = np.zeros((10, 10), np.int64)
    pred[:5] = 1
    pred[5:, :3] = 2
    pred[5:, 5:] = 3
    pred[5:, 3:5] = 4
    t1 = {"masks": _masks(gt, [1, 2, 3]), "labels": torch.tensor([2, 0, 1]), "iscrowd": torch.tensor([0, 0, 1])}
    p1 = {"masks": _masks(pred, [1, 2, 3, 4]), "labels": torch.tensor([2, 0, 1, 0])}
    car = np.zeros((10, 10), np.int64)
    car[:2] = 1
    t2 = {"masks": _masks(car, [1]), "labels": torch.tensor([1])}
    p2 = {"masks": torch.zeros(0, 10, 10, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.int64)}
    r = panoptic_quality([p1, p2], [t1, t2], isthing=[True, True, False], class_names=["person", "car", "sky"])
    assert r["tp"].tolist() == [1, 0, 1] and r["fp"].tolist() == [1, 0, 0] and r["fn"].tolist() == [0, 1, 0]
    assert r["per_class_PQ"] == pytest.approx({"person": 0.625 / 1.5, "car": 0.0, "sky": 5 / 6})
    assert r["per_class_SQ"] == pytest.approx({"person": 0.625, "car": 0.0, "sky": 5 / 6})
    assert r["PQ"] == pytest.approx(0.416667, abs=1e-6) and r["SQ"] == pytest.approx(0.486111, abs=1e-6)
    assert r["RQ"] == pytest.approx(0.555556, abs=1e-6)
    assert r["PQ_th"] == pytest.approx(0.208333, abs=1e-6) and r["PQ_st"] == pytest.approx(5 / 6)
    assert (r["n"], r["n_th"], r["n_st"], r["num_images"]) == (3, 2, 1, 2)
    table = format_pq_table(r).splitlines()
    assert table[0].split() == ["class", "PQ", "SQ", "RQ"] and table[-1].split()[0] == "stuff"


# A straight transcription of panopticapi/evaluation.py (cocodataset/panopticapi): PQStatCat,
# pq_average and the per-image body of pq_compute_single_core, with the PNGs replaced by id maps.
OFFSET, VOID = 256 * 256 * 256, 0


class PQStatCat:
    def __init__(self):
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0


def ref_pq_single_image(pq_stat, pan_gt, pan_pred, gt_segments_info, pred_segments_info, categories):
    gt_segms = {el["id"]: dict(el) for el in gt_segments_info}
    pred_segms = {el["id"]: dict(el) for el in pred_segments_info}
    pred_labels_set = set(el["id"] for el in pred_segments_info)
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise KeyError("segment in PNG and not in JSON")
        pred_segms[label]["area"] = label_cnt
        pred_labels_set.remove(label)
        assert pred_segms[label]["category_id"] in categories
    assert len(pred_labels_set) == 0
    pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_id = label // OFFSET
        pred_id = label % OFFSET
        gt_pred_map[(gt_id, pred_id)] = intersection
    gt_matched = set()
    pred_matched = set()
    for label_tuple, intersection in gt_pred_map.items():
        gt_label, pred_label = label_tuple
        if gt_label not in gt_segms:
            continue
        if pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (pred_segms[pred_label]["area"] + gt_segms[gt_label]["area"] - intersection
                 - gt_pred_map.get((VOID, pred_label), 0))  # fmt: skip
        iou = intersection / union
        if iou > 0.5:
            pq_stat[gt_segms[gt_label]["category_id"]].tp += 1
            pq_stat[gt_segms[gt_label]["category_id"]].iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        pq_stat[gt_info["category_id"]].fn += 1
    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
        if intersection / pred_info["area"] > 0.5:
            continue
        pq_stat[pred_info["category_id"]].fp += 1


def ref_pq_average(pq_stat, categories, isthing):
    pq, sq, rq, n = 0, 0, 0, 0
    for label, label_info in categories.items():
        if isthing is not None:
            cat_isthing = label_info["isthing"] == 1
            if isthing != cat_isthing:
                continue
        iou, tp, fp, fn = pq_stat[label].iou, pq_stat[label].tp, pq_stat[label].fp, pq_stat[label].fn
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + 0.5 * fp + 0.5 * fn)
        sq += iou / tp if tp != 0 else 0
        rq += tp / (tp + 0.5 * fp + 0.5 * fn)
    if n == 0:  # panopticapi divides by zero here
        return {"pq": np.nan, "sq": np.nan, "rq": np.nan, "n": 0}
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}


def random_panoptic_image(g: np.random.Generator, num_classes: int):
    """Random disjoint id maps (painted rectangles, later ones on top) with void, crowd and near-misses."""
    h, w = int(g.integers(8, 24)), int(g.integers(8, 24))

    def paint(idmap, n, first_id):
        for k in range(n):
            y, x = g.integers(0, h), g.integers(0, w)
            idmap[y : y + g.integers(2, h // 2 + 3), x : x + g.integers(2, w // 2 + 3)] = first_id + k

    gt = np.zeros((h, w), np.int64)
    gt[g.random((h, w)) < 0.5] = 1  # a background stuff segment with holes = void
    paint(gt, int(g.integers(0, 7)), 2)
    gt_ids = [int(i) for i in np.unique(gt) if i]
    g.shuffle(gt_ids)  # segments_info order decides which crowd region of a class counts
    gt_info = [{"id": i, "category_id": int(g.integers(0, num_classes)), "iscrowd": int(g.random() < 0.25),
                "area": int((gt == i).sum())} for i in gt_ids]  # fmt: skip
    # predictions: a noisy copy of the target (segments kept, split, relabelled) + extra segments
    pred = np.where(gt > 0, gt + 100, 0)
    pred[g.random((h, w)) < g.uniform(0, 0.3)] = 0
    paint(pred, int(g.integers(0, 4)), 200)
    shift = int(g.integers(-2, 3))
    pred = np.roll(pred, shift, axis=int(g.integers(0, 2)))
    pred_ids = [int(i) for i in np.unique(pred) if i]
    g.shuffle(pred_ids)
    cat_of = {el["id"] + 100: el["category_id"] for el in gt_info}
    keep = lambda i: i in cat_of and g.random() < 0.85  # noqa: E731
    pred_info = [{"id": i, "category_id": cat_of[i] if keep(i) else int(g.integers(0, num_classes))} for i in pred_ids]
    return gt, pred, gt_info, pred_info


def _as_dicts(gt, pred, gt_info, pred_info) -> tuple[dict, dict]:
    """id maps + segments_info → optik's (prediction, target) dicts, masks in segments_info order."""
    cats = lambda info: torch.tensor([e["category_id"] for e in info], dtype=torch.int64)  # noqa: E731
    p = {"masks": _masks(pred, [e["id"] for e in pred_info]), "labels": cats(pred_info)}
    t = {"masks": _masks(gt, [e["id"] for e in gt_info]), "labels": cats(gt_info),
         "iscrowd": torch.tensor([e["iscrowd"] for e in gt_info], dtype=torch.int64)}  # fmt: skip
    return p, t


def test_panoptic_matches_panopticapi_transcription_on_random_segmentations():
    checked_crowd_shadow = 0
    for seed in range(40):
        g = np.random.default_rng(seed)
        c = int(g.integers(2, 6))
        isthing = [bool(v) for v in g.random(c) < 0.6]
        categories = {k: {"id": k, "isthing": int(isthing[k])} for k in range(c)}
        ref = defaultdict(PQStatCat)
        m = PanopticMetrics(c, isthing)
        for _ in range(int(g.integers(1, 5))):
            gt, pred, gt_info, pred_info = random_panoptic_image(g, c)
            ref_pq_single_image(ref, gt, pred, gt_info, pred_info, categories)
            crowd_cats = [el["category_id"] for el in gt_info if el["iscrowd"]]
            checked_crowd_shadow += len(crowd_cats) != len(set(crowd_cats))
            p, target = _as_dicts(gt, pred, gt_info, pred_info)
            m.update([p], [target])
        r = m.compute()
        assert r["tp"].tolist() == [ref[k].tp for k in range(c)], seed
        assert r["fp"].tolist() == [ref[k].fp for k in range(c)], seed
        assert r["fn"].tolist() == [ref[k].fn for k in range(c)], seed
        np.testing.assert_allclose(r["iou_sum"], [ref[k].iou for k in range(c)], rtol=0, atol=1e-12)
        for suffix, th in (("", None), ("_th", True), ("_st", False)):
            want = ref_pq_average(ref, categories, th)
            got = [r[f"PQ{suffix}"], r[f"SQ{suffix}"], r[f"RQ{suffix}"]]
            if suffix == "" and want["n"] == 0:
                assert got == [0.0, 0.0, 0.0]
            else:
                np.testing.assert_allclose(got, [want["pq"], want["sq"], want["rq"]], rtol=0, atol=1e-12)
            assert r[f"n{suffix}"] == want["n"]
    assert checked_crowd_shadow > 0  # some image had two crowd regions of one class


def test_panoptic_sync_equals_one_process_and_validation(monkeypatch):
    g = np.random.default_rng(3)
    images = [random_panoptic_image(g, 3) for _ in range(6)]
    as_dicts = [_as_dicts(*im) for im in images]
    ref = PanopticMetrics(3, [True, False, True])
    ref.update([p for p, _ in as_dicts], [t for _, t in as_dicts])
    ranks = [PanopticMetrics(3, [True, False, True]) for _ in range(2)]
    for rank, m in enumerate(ranks):
        m.update([p for p, _ in as_dicts[rank::2]], [t for _, t in as_dicts[rank::2]])
    _simulated_sync(monkeypatch, ranks)
    want = ref.compute()
    for m in ranks:
        r = m.compute()
        assert [r[k].tolist() for k in ("tp", "fp", "fn")] == [want[k].tolist() for k in ("tp", "fp", "fn")]
        assert [r[k] for k in ("PQ", "SQ", "RQ")] == pytest.approx([want[k] for k in ("PQ", "SQ", "RQ")], abs=1e-12)
        assert r["num_images"] == 6
    monkeypatch.undo()

    m = PanopticMetrics(2, [True, False])
    two = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="overlap"):
        m.update([{"masks": two, "labels": torch.tensor([0, 1])}], [{"masks": two[:1], "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="differ in size"):
        m.update([{"masks": two[:1, :2], "labels": [0]}], [{"masks": two[:1], "labels": [0]}])
    with pytest.raises(ValueError, match="labels must lie"):
        m.update([{"masks": two[:1], "labels": torch.tensor([2])}], [{"masks": two[:1], "labels": torch.tensor([0])}])
    with pytest.raises(ConfigError, match="isthing"):
        PanopticMetrics(2, [True])
    empty = m.compute()
    assert empty["PQ"] == 0.0 and np.isnan(empty["PQ_th"]) and empty["n"] == 0
    # float masks are thresholded at 0.5
    soft = torch.full((1, 4, 4), 0.7)
    r = panoptic_quality([{"masks": soft, "labels": [0]}], [{"masks": two[:1], "labels": [0]}], [True, False])
    assert r["PQ"] == 1.0 and np.isnan(r["PQ_st"])


# --- instance: == pycocotools -----------------------------------------------------------------
def _blob(g: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(g.integers(1, 3))):
        y, x = g.integers(0, h - 3), g.integers(0, w - 3)
        m[y : y + g.integers(2, h // 2), x : x + g.integers(2, w // 2)] = 1
    return m


def _pycoco(gt: dict, dts: list[dict], iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = PyCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dts)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def test_instance_metrics_match_pycocotools_segm_and_bbox():
    for seed in range(3):
        g = np.random.default_rng(seed)
        h, w, k = 36, 44, 3
        m = InstanceMetrics(k, ["a", "b", "c"])
        images, anns, segm_dts, box_dts = [], [], [], []
        for image_id in range(int(g.integers(3, 7))):
            n = int(g.integers(0, 5))
            gm = np.stack([_blob(g, h, w) for _ in range(n)]) if n else np.zeros((0, h, w), np.uint8)
            gl, crowd = g.integers(0, k, n), (g.random(n) < 0.2).astype(np.int64)
            pm = [np.clip(gm[j] ^ (g.random((h, w)) < 0.05), 0, 1) for j in range(n) if g.random() < 0.8]
            pm += [_blob(g, h, w) for _ in range(int(g.integers(0, 4)))]
            pm = np.stack(pm).astype(np.uint8) if pm else np.zeros((0, h, w), np.uint8)
            pl, ps = g.integers(0, k, len(pm)), np.round(g.random(len(pm)), 2)
            probs = torch.from_numpy(pm).float() * 0.4 + 0.3  # probabilities: 0.7 inside, 0.3 outside
            target = {"masks": torch.from_numpy(gm).bool(), "labels": torch.from_numpy(gl),
                      "iscrowd": torch.from_numpy(crowd), "image_id": image_id, "orig_size": (h, w)}  # fmt: skip
            m.update([{"masks": probs, "scores": torch.from_numpy(ps), "labels": torch.from_numpy(pl)}], [target])
            images.append({"id": image_id, "height": h, "width": w})
            for j in range(n):
                rle = py_mask.encode(np.asfortranarray(gm[j]))
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(gl[j]), "segmentation": rle,
                             "area": float(py_mask.area(rle)), "bbox": py_mask.toBbox(rle).tolist(),
                             "iscrowd": int(crowd[j])})  # fmt: skip
            for j in range(len(pm)):
                rle = py_mask.encode(np.asfortranarray(pm[j]))
                d = {"image_id": image_id, "category_id": int(pl[j]), "score": float(ps[j])}
                segm_dts.append({**d, "segmentation": rle})
                box_dts.append({**d, "bbox": py_mask.toBbox(rle).tolist()})
        gt = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in enumerate("abc")]}
        r = m.compute()
        np.testing.assert_allclose([r[s] for s in COCO_STATS], _pycoco(gt, segm_dts, "segm"), rtol=0, atol=1e-12)
        box = _pycoco(gt, box_dts, "bbox")
        np.testing.assert_allclose([r["box_AP"], r["box_AP50"], r["box_AP75"]], box[:3], rtol=0, atol=1e-12)
        assert m.fitness_key == "AP" and set(r["box_per_class_AP"]) == {"a", "b", "c"}
    m.reset()
    assert m.compute()["num_images"] == 0


def test_instance_metrics_validation_and_empty_masks():
    m = InstanceMetrics(2)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 1:4, 2:6] = True  # mask 1 is empty: its derived box is all zeros
    pred = {"masks": mask, "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="differ in size"):
        m.update([pred], [{"masks": mask[:1, :4], "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="masks"):
        m.update([pred], [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([0])}])
    m.update([pred], [{"masks": mask[:1], "labels": torch.tensor([0])}])
    r = m.compute()
    assert r["AP"] == 1.0 and r["box_AP"] == 1.0 and np.isnan(r["box_per_class_AP"]["1"])
    assert m.bbox._images[0]["dt_boxes"].tolist() == [[2, 1, 6, 4], [0, 0, 0, 0]]  # pixel j spans [j, j + 1)
