"""SAM automatic mask generation: optik's ``SamAutomaticMaskGenerator`` vs transformers'
``mask-generation`` pipeline, on the same SamModel + SamProcessor: seconds per image, masks, agreement.

Why optik keeps its own generator instead of the maintained pipeline: both give the same masks, but
the pipeline upscales every low-res mask to image size before the predicted-IoU filter, and its RLE
encode/decode and device moves are Python loops, so it is several times slower. ``model_s`` (image
encoder + prompt encoder/mask decoder, timed by forward hooks on the same modules for both) is the
same work in both; ``*_post_s`` is everything else.

Model and images are those of ``sam_amg_speed.py`` (tiny random SamModel with SAM's geometry at
``size`` px input, seeded synthetic images of size × size). Configurations:

- ``default``: segment-anything's thresholds (IoU 0.88, stability 0.95);
- ``permissive``: IoU filter off, stability 0.1 (most masks reach RLE + NMS);
- ``permissive+crops``: plus one crop layer (4 crops, same points per crop: the pipeline needs
  ``crop_n_points_downscale_factor=1`` with crop layers);
- ``permissive,nms=1``: permissive without box NMS (IoU threshold 1): with random weights the NMS
  leaves about one mask, so this row is the real mask-for-mask comparison (hundreds of masks) and
  the worst case for RLE. First size only (the pipeline needs ~80 s at 1024 px with 8×8 points).

optik's keys map onto the pipeline's as ``points_per_side`` → ``points_per_crop``, ``crop_n_layers``
→ ``crops_n_layers``, ``box_nms_thresh`` (no crop layers) / ``crop_nms_thresh`` (crop layers) →
``crops_nms_thresh``, the rest by name. Agreement: ``identical`` = the same set of masks bit for bit;
``agree`` = same count and each optik mask matched one-to-one by a pipeline mask with IoU ≥ 0.99
(empty masks, which the pipeline keeps when stability is off, are dropped first). Known differences
that may show with crops: a duplicate across crops keeps the higher predicted IoU in the pipeline
(segment-anything: the smaller crop's), and its stability test is ``>`` rather than ``≥``.

    python benchmarks/sam_amg_library.py [sizes=256,1024] [points=16,8] [repeats=3,1] [threads=1]

``sizes``, ``points`` (points per side) and ``repeats`` are per-size lists: the pipeline at 1024 px
costs tens of seconds per image, so 1024 runs fewer prompts once (whole run ≈ 3.5 min on 2 shared
cores). Each size starts with an untimed warm-up of both (2×2 points, permissive). ``threads=1`` as
in sam_amg_speed (shared CPU).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402
from sam_amg_speed import image, tiny_sam  # noqa: E402

from optik.sam import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402

CONFIGS = {
    "default": {},
    "permissive": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.1},
    "permissive+crops": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.1, "crop_n_layers": 1},
    "permissive,nms=1": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.1, "box_nms_thresh": 1.0},
}  # fmt: skip

# optik's defaults, to build the pipeline's arguments from the same values
OPTIK_DEFAULTS = {"points_per_batch": 64, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
                  "stability_score_offset": 1.0, "mask_threshold": 0.0, "crop_n_layers": 0,
                  "crop_overlap_ratio": 512 / 1500, "box_nms_thresh": 0.7, "crop_nms_thresh": 0.7,
                  "crop_n_points_downscale_factor": 1}  # fmt: skip


def pipeline_kwargs(points_per_side: int, **overrides: Any) -> dict[str, Any]:
    """optik generator arguments → the ``mask-generation`` pipeline's call arguments."""
    o = {**OPTIK_DEFAULTS, **overrides}
    return {"points_per_crop": points_per_side, "points_per_batch": o["points_per_batch"],
            "pred_iou_thresh": o["pred_iou_thresh"], "stability_score_thresh": o["stability_score_thresh"],
            "stability_score_offset": o["stability_score_offset"], "mask_threshold": o["mask_threshold"],
            "crops_n_layers": o["crop_n_layers"], "crop_overlap_ratio": o["crop_overlap_ratio"],
            "crop_n_points_downscale_factor": o["crop_n_points_downscale_factor"],
            # segment-anything's NMS within the one crop without crop layers, across crops with them
            "crops_nms_thresh": o["crop_nms_thresh"] if o["crop_n_layers"] else o["box_nms_thresh"]}  # fmt: skip


@contextmanager
def model_timer(model: torch.nn.Module, acc: list[float]) -> Iterator[None]:
    """Adds to ``acc[0]`` the seconds spent in ``model.vision_encoder`` and ``model.forward`` (prompt
    encoder + mask decoder on cached embeddings): the same modules for optik and the pipeline."""
    starts: dict[int, float] = {}
    handles = []
    for i, module in enumerate((model.vision_encoder, model)):
        handles.append(module.register_forward_pre_hook(lambda *_, k=i: starts.__setitem__(k, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda *_, k=i: acc.__setitem__(0, acc[0] + time.perf_counter() - starts[k])))  # fmt: skip
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, bool]:
    """(identical, agree) for bool (N, H, W) mask sets: the same masks bit for bit (any order), and
    the same count with a one-to-one greedy match at IoU ≥ 0.99."""
    key = lambda m: m.numpy().tobytes()  # noqa: E731
    identical = sorted(map(key, a)) == sorted(map(key, b))
    if len(a) != len(b):
        return identical, False
    if not len(a):
        return identical, True
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    iou = inter / (fa.sum(1)[:, None] + fb.sum(1)[None] - inter).clamp(min=1)
    used: set[int] = set()
    for row in iou:
        j = next((int(j) for j in row.argsort(descending=True) if int(j) not in used), None)
        if j is None or row[j] < 0.99:
            return identical, False
        used.add(j)
    return identical, True


