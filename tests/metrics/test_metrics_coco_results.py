"""coco_eval's fast result conversion (columns → loadRes' output, no loadRes loop) must change no number.

Per-image predictions become columns (``_prediction_columns``) and then the annotation dicts faster-coco-eval's
``loadRes`` would build (``_result_anns``); COCO box-result dicts take the same shortcut. Checked here against
faster-coco-eval's own loadRes pipeline (bit for bit) and pycocotools (to 1e-12, summation order).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io

import numpy as np
import pytest
import torch
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from optik.errors import DatasetError
from optik.metrics import DetectionMetrics, coco_eval, predictions_to_coco
from optik.metrics.detection import _prediction_columns, _result_anns

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def case(seed: int, *, crowd: float = 0.1, dtype: torch.dtype = torch.float32) -> tuple[dict, list[dict]]:
    """GT with non-contiguous category ids (0 allowed), crowd boxes, images without GT, images with empty
    prediction tensors, and per-image predictions (xyxy, 0-based labels into the sorted category ids)."""
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(30, int(rng.integers(1, 5)), replace=False).tolist())
    images, anns, preds = [], [], []
    for image_id in rng.choice(10_000, int(rng.integers(2, 10)), replace=False).tolist():
        images.append({"id": image_id, "width": 320, "height": 240})
        n = 0 if rng.random() < 0.25 else int(rng.integers(1, 7))
        xy, wh = rng.uniform(0, 200, (n, 2)), np.exp(rng.uniform(np.log(3), np.log(150), (n, 2)))
        lab = rng.integers(0, len(cat_ids), n)
        for k in range(n):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[lab[k]],
                         "bbox": [*xy[k].tolist(), *wh[k].tolist()], "area": float(wh[k].prod()),
                         "iscrowd": int(rng.random() < crowd)})  # fmt: skip
        m = 0 if rng.random() < 0.2 else int(rng.integers(1, 40))
        pick = rng.integers(0, max(n, 1), m)
        if n:
            b = np.concatenate([xy[pick], xy[pick] + wh[pick]], 1) + rng.normal(0, 4, (m, 4))
            pl = np.where(rng.random(m) < 0.8, lab[pick], rng.integers(0, len(cat_ids), m))
        else:
            b, pl = rng.uniform(0, 200, (m, 4)), rng.integers(0, len(cat_ids), m)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.5)
        score = np.where(rng.random(m) < 0.3, np.round(rng.random(m), 1), rng.random(m))  # ties
        preds.append({"image_id": image_id, "boxes": torch.tensor(b, dtype=dtype),
                      "scores": torch.tensor(score, dtype=dtype), "labels": torch.tensor(pl)})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return gt, preds


def faster_loadres(gt: dict, dts: list[dict], iou_type: str = "bbox") -> COCOeval_faster:
    """faster-coco-eval's own pipeline (COCO / loadRes / COCOeval_faster) on deep copies."""
    coco_gt = COCO(copy.deepcopy(gt))
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(copy.deepcopy(dts)), iou_type, print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def pycoco(gt: dict, dts: list[dict], iou_type: str = "bbox") -> PyCOCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = PyCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dts)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_per_image_predictions_equal_loadres_bit_for_bit_and_pycocotools():
    compared = crowd = empty = 0
    for seed in range(40):
        gt, preds = case(seed)
        dts = predictions_to_coco(preds, sorted(c["id"] for c in gt["categories"]))
        before = [{k: v.clone() if torch.is_tensor(v) else v for k, v in p.items()} for p in preds]
        r = coco_eval(gt, preds)
        for p, q in zip(preds, before):  # the caller's tensors are untouched
            assert all(torch.equal(p[k], q[k]) for k in ("boxes", "scores", "labels"))
        assert r["num_dt"] == len(dts)
        if not dts:
            continue
        ref = faster_loadres(gt, dts)
        assert [r[k] for k in STATS] == list(ref.stats[:12]), seed  # the same numbers to the last bit
        np.testing.assert_array_equal(r["precision"], ref.eval["precision"])
        np.testing.assert_array_equal(r["recall"], ref.eval["recall"])
        np.testing.assert_allclose([r[k] for k in STATS], pycoco(gt, dts).stats, rtol=0, atol=1e-12, err_msg=str(seed))
        compared += 1
        crowd += any(a["iscrowd"] for a in gt["annotations"])
        empty += any(len(p["scores"]) == 0 for p in preds)
    assert compared > 30 and crowd > 8 and empty > 8


