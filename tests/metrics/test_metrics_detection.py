"""coco_eval / DetectionMetrics must give pycocotools' COCOeval numbers on random COCO cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
from pycocotools import mask as py_mask
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from optik.errors import ConfigError, DatasetError
from optik.metrics import (
    DetectionMetrics,
    coco_eval,
    detection_confusion_matrix,
    format_ap_table,
    predictions_to_coco,
)

BBOX_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


# --- random COCO cases ----------------------------------------------------------------------
def random_case(rng: np.random.Generator, *, many_dets: bool = True) -> tuple[dict, list[dict]]:
    """Ground truth and results with the awkward parts COCO handles specially.

    Several images and categories (ids not contiguous, 0 allowed), boxes spanning the small /
    medium / large ranges, crowd GT, an annotation ``area`` that is not the box area, images
    without GT, images without detections, categories never detected, >100 detections on some
    images (maxDets truncation), tied scores, wrong-class and duplicate detections.
    """
    n_img, n_cat = int(rng.integers(1, 9)), int(rng.integers(1, 6))
    cat_ids = sorted(rng.choice(25, n_cat, replace=False).tolist())
    images = [{"id": int(i), "width": 640, "height": 480} for i in rng.choice(1000, n_img, replace=False)]
    anns: list[dict] = []
    dts: list[dict] = []
    for im in images:
        gts = []
        if rng.random() > 0.2:
            for _ in range(int(rng.integers(0, 8))):
                s, ar = np.exp(rng.uniform(np.log(3), np.log(250))), rng.uniform(0.5, 2)
                w, h, x, y = s * ar**0.5, s / ar**0.5, rng.uniform(0, 400), rng.uniform(0, 300)
                area = w * h * (rng.uniform(0.5, 1) if rng.random() < 0.3 else 1)  # a mask's area is smaller
                ann = {"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.choice(cat_ids)),
                       "bbox": [x, y, w, h], "area": area, "iscrowd": int(rng.random() < 0.15)}  # fmt: skip
                anns.append(ann)
                gts.append(ann)
        if rng.random() < 0.2:
            continue  # no detections on this image
        detected = rng.choice(cat_ids, max(1, n_cat - 1), replace=False).tolist()  # one category mostly missing
        nd = int(rng.integers(100, 130)) if many_dets and rng.random() < 0.2 else int(rng.integers(0, 25))
        for _ in range(nd):
            if gts and rng.random() < 0.6:
                g = gts[rng.integers(len(gts))]
                x, y, w, h = g["bbox"]
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)]
                c = g["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            else:
                s = rng.uniform(3, 200)
                box = [rng.uniform(0, 500), rng.uniform(0, 400), s, s * rng.uniform(0.5, 2)]
                c = int(rng.choice(cat_ids))
            if c not in detected and rng.random() < 0.7:
                continue
            score = float(rng.random())
            if rng.random() < 0.3:
                score = round(score, 1)  # ties
            dts.append({"image_id": im["id"], "category_id": c, "bbox": [float(v) for v in box], "score": score})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, dts


def pycoco(gt: dict, dts: list[dict], iou_type: str = "bbox", max_dets=None) -> PyCOCOeval:
    """The reference: pycocotools' COCOeval on deep copies (it writes into its inputs)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = PyCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dts)), iou_type)
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _ap(precision: np.ndarray) -> float:
    s = precision[:, :, :, 0, -1]
    return float(s[s > -1].mean()) if (s > -1).any() else -1.0


