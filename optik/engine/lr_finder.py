"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", §3.3;
the "learning-rate finder" of fastai): train for a few mini-batches while the learning rate grows
exponentially, watch the smoothed loss, and take a learning rate from the curve.

:func:`find_lr` works on any model, optimizer and loss: it steps the optimizer it is given, then puts
the model's weights and buffers, the optimizer's state and every random generator back exactly as they
were, so training afterwards starts from the same point as without the test. The engine runs it for
``lr=auto`` (:mod:`optik.engine.trainer`).

The pick (:data:`RULE`): the learning rate at the minimum of the smoothed loss, divided by 10. At the
minimum the loss has stopped falling (the step is already too large for this stage of training); a
tenth of it is still on the steep, fast-falling part of the curve. The steepest point of the curve
(the most negative slope of the smoothed loss over log lr) is recorded too but not used: over ~100
noisy mini-batches that slope follows the noise. Measured on digits (``cnn``, 32 px, four seeds): min/10
picked 0.011-0.024, the steepest point 0.034-0.24; trained for 4 epochs, 0.01-0.02 reach 97 % top-1.
On least squares (tests/engine/test_lr_finder.py) min/10 lands at 0.55-0.8 × the stability limit 2/λmax.

>>> import torch
>>> model = torch.nn.Linear(4, 2)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
>>> batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
>>> loss = lambda b: torch.nn.functional.cross_entropy(model(b[0]), b[1])
>>> result = find_lr(model, opt, batches, loss, num_iter=20)
>>> 1e-6 <= result.lr <= 10
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optik.engine.checkpoint import rng_state, set_rng_state

RULE = "min_loss/10"


