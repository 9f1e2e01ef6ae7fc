"""Trainer callbacks: progress bar, CSV / TensorBoard / MLflow loggers.

A callback is any object with some of these methods; the trainer calls those it has:
``on_train_start(trainer)``, ``on_epoch_start(trainer, epoch)``,
``on_batch_end(trainer, logs)``, ``on_epoch_end(trainer, epoch, logs)``, ``on_train_end(trainer)``.
``logs`` is a flat ``{name: float}`` dict (``train/loss``, ``val/top1``, ``lr``…). Raise
``KeyboardInterrupt`` from a callback to stop like Ctrl-C: the last finished epoch stays saved.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from optik.console import console  # noqa: F401  (re-exported: callers print through the engine's console)


class ProgressBar:
    """One rich bar per epoch with the running loss; the epoch summary stays on screen."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task_id: Any = None

    def on_train_start(self, trainer: Any) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            # The render thread competes with the training threads for 2 cores and the GIL:
            # refresh rarely, and not at all when output is not a terminal (CI logs, pipes).
            refresh_per_second=2,
            auto_refresh=console.is_terminal,
        )
        self.progress.start()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        assert self.progress is not None
        desc = f"epoch {epoch + 1}/{trainer.epochs}"
        self.task_id = self.progress.add_task(desc, total=trainer.steps_per_epoch, info="")

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if self.progress is None or self.task_id is None:
            return
        info = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in logs.items() if k.startswith("train/"))
        self.progress.update(self.task_id, advance=1, info=info)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.progress is None or self.task_id is None:
            return
        # Keep the line short: train losses, val loss and the fitness metric (top1, mAP…).
        key = f"val/{trainer.task.fitness_key}"
        shown = {k: v for k, v in logs.items() if k.startswith("train/") or k in ("val/loss", key)}
        info = " ".join(f"{k.replace('train/', '')}={v:.4g}" for k, v in shown.items())
        self.progress.update(self.task_id, info=info)

    def on_train_end(self, trainer: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class CSVLogger:
    """``metrics.csv``: one row per epoch. Columns grow if a later epoch logs a new key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def on_train_start(self, trainer: Any) -> None:
        # On resume keep the earlier epochs' rows (up to the epoch being resumed from), as they were
        # written: the epoch an int (not 1.0), a cell left empty stays empty.
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [self._parse(r) for r in csv.DictReader(f)]
            self.rows = [r for r in rows if r.get("epoch", math.inf) <= trainer.start_epoch]

    @staticmethod
    def _parse(row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if k is None or v in ("", None):
                continue
            out[k] = int(float(v)) if k == "epoch" else float(v)
        return out

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch + 1, **logs})
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: r.get(k, "") for k in keys})
        tmp.replace(self.path)


class TensorBoardLogger:
    """Scalars under ``tb/`` (``tensorboard --logdir runs``)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def on_train_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, epoch + 1)
        self.writer.flush()

    def on_train_end(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.close()


class MLflowLogger:
    """Logs params and per-epoch metrics to MLflow (``mlflow=true``; needs ``pip install mlflow``)."""

    def __init__(self) -> None:
        import mlflow  # raises ImportError; the trainer turns it into a ConfigError

        self.mlflow = mlflow

    def on_train_start(self, trainer: Any) -> None:
        self.mlflow.start_run(run_name=trainer.run_dir.name)
        self.mlflow.log_params({k: str(v) for k, v in trainer.cfg.model_dump().items()})

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        clean = {k.replace("/", "_"): v for k, v in logs.items() if isinstance(v, float) and math.isfinite(v)}
        self.mlflow.log_metrics(clean, step=epoch + 1)

    def on_train_end(self, trainer: Any) -> None:
        self.mlflow.end_run()