# --- coco_eval == pycocotools -----------------------------------------------------------------
def test_matches_pycocotools_on_random_cases():
    compared = 0
    for seed in range(120):
        gt, dts = random_case(np.random.default_rng(seed))
        if not dts:
            continue  # pycocotools' loadRes cannot take an empty list (tested separately)
        ref = pycoco(gt, dts)
        r = coco_eval(gt, dts)
        np.testing.assert_allclose([r[k] for k in BBOX_STATS], ref.stats, rtol=0, atol=1e-12, err_msg=f"seed {seed}")
        np.testing.assert_allclose(r["precision"], ref.eval["precision"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["recall"], ref.eval["recall"], rtol=0, atol=1e-12)
        # Per-class AP: the same slice pycocotools averages, one category at a time; NaN = no GT.
        for k, cat in enumerate(ref.params.catIds):
            s = ref.eval["precision"][:, :, k, 0, -1]
            expected = s[s > -1].mean() if (s > -1).any() else np.nan
            np.testing.assert_allclose(r["per_class_AP"][f"c{cat}"], expected, rtol=0, atol=1e-12)
            s50 = s[0]
            np.testing.assert_allclose(r["per_class_AP50"][f"c{cat}"], s50[s50 > -1].mean() if (s50 > -1).any() else np.nan,
                                       rtol=0, atol=1e-12)  # fmt: skip
        assert r["num_images"] == len(gt["images"]) and r["num_gt"] == len(gt["annotations"]) and r["num_dt"] == len(dts)
        compared += 1
    assert compared > 80


def test_max_dets_truncation_matches_pycocotools():
    """Small max_dets so truncation happens on most images; keys follow the values (AR1, AR3, AR5)."""
    for seed in range(200, 240):
        gt, dts = random_case(np.random.default_rng(seed), many_dets=False)
        if not dts:
            continue
        ref = pycoco(gt, dts, max_dets=(1, 3, 5))
        r = coco_eval(gt, dts, max_dets=(1, 3, 5))
        # pycocotools' summarize() hard-codes maxDets=100 for stats[0] (so -1 here): compare AP
        # with the mean it takes over the precision array at the largest maxDets instead.
        assert r["AP"] == pytest.approx(_ap(ref.eval["precision"]), abs=1e-12)
        keys = ["AP50", "AP75", "APs", "APm", "APl", "AR1", "AR3", "AR5", "ARs", "ARm", "ARl"]
        np.testing.assert_allclose([r[k] for k in keys], ref.stats[1:], rtol=0, atol=1e-12)
        assert "AR100" not in r


def test_input_forms_give_the_same_numbers_and_inputs_stay_untouched(tmp_path):
    gt, dts = random_case(np.random.default_rng(7))
    gt_before, dts_before = copy.deepcopy(gt), copy.deepcopy(dts)
    base = coco_eval(gt, dts)
    assert gt == gt_before and dts == dts_before  # faster-coco-eval writes into dicts: we copy

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    from_files = coco_eval(tmp_path / "gt.json", str(tmp_path / "dt.json"))

    class Dataset:
        def to_coco(self) -> dict:
            return gt

    # Per-image predictions: 0-based labels index the category ids sorted ascending.
    cat_ids = sorted(c["id"] for c in gt["categories"])
    per_image = []
    for im in gt["images"]:
        mine = [d for d in dts if d["image_id"] == im["id"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
        per_image.append({"image_id": im["id"], "boxes": torch.tensor(xyxy, dtype=torch.float64).reshape(-1, 4),
                          "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64),
                          "labels": torch.tensor([cat_ids.index(d["category_id"]) for d in mine])})  # fmt: skip
    from_preds = coco_eval(Dataset(), per_image)
    for other in (from_files, from_preds):
        np.testing.assert_allclose([other[k] for k in BBOX_STATS], [base[k] for k in BBOX_STATS], rtol=0, atol=1e-12)
    assert from_preds["num_dt"] == len(dts)

    names = [f"n{i}" for i in range(len(cat_ids))]
    assert list(coco_eval(gt, dts, class_names=names)["per_class_AP"]) == names


def test_predictions_to_coco_maps_labels_and_boxes():
    out = predictions_to_coco(
        [{"image_id": 3, "boxes": np.array([[10.0, 20.0, 15.0, 30.0], [0, 0, 1, 2]]), "scores": [0.5, 0.25],
          "labels": [1, 0]}, {"image_id": 4, "boxes": np.zeros((0, 4)), "scores": [], "labels": []}],
        [5, 9],
    )  # fmt: skip
    assert out == [
        {"image_id": 3, "category_id": 9, "bbox": [10.0, 20.0, 5.0, 10.0], "score": 0.5},
        {"image_id": 3, "category_id": 5, "bbox": [0.0, 0.0, 1.0, 2.0], "score": 0.25},
    ]
    with pytest.raises(ValueError, match="labels must lie"):
        predictions_to_coco([{"image_id": 1, "boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [2]}], [5, 9])
    with pytest.raises(ConfigError, match="image_id"):
        predictions_to_coco([{"boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [0]}], [5])


def test_empty_detections_and_empty_ground_truth():
    gt, dts = random_case(np.random.default_rng(3))
    ref = pycoco(gt, dts)  # the -1 pattern depends only on where ground truth exists
    r = coco_eval(gt, [])
    expected = np.where(np.asarray(ref.stats) == -1, -1.0, 0.0)
    np.testing.assert_array_equal([r[k] for k in BBOX_STATS], expected)
    assert r["num_dt"] == 0
    with_gt = {f"c{c}" for c in {a["category_id"] for a in gt["annotations"] if not a["iscrowd"]}}
    assert all((v == 0.0) if n in with_gt else np.isnan(v) for n, v in r["per_class_AP"].items())

    no_gt = coco_eval({**gt, "annotations": []}, dts)
    assert all(no_gt[k] == -1.0 for k in BBOX_STATS)
    assert all(np.isnan(v) for v in no_gt["per_class_AP"].values())
    nothing = coco_eval({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}, [])
    assert nothing["AP"] == -1.0 and nothing["num_images"] == 0


def test_bad_inputs_raise_clear_errors(tmp_path):
    gt, dts = random_case(np.random.default_rng(1))
    with pytest.raises(DatasetError, match="not in the ground truth"):
        coco_eval(gt, [{"image_id": 10**6, "category_id": gt["categories"][0]["id"], "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(DatasetError, match="categories"):
        coco_eval({"images": [], "annotations": []}, [])
    with pytest.raises(DatasetError, match="not found"):
        coco_eval(tmp_path / "missing.json", [])
    with pytest.raises(ConfigError, match="iou_type"):
        coco_eval(gt, dts, "mask")
    with pytest.raises(ConfigError, match="class_names"):
        coco_eval(gt, dts, class_names=["only", "these", "names", "are", "too", "many"])


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        m[y0 : y0 + rng.integers(3, h // 2), x0 : x0 + rng.integers(3, w // 2)] = 1
    return m


def test_segm_matches_pycocotools_on_random_rle_masks():
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        h, w = 48, 64
        images = [{"id": i + 1, "height": h, "width": w} for i in range(3)]
        anns, dts = [], []
        for im in images:
            for _ in range(int(rng.integers(1, 4))):
                m = _random_mask(rng, h, w)
                rle = py_mask.encode(np.asfortranarray(m))
                anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.integers(1, 3)),
                             "segmentation": rle, "area": float(py_mask.area(rle)), "bbox": py_mask.toBbox(rle).tolist(),
                             "iscrowd": int(rng.random() < 0.2)})  # fmt: skip
                noisy = np.clip(m ^ (rng.random(m.shape) < 0.05), 0, 1).astype(np.uint8)
                for mm in (noisy, _random_mask(rng, h, w)):
                    dts.append({"image_id": im["id"], "category_id": int(rng.integers(1, 3)), "score": float(rng.random()),
                                "segmentation": py_mask.encode(np.asfortranarray(mm))})  # fmt: skip
        gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
        ref = pycoco(gt, dts, "segm")
        r = coco_eval(gt, dts, "segm")
        np.testing.assert_allclose([r[k] for k in BBOX_STATS], ref.stats, rtol=0, atol=1e-12)


def test_keypoints_match_pycocotools():
    rng = np.random.default_rng(5)
    images = [{"id": i + 1, "height": 200, "width": 200} for i in range(4)]
    anns, dts = [], []
    for im in images:
        for _ in range(int(rng.integers(1, 4))):
            x, y, s = rng.uniform(10, 100), rng.uniform(10, 100), rng.uniform(20, 90)
            kp = np.stack([x + rng.uniform(0, s, 17), y + rng.uniform(0, s, 17), rng.integers(0, 3, 17)], 1)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "keypoints": kp.ravel().tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum()), "bbox": [x, y, s, s], "area": s * s * 0.8,
                         "iscrowd": 0})  # fmt: skip
            for _ in range(2):
                noisy = kp.copy()
                noisy[:, :2] += rng.normal(0, rng.uniform(1, 15), (17, 2))
                noisy[:, 2] = 1
                dts.append({"image_id": im["id"], "category_id": 1, "keypoints": noisy.ravel().tolist(),
                            "score": float(rng.random())})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    ref = pycoco(gt, dts, "keypoints")
    r = coco_eval(gt, dts, "keypoints")
    keys = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    np.testing.assert_allclose([r[k] for k in keys], ref.stats, rtol=0, atol=1e-12)
    assert r["AP"] > 0


# --- DetectionMetrics -------------------------------------------------------------------------
def optik_case(seed: int, num_classes: int = 4):
    """Per-image targets / predictions in optik's contract, and the COCO dicts they mean."""
    rng = np.random.default_rng(seed)
    targets, preds = [], []
    for i in range(int(rng.integers(3, 12))):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(2, 80, (n, 2))
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, num_classes, n)
        t = {"boxes": torch.tensor(gt_boxes, dtype=torch.float32), "labels": torch.tensor(labels),
             "iscrowd": torch.tensor(rng.random(n) < 0.15, dtype=torch.uint8), "orig_size": (240, 320)}  # fmt: skip
        if rng.random() < 0.8:
            t["image_id"] = 1000 + 3 * i
        m = int(rng.integers(0, 30))
        pick = rng.integers(0, max(n, 1), m)
        boxes = gt_boxes[pick] + rng.normal(0, 5, (m, 4)) if n else rng.uniform(0, 100, (m, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        keep_label = rng.random(m) < 0.8
        plabels = np.where(keep_label & (n > 0), labels[pick] if n else 0, rng.integers(0, num_classes, m))
        scores = np.round(rng.random(m), 2)  # ties
        preds.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores, dtype=torch.float32),
                      "labels": torch.tensor(plabels)})  # fmt: skip
        targets.append(t)
    return targets, preds


def _coco_from(targets, preds, num_classes):
    """Reference COCO dicts built directly from the contract dicts (auto ids after the largest given)."""
    given = [int(t["image_id"]) for t in targets if "image_id" in t]
    nxt = max(given, default=-1) + 1
    images, anns, with_ids = [], [], []
    for t, p in zip(targets, preds):
        if "image_id" in t:
            image_id = int(t["image_id"])
        else:
            image_id, nxt = nxt, nxt + 1
        images.append({"id": image_id, "height": 240, "width": 320})
        b = t["boxes"].double().numpy()
        for box, lab, crowd in zip(b, t["labels"].tolist(), t["iscrowd"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": lab,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": crowd})  # fmt: skip
        with_ids.append({**p, "image_id": image_id})
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"k{k}"} for k in range(num_classes)]}
    return gt, with_ids


def test_chunked_updates_equal_one_coco_eval_call_and_pycocotools():
    for seed in range(8):
        targets, preds = optik_case(seed)
        m = DetectionMetrics(4, class_names=[f"k{k}" for k in range(4)])
        cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(targets)), 2, replace=False).tolist())
        for a, b in zip([0, *cuts], [*cuts, len(targets)]):
            m.update(preds[a:b], targets[a:b])
        r = m.compute()
        gt, with_ids = _coco_from(targets, preds, 4)
        one = coco_eval(gt, with_ids)
        for k in BBOX_STATS:
            assert r[k] == one[k], (seed, k)
        np.testing.assert_array_equal(r["precision"], one["precision"])
        assert r["per_class_AP"].keys() == one["per_class_AP"].keys()
        dts = predictions_to_coco(with_ids, range(4))
        if dts:
            np.testing.assert_allclose([r[k] for k in BBOX_STATS], pycoco(gt, dts).stats, rtol=0, atol=1e-12)
        assert r["pr_curve"]["precision"].shape == (4, 101)
        np.testing.assert_allclose(np.nanmean(r["pr_curve"]["precision"]), r["AP50"], atol=1e-12)