def test_box_result_dicts_take_the_shortcut_with_the_same_numbers():
    for seed in range(30):
        gt, preds = case(100 + seed)
        dts = predictions_to_coco(preds, sorted(c["id"] for c in gt["categories"]))
        if not dts:
            continue
        for d in dts[::3]:  # JSON-style integer boxes, as a results file may hold
            d["bbox"] = [round(v) for v in d["bbox"]]
        before = copy.deepcopy(dts)
        r = coco_eval(gt, dts)
        assert dts == before
        assert [r[k] for k in STATS] == list(faster_loadres(gt, dts).stats[:12]), seed


def test_float32_and_float64_boxes_give_the_same_results():
    """float32 predictions are widened exactly: the same values given in float64 give the same stats, and
    the COCO rows carry float64 w = x2 - x1 of the float32 values (what pycocotools would compute)."""
    gt, p32 = case(7, dtype=torch.float32)
    p64 = [{**p, "boxes": p["boxes"].double(), "scores": p["scores"].double()} for p in p32]
    r32, r64 = coco_eval(gt, p32), coco_eval(gt, p64)
    assert [r32[k] for k in STATS] == [r64[k] for k in STATS]
    rows = predictions_to_coco(p32, sorted(c["id"] for c in gt["categories"]))
    b = np.concatenate([p["boxes"].numpy() for p in p32]).astype(np.float64)
    np.testing.assert_array_equal([r["bbox"] for r in rows], np.c_[b[:, :2], b[:, 2:] - b[:, :2]])
    assert all(type(v) is float for r in rows for v in [*r["bbox"], r["score"]])
    assert all(type(r["image_id"]) is int and type(r["category_id"]) is int for r in rows)


def test_result_anns_are_what_loadres_builds():
    """Field by field against faster-coco-eval's loadRes: boxes (area w * h, ids 1..N, iscrowd 0), the box
    polygon a segm run on boxes uses, and mask-only results (area and box of the mask)."""
    gt, preds = case(3)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    cols = _prediction_columns(preds, cat_ids)
    coco_gt = COCO(copy.deepcopy(gt))
    loaded = coco_gt.loadRes(predictions_to_coco(preds, cat_ids))
    keys = ("id", "image_id", "category_id", "bbox", "score", "area", "iscrowd")
    mine = _result_anns(cols, "bbox")
    assert [{k: a[k] for k in keys} for a in mine] == [{k: a[k] for k in keys} for a in loaded.dataset["annotations"]]
    assert all("segmentation" not in a for a in mine)  # bbox evaluation never reads the polygon
    assert [a["segmentation"] for a in _result_anns(cols, "segm")] == [
        a["segmentation"] for a in loaded.dataset["annotations"]
    ]

    rng = np.random.default_rng(0)
    masks = (rng.random((len(cols), 24, 32)) < 0.3).astype(np.uint8)
    rles = list(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))))
    cols.segmentation, cols.bbox = rles, None
    rows = [{"image_id": int(i), "category_id": int(c), "score": float(s), "segmentation": r}
            for i, c, s, r in zip(cols.image_id, cols.category_id, cols.score, rles)]  # fmt: skip
    loaded = coco_gt.loadRes(rows).dataset["annotations"]
    mine = _result_anns(cols, "segm")
    assert [a["area"] for a in mine] == [int(a["area"]) for a in loaded]
    np.testing.assert_array_equal([a["bbox"] for a in mine], [a["bbox"] for a in loaded])


