"""optik's trainer vs a hand-written PyTorch loop: same model, data, batch, steps, in one run.

Both loops get the same DataLoader (same dataset, transforms, sampler order) and the same model
initialisation; we time the training steps only (no validation, no checkpoint I/O) and report the
median per-step time over several epochs. Goal: ratio ≤ 1.03.

    python benchmarks/engine_overhead.py [model=resnet] [epochs=4]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.config import build_config  # noqa: E402
from optik.distributed import ShardedShuffleSampler  # noqa: E402
from optik.engine.optim import StepSchedule, build_optimizer, build_scheduler  # noqa: E402
from optik.engine.trainer import Trainer, seed_everything  # noqa: E402
from optik.tasks.classify import ClassifyTask  # noqa: E402

DATA = "synthetic:shapes?n=1280&size=48&classes=4"


class StepTimer:
    """Records per-epoch step time (first batch of each epoch excluded: loader start-up)."""

    def __init__(self) -> None:
        self.per_step: list[float] = []

    def on_epoch_start(self, trainer, epoch):
        self.t, self.n = None, 0

    def on_batch_end(self, trainer, logs):
        now = time.perf_counter()
        if self.t is None:
            self.t0 = now
        self.t, self.n = now, self.n + 1

    def on_epoch_end(self, trainer, epoch, logs):
        self.per_step.append((self.t - self.t0) / (self.n - 1))


def hand_loop(cfg, epochs: int) -> list[float]:
    """The loop a user writes by hand, with the same data pipeline and optimizer."""
    seed_everything(cfg.seed)
    task = ClassifyTask(cfg)
    data = task.datasets()
    model = task.build_model()
    sampler = ShardedShuffleSampler(len(data.train), seed=cfg.seed)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers)
    opt = build_optimizer(task.param_groups(model), cfg)
    sched = build_scheduler(opt, StepSchedule(cfg, len(loader), epochs))
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        t0 = None
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if t0 is None:
                t0 = time.perf_counter()
        times.append((time.perf_counter() - t0) / (len(loader) - 1))
    return times


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model, epochs = args.get("model", "resnet"), int(args.get("epochs", 4))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config("classify", "train", {"data": DATA, "model": model, "epochs": epochs, "imgsz": 48,
                                                 "batch": 64, "val": False, "plots": False, "project": tmp})
        hand, optik = [], []
        for rep in range(3):  # interleave so drift in machine load hits both equally
            hand += hand_loop(cfg, epochs)
            timer = StepTimer()
            Trainer(cfg, callbacks=[timer]).fit()
            optik += timer.per_step
    h, o = statistics.median(hand), statistics.median(optik)
    rows.append({"model": model, "batch": 64, "imgsz": 48, "hand_ms_per_step": 1e3 * h, "optik_ms_per_step": 1e3 * o,
                 "ratio_median": o / h, "ratio_min": min(optik) / min(hand), "goal": "<= 1.03"})
    write_results("engine_overhead", rows, epochs_each=epochs * 3,
                  hand_ms=[1e3 * t for t in hand], optik_ms=[1e3 * t for t in optik])


if __name__ == "__main__":
    main()
