"""``compile=true`` (torch.compile, inductor's CPU backend) vs eager training, end to end.

For each model a typical short run (a few epochs, validation on) is trained eagerly and compiled, with
the default precision (amp=auto, channels_last=auto). Reported: wall time of the whole run (compile time
included — what a user waits for), the first epoch (where compilation happens) and the median steady-state
step of the later epochs (what compilation buys). compile stays opt-in unless the end-to-end time wins.

    python benchmarks/compile_speed.py [models=cnn,resnet,house_s] [epochs=3] [threads=N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.config import build_config  # noqa: E402
from optik.engine.trainer import Trainer  # noqa: E402

RUNS = {  # model: (task, keys)
    "cnn": ("classify", dict(data="synthetic:shapes?n=1280&size=32&classes=4", imgsz=32, batch=64)),
    "resnet": ("classify", dict(data="synthetic:shapes?n=1280&size=48&classes=4", imgsz=48, batch=64)),
    "house_s": ("detect", dict(data="synthetic:shapes-det?n=400&size=128&classes=3&max_objects=4", imgsz=128, batch=16,
                               close_mosaic=0)),
}  # fmt: skip


class Timer:
    """Epoch wall times and per-step times (the first step of an epoch excluded: loader start-up)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.steps: list[list[float]] = []

    def on_epoch_start(self, trainer, epoch):
        self.e0 = self.last = time.perf_counter()
        self.steps.append([])

    def on_batch_end(self, trainer, logs):
        now = time.perf_counter()
        self.steps[-1].append(now - self.last)
        self.last = now

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs.append(time.perf_counter() - self.e0)


def run(model: str, compile: bool, epochs: int, tmp: str) -> dict[str, Any]:
    task, keys = RUNS[model]
    cfg = build_config(task, "train", {"model": model, "epochs": epochs, "plots": False, "project": tmp,
                                       "compile": compile, **keys})  # fmt: skip
    timer = Timer()
    t0 = time.perf_counter()
    result = Trainer(cfg, callbacks=[timer]).fit()
    wall = time.perf_counter() - t0
    later = [s for ep in timer.steps[1:] for s in ep[1:]] or timer.steps[0][1:]
    fitness = {"classify": "top1", "detect": "AP"}[task]
    return {"wall_s": wall, "first_epoch_s": timer.epochs[0], "steady_step_ms": 1e3 * statistics.median(later),
            "metric": float(result["metrics"].get(fitness, float("nan")))}  # fmt: skip


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    if "threads" in args:
        torch.set_num_threads(int(args["threads"]))
    epochs = int(args.get("epochs", 3))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.get("models", "cnn,resnet,house_s").split(","):
            eager = run(model, False, epochs, tmp)
            compiled = run(model, True, epochs, tmp)
            rows.append({
                "model": model, "epochs": epochs,
                "eager_wall_s": eager["wall_s"], "compiled_wall_s": compiled["wall_s"],
                "end_to_end_speedup": eager["wall_s"] / compiled["wall_s"],
                "eager_first_epoch_s": eager["first_epoch_s"], "compiled_first_epoch_s": compiled["first_epoch_s"],
                "eager_step_ms": eager["steady_step_ms"], "compiled_step_ms": compiled["steady_step_ms"],
                "steady_speedup": eager["steady_step_ms"] / compiled["steady_step_ms"],
                "eager_metric": eager["metric"], "compiled_metric": compiled["metric"],
            })  # fmt: skip
            print(rows[-1], flush=True)
    write_results("compile_speed", rows, threads=torch.get_num_threads(),
                  note="CPU shared with other jobs while measured: timings are noisy; the lead re-runs on a quiet machine")  # fmt: skip


if __name__ == "__main__":
    main()
