"""What ``Model.predict`` adds on top of the model itself, for a small CPU model where that overhead matters.

A digits ``cnn`` (32 px) is trained for one epoch (accuracy is beside the point) and exported with optik's
exporter. The same images then go through

- **raw**: what a user would hand-write around the bare model — NumPy/OpenCV decode, ``cv2.resize`` (bilinear)
  to 32 px, normalise with the model's mean/std, an ``onnxruntime.InferenceSession`` (same session options
  as optik's: intra-op threads = torch's, no spinning) or the same eager ``nn.Module`` optik runs (under the
  autocast ``predict`` would use: ``amp=auto`` is bf16 on CPUs with bf16 units), then softmax and top-5 in NumPy;
- **optik**: ``Model("best.onnx" | "best.safetensors").predict(images, batch=B)`` → ``Results`` (``probs.top5``
  read for every image, as the raw loop computes it).

Rows per format (onnx, pytorch) and batch (1, 32): ms per image (min and median over interleaved rounds,
wall clock; median process CPU time, which a busy neighbour disturbs less), optik / raw, and the fixed
overhead per image (optik − raw). ``calls=each`` rows call ``predict`` once per image (a server's pattern).
Extra rows time optik on NumPy arrays and PNG file paths (the raw loop reads PIL images only).
``max_dprob`` is the largest |Δ probability| between raw and optik: the two resize with different libraries,
so a small difference is expected; a large one would mean they do not compute the same thing.

Goals (issue 15): ONNX ``predict`` ≤ 1.3× raw at batch 32, ≤ 0.1 ms fixed overhead per image at batch 1.

    python benchmarks/predict_overhead.py [--quick] [n=256] [rounds=15] [threads=1] [size=8]

``threads`` (default 1) sets torch's and ORT's intra-op threads: on a small shared CPU, multi-threaded
kernels on tiny tensors mostly wait for descheduled threads. ``size`` is the side of the source images
(digits are 8×8; they are upsampled to 32 as the model's preprocessing says).
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

GOALS = {"onnx_ratio_batch32": 1.3, "overhead_ms_batch1": 0.1}


def softmax_top5(logits: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    e = np.exp(logits - logits.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    top = np.argsort(-p, 1, kind="stable")[:, :5]
    return p, [(t, row[t]) for t, row in zip(top, p)]


class Raw:
    """The hand-written loop: decode, cv2 resize, normalise, run, softmax + top-5."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], imgsz: int, mean: list[float], std: list[float]) -> None:
        self.run, self.imgsz = run, imgsz
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __call__(self, images: list[Any], batch: int) -> list[np.ndarray]:
        import cv2

        s, probs = self.imgsz, []
        for k in range(0, len(images), batch):
            arr = np.stack([cv2.resize(np.asarray(im), (s, s), interpolation=cv2.INTER_LINEAR) for im in images[k : k + batch]])
            x = np.ascontiguousarray(((arr.astype(np.float32) * (1 / 255) - self.mean) / self.std).transpose(0, 3, 1, 2))
            p, _top5 = softmax_top5(self.run(x))
            probs.append(p)
        return probs


def eager_amp() -> Any:
    """The autocast dtype ``predict`` uses for an eager model on this CPU by default (None: fp32)."""
    import torch

    from optik.config import build_config

    try:
        from optik.device import resolve_amp
    except ImportError:  # an optik without amp=auto: predict runs fp32 unless amp=true
        return torch.bfloat16 if build_config("classify", "predict", {}).amp is True else None
    return resolve_amp(build_config("classify", "predict", {}).amp, torch.device("cpu"))