def run_optik(gen: SamAutomaticMaskGenerator, img: Any) -> tuple[float, float, torch.Tensor]:
    acc = [0.0]
    with model_timer(gen.predictor.model, acc):
        t0 = time.perf_counter()
        r = gen.generate(img)
        dt = time.perf_counter() - t0
    return dt, acc[0], r.masks.data.cpu().bool() if r.masks is not None else torch.zeros(0, *img.shape[:2], dtype=torch.bool)


def run_pipeline(pipe: Any, img: Any, kwargs: dict[str, Any]) -> tuple[float, float, torch.Tensor]:
    from PIL import Image

    acc = [0.0]
    with model_timer(pipe.model, acc):
        t0 = time.perf_counter()
        out = pipe(Image.fromarray(img), **kwargs)
        dt = time.perf_counter() - t0
    masks = torch.stack([torch.as_tensor(m) for m in out["masks"]]).bool() if len(out["masks"]) else \
        torch.zeros(0, *img.shape[:2], dtype=torch.bool)  # fmt: skip
    return dt, acc[0], masks[masks.flatten(1).any(1)]  # the pipeline keeps empty masks; optik drops them


def main() -> None:
    from transformers import pipeline

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    sizes = [int(s) for s in args.get("sizes", "256,1024").split(",")]
    points = [int(s) for s in args.get("points", "16,8").split(",")]
    repeats = [int(s) for s in args.get("repeats", "3,1").split(",")]
    if int(args.get("threads", 1)):
        torch.set_num_threads(int(args.get("threads", 1)))
    rows = []
    for i, size in enumerate(sizes):
        pps, reps = points[min(i, len(points) - 1)], repeats[min(i, len(repeats) - 1)]
        predictor = SamPredictor(tiny_sam(size), device="cpu")
        pipe = pipeline("mask-generation", model=predictor.model, image_processor=predictor.processor.image_processor,
                        device="cpu")  # fmt: skip
        images = [image(size, seed) for seed in range(reps)]
        warm = CONFIGS["permissive"]  # untimed: lazy imports, allocator
        run_optik(SamAutomaticMaskGenerator(predictor, points_per_side=2, **warm), images[0])
        run_pipeline(pipe, images[0], pipeline_kwargs(2, **warm))
        for name, overrides in CONFIGS.items():
            if name == "permissive,nms=1" and i > 0:  # 80 s for the pipeline at 1024 px: first size only
                continue
            gen = SamAutomaticMaskGenerator(predictor, points_per_side=pps, **overrides)
            kwargs = pipeline_kwargs(pps, **overrides)
            runs = []
            for img in images:
                to, mo, masks_o = run_optik(gen, img)
                tp, mp, masks_p = run_pipeline(pipe, img, kwargs)
                identical, agree = compare(masks_o, masks_p)
                runs.append({"optik": to, "pipeline": tp, "optik_post": to - mo, "pipeline_post": tp - mp,
                             "model": (mo + mp) / 2, "n_optik": len(masks_o), "n_pipeline": len(masks_p),
                             "identical": identical, "agree": agree})  # fmt: skip
            med = {k: statistics.median(r[k] for r in runs) for k in ("optik", "pipeline", "optik_post", "pipeline_post", "model")}
            row = {"size": size, "config": name, "points": pps, "optik_s": round(med["optik"], 3),
                   "pipeline_s": round(med["pipeline"], 3), "ratio": round(med["pipeline"] / med["optik"], 2),
                   "model_s": round(med["model"], 3), "optik_post_s": round(med["optik_post"], 3),
                   "pipeline_post_s": round(med["pipeline_post"], 3),
                   "masks_optik": statistics.median(r["n_optik"] for r in runs),
                   "masks_pipeline": statistics.median(r["n_pipeline"] for r in runs),
                   "identical": f"{sum(r['identical'] for r in runs)}/{len(runs)}",
                   "agree": f"{sum(r['agree'] for r in runs)}/{len(runs)}"}  # fmt: skip
            rows.append(row)
            print(f"{size}px {name}: optik {row['optik_s']:.3f} s, pipeline {row['pipeline_s']:.3f} s "
                  f"(×{row['ratio']}), masks {row['masks_optik']}/{row['masks_pipeline']}, agree {row['agree']}", flush=True)  # fmt: skip
    import transformers

    write_results("sam_amg_library", rows, sizes=sizes, points_per_side=points, repeats=repeats, points_per_batch=64,
                  model="tiny random SamModel of sam_amg_speed.py (ViT 2×32, SAM geometry at `size` px input)",
                  transformers=transformers.__version__, load_average_1min=round(os.getloadavg()[0], 2))  # fmt: skip


if __name__ == "__main__":
    main()