def _reference_f1(gt: dict, dts: list[dict], num_classes: int) -> tuple[float, float]:
    """Brute force from pycocotools' own IoU-0.50 matches: sweep every distinct score."""
    ev = pycoco(gt, dts)
    flag = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10] or e["maxDet"] != 100:
            continue
        for did, match, ignore in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            flag[did] = None if ignore else bool(match > 0)  # None: matched to crowd, not counted
    rows = [(dts[i]["score"], dts[i]["category_id"], flag[i + 1]) for i in range(len(dts)) if flag.get(i + 1) is not None]
    n_gt = np.bincount([a["category_id"] for a in gt["annotations"] if not a["iscrowd"]], minlength=num_classes)
    best, best_t = -1.0, 0.0
    for t in sorted({s for s, _, _ in rows}):
        f1s = []
        for c in np.flatnonzero(n_gt):
            above = [tp for s, k, tp in rows if k == c and s >= t]
            tp = sum(above)
            p, r = (tp / len(above) if above else 0.0), tp / n_gt[c]
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        if np.mean(f1s) > best:
            best, best_t = float(np.mean(f1s)), t
    return best_t, best


def test_f1_confidence_matches_brute_force_on_pycocotools_matches():
    for seed in range(20, 28):
        targets, preds = optik_case(seed)
        m = DetectionMetrics(4)
        m.update(preds, targets)
        r = m.compute()
        gt, with_ids = _coco_from(targets, preds, 4)
        dts = predictions_to_coco(with_ids, range(4))
        if not dts:
            continue
        conf, f1 = _reference_f1(gt, dts, 4)
        assert r["f1_conf"] == pytest.approx(conf, abs=1e-12) and r["f1"] == pytest.approx(f1, abs=1e-12), seed
        assert 0 <= r["precision_at_f1"] <= 1 and 0 <= r["recall_at_f1"] <= 1
        assert r["f1_curve"]["f1"].shape == (4, 101)