@dataclass
class LRFindResult:
    """What a range test saw. ``lrs`` / ``losses`` (smoothed) / ``raw_losses``: one entry per step;
    ``lr``: the pick (:data:`RULE`); ``min_loss_lr``: where the smoothed loss was lowest;
    ``steepest_lr``: the most negative slope over log lr (recorded, not used); ``stopped``:
    ``"diverged"`` (loss above ``diverge`` × its minimum, or not finite) or ``"end"``; ``reliable``: False
    (and ``note`` says why) when the curve has no valley to read — the loss hardly fell (a task that needs
    more steps than the test before it learns anything) or was lowest at the very start."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    lr: float = float("nan")
    min_loss_lr: float = float("nan")
    steepest_lr: float | None = None
    stopped: str = "end"
    rule: str = RULE
    reliable: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, out_png: str | Path) -> Path:
        """Smoothed (and raw) loss against the learning rate on a log axis, the pick marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.raw_losses, color="0.75", linewidth=1, label="loss")
        ax.plot(self.lrs, self.losses, linewidth=2, label="smoothed loss")
        if math.isfinite(self.min_loss_lr):
            ax.axvline(self.min_loss_lr, color="0.5", linestyle=":", label=f"min loss at {self.min_loss_lr:.2e}")
        if math.isfinite(self.lr):
            ax.axvline(self.lr, color="tab:red", linestyle="--", label=f"pick ({self.rule}): {self.lr:.2e}")
        ax.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:  # the divergence tail would squash the interesting part of the curve
            lo, hi = min(finite), min(max(finite), 2.5 * max(finite[0], min(finite)))
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(f"learning-rate range test ({len(self.lrs)} steps, {self.stopped})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)
        fig.savefig(out, dpi=100)
        return out


def pick_lr(lrs: list[float], losses: list[float]) -> tuple[float, float, float | None]:
    """``(pick, min_loss_lr, steepest_lr)`` from a smoothed curve: the pick is ``min_loss_lr / 10``
    (see the module docstring), never below the first learning rate tried.

    >>> lrs = [10 ** (-4 + i / 10) for i in range(41)]
    >>> losses = [2.0 - 0.03 * i if i < 30 else 1.1 + 0.5 * (i - 30) for i in range(41)]
    >>> round(pick_lr(lrs, losses)[0], 6)
    0.01
    """
    if not lrs:
        raise ValueError("no learning rates were tried")
    y = np.asarray(losses, dtype=np.float64)
    y = np.where(np.isfinite(y), y, np.inf)
    i_min = int(np.argmin(y))
    min_lr = float(lrs[i_min])
    steepest = None
    if i_min >= 2:  # the slope needs a few points before the minimum
        slope = np.gradient(y[: i_min + 1], np.log10(np.asarray(lrs[: i_min + 1])))
        steepest = float(lrs[int(np.argmin(slope))])
    return max(min_lr / 10, float(lrs[0])), min_lr, steepest


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_iter: int = 100,
    beta: float = 0.95,
    diverge: float = 4.0,
    clip_grad: float | None = None,
    min_drop: float = 0.05,
) -> LRFindResult:
    """Learning-rate range test; returns an :class:`LRFindResult` whose ``lr`` is the pick.

    Steps ``optimizer`` ``num_iter`` times on ``loss_fn(batch)`` (a scalar loss; ``batches`` is iterated
    again from the start when it runs out), the learning rate growing exponentially from ``start_lr`` to
    ``end_lr``. Parameter groups keep their ratios: a group at ``k`` × the first group's lr stays at ``k`` ×
    the lr tried. The loss is smoothed with a bias-corrected exponential moving average (``beta``); the
    test stops early when the smoothed loss exceeds ``diverge`` × its minimum or a loss is not finite.
    The result is marked unreliable when the smoothed loss never fell ``min_drop`` (a fraction) below the
    mean of the first five losses, or was lowest within the first tenth of the test.

    Afterwards the model's parameters and buffers, its train/eval mode, the optimizer's state (moments,
    step counts, learning rates) and the torch / NumPy / Python random generators are restored exactly.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_iter < 2:
        raise ValueError(f"num_iter must be >= 2, got {num_iter}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = rng_state()
    was_training = model.training
    base = [float(g["lr"]) for g in optimizer.param_groups]
    ratios = [b / base[0] if base[0] > 0 else 1.0 for b in base]
    gamma = (end_lr / start_lr) ** (1 / (num_iter - 1))
    result = LRFindResult()
    avg, best = 0.0, math.inf
    try:
        model.train()
        it = iter(batches)
        for i in range(num_iter):
            lr = start_lr * gamma**i
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = lr * r
            try:
                batch = next(it)
            except StopIteration:
                it = iter(batches)
                try:
                    batch = next(it)
                except StopIteration:
                    raise ValueError("find_lr: no batches to train on") from None
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                result.stopped = "diverged"
                break
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
            optimizer.step()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.raw_losses.append(value)
            result.losses.append(smooth)
            best = min(best, smooth)
            if smooth > diverge * best and i > 0:
                result.stopped = "diverged"
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        model.train(was_training)
        set_rng_state(rng)
    if not result.lrs:
        raise ValueError(f"find_lr: the loss was not finite at the first learning rate ({start_lr:g})")
    result.lr, result.min_loss_lr, result.steepest_lr = pick_lr(result.lrs, result.losses)
    start = float(np.mean(result.raw_losses[:5]))
    drop = (start - min(result.losses)) / abs(start) if start else 0.0
    at = result.lrs.index(result.min_loss_lr) / len(result.lrs)
    if drop < min_drop:
        result.reliable, result.note = False, f"the loss fell only {max(drop, 0):.1%} during the test"
    elif at < 0.1:
        result.reliable, result.note = False, f"the loss was lowest at the start of the test (lr {result.min_loss_lr:.3g})"
    elif at > 0.9 and result.stopped != "diverged":
        result.note = f"the loss was still falling at the end of the test (lr {result.lrs[-1]:.3g})"
    return result


__all__ = ["RULE", "LRFindResult", "find_lr", "pick_lr"]