def test_segm_per_image_predictions_match_pycocotools():
    """Per-image predictions with RLEs, evaluated as segm: the box stays in the result, so (as in
    pycocotools' loadRes) the box area decides small/medium/large."""
    rng = np.random.default_rng(4)
    h, w = 40, 56
    images, anns, preds = [], [], []
    for image_id in (3, 8, 11):
        images.append({"id": image_id, "height": h, "width": w})
        gm = np.zeros((3, h, w), np.uint8)
        for j in range(3):
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            gm[j, y : y + rng.integers(4, 20), x : x + rng.integers(4, 30)] = 1
            rle = mask_utils.encode(np.asfortranarray(gm[j]))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": [2, 9][j % 2],
                         "segmentation": rle, "area": float(mask_utils.area(rle)),
                         "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": int(j == 2 and image_id == 8)})  # fmt: skip
        pm = np.concatenate([gm ^ (rng.random(gm.shape) < 0.03), gm[:1, ::-1]]).astype(np.uint8)
        rles = list(mask_utils.encode(np.asfortranarray(pm.transpose(1, 2, 0))))
        boxes = torch.tensor(np.array([mask_utils.toBbox(r) for r in rles]))
        boxes[:, 2:] += boxes[:, :2]
        preds.append({"image_id": image_id, "boxes": boxes, "scores": torch.rand(4, generator=torch.Generator().manual_seed(image_id)),
                      "labels": torch.tensor([0, 1, 0, 1]), "segmentation": rles})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 2, "name": "a"}, {"id": 9, "name": "b"}]}
    r = coco_eval(gt, preds, "segm")
    dts = predictions_to_coco(preds, [2, 9])
    assert [r[k] for k in STATS] == list(faster_loadres(gt, dts, "segm").stats[:12])
    np.testing.assert_allclose([r[k] for k in STATS], pycoco(gt, dts, "segm").stats, rtol=0, atol=1e-12)


def test_no_predictions_no_ground_truth_and_all_empty_images():
    gt, preds = case(11)
    empty = [{**p, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
             for p in preds]  # fmt: skip
    a, b = coco_eval(gt, empty), coco_eval(gt, [])
    assert [a[k] for k in STATS] == [b[k] for k in STATS] and a["num_dt"] == b["num_dt"] == 0
    has_gt = any(not x["iscrowd"] for x in gt["annotations"])
    assert a["AR100"] == (0.0 if has_gt else -1.0)
    no_gt = coco_eval({**gt, "annotations": []}, preds)
    assert all(no_gt[k] == -1.0 for k in STATS) and no_gt["num_dt"] == sum(len(p["scores"]) for p in preds)


def test_errors_name_the_bad_result():
    gt, preds = case(12)
    good = predictions_to_coco(preds, sorted(c["id"] for c in gt["categories"]))
    assert good
    with pytest.raises(DatasetError, match=r"detection #1: 'bbox'"):
        coco_eval(gt, [good[0], {k: v for k, v in good[0].items() if k != "bbox"}])
    with pytest.raises(DatasetError, match="not in the ground truth"):
        coco_eval(gt, [{**preds[0], "image_id": -5}])


def test_garbage_collector_state_is_restored():
    gt, preds = case(13)
    assert gc.isenabled()
    coco_eval(gt, preds)
    assert gc.isenabled()
    with pytest.raises(DatasetError):
        coco_eval(gt, [{**preds[0], "image_id": -5}])
    assert gc.isenabled()
    gc.disable()
    try:
        coco_eval(gt, preds)
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()


def test_detection_metrics_segm_without_any_predicted_mask():
    m = DetectionMetrics(2, iou_type="segm")
    gm = np.zeros((1, 16, 16), np.uint8)
    gm[0, 2:9, 3:12] = 1
    m.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
               "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}],
             [{"boxes": torch.tensor([[3.0, 2, 12, 9]]), "labels": torch.tensor([1]), "masks": torch.from_numpy(gm),
               "image_id": 1}])  # fmt: skip
    r = m.compute()
    assert r["AP"] == 0.0 and r["num_dt"] == 0 and np.isnan(r["per_class_AP"]["0"])
