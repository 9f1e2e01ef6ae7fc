"""COCO bbox and segm evaluation: optik.coco_eval vs raw faster-coco-eval vs pycocotools, in one run.

Synthetic, seeded data shaped like a COCO val run: ``images`` images, ~7 ground-truth boxes each
(some crowd) over ``classes`` classes, ``dets`` detections per image (jittered copies of the
ground truth and random boxes, with random scores). Timed, each from its natural input:

- optik: ``coco_eval(gt_dict, per_image_predictions)`` — xyxy tensors per image, so the timing
  includes optik's conversion to COCO results;
- faster-coco-eval: ``COCO(gt) / loadRes(results) / COCOeval_faster`` from COCO dicts;
- pycocotools: ``COCO / loadRes / COCOeval`` from the same COCO dicts.

optik and faster-coco-eval run ``reps`` times each, alternately (the machine may be shared: its load
then hits both alike), pycocotools once (the reference, and slow), each on fresh deep copies (both
libraries write into their inputs) made outside the timer. Reported per size: wall and process-CPU
seconds (min and median), the speed-up over pycocotools and max |Δ| of the 12 stats against it (the
run fails if any differs by more than 1e-12, or if optik's and faster-coco-eval's differ at all), and
``optik_over_faster``: optik's time over faster-coco-eval's (median and min, wall and CPU).

optik's time includes everything it does for a caller: converting the per-image tensors, building the
results as loadRes would (without loadRes' per-result loop) and pausing Python's cyclic garbage
collector during the evaluation (faster-coco-eval, called directly, runs with it on).

The segm section (``segm_images`` images, ``segm_dets`` detections each, 640 x 480) is shaped like
COCO instance segmentation: ground truth as polygons (crowd regions as uncompressed RLE, as in
COCO's files), detections as compressed RLE with str counts (as read from a results JSON) —
rasterised jittered GT polygons and random ones. All three tools get the same COCO dicts;
optik's timing is ``coco_eval(gt, results, "segm")``.

    python benchmarks/coco_eval_speed.py [images=2000,5000] [reps=3] [dets=100] [classes=80] [seed=0]
        [segm_images=1000] [segm_dets=100] [sections=bbox,segm]

``sections=segm`` re-runs only the segm section and keeps the bbox figures already in
results/coco_eval_speed.json.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write_results  # noqa: E402

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


def synthetic_segm(images: int, dets: int, classes: int, seed: int) -> tuple[dict, list[dict]]:
    """GT with polygon segmentations (crowd: uncompressed RLE) and COCO segm results (RLE, str counts)."""
    from faster_coco_eval.core import mask as mask_utils

    rng = np.random.default_rng(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 2 * classes), classes, replace=False).tolist())
    w_img, h_img = 640, 480

    def polygon(cx: float, cy: float, radius: float) -> list[float]:
        k = int(rng.integers(5, 13))
        a = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = radius * rng.uniform(0.6, 1.0, k)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).ravel().tolist()

    gt_images, anns, results = [], [], []
    for image_id in range(1, images + 1):
        gt_images.append({"id": image_id, "width": w_img, "height": h_img})
        n = int(rng.poisson(7))
        radius = np.exp(rng.uniform(np.log(4), np.log(220), n))
        centre = rng.uniform(0, 1, (n, 2)) * [w_img, h_img]
        labels = rng.integers(0, classes, n)
        polys = [polygon(*centre[k], radius[k]) for k in range(n)]
        rles = mask_utils.frPyObjects(polys, h_img, w_img) if n else []
        for k in range(n):
            area = float(mask_utils.area(rles[k]))
            if area == 0:
                continue
            crowd = rng.random() < 0.01
            seg: object = [polys[k]]
            if crowd:  # COCO stores crowd regions as uncompressed RLE (column-major run lengths)
                flat = mask_utils.decode(rles[k]).ravel(order="F")
                runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size])
                seg = {"size": [h_img, w_img], "counts": ([0] if flat[0] else []) + runs.tolist()}
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_ids[labels[k]],
                         "segmentation": seg, "area": area, "bbox": mask_utils.toBbox(rles[k]).tolist(),
                         "iscrowd": int(crowd)})  # fmt: skip
        # Detections: ~half jittered GT polygons (sometimes the wrong class), the rest random polygons.
        near = rng.random(dets) < 0.5 if n else np.zeros(dets, dtype=bool)
        pick = rng.integers(0, max(n, 1), dets)
        d_lab = rng.integers(0, classes, dets)
        d_polys = []
        for j in range(dets):
            if near[j]:
                p = np.asarray(polys[pick[j]])
                d_polys.append((p + rng.normal(0, 0.08 * radius[pick[j]], p.shape)).tolist())
                if rng.random() < 0.9:
                    d_lab[j] = labels[pick[j]]
            else:
                r = np.exp(rng.uniform(np.log(4), np.log(200)))
                d_polys.append(polygon(*(rng.uniform(0, 1, 2) * [w_img, h_img]), r))
        scores = np.where(near, rng.beta(4, 2, dets), rng.beta(1.5, 4, dets))
        for j, rle in enumerate(mask_utils.frPyObjects(d_polys, h_img, w_img)):
            results.append({"image_id": image_id, "category_id": cat_ids[d_lab[j]], "score": float(scores[j]),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})  # fmt: skip
    gt = {"images": gt_images, "annotations": anns, "categories": [{"id": c, "name": f"class{c}"} for c in cat_ids]}
    return gt, results


def run_optik(gt: dict, per_image: list[dict]) -> np.ndarray:
    result = coco_eval(gt, per_image)
    return np.array([result[k] for k in STATS])


def run_optik_segm(gt: dict, results: list[dict]) -> np.ndarray:
    result = coco_eval(gt, results, "segm")
    return np.array([result[k] for k in STATS])


def run_faster(gt: dict, results: list[dict], iou_type: str = "bbox") -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12])


def run_pycocotools(gt: dict, results: list[dict], iou_type: str = "bbox") -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def compare(tools: list[tuple[str, object]], gt: dict, results: list[dict], reps: int,
            label: dict) -> tuple[list[dict], dict, np.ndarray]:  # fmt: skip
    """Time optik and faster-coco-eval ``reps`` times each, alternating (a shared machine's load then hits
    both alike), and pycocotools (slow; the reference) once, each on fresh deep copies made outside the
    timer. Returns one row per tool, optik/faster-coco-eval ratios and pycocotools' stats (all must agree)."""
    wall: dict[str, list[float]] = {name: [] for name, _ in tools}
    cpu: dict[str, list[float]] = {name: [] for name, _ in tools}
    stats = {}
    for rep in range(reps):
        for name, fn in tools:
            if name == "pycocotools" and rep:
                continue
            g, r = copy.deepcopy(gt), copy.deepcopy(results)
            t, c = time.perf_counter(), time.process_time()
            stats[name] = fn(g, r)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            del g, r
            print(f"  {name}: {wall[name][-1]:.2f} s (cpu {cpu[name][-1]:.2f} s)  AP={stats[name][0]:.4f}")
    ref = stats["pycocotools"]
    for name, s in stats.items():
        if not np.allclose(s, ref, rtol=0, atol=1e-12):  # as the tests: equal up to float summation order
            raise SystemExit(f"{name} stats differ from pycocotools: max |diff| {np.abs(s - ref).max():.3g}")
    if not np.array_equal(stats["optik.coco_eval"], stats["faster-coco-eval"]):
        raise SystemExit("optik.coco_eval and faster-coco-eval stats differ (they must agree to the last bit)")
    # cpu (process CPU time, all threads) is the steadier figure on a shared machine
    py_wall = _median(wall["pycocotools"])
    rows = [{**label, "tool": name, "runs": len(wall[name]), "wall_min_s": round(min(wall[name]), 3),
             "wall_median_s": round(_median(wall[name]), 3), "cpu_min_s": round(min(cpu[name]), 3),
             "cpu_median_s": round(_median(cpu[name]), 3),
             "speedup_vs_pycocotools": round(py_wall / _median(wall[name]), 2),
             "max_abs_diff_12_stats": float(np.abs(stats[name] - ref).max())} for name in wall]  # fmt: skip
    o, f = "optik.coco_eval", "faster-coco-eval"
    ratio = {"wall_median": round(_median(wall[o]) / _median(wall[f]), 3), "wall_min": round(min(wall[o]) / min(wall[f]), 3),
             "cpu_median": round(_median(cpu[o]) / _median(cpu[f]), 3), "cpu_min": round(min(cpu[o]) / min(cpu[f]), 3)}  # fmt: skip
    print(f"  optik / faster-coco-eval: wall median {ratio['wall_median']}, min {ratio['wall_min']}; "
          f"cpu median {ratio['cpu_median']}, min {ratio['cpu_min']}")  # fmt: skip
    return rows, ratio, ref


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    sizes = [int(v) for v in args.get("images", "2000,5000").split(",")]
    dets, reps = int(args.get("dets", 100)), int(args.get("reps", 3))
    classes, seed = int(args.get("classes", 80)), int(args.get("seed", 0))
    segm_images, segm_dets = int(args.get("segm_images", 1000)), int(args.get("segm_dets", 100))
    sections = args.get("sections", "bbox,segm").split(",")

    if "bbox" in sections:
        rows, bbox_sizes = [], {}
        for images in sizes:
            t0 = time.perf_counter()
            gt, results, per_image = synthetic(images, dets, classes, seed)
            print(f"bbox data: {images} images, {len(gt['annotations'])} GT, {len(results)} detections, "
                  f"{classes} classes ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
            size_rows, ratio, ref = compare(
                [("optik.coco_eval", lambda g, r, p=per_image: run_optik(g, p)), ("faster-coco-eval", run_faster),
                 ("pycocotools", run_pycocotools)], gt, results, reps, {"images": images})  # fmt: skip
            rows += size_rows
            bbox_sizes[str(images)] = {"num_gt": len(gt["annotations"]), "num_dt": len(results),
                                       "optik_over_faster": ratio, "stats_pycocotools": dict(zip(STATS, ref.tolist()))}  # fmt: skip
            del gt, results, per_image
        bbox = {"rows": rows, "dets_per_image": dets, "classes": classes, "seed": seed, "reps": reps,
                "bbox_sizes": bbox_sizes}  # fmt: skip
    else:  # keep the bbox figures of the last full run
        old = json.loads((RESULTS / "coco_eval_speed.json").read_text())
        bbox = {k: v for k, v in old.items() if k not in ("benchmark", "date", "machine", "segm")}
        bbox["date"] = old.get("bbox_date", old.get("date"))

    segm = None
    if "segm" in sections:
        t0 = time.perf_counter()
        gt, results = synthetic_segm(segm_images, segm_dets, classes, seed)
        crowd = sum(a["iscrowd"] for a in gt["annotations"])
        print(f"segm data: {segm_images} images, {len(gt['annotations'])} GT ({crowd} crowd), {len(results)} "
              f"detections, {classes} classes ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        rows, ratio, ref = compare(
            [("optik.coco_eval", run_optik_segm), ("faster-coco-eval", lambda g, r: run_faster(g, r, "segm")),
             ("pycocotools", lambda g, r: run_pycocotools(g, r, "segm"))], gt, results, reps,
            {"images": segm_images})  # fmt: skip
        segm = {"rows": rows, "images": segm_images, "dets_per_image": segm_dets, "classes": classes, "seed": seed,
                "num_gt": len(gt["annotations"]), "num_crowd": crowd, "num_dt": len(results), "reps": reps,
                "optik_over_faster": ratio, "stats_pycocotools": dict(zip(STATS, ref.tolist()))}  # fmt: skip
        for r in rows:
            print(f"segm  {r['tool']:<18} wall median {r['wall_median_s']:>8.2f} s  cpu median {r['cpu_median_s']:>8.2f} s"
                  f"  x{r['speedup_vs_pycocotools']}")  # fmt: skip

    bbox_rows = bbox.pop("rows")
    extra = {k: v for k, v in bbox.items() if k != "date"}
    if "bbox" not in sections:
        extra["bbox_date"] = bbox.get("date")
    write_results("coco_eval_speed", bbox_rows, **extra, **({"segm": segm} if segm else {}))


if __name__ == "__main__":
    main()
