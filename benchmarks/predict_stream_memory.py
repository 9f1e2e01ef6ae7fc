"""Predict memory: peak RSS of streaming predict vs list-returning predict on 1k vs 10k video frames.

A generated mp4v video (smooth gradients + noise, ``size``×``size`` frames) is predicted by a random
``cnn`` classifier (``imgsz=32``), each configuration in a fresh Python process:

- ``stream``: ``optik classify predict … save=true`` as the CLI runs it — the streaming runner
  ``optik.engine.inference.predict`` consumed by ``cli.echo_results`` (writes as it goes, keeps nothing);
- ``list+save``: ``list(predict(cfg))`` with ``save=true`` — the old list-returning CLI path (each video
  frame's pixels are dropped once written to the output video; the predictions are kept);
- ``list``: ``Model(w).predict(video)`` — a plain list, no save: every Results keeps its frame.

Reported: ``peak_mb`` (``ru_maxrss``: torch + OpenCV alone put a process at ~1 GB), ``warm_mb`` (RSS after
the first 64 results: model loaded, first batches done) and ``growth_mb = peak - warm``, the part that
depends on the number of frames.

    python benchmarks/predict_stream_memory.py [frames=1000,10000] [size=64] [batch=32]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

CHILD = r"""
import contextlib, io, json, resource, sys, time, torch
torch.set_num_threads(1)
from optik import Model
from optik.cli import echo_results
from optik.config import build_config
from optik.engine.inference import predict

mode, weights, video, project, batch = sys.argv[1:6]
PAGE = resource.getpagesize()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20
warm = {}
def probe(results):  # RSS once the model is loaded and the first batches are through
    for i, r in enumerate(results):
        if i == 64:
            warm["mb"] = rss_mb()
        yield r
start = rss_mb()
t0 = time.perf_counter()
cfg = build_config("classify", "predict", {"model": weights, "source": video, "save": mode != "list", "project": project, "batch": int(batch)})
if mode == "stream":
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI's 50 echoed lines
        n = echo_results(probe(predict(cfg)))
elif mode == "list+save":
    kept = list(probe(predict(cfg)))
    n = len(kept)
else:
    kept = list(probe(Model(weights).predict(video, stream=True, batch=int(batch))))  # == .predict(video): frames kept
    n = len(kept)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"n": n, "start_mb": start, "warm_mb": warm["mb"], "peak_mb": peak, "seconds": seconds}))
"""


def make_video(path: Path, n: int, size: int) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (size, size))
    for _ in range(n):
        base = ramp[None, :, None] * rng.uniform(0.2, 1, 3) + ramp[:, None, None] * rng.uniform(0, 0.2, 3)
        writer.write(np.clip(base + rng.normal(0, 4, (size, size, 3)), 0, 255).astype(np.uint8))
    writer.release()
    return path


def make_weights(path: Path) -> Path:
    import torch

    from optik import models
    from optik.engine.checkpoint import save_weights

    torch.manual_seed(0)
    model = models.create("cnn", task="classify", num_classes=3)
    return save_weights(model.state_dict(), path, {"task": "classify", "model": "cnn", "classes": ["a", "b", "c"], "imgsz": 32})


def run(mode: str, weights: Path, video: Path, project: Path, batch: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, mode, str(weights), str(video), str(project), str(batch)],
                       check=False, capture_output=True, text=True, env=env, timeout=3600)  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"{mode} on {video.name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.split("RESULT ", 1)[1])


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    frames = [int(f) for f in args.get("frames", "1000,10000").split(",")]
    size, batch = int(args.get("size", 64)), int(args.get("batch", 32))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = make_weights(tmp / "cnn.safetensors")
        for n in frames:
            video = make_video(tmp / f"clip{n}.mp4", n, size)
            for mode in ("stream", "list+save", "list"):
                r = run(mode, weights, video, tmp / "runs", batch)
                assert r["n"] == n, (mode, r)
                rows.append({"mode": mode, "frames": n, "peak_mb": round(r["peak_mb"], 1), "warm_mb": round(r["warm_mb"], 1),
                             "growth_mb": round(r["peak_mb"] - r["warm_mb"], 1), "seconds": round(r["seconds"], 1)})  # fmt: skip
                print(rows[-1], flush=True)
    by = {(r["mode"], r["frames"]): r for r in rows}
    lo, hi = min(frames), max(frames)
    delta = {m: round(by[(m, hi)]["peak_mb"] - by[(m, lo)]["peak_mb"], 1) for m in ("stream", "list+save", "list")}
    write_results(
        "predict_stream_memory", rows,
        setup={"frames": frames, "size": size, "batch": batch, "model": "cnn (random weights), imgsz=32", "codec": "mp4v"},
        peak_delta_mb={f"{m}: {hi} vs {lo} frames": d for m, d in delta.items()},
        load_average=os.getloadavg()[0], date_unix=int(time.time()),
    )  # fmt: skip


if __name__ == "__main__":
    main()
