"""Mixed precision and channels-last: what they cost in accuracy and what they buy in speed.

- ``speed``: one training step (forward + backward + AdamW) and one inference batch per model in four
  variants — fp32 / bf16 autocast × contiguous (NCHW) / channels-last — interleaved, median ms; plus the
  variant ``amp=auto channels_last=auto`` picks here and its speed-up over fp32 NCHW (optik's old default).
  The ``timm:resnet18`` 128 px batch 32 training row carries the goal: bf16 + channels-last ≥ 1.7× fp32.
- ``parity``: the same run in fp32 (amp=false, channels_last=false) and bf16 (amp=true, channels_last=auto)
  reaches the same validation metric within seed-to-seed noise (each precision trained with ``seeds``
  seeds; noise = the fp32 seeds' spread): digits (cnn), synthetic:shapes (resnet), synthetic:shapes-det
  (house_s), synthetic:shapes-seg (unet_s). Wall time per run too (old default vs new).

    python benchmarks/amp_parity.py [sections=speed,parity] [seeds=2] [reps=7] [threads=N] [models=a,b] [runs=digits,shapes,...]

Speed goes to results/amp_speed.json, parity to results/amp_parity.json.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.device import has_depthwise_conv, precision_name, resolve_amp, use_channels_last  # noqa: E402
from optik.models import create  # noqa: E402

# name, registry task, imgsz, batch
SPEED_MODELS = [
    ("cnn", "classify", 32, 64),
    ("resnet", "classify", 48, 64),
    ("timm:resnet18", "classify", 128, 32),
    ("timm:efficientnet_lite0", "classify", 128, 32),
    ("timm:mobilenetv3_small_100", "classify", 128, 32),
    ("timm:convnext_atto", "classify", 128, 32),  # depthwise 7x7 + MLPs: does the depthwise rule still pay?
    ("timm:vit_tiny_patch16_224", "classify", 224, 16),  # one (patch) convolution
    ("house_s", "detect", 128, 16),
    ("unet_s", "semantic", 96, 16),
]
VARIANTS = {"fp32": (None, False), "fp32_cl": (None, True), "bf16": (torch.bfloat16, False), "bf16_cl": (torch.bfloat16, True)}

# name, task (Model task=), model, metric key, train kwargs (epochs fixed: both precisions take the same steps)
PARITY_RUNS = [
    ("digits", "classify", "cnn", "top1", dict(data="digits", imgsz=32, batch=32, lr=3e-3, epochs=6)),
    ("shapes", "classify", "resnet", "top1",
     dict(data="synthetic:shapes?n=2000&size=48&classes=4&difficulty=0.4", imgsz=48, batch=32, lr=3e-3, epochs=5)),
    ("shapes-det", "detect", "house_s", "AP",
     dict(data="synthetic:shapes-det?n=800&size=128&classes=3&max_objects=4&difficulty=0.3", imgsz=128, batch=16,
          lr=2e-3, epochs=12, close_mosaic=0)),
    ("shapes-seg", "segment", "unet_s", "mIoU",
     dict(data="synthetic:shapes-seg?n=600&size=96&classes=3&difficulty=0.3", imgsz=96, batch=8, lr=3e-3, epochs=6)),
]  # fmt: skip


def _step_fn(name: str, task: str, imgsz: int, batch: int, dtype: torch.dtype | None, channels_last: bool, train: bool):
    torch.manual_seed(0)
    model = create(name, task=task, num_classes=4)
    x = torch.rand(batch, 3, imgsz, imgsz)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    if task == "detect":
        target: Any = [{"boxes": torch.tensor([[4.0, 4.0, imgsz / 2, imgsz / 2]]), "labels": torch.tensor([1])}] * batch
    elif task == "semantic":
        target = torch.randint(0, 4, (batch, imgsz, imgsz))
    else:
        target = torch.randint(0, 4, (batch,))

    def ctx():
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)

    def train_step():
        model.train()
        with ctx():
            loss = model.forward_loss(x, target)["loss"] if task == "detect" else F.cross_entropy(model(x).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer():
        model.eval()
        with ctx():
            model.forward_detect(x) if task == "detect" else model(x)

    return (train_step if train else infer), model


def speed(reps: int, only: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    cpu = torch.device("cpu")
    for name, task, imgsz, batch in SPEED_MODELS:
        if only and name not in only:
            continue
        for train in (True, False):
            fns, model = {}, None
            for key, (dtype, cl) in VARIANTS.items():
                fns[key], model = _step_fn(name, task, imgsz, batch, dtype, cl, train)
            for f in fns.values():  # warm-up: oneDNN primitive creation, allocator
                f()
                f()
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(reps):  # interleaved: load drift hits every variant alike
                for k, f in fns.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
            ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            picked_dtype = resolve_amp("auto", cpu, model, train=train)
            picked = ("bf16" if picked_dtype is not None else "fp32") + ("_cl" if use_channels_last("auto", model, cpu) else "")
            rows.append({
                "model": name, "mode": "train" if train else "infer", "imgsz": imgsz, "batch": batch,
                **{f"{k}_ms": v for k, v in ms.items()},
                "best": min(ms, key=ms.get), "auto_picks": picked, "auto_speedup_vs_fp32": ms["fp32"] / ms[picked],
                "bf16_cl_speedup_vs_fp32": ms["fp32"] / ms["bf16_cl"], "depthwise": has_depthwise_conv(model),
                "goal": ">= 1.7x (bf16_cl vs fp32)" if name == "timm:resnet18" and train else "",
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def parity(seeds: int, only: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, task, model, key, kw in PARITY_RUNS:
            if only and name not in only:
                continue
            scores: dict[str, list[float]] = {"fp32": [], "bf16": []}
            walls: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for seed in range(seeds):
                for prec, keys in (("fp32", {"amp": False, "channels_last": False}), ("bf16", {"amp": True})):
                    m = Model(model, task=task)
                    t0 = time.time()
                    metrics = m.train(project=tmp, plots=False, seed=seed, **keys, **kw)
                    walls[prec].append(time.time() - t0)
                    scores[prec].append(float(metrics[key]))
                    print(name, prec, seed, key, scores[prec][-1], f"{walls[prec][-1]:.0f}s", flush=True)
            f32, b16 = scores["fp32"], scores["bf16"]
            noise = max(f32) - min(f32) if len(f32) > 1 else float("nan")
            diff = statistics.mean(b16) - statistics.mean(f32)
            rows.append({
                "data": name, "model": model, "metric": key, "epochs": kw["epochs"], "seeds": seeds,
                "fp32": statistics.mean(f32), "bf16": statistics.mean(b16), "bf16_minus_fp32": diff,
                "fp32_seed_spread": noise, "within_noise": bool(abs(diff) <= max(noise, 0.01)),
                "fp32_wall_s": statistics.median(walls["fp32"]), "bf16_wall_s": statistics.median(walls["bf16"]),
                "fp32_scores": f32, "bf16_scores": b16,
            })  # fmt: skip
    return rows


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    if "threads" in args:
        torch.set_num_threads(int(args["threads"]))
    sections = args.get("sections", "speed,parity").split(",")
    note = "CPU shared with other jobs while measured: timings are noisy (interleaved medians); the lead re-runs on a quiet machine"
    common = {"threads": torch.get_num_threads(), "amp_auto_here": precision_name(resolve_amp("auto", torch.device("cpu"))), "note": note}
    if "speed" in sections:
        only = args["models"].split(",") if "models" in args else None
        write_results("amp_speed", speed(int(args.get("reps", 7)), only), **common)
    if "parity" in sections:
        only = args["runs"].split(",") if "runs" in args else None
        write_results("amp_parity", parity(int(args.get("seeds", 2)), only), **common)


if __name__ == "__main__":
    main()
