"""COCO bbox evaluation: optik.coco_eval vs raw faster-coco-eval vs pycocotools, in one run.

Synthetic, seeded data shaped like a COCO val run: ``images`` images, ~7 ground-truth boxes each
(some crowd) over ``classes`` classes, ``dets`` detections per image (jittered copies of the
ground truth and random boxes, with random scores). Timed, each from its natural input:

- optik: ``coco_eval(gt_dict, per_image_predictions)`` — xyxy tensors per image, so the timing
  includes optik's conversion to COCO results;
- faster-coco-eval: ``COCO(gt) / loadRes(results) / COCOeval_faster`` from COCO dicts;
- pycocotools: ``COCO / loadRes / COCOeval`` from the same COCO dicts.

Each tool gets fresh deep copies (both libraries write into their inputs), copied outside the
timer. Reported: wall seconds, speed-up over pycocotools and max |Δ| of the 12 stats against it.

    python benchmarks/coco_eval_speed.py [images=5000] [dets=100] [classes=80] [seed=0]
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.metrics import coco_eval  # noqa: E402

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def synthetic(images: int, dets: int, classes: int, seed: int) -> tuple[dict, list[dict], list[dict]]:
    """GT COCO dict, COCO results and the same detections as per-image xyxy prediction dicts."""
    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 2 * classes), classes, replace=False).tolist())  # non-contiguous, like COCO
    gt_images, anns, results, per_image = [], [], [], []
    for image_id in range(1, images + 1):
        w_img, h_img = 640, 480
        gt_images.append({"id": image_id, "width": w_img, "height": h_img})
        n = int(rng.poisson(7))
        size = np.exp(rng.uniform(np.log(6), np.log(400), n))
        ar = rng.uniform(0.5, 2.0, n)
        wh = np.stack([size * np.sqrt(ar), size / np.sqrt(ar)], 1)
        xy = rng.uniform(0, 1, (n, 2)) * np.maximum([w_img, h_img] - wh, 1)
        labels = rng.integers(0, classes, n)
        for k in range(n):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[labels[k]],
                         "bbox": [*xy[k].tolist(), *wh[k].tolist()], "area": float(wh[k, 0] * wh[k, 1]),
                         "iscrowd": int(rng.random() < 0.01)})  # fmt: skip
        # Detections: ~half jittered GT (sometimes the wrong class), the rest random boxes.
        near = rng.random(dets) < 0.5 if n else np.zeros(dets, dtype=bool)
        pick = rng.integers(0, max(n, 1), dets)
        d_wh = np.exp(rng.uniform(np.log(6), np.log(300), (dets, 1))) * rng.uniform(0.6, 1.4, (dets, 2))
        d_xy = rng.uniform(0, 1, (dets, 2)) * np.maximum([w_img, h_img] - d_wh, 1)
        d_lab = rng.integers(0, classes, dets)
        if n:
            jitter = rng.normal(0, 0.1, (dets, 4)) * np.concatenate([wh[pick], wh[pick]], 1)
            d_xy = np.where(near[:, None], xy[pick] + jitter[:, :2], d_xy)
            d_wh = np.where(near[:, None], np.maximum(wh[pick] + jitter[:, 2:], 1), d_wh)
            d_lab = np.where(near & (rng.random(dets) < 0.9), labels[pick], d_lab)
        scores = np.where(near, rng.beta(4, 2, dets), rng.beta(1.5, 4, dets)).astype(np.float32)
        xyxy = np.concatenate([d_xy, d_xy + d_wh], 1).astype(np.float32)
        per_image.append({"image_id": image_id, "boxes": torch.from_numpy(xyxy), "scores": torch.from_numpy(scores),
                          "labels": torch.from_numpy(d_lab)})  # fmt: skip
        x64 = xyxy.astype(np.float64)  # exactly what optik's conversion computes
        for k in range(dets):
            results.append({"image_id": image_id, "category_id": cat_ids[d_lab[k]],
                            "bbox": [x64[k, 0], x64[k, 1], x64[k, 2] - x64[k, 0], x64[k, 3] - x64[k, 1]],
                            "score": float(scores[k])})  # fmt: skip
    gt = {"images": gt_images, "annotations": anns, "categories": [{"id": c, "name": f"class{c}"} for c in cat_ids]}
    return gt, results, per_image


def run_optik(gt: dict, per_image: list[dict]) -> np.ndarray:
    result = coco_eval(gt, per_image)
    return np.array([result[k] for k in STATS])


def run_faster(gt: dict, results: list[dict]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12])


def run_pycocotools(gt: dict, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    images, dets = int(args.get("images", 5000)), int(args.get("dets", 100))
    classes, seed = int(args.get("classes", 80)), int(args.get("seed", 0))
    t0 = time.perf_counter()
    gt, results, per_image = synthetic(images, dets, classes, seed)
    print(f"synthetic data: {images} images, {len(gt['annotations'])} GT, {len(results)} detections, "
          f"{classes} classes ({time.perf_counter() - t0:.1f} s)")  # fmt: skip

    timings, stats = {}, {}
    for name, fn in (
        ("optik.coco_eval", lambda g, r: run_optik(g, per_image)),
        ("faster-coco-eval", run_faster),
        ("pycocotools", run_pycocotools),
    ):
        g, r = copy.deepcopy(gt), copy.deepcopy(results)
        t = time.perf_counter()
        stats[name] = fn(g, r)
        timings[name] = time.perf_counter() - t
        print(f"{name}: {timings[name]:.2f} s  AP={stats[name][0]:.4f}")

    ref = stats["pycocotools"]
    rows = [{"tool": name, "wall_s": round(timings[name], 3),
             "speedup_vs_pycocotools": round(timings["pycocotools"] / timings[name], 2),
             "max_abs_diff_12_stats": float(np.abs(stats[name] - ref).max())} for name in timings]  # fmt: skip
    write_results(
        "coco_eval_speed", rows,
        images=images, dets_per_image=dets, classes=classes, seed=seed, num_gt=len(gt["annotations"]),
        num_dt=len(results), optik_over_faster=round(timings["optik.coco_eval"] / timings["faster-coco-eval"], 3),
        stats_pycocotools=dict(zip(STATS, ref.tolist())),
    )  # fmt: skip


if __name__ == "__main__":
    main()
