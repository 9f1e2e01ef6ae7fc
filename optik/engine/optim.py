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

#: Peak learning rate per optimizer when ``lr`` is unset (at batch ~32, before any scaling):
#: adam/adamw 1e-3 (Kingma & Ba 2015; Loshchilov & Hutter 2019), sgd 1e-2 with momentum 0.9,
#: rmsprop 1e-3 (Hinton's lecture 6e / Keras), adagrad 1e-2 (Duchi et al. 2011; torch's default),
#: lion 3e-4 — "3-10x smaller than AdamW" (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"),
#: the 3x end because optik's runs are short (a sign update moves every weight by the full lr, so 1e-4 crawls
#: for the first epochs), lamb 1e-3 (You et al. 2020; timm's default).
DEFAULT_LR = {"adamw": 1e-3, "adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adagrad": 1e-2, "lion": 3e-4, "lamb": 1e-3}

#: The optimizers built by timm's factory (``timm.optim.create_optimizer_v2``), with the settings
#: passed explicitly so they are visible here: rmsprop alpha 0.9 (the TF / timm ImageNet recipes;
#: torch's own 0.99 adapts slower) and momentum from ``cfg.momentum``; eps 1e-8 for rmsprop / adagrad
#: (torch's RMSprop default, timm's adagrad default). Lion keeps betas (0.9, 0.99) and lamb (0.9, 0.999),
#: the papers' defaults. Weight decay: coupled L2 for rmsprop / adagrad (torch), decoupled for lion and
#: lamb — Lion's paper scales it up by the same 3-10x the lr goes down.
TIMM_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "rmsprop": {"alpha": 0.9, "eps": 1e-8},
    "adagrad": {"eps": 1e-8},
    "lion": {},
    "lamb": {},
}


#: Peak learning rate when ``lr`` is unset, the model starts from random weights and its task opts in
#: (``Task.scratch_lr``: classification) (:data:`DEFAULT_LR` stays
#: for fine-tuning pretrained weights, where a large step would wreck what the weights already know). Small
#: models trained from scratch in optik's short runs need more: digits, ``cnn``, 4 epochs at 32 px reaches
#: 84 % at 1e-3 and 95-97 % at 5e-3-1e-2 (``benchmarks/first_run.py``).
SCRATCH_LR = {"adamw": 5e-3, "adam": 5e-3}


def starts_from_weights(cfg: TrainConfig) -> bool:
    """Whether the run fine-tunes trained weights: ``pretrained=`` true / a file / a hub id, an ``hf:`` model
    (transformers loads its weights unless ``pretrained=false``), or ``model=`` an optik weights file or run dir."""
    from optik.errors import OptikError
    from optik.weights import resolve_model_arg

    if cfg.pretrained not in (None, False):
        return True
    model = str(cfg.model or "")
    if model.startswith("hf:"):
        return cfg.pretrained is None
    try:
        return bool(model) and resolve_model_arg(model)[1] is not None
    except OptikError:
        return False


def peak_lr(cfg: TrainConfig, scratch: bool = False) -> float:
    """``cfg.lr``, or the optimizer's default: :data:`DEFAULT_LR`, or :data:`SCRATCH_LR` (where it has one)
    for a model that starts from random weights (``scratch``; the trainer asks :func:`starts_from_weights`)."""
    if cfg.lr == "auto":
        raise ValueError("lr=auto is resolved by the trainer's range test (optik.engine.lr_finder) before the optimizer is built")
    if cfg.lr is not None:
        return cfg.lr
    return SCRATCH_LR.get(cfg.optimizer, DEFAULT_LR[cfg.optimizer]) if scratch else DEFAULT_LR[cfg.optimizer]


def build_optimizer(param_groups: list[dict[str, Any]], cfg: TrainConfig, scratch: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over ``param_groups`` at :func:`peak_lr` (the schedule scales it);
    ``scratch``: the model starts from random weights (a higher default lr, :data:`SCRATCH_LR`).

    sgd / adam / adamw are torch's; rmsprop, adagrad, lion and lamb come from timm's optimizer factory.

    >>> from optik.config import TrainConfig
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> type(build_optimizer([{"params": [p]}], TrainConfig(optimizer="lion"))).__name__
    'Lion'
    """
    lr = peak_lr(cfg, scratch)
    if cfg.optimizer in TIMM_OPTIMIZERS:
        from timm.optim import create_optimizer_v2

        # Parameter groups pass through unchanged (the task's no-decay group keeps weight_decay=0).
        return create_optimizer_v2(param_groups, opt=cfg.optimizer, lr=lr, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum, **TIMM_OPTIMIZERS[cfg.optimizer])  # fmt: skip
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
