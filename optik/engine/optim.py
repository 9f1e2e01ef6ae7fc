"""Optimizer and per-step learning-rate schedule built from a :class:`TrainConfig`.

The schedule is a pure function of the global step (``LambdaLR``), so resuming restores it
exactly and changing the total number of steps (``time=`` budgets) just re-stretches it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from optik.config import TrainConfig

DEFAULT_LR = {"adamw": 1e-3, "adam": 1e-3, "sgd": 1e-2}


def peak_lr(cfg: TrainConfig) -> float:
    return cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]


def build_optimizer(param_groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    lr = peak_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=cfg.weight_decay)


class StepSchedule:
    """lr factor at a global optimizer step: linear warmup, then cosine / step / one-cycle / constant,
    times ``finetune_lr`` once a two-phase fine-tune has left its head-only phase."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, total_epochs: int) -> None:
        self.cfg = cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_epochs = total_epochs

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        epoch = step // self.steps_per_epoch
        phase = cfg.finetune_lr if cfg.freeze_epochs and epoch >= cfg.freeze_epochs else 1.0
        if cfg.scheduler == "onecycle":  # warmup (default 30 %) up, cosine down to ~0
            up = warmup or max(1, int(0.3 * self.total_steps))
            if step < up:
                return phase * (0.04 + 0.96 * step / up)
            t = min(1.0, (step - up) / max(1, self.total_steps - up))
            return phase * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t)))
        if step < warmup:
            return phase * (step + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return phase
        if cfg.scheduler == "step":
            return phase * cfg.gamma ** (epoch // cfg.step_size)
        t = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        lo = cfg.min_lr_ratio
        return phase * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: StepSchedule) -> LambdaLR:
    return LambdaLR(optimizer, schedule)
