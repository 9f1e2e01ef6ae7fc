"""Share of the training step spent producing batches, per task at default settings.

For each case the real trainer (:class:`optik.engine.trainer.Trainer`) runs ``steps`` training steps with
its own DataLoader, wrapped so the time the loop waits in ``next(loader)`` is measured; a step is the time
between two ``on_batch_end`` events (data wait + forward + backward + optimizer). Separately the same
loader is iterated alone (no model) for ``steps`` batches. Reported per case:

- ``data_ms``: producing one batch, loader alone (synthetic images are generated once, before training,
  so this is indexing + decoding + augmentation + collation);
- ``wait_ms``: the train loop's wait for a batch (= ``data_ms`` with ``workers=0``; less when workers
  prefetch);
- ``step_ms``: one full training step; ``share = wait_ms / step_ms`` (goal: under 15 %).

The first ``skip`` steps (start-up, allocator warm-up, worker spawn) are left out. Wall-clock times: the
CPU is shared with other jobs while this runs, so figures are noisy (``load`` = 1-min load average).

    python benchmarks/data_loading.py [steps=40] [skip=5] [cases=classify-digits,classify-shapes,detect,segment]
                                      [workers=0] [threads=<torch default>]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

#: (task, data): each task at its defaults (model, imgsz, batch, augmentation), data as the docs use it.
CASES: dict[str, tuple[str, str]] = {
    "classify-digits": ("classify", "digits"),
    "classify-shapes": ("classify", "synthetic:shapes"),
    "detect": ("detect", "synthetic:shapes-det"),
    "segment": ("segment", "synthetic:shapes-seg"),
}


class _Stop(Exception):
    """Raised by the timing callback once enough steps ran (the trainer removes the unused run dir)."""


class _TimedLoader:
    """The trainer's DataLoader with the time spent in ``next()`` recorded per batch."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.waits, self.cpu = loader, [], []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Any:
        it = iter(self.loader)
        while True:
            t, c = time.perf_counter(), time.process_time()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t)
            self.cpu.append(time.process_time() - c)
            yield batch


class _StepTimer:
    """Callback: wraps the train loader at start, timestamps every batch end, stops after ``steps``."""

    def __init__(self, steps: int) -> None:
        self.steps, self.ends, self.cpu_ends, self.loader = steps, [], [], None

    def on_train_start(self, trainer: Any) -> None:
        self.loader = trainer.train_loader = _TimedLoader(trainer.train_loader)
        self.on_batch_end(trainer, {})

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        if len(self.ends) > self.steps:
            raise _Stop


def measure(task: str, data: str, steps: int, skip: int, **overrides: Any) -> dict[str, Any]:
    """One case: ``steps`` trainer steps (data wait vs step) and ``steps`` batches of the loader alone."""
    from torch.utils.data import DataLoader

    from optik.config import build_config
    from optik.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(task, "train", {"data": data, "project": tmp, "plots": False, **overrides})
        timer = _StepTimer(steps)
        trainer = Trainer(cfg, callbacks=[timer])
        load0 = os.getloadavg()[0]
        try:
            trainer.fit()
        except _Stop:
            pass
        step = [b - a for a, b in zip(timer.ends, timer.ends[1:])][skip:]
        wait = timer.loader.waits[skip : skip + len(step)]
        step_cpu = [b - a for a, b in zip(timer.cpu_ends, timer.cpu_ends[1:])][skip:]
        wait_cpu = timer.loader.cpu[skip : skip + len(step)]
        # The loader alone: a fresh DataLoader like the trainer's (same dataset, batch, collate, workers).
        inner = timer.loader.loader
        alone = DataLoader(inner.dataset, batch_size=inner.batch_size, sampler=inner.sampler, drop_last=inner.drop_last,
                           num_workers=inner.num_workers, collate_fn=inner.collate_fn)  # fmt: skip
        times, it = [], iter(alone)
        for _ in range(min(steps, len(alone))):
            t = time.perf_counter()
            next(it)
            times.append(time.perf_counter() - t)
        del it
    times = times[skip:]
    c = trainer.cfg
    step_ms, wait_ms = 1e3 * sum(step) / len(step), 1e3 * sum(wait) / len(wait)
    return {"task": task, "data": data, "model": c.model or trainer.task.meta.get("model"), "imgsz": c.imgsz,
            "batch": c.batch, "workers": c.workers, "steps": len(step), "data_ms": 1e3 * sum(times) / len(times),
            "wait_ms": wait_ms, "step_ms": step_ms, "share": wait_ms / step_ms, "share_cpu": sum(wait_cpu) / sum(step_cpu),
            "load": f"{load0:.1f}->{os.getloadavg()[0]:.1f}"}  # fmt: skip


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    steps, skip = int(args.get("steps", 40)), int(args.get("skip", 5))
    if "threads" in args:
        import torch

        torch.set_num_threads(int(args["threads"]))
    overrides: dict[str, Any] = {"workers": int(args["workers"])} if "workers" in args else {}
    rows = []
    for name in args.get("cases", ",".join(CASES)).split(","):
        task, data = CASES[name]
        rows.append({"case": name, **measure(task, data, steps + skip, skip, **overrides)})
    write_results("data_loading", rows, steps=steps, skip=skip, note="wall clock on a shared CPU: noisy")


if __name__ == "__main__":
    main()