def test_confusion_matrix_on_a_hand_built_case():
    t = lambda boxes, labels, crowd=None: {  # noqa: E731
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64),
        **({"iscrowd": torch.tensor(crowd)} if crowd is not None else {})}  # fmt: skip
    p = lambda boxes, scores, labels: {**t(boxes, labels), "scores": torch.tensor(scores)}  # noqa: E731
    targets = [
        t([[0, 0, 10, 10], [50, 50, 70, 70], [100, 100, 150, 150]], [0, 1, 2], crowd=[0, 0, 1]),
        t([[0, 0, 20, 20]], [2]),  # missed
        t([], []),  # no ground truth
        # two GT, two detections: score order pairs d(0.9)->g2 (IoU .905) then d(0.8)->g1 (IoU .667);
        # pairing by IoU first (Ultralytics) would give d(0.8)->g2 (IoU 1) and d(0.9)->g1.
        t([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 1]),
    ]
    preds = [
        p([[0, 0, 10, 10], [51, 50, 70, 70], [0, 0, 10, 9], [200, 200, 210, 210], [110, 110, 140, 140], [0, 0, 10, 10]],
          [0.9, 0.8, 0.7, 0.6, 0.5, 0.1], [0, 2, 0, 1, 2, 1]),
        p([], [], []),
        p([[0, 0, 5, 5]], [0.3], [1]),
        p([[1.5, 0, 11.5, 10], [2, 0, 12, 10]], [0.9, 0.8], [1, 0]),
    ]  # fmt: skip
    cm = detection_confusion_matrix(preds, targets, 3)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] += 1  # image 0: exact hit
    expected[1, 2] += 1  # class-1 GT detected as class 2
    expected[3, 0] += 1  # duplicate of a taken GT -> false positive
    expected[3, 1] += 1  # box on nothing -> false positive
    # the detection inside the crowd box and the one below conf 0.25 count nowhere
    expected[2, 3] += 1  # image 1: missed GT
    expected[3, 1] += 1  # image 2: false positive
    expected[1, 1] += 1  # image 3: greedy by score
    expected[0, 0] += 1
    np.testing.assert_array_equal(cm, expected)

    m = DetectionMetrics(3, class_names=["a", "b", "c"])
    m.update(preds, targets)
    np.testing.assert_array_equal(m.compute()["confusion_matrix"], expected)


