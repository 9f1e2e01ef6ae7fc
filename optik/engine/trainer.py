"""The one training loop, for every task. Reads top to bottom like torchvision's reference
``train.py``: config → run dir → data → model → optimizer → loop (train, validate, checkpoint) →
plots and report. Everything task-specific goes through :class:`optik.tasks.base.Task`.

>>> from optik.config import build_config
>>> cfg = build_config("classify", "train", {"data": "digits", "model": "cnn", "epochs": 1, "imgsz": 16})
>>> result = Trainer(cfg).fit()                                     # doctest: +SKIP
>>> result["run_dir"]                                               # doctest: +SKIP
'runs/classify/train'
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from optik.version import __version__
from optik.config import RESUME_MUTABLE, TrainConfig, build_config, config_to_yaml, load_yaml_config, update_config
from optik.engine import checkpoint as ckpt
from optik import distributed as dist
from optik.engine.callbacks import CSVLogger, MLflowLogger, ProgressBar, TensorBoardLogger, console
from optik.device import autocast, resolve_device, to_device
from optik.engine.evaluate import evaluate
from optik.engine.optim import StepSchedule, build_optimizer, build_scheduler
from optik.engine.rundir import find_resume_dir, make_run_dir, remove_unused
from optik.errors import ConfigError, DiskFullError, OptikError
from optik.tasks.base import Task, get_task

log = logging.getLogger(__name__)


class TrainingError(OptikError):
    """Training cannot continue (e.g. the loss became NaN)."""


@contextmanager
def batchnorm_hint(cfg: TrainConfig) -> Iterator[None]:
    """BatchNorm's "Expected more than 1 value per channel" (a training batch of one image whose feature map
    is 1x1) as a one-line error saying what to change, instead of a traceback from deep inside torch."""
    try:
        yield
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        raise TrainingError(
            f"model {cfg.model!r} cannot train on a batch of one image at imgsz={cfg.imgsz}: its BatchNorm layers see a "
            "single value per channel; add training images (at least 2), or raise imgsz"
        ) from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def merge_resume_config(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """The resumed run's saved config, with only the keys that may change taken from ``cfg``.

    Changing anything else (model, data, imgsz, lr…) would silently train a different run, the
    most reported resume complaint about other tools, so it is an error that names the key.
    """
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"resume: run '{run_dir}' has no config.yaml (not an optik training run?)")
    saved = load_yaml_config(run_dir / "config.yaml")
    task = saved.get("task", cfg.task)
    if task != cfg.task:  # checked first: another task's keys would only say "unknown key 'conf'"
        raise ConfigError(
            f"resume: '{run_dir}' is a {task} run, not {cfg.task}; resume it with: optik {task} train resume={run_dir}"
        )
    saved_cfg = build_config(cfg.task, "train", {k: v for k, v in saved.items() if k not in ("task", "mode")})
    explicit = cfg.model_fields_set - {"task", "mode", "resume", "name", "project", "exist_ok"}
    for key in sorted(explicit - RESUME_MUTABLE):
        if getattr(cfg, key) != getattr(saved_cfg, key):
            raise ConfigError(
                f"resume: '{key}' differs from run '{run_dir}' ({getattr(saved_cfg, key)!r} there, "
                f"{getattr(cfg, key)!r} given); drop it or start a new run (only {', '.join(sorted(RESUME_MUTABLE - {'resume'}))} may change)"
            )
    changes = {k: getattr(cfg, k) for k in explicit & RESUME_MUTABLE}
    if not (isinstance(cfg.data, str) or cfg.data is None):  # an in-memory dataset cannot be saved in YAML; take the caller's
        changes["data"] = cfg.data
    return update_config(saved_cfg, **changes, resume=True, name=run_dir.name, exist_ok=True)


class TrainStep(nn.Module):
    """``task.train_step`` as a module, so DistributedDataParallel wraps the whole step (any task's
    loss path, e.g. a detector's ``forward_loss``) and its forward hooks see every parameter use."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        super().__init__()
        self.task, self.model = task, model

    def forward(self, inputs: Any, targets: Any) -> tuple[dict[str, torch.Tensor], Any]:
        return self.task.train_step(self.model, inputs, targets)


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` for ``cfg.task``; see the module docstring."""

    def __init__(self, cfg: TrainConfig, callbacks: list[Any] | None = None) -> None:
        self.cfg = cfg
        self.extra_callbacks = list(callbacks or [])
        self.start_epoch = 0
        self.history: list[dict[str, float]] = []  # every epoch's logged row, kept in state.pt
        self.epochs = cfg.epochs
        self.steps_per_epoch = 0
        self.run_dir: Path = Path()
        self.ddp: DistributedDataParallel | None = None  # wraps TrainStep under torchrun

    # -- set-up ----------------------------------------------------------------------------------
    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        run_dir = None
        if dist.is_main():
            if cfg.resume:
                run_dir = find_resume_dir(cfg.project, cfg.task, cfg.resume, cfg.name)
            else:
                run_dir, self._created_run_dir = make_run_dir(cfg.project, cfg.task, cfg.name or "train", cfg.exist_ok)
        self.run_dir = Path(dist.broadcast_object(str(run_dir) if run_dir else None))
        if cfg.resume:
            self.cfg = merge_resume_config(cfg, self.run_dir)
        self.weights_dir = self.run_dir / "weights"
        if dist.is_main():
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config_to_yaml(self.cfg))

    def _loaders(self, task: Task) -> None:
        cfg = self.cfg
        data = task.datasets()
        self.data = data
        if data.train is None or len(data.train) == 0:
            raise ConfigError(f"data: no training samples in {cfg.data!r}")
        sampler = task.train_sampler(data.train) or dist.ShardedShuffleSampler(len(data.train), seed=cfg.seed)
        self.train_sampler = sampler
        common = dict(num_workers=cfg.workers, collate_fn=task.collate, persistent_workers=cfg.workers > 0)
        # A last batch of one image cannot train BatchNorm on a 1x1 feature map ("Expected more than 1 value per
        # channel"): drop that lone sample (a different one each epoch, the order is reshuffled) instead.
        n = len(sampler)
        drop_last = n > cfg.batch and n % cfg.batch == 1
        self.train_loader = DataLoader(data.train, batch_size=cfg.batch, sampler=sampler, drop_last=drop_last, **common)
        self.val_loader = None
        if data.val is not None and len(data.val) > 0:
            self.val_loader = DataLoader(data.val, batch_size=cfg.batch, sampler=dist.ShardSampler(len(data.val)), **common)

    def _callbacks(self) -> list[Any]:
        if not dist.is_main():  # loggers write on rank 0; callbacks that change the model run everywhere
            return [cb for cb in self.extra_callbacks if getattr(cb, "all_ranks", False)]
        cbs: list[Any] = [ProgressBar(), CSVLogger(self.run_dir / "metrics.csv"), TensorBoardLogger(self.run_dir / "tb")]
        if self.cfg.mlflow:
            try:
                cbs.append(MLflowLogger())
            except ImportError:
                raise ConfigError("bad value for 'mlflow': true (mlflow is not installed; pip install mlflow)") from None
        return cbs + self.extra_callbacks

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(self, *args)

    # -- checkpoints -----------------------------------------------------------------------------
    def _deploy_state(self) -> dict[str, torch.Tensor]:
        """Weights users get: the EMA weights when EMA is on, else the model's."""
        return (self.ema.module if self.ema is not None else self.model).state_dict()

    def _meta(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **self.task.checkpoint_meta(),
            "task": cfg.task,
            # The architecture the task resolved (training from a weights file: that file's architecture,
            # not its path, so the new weights stay self-describing).
            "model": self.task.meta.get("model") or cfg.model,
            "imgsz": cfg.imgsz,
            "data": cfg.data if isinstance(cfg.data, str) else None,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "epoch": epoch + 1,
            "optik_version": __version__,
        }

    def _save(self, epoch: int, is_best: bool, logs: dict[str, float] | None = None) -> None:
        """Checkpoint epoch ``epoch``: weights files first, ``state.pt`` last — it commits the epoch (a
        process killed before it resumes from the previous epoch and re-trains this one; see
        :mod:`optik.engine.checkpoint`). ``logs`` (the epoch's metrics.csv row) goes into ``state.pt``."""
        self.history.append({"epoch": epoch + 1, **(logs or {})})
        try:
            self._write_checkpoint(epoch, is_best)
        except DiskFullError as e:
            done = epoch > 0 and (self.weights_dir / "state.pt").is_file()
            raise DiskFullError(
                f"epoch {epoch + 1} was not checkpointed: {e}. "
                + (f"The epoch-{epoch} checkpoint is intact: free space, then continue with resume=true"
                   if done else "Nothing was saved yet: free space and train again"),
                e.filename,
            ) from e  # fmt: skip

    def _write_checkpoint(self, epoch: int, is_best: bool) -> None:
        meta = self._meta(epoch)
        weights = self._deploy_state()
        ckpt.save_weights(weights, self.weights_dir / "last.safetensors", meta)
        if is_best:
            ckpt.save_weights(weights, self.weights_dir / "best.safetensors", meta)
        if self.cfg.save_period > 0 and (epoch + 1) % self.cfg.save_period == 0:
            ckpt.save_weights(weights, self.weights_dir / f"epoch{epoch + 1}.safetensors", meta)
        state = {
            "epoch": epoch + 1,
            "total_epochs": self.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler_step": self.scheduler.last_epoch,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_fitness": self.best_fitness,
            "bad_epochs": self.bad_epochs,
            "rng": ckpt.rng_state(),
            "history": self.history,
        }
        ckpt.save_state(state, self.weights_dir / "state.pt")

    def _resume(self) -> None:
        state = ckpt.load_state(self.weights_dir / "state.pt")
        model = self.model
        model.load_state_dict(state["model"])
        self.task.on_epoch_start(model, state["epoch"], self.epochs)  # re-apply e.g. unfreezing before loading optimizer
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.last_epoch = state["scheduler_step"]
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.best_fitness = state["best_fitness"]
        self.bad_epochs = state["bad_epochs"]
        self.start_epoch = state["epoch"]
        self.history = [h for h in state.get("history") or [] if int(h["epoch"]) <= self.start_epoch]
        ckpt.set_rng_state(state["rng"])
        if dist.is_main():  # what a killed run left: its temp files, the metrics.csv row of the committed epoch
            ckpt.remove_stale_temps(self.weights_dir)
            ckpt.repair_metrics_csv(self.run_dir / "metrics.csv", self.history, self.start_epoch)
        if self.start_epoch >= self.epochs:
            raise ConfigError(
                f"resume: run '{self.run_dir}' already finished {self.start_epoch} epochs; pass epochs=N > {self.start_epoch} to train longer"
            )
        if dist.is_main():
            console.print(f"Resuming {self.run_dir} from epoch {self.start_epoch + 1}/{self.epochs}")

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train; returns ``{"run_dir", "best", "last", "metrics", "epochs_run"}``."""
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        distributed = dist.setup(self.device)
        try:
            self._setup_run_dir()
            cfg = self.cfg
            seed_everything(cfg.seed + dist.rank())
            self.task = task = get_task(cfg.task)(cfg)
            self._loaders(task)
            self.model = task.build_model().to(self.device)
            self.epochs = cfg.epochs
            self.steps_per_epoch = len(self.train_loader)
            optimizer_steps = math.ceil(self.steps_per_epoch / cfg.accumulate)
            self.optimizer = build_optimizer(task.param_groups(self.model), cfg)
            self.schedule = StepSchedule(cfg, optimizer_steps, self.epochs)
            self.scheduler = build_scheduler(self.optimizer, self.schedule)
            self.ema = None
            if cfg.ema:
                from timm.utils import ModelEmaV3

                self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
            self.best_fitness, self.bad_epochs = -math.inf, 0
            self._last_eval_is_best = False
            if cfg.resume:
                self._resume()
            if task.manual_optimization and (distributed or cfg.accumulate > 1):
                key = "torchrun" if distributed else "accumulate"
                raise ConfigError(f"{key}: task {cfg.task!r} with model {cfg.model!r} steps its own optimizer (alternating updates); "
                                  "train it in one process with accumulate=1")  # fmt: skip
            self.ddp = DistributedDataParallel(TrainStep(task, self.model)) if distributed else None
            self.callbacks = self._callbacks()
            self._emit("on_train_start")
            try:
                metrics, epochs_run = self._loop(distributed)
            finally:
                self._emit("on_train_end")
            result = self._finish(metrics, epochs_run)
            # Every rank leaves its last collective before the process group goes away: a rank that tore
            # gloo down while another was still in _finish aborted at exit ("terminate called without an
            # active exception") under load. Only on success: after an error a rank may never arrive.
            dist.barrier()
            return result
        except BaseException:  # any error, Ctrl-C too
            self._remove_unused_run_dir()
            raise
        finally:
            dist.cleanup()

    def _remove_unused_run_dir(self) -> None:
        """A run that failed before its first checkpoint leaves no empty directory behind (so the next run
        is not ``train2`` and ``model=runs/<task>/train`` does not point at nothing); a directory that was
        there before (``exist_ok=true``, ``resume``) is never removed."""
        if dist.is_main() and getattr(self, "_created_run_dir", False):
            remove_unused(self.run_dir, keep=lambda d: (d / "weights" / "state.pt").exists())

    def _loop(self, distributed: bool) -> tuple[dict[str, Any], int]:
        cfg, task = self.cfg, self.task
        t0 = time.time()
        budget = cfg.time * 3600 if cfg.time else None
        metrics: dict[str, Any] = {}
        epoch = self.start_epoch
        epochs_run = 0
        while epoch < self.epochs:
            replaced = task.on_epoch_start(self.model, epoch, self.epochs)
            if replaced is not None and distributed:  # trainable parameters changed (unfreezing): rewrap
                self.ddp = DistributedDataParallel(TrainStep(task, self.model))
            self._emit("on_epoch_start", epoch)
            train_logs = self._train_epoch(epoch, t0, budget)
            metrics = {}
            if self.val_loader is not None and (cfg.val or epoch + 1 == self.epochs):
                eval_model = self.ema.module if self.ema is not None else self.model
                if distributed:
                    dist.broadcast_buffers(eval_model)  # evaluate exactly what rank 0 checkpoints
                metrics = evaluate(task, eval_model, self.val_loader, self.device, cfg.amp)
            fitness = self._fitness(metrics, train_logs)
            # NaN: "no measure of quality this epoch, the latest weights are the best guess" (a GAN without validation).
            is_best = fitness > self.best_fitness or math.isnan(fitness)
            self._last_eval_is_best = bool(metrics) and is_best  # _finish can reuse these metrics
            if is_best and not math.isnan(fitness):
                self.best_fitness, self.bad_epochs = fitness, 0
            elif not is_best:
                self.bad_epochs += 1
            logs = {**train_logs, **{f"val/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
            logs["lr"] = self.optimizer.param_groups[0]["lr"]
            logs["time"] = time.time() - t0
            if dist.is_main():
                self._save(epoch, is_best, logs)
            dist.barrier()
            epochs_run += 1
            self._emit("on_epoch_end", epoch, logs)
            epoch += 1
            if budget is not None:
                elapsed = time.time() - t0
                if elapsed >= budget:
                    break
                # Re-fit the epoch count to the budget after each epoch; the schedule re-stretches.
                per_epoch = elapsed / epochs_run
                self.epochs = max(epoch + 1 if elapsed + per_epoch <= budget else epoch, epoch + int((budget - elapsed) // per_epoch))
                self.schedule.total_epochs = self.epochs
            if cfg.patience and self.bad_epochs >= cfg.patience:
                if dist.is_main():
                    console.print(f"Early stopping: no improvement in {cfg.patience} epochs (best {self.best_fitness:.4g})")
                break
        return metrics, epochs_run

    def _fitness(self, metrics: dict[str, Any], train_logs: dict[str, float]) -> float:
        if metrics:
            key = self.task.fitness_key
            return float(metrics[key])
        return self.task.train_fitness(train_logs)  # no validation this epoch

    def _train_epoch(self, epoch: int, t0: float, budget: float | None) -> dict[str, float]:
        cfg, task, model = self.cfg, self.task, self.model
        model.train()
        if hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)
        mix = task.batch_transform()
        sums: dict[str, float] = {}
        n_batches = 0
        accumulate = cfg.accumulate
        self.optimizer.zero_grad(set_to_none=True)
        for i, (inputs, targets) in enumerate(self.train_loader):
            inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
            if mix is not None:
                inputs, targets = mix(inputs, targets)
            step_now = (i + 1) % accumulate == 0 or i + 1 == self.steps_per_epoch
            if task.manual_optimization:  # the task runs backward + optimizer.step() itself (GAN: D then G)
                with autocast(self.device, cfg.amp), batchnorm_hint(cfg):
                    losses = task.optimization_step(model, inputs, targets, self.optimizer)
                self._check_finite(losses["loss"], epoch, i)
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(model, step=self.scheduler.last_epoch)
                step_now = False
            else:
                sync = self.ddp.no_sync() if self.ddp is not None and not step_now else nullcontext()
                with sync:
                    with autocast(self.device, cfg.amp), batchnorm_hint(cfg):
                        # Under torchrun the step runs through DDP's forward so gradients are all-reduced.
                        losses, _ = self.ddp(inputs, targets) if self.ddp is not None else task.train_step(model, inputs, targets)
                    loss = losses["loss"]
                    self._check_finite(loss, epoch, i)
                    (loss / accumulate).backward()
            if step_now:
                if cfg.clip_grad:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(model, step=self.scheduler.last_epoch)
            n_batches += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            self._emit("on_batch_end", {f"train/{k}": s / n_batches for k, s in sums.items()})
            if budget is not None and time.time() - t0 >= budget:
                break
        means = {f"train/{k}": s / max(1, n_batches) for k, s in sums.items()}
        return {k: float(dist.all_reduce_mean(torch.tensor(v))) for k, v in means.items()}

    def _check_finite(self, loss: torch.Tensor, epoch: int, i: int) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}; lower lr"
                + (" or set amp=false" if self.cfg.amp else "")
                + f" (last good checkpoint: {self.weights_dir / 'last.safetensors'})"
            )

    def _finish(self, last_metrics: dict[str, Any], epochs_run: int) -> dict[str, Any]:
        """Final evaluation of the best weights, plots and report (rank 0)."""
        best = self.weights_dir / "best.safetensors"
        result: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "best": str(best),
            "last": str(self.weights_dir / "last.safetensors"),
            "epochs_run": epochs_run,
            "metrics": last_metrics,
        }
        model = self.ema.module if self.ema is not None else self.model
        final = last_metrics
        # The best weights are the ones just evaluated (the usual case for short runs): their metrics
        # stand; otherwise evaluate the best checkpoint (every rank: evaluate() is collective).
        reuse = bool(last_metrics) and self._last_eval_is_best
        if self.val_loader is not None and best.is_file() and not reuse:
            model.load_state_dict(ckpt.load_state_dict(best))
            final = evaluate(self.task, model, self.val_loader, self.device, self.cfg.amp)
        result["metrics"] = final
        if not dist.is_main():
            return result
        if self.cfg.plots:
            from optik.engine.report import write_run_artifacts

            write_run_artifacts(self, model, final)
        console.print(f"Results saved to [bold]{self.run_dir}[/bold]")
        return result



def train(cfg: TrainConfig) -> dict[str, Any]:
    """``optik TASK train``: :meth:`Trainer.fit` for ``cfg`` (the catalog's train runner)."""
    return Trainer(cfg).fit()
