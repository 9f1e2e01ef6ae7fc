"""optik's trainer vs a hand-written PyTorch loop: same model, data, batch, steps and precision, in one run.

Both loops get the same DataLoader (same dataset, transforms, sampler order), the same model
initialisation and the same precision: ``fp32`` (amp=false, channels_last=false) and ``auto`` (what optik
picks by default here — bf16 autocast + channels-last on a CPU with bf16 units — which the hand loop then
writes out itself with ``torch.autocast`` and ``.contiguous(memory_format=...)``). We time the training
steps only (no validation, no checkpoint I/O) and report the median per-step time over several epochs.
Goal: optik ≤ 1.03 × the hand loop at each precision.

Each row also gives the achieved FLOP/s (torch's FlopCounterMode on one step × steps/s) and the MFU:
that over the matmul peak of the same dtype measured on this machine during the run
(``_common.peak_flops``: a 2048² ``torch.mm`` loop), so the figure means the same on every CPU.

    python benchmarks/engine_overhead.py [model=resnet] [epochs=4] [reps=3] [precisions=fp32,auto] [threads=N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import peak_flops, step_flops, write_results  # noqa: E402

from optik.config import build_config  # noqa: E402
from optik.device import precision_name, resolve_amp, use_channels_last  # noqa: E402
from optik.distributed import ShardedShuffleSampler  # noqa: E402
from optik.engine.optim import StepSchedule, build_optimizer, build_scheduler  # noqa: E402
from optik.engine.trainer import Trainer, seed_everything  # noqa: E402
from optik.tasks.classify import ClassifyTask  # noqa: E402

DATA = "synthetic:shapes?n=1280&size=48&classes=4"
BATCH, IMGSZ = 64, 48
#: The keys of each compared precision (both loops run it).
PRECISIONS = {"fp32": {"amp": False, "channels_last": False}, "auto": {"amp": "auto", "channels_last": "auto"}}


class StepTimer:
    """Records per-epoch step time (first batch of each epoch excluded: loader start-up) and what the trainer
    resolved (precision, memory format)."""

    def __init__(self) -> None:
        self.per_step: list[float] = []
        self.dtype: torch.dtype | None = None
        self.memory_format: torch.memory_format | None = None

    def on_train_start(self, trainer):
        self.dtype, self.memory_format = trainer.amp_dtype, trainer.memory_format

    def on_epoch_start(self, trainer, epoch):
        self.t, self.n = None, 0

    def on_batch_end(self, trainer, logs):
        now = time.perf_counter()
        if self.t is None:
            self.t0 = now
        self.t, self.n = now, self.n + 1

    def on_epoch_end(self, trainer, epoch, logs):
        self.per_step.append((self.t - self.t0) / (self.n - 1))


def hand_setup(cfg):
    """Model, loader, optimizer, schedule and the precision a user would set up by hand (the same decisions
    optik's defaults make, written out)."""
    seed_everything(cfg.seed)
    task = ClassifyTask(cfg)
    data = task.datasets()
    model = task.build_model()
    cpu = torch.device("cpu")
    dtype = resolve_amp(cfg.amp, cpu, model, train=True)
    memory_format = torch.channels_last if use_channels_last(cfg.channels_last, model, cpu) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    sampler = ShardedShuffleSampler(len(data.train), seed=cfg.seed)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers)
    return model, loader, sampler, dtype, memory_format


def hand_loop(cfg, epochs: int) -> list[float]:
    """The loop a user writes by hand, with the same data pipeline, optimizer and precision."""
    model, loader, sampler, dtype, memory_format = hand_setup(cfg)
    task = ClassifyTask(cfg)
    opt = build_optimizer(task.param_groups(model), cfg)
    sched = build_scheduler(opt, StepSchedule(cfg, len(loader), epochs))
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        t0 = None
        for x, y in loader:
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if t0 is None:
                t0 = time.perf_counter()
        times.append((time.perf_counter() - t0) / (len(loader) - 1))
    return times


def flops_per_step(cfg) -> int:
    """FLOPs of one training step (forward + backward) on a full batch."""
    model, loader, _, dtype, memory_format = hand_setup(cfg)
    x, y = next(iter(loader))
    x = x.contiguous(memory_format=memory_format)

    def step():
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()

    return step_flops(step)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model, epochs, reps = args.get("model", "resnet"), int(args.get("epochs", 4)), int(args.get("reps", 3))
    if "threads" in args:
        torch.set_num_threads(int(args["threads"]))
    rows, raw = [], {}
    peaks = {d: peak_flops(d) for d in ("fp32", "bf16")}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in args.get("precisions", "fp32,auto").split(","):
            cfg = build_config("classify", "train", {"data": DATA, "model": model, "epochs": epochs, "imgsz": IMGSZ,
                                                     "batch": BATCH, "val": False, "plots": False, "project": tmp,
                                                     **PRECISIONS[prec]})  # fmt: skip
            hand, optik = [], []
            timer = StepTimer()
            for rep in range(reps):  # interleave so drift in machine load hits both equally
                hand += hand_loop(cfg, epochs)
                timer = StepTimer()
                Trainer(cfg, callbacks=[timer]).fit()
                optik += timer.per_step
            h, o = statistics.median(hand), statistics.median(optik)
            dtype = precision_name(timer.dtype)
            flops = flops_per_step(cfg)
            peak = peaks.get(dtype, peaks["fp32"])
            rows.append({
                "model": model, "precision": f"{prec} ({dtype}{', channels_last' if timer.memory_format else ''})",
                "batch": BATCH, "imgsz": IMGSZ, "hand_ms_per_step": 1e3 * h, "optik_ms_per_step": 1e3 * o,
                "ratio_median": o / h, "ratio_min": min(optik) / min(hand), "gflop_per_step": flops / 1e9,
                "optik_gflops": flops / o / 1e9, "peak_gflops": peak / 1e9, "optik_mfu": flops / o / peak,
                "hand_mfu": flops / h / peak, "goal": "ratio <= 1.03",
            })  # fmt: skip
            raw[prec] = {"hand_ms": [1e3 * t for t in hand], "optik_ms": [1e3 * t for t in optik]}
    peaks_after = {d: peak_flops(d) for d in ("fp32", "bf16")}  # the load may have changed during the run
    if len(rows) == 2:
        fp32, auto = rows
        speedup = fp32["optik_ms_per_step"] / auto["optik_ms_per_step"]
        print(f"optik auto vs fp32: {speedup:.2f}x faster per step")
    write_results("engine_overhead", rows, epochs_each=epochs * reps, threads=torch.get_num_threads(),
                  peak_gflops_start={k: v / 1e9 for k, v in peaks.items()},
                  peak_gflops_end={k: v / 1e9 for k, v in peaks_after.items()}, steps_ms=raw)  # fmt: skip


if __name__ == "__main__":
    main()