def test_image_ids_auto_assigned_and_padded_repeats_evaluated_once():
    targets, preds = optik_case(3)
    m = DetectionMetrics(4)
    m.update(preds, targets)
    once = m.compute()
    assert once["num_images"] == len(targets) and any("image_id" not in t for t in targets)
    withid = [(p, t) for p, t in zip(preds, targets) if "image_id" in t and len(t["boxes"])]
    m.update([withid[0][0]], [withid[0][1]])  # DistributedSampler padding repeats an image
    again = m.compute()
    assert again["num_images"] == once["num_images"] and again["AP"] == once["AP"]
    bad = {**withid[0][1], "boxes": withid[0][1]["boxes"] + 1}
    m.update([withid[0][0]], [bad])
    with pytest.raises(DatasetError, match="different ground truth"):
        m.compute()


def test_empty_metric_and_validation():
    m = DetectionMetrics(2)
    r = m.compute()
    assert r["AP"] == -1.0 and r["num_images"] == 0 and r["f1"] == 0.0 and r["confusion_matrix"].shape == (3, 3)
    none = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    m.update([none], [{"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([1])}])
    r = m.compute()
    assert r["AP"] == 0.0 and r["f1"] == 0.0 and r["per_class_AP"] == {"0": pytest.approx(np.nan, nan_ok=True), "1": 0.0}
    assert r["confusion_matrix"][1, 2] == 1
    m.reset()
    assert m.compute()["num_images"] == 0
    with pytest.raises(ValueError, match="labels must lie"):
        m.update([none], [{"boxes": torch.tensor([[0.0, 0, 5, 5]]), "labels": torch.tensor([2])}])
    with pytest.raises(ValueError, match="predictions but"):
        m.update([none, none], [])
    with pytest.raises(ConfigError):
        DetectionMetrics(2, class_names=["a"])
    with pytest.raises(ConfigError):
        DetectionMetrics(2, iou_type="keypoints")


def test_segm_metric_matches_coco_eval_on_masks():
    rng = np.random.default_rng(11)
    m = DetectionMetrics(2, iou_type="segm")
    images, anns, dts = [], [], []
    for i in range(3):
        gm = np.stack([_random_mask(rng, 40, 50) for _ in range(2)])
        pm = np.stack([gm[0], _random_mask(rng, 40, 50)])
        boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
        labels, scores = torch.tensor([0, 1]), torch.tensor([0.9, 0.4])
        m.update([{"boxes": boxes, "scores": scores, "labels": labels, "masks": torch.from_numpy(pm)}],
                 [{"boxes": boxes, "labels": labels, "masks": torch.from_numpy(gm), "image_id": i}])  # fmt: skip
        images.append({"id": i, "height": 40, "width": 50})
        for j in range(2):
            rle = py_mask.encode(np.asfortranarray(gm[j]))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": j, "segmentation": rle, "iscrowd": 0,
                         "area": float(py_mask.area(rle)), "bbox": boxes[j].tolist()})  # fmt: skip
            dts.append({"image_id": i, "category_id": j, "score": float(scores[j]),
                        "segmentation": py_mask.encode(np.asfortranarray(pm[j]))})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "0"}, {"id": 1, "name": "1"}]}
    r = m.compute()
    np.testing.assert_allclose([r[k] for k in BBOX_STATS], pycoco(gt, dts, "segm").stats, rtol=0, atol=1e-12)
    assert r["AP"] > 0


