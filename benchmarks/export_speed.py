"""Eager PyTorch vs TorchScript vs onnxruntime (fp32) vs onnxruntime int8 (static QDQ and dynamic), on CPU.

For native ``resnet`` and ``timm:resnet18`` trained on ``digits`` (upsampled to 64 px), every format is exported
through ``optik classify export`` (parity-checked against eager), then timed on the same input tensors at
batch 1 and batch 32 with the same thread count (onnxruntime intra-op threads = torch's). Rows: latency
(median ms per batch), speed-up vs eager, max |Δ logits| vs eager on the parity images, val top-1 and its
change vs eager in points, file size. Goals: ORT fp32 ≥ 1.5× eager at batch 1; int8 ≥ 2× with ≤ 1 pt drop.

    python benchmarks/export_speed.py            # ~10 min: two models trained ~2-3 min each
    python benchmarks/export_speed.py --quick    # < 1 min smoke run (tiny data, 1 epoch, few iterations)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.deploy.runtime import load_exported, read_exported_meta  # noqa: E402

# digits: both models reach high accuracy in a few CPU minutes, so an int8 accuracy drop is measurable
# (on data a model has not learnt, "no drop" would mean nothing).
FULL = {"data": "digits", "epochs": 5, "batches": (1, 32), "iters": 50,
        "export": {"parity": 32, "calib": 128}}
QUICK = {"data": "synthetic:shapes?n=40&size=64&classes=4&seed=0", "epochs": 1, "batches": (1, 4), "iters": 3,
         "export": {"parity": 4, "calib": 8}}
MODELS = ("resnet", "timm:resnet18")
FORMATS = {  # name → export keys (None = the eager weights)
    "pytorch": None,
    "torchscript": {"format": "torchscript"},
    "onnx": {"format": "onnx"},
    "onnx-int8-static": {"format": "onnx-int8", "int8": "static"},
    "onnx-int8-dynamic": {"format": "onnx-int8", "int8": "dynamic"},
}


def interleaved_ms(fns: dict[str, Callable[[], Any]], iters: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, timed in interleaved rounds (A, B, C, A, B, C …) so a busy
    neighbour on a shared machine slows every format alike instead of whichever ran at that moment."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(name: str, setup: dict[str, Any], project: Path) -> list[dict[str, Any]]:
    from optik.config import build_config
    from optik.engine.inference import load_trained

    m = Model(name, task="classify")
    t0 = time.time()
    m.train(data=setup["data"], epochs=setup["epochs"], imgsz=64, batch=32, project=str(project), plots=False, lr=2e-3)
    train_s = time.time() - t0
    eager_top1 = m.val(project=str(project), plots=False)["top1"]
    _, eager, _ = load_trained(build_config("classify", "val", {"model": str(m.weights)}))
    rows, models = [], {}
    for fmt, keys in FORMATS.items():
        row: dict[str, Any] = {"model": name, "format": fmt}
        if keys is None:
            models[fmt], path, top1, delta = eager, m.weights, eager_top1, 0.0
        else:
            suffix = ".torchscript" if fmt == "torchscript" else ".onnx"
            try:
                path = m.export(**keys, **setup["export"], out=str(project / f"{name.replace(':', '_')}-{fmt}{suffix}"))
            except Exception as e:  # a failing format is a row, not a crash
                rows.append({**row, "error": f"{type(e).__name__}: {e}"})
                continue
            models[fmt] = load_exported(path)
            top1 = Model(path).val(project=str(project), plots=False)["top1"]
            delta = max(o["max_abs_diff"] for o in read_exported_meta(path)["export"]["parity"]["outputs"])
        rows.append({**row, "size_mb": round(Path(path).stat().st_size / 2**20, 2), "top1": top1,
                     "top1_drop_pts": round(100 * (eager_top1 - top1), 2), "max_abs_diff": delta, "train_s": round(train_s, 1)})  # fmt: skip
    for b in setup["batches"]:
        x = torch.randn(b, 3, 64, 64)
        with torch.no_grad():
            ms = interleaved_ms({k: (lambda mod=mod: mod(x)) for k, mod in models.items()},
                                setup["iters"] if b == 1 else max(3, setup["iters"] // 5))  # fmt: skip
        for r in rows:
            if r["format"] in ms:
                r[f"ms_b{b}"] = round(ms[r["format"]], 3)
                r[f"x_vs_eager_b{b}"] = round(ms["pytorch"] / ms[r["format"]], 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 1 min smoke run")
    ap.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = QUICK if args.quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="optik-export-bench-") as tmp:
        for name in MODELS:
            rows += bench_model(name, setup, Path(tmp))
    static = [r.get("ms_b1", 0) for r in rows if r["format"] == "onnx-int8-static"]
    dynamic = [r.get("ms_b1", 0) for r in rows if r["format"] == "onnx-int8-dynamic"]
    faster = "static" if sum(static) <= sum(dynamic) else "dynamic"
    write_results("export_speed" + ("_quick" if args.quick else ""), rows, quick=args.quick, data=setup["data"],
                  epochs=setup["epochs"], threads=torch.get_num_threads(), faster_int8_at_batch1=faster)  # fmt: skip


if __name__ == "__main__":
    main()
