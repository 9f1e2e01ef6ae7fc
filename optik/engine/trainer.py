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

import gc
import json
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
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from optik.version import __version__
from optik.config import RESUME_MUTABLE, TrainConfig, build_config, config_to_yaml, load_yaml_config, update_config
from optik.engine import checkpoint as ckpt
from optik import distributed as dist
from optik.engine.callbacks import CSVLogger, MLflowLogger, ProgressBar, TensorBoardLogger, console
from optik.device import autocast, grad_scaler, precision_name, resolve_amp, resolve_device, to_device, use_channels_last
from optik.engine.evaluate import evaluate
from optik.engine.lr_finder import find_lr
from optik.engine.optim import StepSchedule, build_optimizer, build_scheduler, peak_lr, starts_from_weights
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
        if key == "lr_find_steps" or (key == "lr" and cfg.lr == "auto"):  # the range test ran with the first epoch
            if key == "lr":
                log.info("resume: lr=auto keeps the lr the run's range test picked, %s", saved_cfg.lr)
            continue
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
        # Precision and memory format, decided once in _setup_precision (amp=auto / channels_last=auto).
        self.amp_dtype: torch.dtype | None = None
        self.eval_amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.memory_format: torch.memory_format | None = None
        self.resolved: dict[str, str] = {}  # what amp / channels_last resolved to, for config.yaml and the report

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
        self._write_config()

    def _write_config(self) -> None:
        """``config.yaml`` (rank 0): the run's keys with every value the run resolved (the data's augmentation
        defaults, lr=auto's pick), so a resume or a re-run from the file trains the same way. ``amp`` and
        ``channels_last`` also say what they resolved to (``amp: auto (bf16)``; read back as ``auto``)."""
        if not dist.is_main():
            return
        text = config_to_yaml(self.cfg)
        if self.resolved:
            data = yaml.safe_load(text)
            for key, value in self.resolved.items():
                data[key] = f"{str(data[key]).lower()} ({value})"
            text = yaml.safe_dump(data, sort_keys=False)
        (self.run_dir / "config.yaml").write_text(text)

    def _set_cfg(self, cfg: TrainConfig) -> None:
        """Adopt ``cfg`` (the run's config with resolved values) in the trainer and the task; rewrite config.yaml."""
        self.cfg = cfg
        if getattr(self, "task", None) is not None:
            self.task.cfg = cfg
        self._write_config()

    def _setup_precision(self) -> None:
        """Decide the run's precision and memory format once: ``amp`` → an autocast dtype
        (:func:`optik.device.resolve_amp`), a gradient scaler for fp16, and ``channels_last`` (the model
        converted here, each batch in :meth:`_train_epoch`); config.yaml and the report record the outcome."""
        cfg, task = self.cfg, self.task
        dtype = resolve_amp(cfg.amp, self.device, self.model, train=True)
        # Validation: amp=auto evaluates in fp32, as `optik val` / predict / exports do by default, so the recorded
        # (and best-picking) metrics are the ones those reproduce; amp=true evaluates in reduced precision too.
        self.eval_amp_dtype = resolve_amp(cfg.amp, self.device, self.model) if cfg.amp is True else None
        if dtype == torch.float16 and task.manual_optimization:
            # The task steps its own optimizer (GAN), out of a gradient scaler's reach: fp16 unscaled underflows.
            log.warning("amp: %s steps its own optimizer, so fp16 cannot be loss-scaled; training in fp32", cfg.model)
            dtype = None
        self.amp_dtype = dtype
        self.scaler = grad_scaler(self.device, dtype)
        channels_last = use_channels_last(cfg.channels_last, self.model, self.device)
        if channels_last:
            # In place: parameters keep their names and values, so state_dicts load either way.
            self.model.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else None
        amp = precision_name(dtype)
        if self.eval_amp_dtype != dtype:
            amp = f"{amp} train, {precision_name(self.eval_amp_dtype)} val"
        self.resolved = {"amp": amp, "channels_last": "on" if channels_last else "off"}
        self._write_config()

    def _wrap_step(self, distributed: bool) -> None:
        """``compile=true``: the model compiled in place (``nn.Module.compile``: every call of it, so a
        detector's ``forward_loss`` → ``self(images)`` runs compiled too, while the loss's data-dependent code —
        target checks, label assignment — stays eager instead of recompiling per batch); its parameter names
        and state_dict keys are unchanged (no ``_orig_mod.``), so checkpoints, resume and export see the plain
        model. Under torchrun :class:`TrainStep` goes into DistributedDataParallel."""
        if self.cfg.compile and not getattr(self, "_compiled", False):
            self._compiled = True
            if self.task.manual_optimization:  # it calls its sub-networks itself (GAN: G and D), not the model
                log.warning("compile: %s steps its own optimizer; it trains uncompiled", self.cfg.model)
            else:
                self.model.compile()
        self.ddp = DistributedDataParallel(TrainStep(self.task, self.model)) if distributed else None

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
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
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
        # The schedule's peak lrs are the run's own (saved with the optimizer), not today's default for lr=None.
        self.scheduler.base_lrs = [g.get("initial_lr", b) for g, b in zip(self.optimizer.param_groups, self.scheduler.base_lrs)]
        self.scheduler.last_epoch = state["scheduler_step"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
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
            if task.cfg is not self.cfg:  # the task filled keys left unset from the data (classify: augmentation)
                self._set_cfg(task.cfg)
            self.model = task.build_model().to(self.device)
            self._setup_precision()
            if self.cfg.lr == "auto":
                if cfg.resume:  # config.yaml holds the pick from the first run; "auto" there means it never ran
                    raise ConfigError(f"resume: run '{self.run_dir}' has lr=auto but no picked lr in its config.yaml; start a new run")
                self._auto_lr()
            cfg = self.cfg
            self.epochs = cfg.epochs
            self.steps_per_epoch = len(self.train_loader)
            optimizer_steps = math.ceil(self.steps_per_epoch / cfg.accumulate)
            scratch = task.scratch_lr and not starts_from_weights(cfg)
            groups = task.param_groups(self.model)
            if cfg.lr is None and dist.is_main() and not any("lr" in g for g in groups):  # (a GAN's groups carry their own)
                why = ("from scratch" if scratch else "for fine-tuning trained weights") if task.scratch_lr else ""
                log.info("lr %g (the %s default%s; set lr=<number> or lr=auto to change it)", peak_lr(cfg, scratch),
                         cfg.optimizer, f" {why}" if why else "")  # fmt: skip
            self.optimizer = build_optimizer(groups, cfg, scratch=scratch)
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
            self._wrap_step(distributed)
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
            if self.ddp is not None:
                # DDP's reducer holds the process group and gloo work objects: free them now, while the interpreter
                # is fully alive. Freed during interpreter finalization instead, they aborted a rank at exit
                # ("terminate called without an active exception", seen ~1 in 8 CI-like runs).
                self.ddp = None
                gc.collect()
            dist.cleanup()

    def _auto_lr(self) -> None:
        """``lr=auto``: a learning-rate range test (:func:`optik.engine.lr_finder.find_lr`) on the initial weights
        picks the peak lr; the model, the RNGs and the data order are left as they were, so the run then trains
        exactly as one given that lr. Rank 0 runs it on its shard and broadcasts the pick (or its error): one
        test, one lr for every rank, and no collective inside. config.yaml records the pick, so a resume never
        runs it again; ``lr_find.json`` and ``plots/lr_find.png`` show the curve."""
        cfg, task = self.cfg, self.task
        if task.manual_optimization:
            raise ConfigError(f"bad value for 'lr': auto needs a loss the engine steps; {cfg.task} model {cfg.model!r} "
                              "steps its own optimizer (alternating updates): give lr=<number>")  # fmt: skip
        outcome: Any = None
        if dist.is_main():
            try:
                outcome = self._range_test()
            except Exception as e:  # the other ranks must hear of it, not wait in the broadcast
                outcome = f"{type(e).__name__}: {e}"
                dist.broadcast_object(outcome)
                raise
        outcome = dist.broadcast_object(outcome)
        if isinstance(outcome, str):
            raise TrainingError(f"lr=auto: the range test failed on rank 0 ({outcome})")
        self._set_cfg(self.cfg.model_copy(update={"lr": float(outcome)}))

    def _range_test(self) -> float:
        """Run :func:`find_lr` over ``lr_find_steps`` training batches (rank 0); log, save and plot it; return the
        lr to use: the pick, or the default when the curve had no valley to read (``LRFindResult.reliable``)."""
        cfg, task, model = self.cfg, self.task, self.model
        # Its own loader, without persistent workers: the training loader's workers (and their RNG) stay untouched.
        loader = DataLoader(self.train_loader.dataset, batch_size=cfg.batch, sampler=self.train_sampler,
                            drop_last=self.train_loader.drop_last, num_workers=cfg.workers, collate_fn=task.collate)  # fmt: skip
        mix = task.batch_transform()

        def loss_fn(batch: Any) -> torch.Tensor:
            inputs, targets = to_device(batch[0], self.device, self.memory_format), to_device(batch[1], self.device)
            if mix is not None:
                inputs, targets = mix(inputs, targets)
            # find_lr runs backward itself, without a gradient scaler: fp16 would underflow, so fp32 then.
            with autocast(self.device, self.amp_dtype if self.scaler is None else None), batchnorm_hint(cfg):
                losses, _ = task.train_step(model, inputs, targets)
            return losses["loss"]

        # Groups at 1 × lr (a group's own factor, e.g. a backbone's, kept): find_lr sets the lr it tries.
        optimizer = build_optimizer(task.param_groups(model), cfg.model_copy(update={"lr": 1.0}))
        t0 = time.time()
        result = find_lr(model, optimizer, loader, loss_fn, num_iter=cfg.lr_find_steps, clip_grad=cfg.clip_grad)
        seconds = round(time.time() - t0, 2)
        used = result.lr if result.reliable else peak_lr(cfg.model_copy(update={"lr": None}), task.scratch_lr and not starts_from_weights(cfg))
        (self.run_dir / "lr_find.json").write_text(json.dumps({**result.to_dict(), "used": used, "seconds": seconds}, indent=1))
        if cfg.plots:
            result.plot(self.run_dir / "plots" / "lr_find.png")
        what = f"range test over {len(result.lrs)} batches ({result.stopped}, {seconds:.1f} s)"
        if result.reliable:
            console.print(f"lr=auto: {what}: lowest smoothed loss at lr {result.min_loss_lr:.3g} → lr [bold]{used:.3g}[/bold] ({result.rule})")
        else:  # no valley to read: the default beats a guess from noise
            log.warning("lr=auto: %s: %s; using the default lr %.3g (give lr=<number> to choose)", what, result.note, used)
        if result.reliable and result.note:
            log.warning("lr=auto: %s; the pick may be off", result.note)
        return used

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
                self._wrap_step(distributed)
            self._emit("on_epoch_start", epoch)
            train_logs = self._train_epoch(epoch, t0, budget)
            metrics = {}
            if self.val_loader is not None and (cfg.val or epoch + 1 == self.epochs):
                eval_model = self.ema.module if self.ema is not None else self.model
                if distributed:
                    dist.broadcast_buffers(eval_model)  # evaluate exactly what rank 0 checkpoints
                metrics = evaluate(task, eval_model, self.val_loader, self.device, self.eval_amp_dtype)
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
            inputs, targets = to_device(inputs, self.device, self.memory_format), to_device(targets, self.device)
            if mix is not None:
                inputs, targets = mix(inputs, targets)
            step_now = (i + 1) % accumulate == 0 or i + 1 == self.steps_per_epoch
            if task.manual_optimization:  # the task runs backward + optimizer.step() itself (GAN: D then G)
                with autocast(self.device, self.amp_dtype), batchnorm_hint(cfg):
                    losses = task.optimization_step(model, inputs, targets, self.optimizer)
                self._check_finite(losses["loss"], epoch, i)
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(model, step=self.scheduler.last_epoch)
                step_now = False
            else:
                sync = self.ddp.no_sync() if self.ddp is not None and not step_now else nullcontext()
                with sync:
                    with autocast(self.device, self.amp_dtype), batchnorm_hint(cfg):
                        # Under torchrun the step runs through DDP's forward so gradients are all-reduced.
                        losses, _ = self.ddp(inputs, targets) if self.ddp is not None else task.train_step(model, inputs, targets)
                    loss = losses["loss"]
                    self._check_finite(loss, epoch, i)
                    scaled = loss / accumulate
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            if step_now:
                if cfg.clip_grad:
                    if self.scaler is not None:
                        self.scaler.unscale_(self.optimizer)  # clip the true gradients
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                if self.scaler is not None:  # skips the step when fp16 gradients overflowed, then adapts the scale
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
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
                + (" or set amp=false" if self.amp_dtype is not None else "")
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
            final = evaluate(self.task, model, self.val_loader, self.device, self.eval_amp_dtype)
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