def test_format_ap_table_and_plots(tmp_path):
    from optik.viz.plots import plot_detection_confusion_matrix, plot_f1_confidence, plot_pr_curves

    targets, preds = optik_case(5)
    m = DetectionMetrics(4, class_names=["cat", "dog", "bird", "a-long-class-name"])
    m.update(preds, targets)
    r = m.compute()
    table = format_ap_table(r)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "AP50:95", "AP50"] and len(lines) == 4 + 4
    assert lines[-1].split() == ["all", f"{r['AP']:.3f}", f"{r['AP50']:.3f}"]
    names = list(r["per_class_AP"])
    for p in (
        plot_pr_curves(r, names, tmp_path / "pr.png"),
        plot_pr_curves({"precision": r["precision"]}, names, tmp_path / "pr2.png"),  # plain coco_eval output
        plot_detection_confusion_matrix(r["confusion_matrix"], names, tmp_path / "cm.png"),
        plot_f1_confidence(r, names, tmp_path / "f1.png"),
    ):
        assert p.stat().st_size > 5000
    with pytest.raises(ValueError, match="class names"):
        plot_detection_confusion_matrix(r["confusion_matrix"], names[:2], tmp_path / "x.png")


# --- DDP ----------------------------------------------------------------------------------------
def test_sync_gathers_every_rank_and_equals_one_process(monkeypatch):
    """sync() with a simulated 2-rank group: all_gather_object hands back both ranks' pickled state.

    (A real 2-process gloo run of all_gather_object costs ~20 s of interpreter start-up here; the
    collective itself is exercised by the classification metric's gloo test.)
    """
    targets, preds = optik_case(9)
    for i, t in enumerate(targets):
        t["image_id"] = i
    ref = DetectionMetrics(4)
    ref.update(preds, targets)
    expected = ref.compute()

    ranks = [DetectionMetrics(4), DetectionMetrics(4)]
    for rank, m in enumerate(ranks):
        m.update(preds[rank::2], targets[rank::2])  # each rank sees a disjoint shard (interleaved)
    states = [pickle.dumps(m._images) for m in ranks]

    def all_gather_object(out: list, obj) -> None:
        out[:] = [pickle.loads(s) for s in states]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    for m in ranks:
        m.sync()
        m.sync()  # idempotent: must not gather twice
        r = m.compute()
        assert [r[k] for k in BBOX_STATS] == [expected[k] for k in BBOX_STATS]
        np.testing.assert_array_equal(r["confusion_matrix"], expected["confusion_matrix"])
        assert r["num_images"] == len(targets) and r["f1_conf"] == expected["f1_conf"]
        with pytest.raises(RuntimeError, match="reset"):
            m.update(preds[:1], targets[:1])