def timed_rounds(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each function, in interleaved rounds (A, B, C, A, B, C …) so a busy neighbour
    slows each alike; min and median wall, median CPU."""
    for fn in fns.values():
        fn()  # warm-up (lazy loads, allocator)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"min": min(wall[k]), "median": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in fns}


def main() -> None:
    quick = "--quick" in sys.argv
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    n = int(args.get("n", 64 if quick else 256))
    rounds = int(args.get("rounds", 3 if quick else 15))
    threads = int(args.get("threads", 1))
    size = int(args.get("size", 8))
    import cv2
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    from optik import Model
    from optik.data.synthetic import digits
    from optik.deploy.runtime import ort_session, read_exported_meta

    x, _, _ = digits(size=None if size == 8 else size)
    x = x[:n]
    pil = [Image.fromarray(a) for a in x]
    arrays = [np.array(a) for a in x]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, im in enumerate(pil):
            buf = io.BytesIO()
            im.save(buf, "PNG")
            (Path(tmp) / f"{i:04d}.png").write_bytes(buf.getvalue())
            files.append(str(Path(tmp) / f"{i:04d}.png"))
        m = Model("cnn")
        m.train(data="digits", epochs=1, imgsz=32, batch=64, plots=False, project=tmp, name="train")
        weights = str(m.weights)
        onnx = str(Model(weights).export(format="onnx", parity=4))
        meta = read_exported_meta(onnx)
        imgsz, mean, std = int(meta["imgsz"]), meta["mean"], meta["std"]

        models = {"onnx": Model(onnx), "pytorch": Model(weights)}
        for mdl in models.values():
            mdl.predict(pil[:2])  # loads and caches the model
        session = ort_session(onnx)
        inp = session.get_inputs()[0].name
        eager = models["pytorch"]._loaded[2]  # the very module optik's predict runs (its fast path included)
        amp = eager_amp()  # and at the precision predict runs it (amp=auto: bf16 autocast where the CPU has bf16 units)

        def run_eager(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=amp) if amp is not None else nullcontext():
                return eager(torch.from_numpy(a)).float().numpy()

        raw = {"onnx": Raw(lambda a: session.run(None, {inp: a})[0], imgsz, mean, std),
               "pytorch": Raw(run_eager, imgsz, mean, std)}  # fmt: skip

        def optik_fn(mdl: Model, src: list[Any], batch: int, each: bool) -> Callable[[], list[Any]]:
            if each:
                return lambda: [r.probs.top5 for im in src for r in mdl.predict(im)]
            return lambda: [r.probs.top5 for r in mdl.predict(src, batch=batch)]

        for fmt in ("onnx", "pytorch"):
            mdl = models[fmt]
            ref = np.concatenate(raw[fmt](pil, 32))
            got = torch.stack([r.probs.data for r in mdl.predict(pil, batch=32)]).numpy()
            dprob = float(np.abs(ref - got).max())
            for batch, each in ((1, False), (32, False), (1, True)):
                fns = {"raw": lambda b=batch: raw[fmt](pil, b), "optik": optik_fn(mdl, pil, batch, each)}
                if not each:
                    fns |= {"optik-numpy": optik_fn(mdl, arrays, batch, False), "optik-paths": optik_fn(mdl, files, batch, False)}
                t = timed_rounds(fns, rounds)
                base = t["raw"]
                for name, v in t.items():
                    rows.append({
                        "format": fmt, "batch": batch, "calls": "each" if each else "list", "source": name,
                        "ms_min": round(1e3 * v["min"] / n, 4), "ms_median": round(1e3 * v["median"] / n, 4),
                        "cpu_ms": round(1e3 * v["cpu"] / n, 4), "x_raw": round(v["min"] / base["min"], 2),
                        "x_raw_cpu": round(v["cpu"] / base["cpu"], 2), "overhead_ms": round(1e3 * (v["min"] - base["min"]) / n, 4),
                        "overhead_cpu_ms": round(1e3 * (v["cpu"] - base["cpu"]) / n, 4),
                        "max_dprob": float(f"{dprob:.2g}") if name == "optik" else None,
                    })  # fmt: skip
    on = {(r["format"], r["batch"], r["calls"]): r for r in rows if r["source"] == "optik"}
    verdict = {
        "onnx_ratio_batch32": on[("onnx", 32, "list")]["x_raw"],
        "onnx_ratio_batch32_cpu": on[("onnx", 32, "list")]["x_raw_cpu"],
        "onnx_overhead_ms_batch1": on[("onnx", 1, "list")]["overhead_ms"],
        "onnx_overhead_cpu_ms_batch1": on[("onnx", 1, "list")]["overhead_cpu_ms"],
    }
    print(f"goals {GOALS}: measured {verdict}")
    write_results("predict_overhead", rows, quick=quick, images=n, rounds=rounds, torch_threads=threads,
                  source=f"digits {size}x{size} RGB (PIL; numpy / PNG paths for the extra rows)", imgsz=imgsz,
                  goals=GOALS, measured=verdict, cv2=cv2.__version__, eager_amp=str(amp),
                  note="CPU shared with other jobs while measured: noisy; min over rounds is the steadier wall figure")  # fmt: skip


if __name__ == "__main__":
    main()