def test_sync_is_noop_without_process_group():
    assert not dist.is_initialized()
    targets, preds = optik_case(2)
    m = DetectionMetrics(4)
    m.update(preds, targets)
    before = m.compute()
    m.sync()
    after = m.compute()
    assert [after[k] for k in BBOX_STATS] == [before[k] for k in BBOX_STATS]
    m.update(preds[:1], targets[:1])  # still updatable: nothing was synced


def test_target_area_decides_size_ranges_like_coco():
    """A target's own `area` (e.g. a mask's visible pixels) is used, as COCO uses the annotation's area."""
    from optik.metrics.detection import DetectionMetrics, coco_eval

    box = [[0.0, 0.0, 40.0, 40.0]]  # box area 1600 = "medium"; the object's area 900 = "small"
    target = {"image_id": 1, "boxes": box, "labels": [0], "area": [900.0]}
    pred = {"image_id": 1, "boxes": box, "scores": [0.9], "labels": [0]}
    m = DetectionMetrics(1, ["x"])
    m.update([pred], [target])
    got = m.compute()
    gt = {"images": [{"id": 1, "width": 64, "height": 64}], "categories": [{"id": 0, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 40, 40], "area": 900.0, "iscrowd": 0}]}
    ref = coco_eval(gt, [pred])
    assert got["APs"] == ref["APs"] == 1.0 and got["APm"] == ref["APm"] == -1.0


# --- segm: polygons, compressed / uncompressed RLE, crowd -------------------------------------
def _polygon(rng: np.random.Generator, h: int, w: int, scale: float | None = None) -> list[float]:
    """A random star-shaped polygon (may poke out of the image: COCO clips when rasterising)."""
    n = int(rng.integers(3, 9))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = (scale or rng.uniform(2, min(h, w) / 2)) * rng.uniform(0.5, 1.0, n)
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).ravel().tolist()


def _uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths starting with a run of zeros."""
    flat = np.asfortranarray(m).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, edges, flat.size])
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"size": list(m.shape), "counts": counts}


def random_segm_case(rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Polygon GT (some multi-part), crowd regions as uncompressed RLE, detections as compressed RLE
    (bytes or str counts) from jittered GT polygons, random polygons and wrong classes."""
    cat_ids = sorted(rng.choice(np.arange(1, 30), int(rng.integers(1, 4)), replace=False).tolist())
    images, anns, dts = [], [], []
    for image_id in rng.choice(500, int(rng.integers(2, 6)), replace=False).tolist():
        h, w = int(rng.integers(24, 90)), int(rng.integers(24, 90))
        images.append({"id": image_id, "height": h, "width": w})
        polys = []
        for _ in range(int(rng.integers(0, 6))):
            crowd = rng.random() < 0.2
            parts = [_polygon(rng, h, w) for _ in range(1 if rng.random() < 0.8 else 2)]
            rle = py_mask.merge(py_mask.frPyObjects(parts, h, w))
            area = float(py_mask.area(rle))
            if area == 0:
                continue
            seg = _uncompressed_rle(py_mask.decode(rle)) if crowd else parts
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice(cat_ids)), "segmentation": seg,
                   "area": area, "bbox": py_mask.toBbox(rle).tolist(), "iscrowd": int(crowd)}  # fmt: skip
            anns.append(ann)
            polys.append((parts, ann["category_id"]))
        for _ in range(int(rng.integers(0, 12))):
            if polys and rng.random() < 0.6:
                parts, cat = polys[rng.integers(len(polys))]
                parts = [(np.asarray(p) + rng.normal(0, 1.5, len(p))).tolist() for p in parts]
                cat = cat if rng.random() < 0.85 else int(rng.choice(cat_ids))
            else:
                parts, cat = [_polygon(rng, h, w)], int(rng.choice(cat_ids))
            rle = py_mask.merge(py_mask.frPyObjects(parts, h, w))
            if rng.random() < 0.5:
                rle = {"size": rle["size"], "counts": rle["counts"].decode()}  # as read from a JSON file
            dts.append({"image_id": image_id, "category_id": cat, "segmentation": rle,
                        "score": float(np.round(rng.random(), 1 if rng.random() < 0.3 else 6))})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, dts


def test_segm_polygons_and_crowd_rle_match_pycocotools_on_random_cases():
    compared = crowd_seen = 0
    for seed in range(40):
        gt, dts = random_segm_case(np.random.default_rng(500 + seed))
        if not dts:
            continue
        ref = pycoco(gt, dts, "segm")
        r = coco_eval(gt, dts, "segm")
        np.testing.assert_allclose([r[k] for k in BBOX_STATS], ref.stats, rtol=0, atol=1e-12, err_msg=f"seed {seed}")
        np.testing.assert_allclose(r["precision"], ref.eval["precision"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["recall"], ref.eval["recall"], rtol=0, atol=1e-12)
        compared += 1
        crowd_seen += any(a["iscrowd"] for a in gt["annotations"])
    assert compared > 30 and crowd_seen > 10


def test_segm_metric_with_crowd_masks_matches_pycocotools():
    """DetectionMetrics(segm) from mask tensors == pycocotools on the RLEs, crowd targets included."""
    rng = np.random.default_rng(21)
    m = DetectionMetrics(2, iou_type="segm")
    images, anns, dts = [], [], []
    for i in range(4):
        n = int(rng.integers(1, 4))
        gm = np.stack([_random_mask(rng, 40, 50) for _ in range(n)])
        gl, crowd = rng.integers(0, 2, n), (rng.random(n) < 0.3).astype(np.uint8)
        pm = np.stack([np.clip(gm[j] ^ (rng.random(gm[j].shape) < 0.05), 0, 1) for j in range(n)]
                      + [_random_mask(rng, 40, 50)]).astype(np.uint8)  # fmt: skip
        pl, ps = np.r_[gl, rng.integers(0, 2)], rng.random(n + 1)
        boxes = torch.tensor([[0.0, 0, 1, 1]]).repeat(n, 1)  # boxes do not matter for segm
        m.update([{"boxes": boxes.new_zeros(n + 1, 4), "scores": torch.from_numpy(ps), "labels": torch.from_numpy(pl),
                   "masks": torch.from_numpy(pm)}],
                 [{"boxes": boxes, "labels": torch.from_numpy(gl), "iscrowd": torch.from_numpy(crowd),
                   "masks": torch.from_numpy(gm), "image_id": i}])  # fmt: skip
        images.append({"id": i, "height": 40, "width": 50})
        for j in range(n):
            rle = py_mask.encode(np.asfortranarray(gm[j]))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(gl[j]), "segmentation": rle,
                         "iscrowd": int(crowd[j]), "area": float(py_mask.area(rle)), "bbox": [0, 0, 1, 1]})  # fmt: skip
        for j in range(n + 1):
            dts.append({"image_id": i, "category_id": int(pl[j]), "score": float(ps[j]),
                        "segmentation": py_mask.encode(np.asfortranarray(pm[j]))})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "0"}, {"id": 1, "name": "1"}]}
    r = m.compute()
    assert any(a["iscrowd"] for a in anns)
    np.testing.assert_allclose([r[k] for k in BBOX_STATS], pycoco(gt, dts, "segm").stats, rtol=0, atol=1e-12)
