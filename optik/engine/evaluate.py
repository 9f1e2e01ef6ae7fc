"""One validation pass, shared by the trainer (every epoch) and ``optik TASK val``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from optik.engine import distributed as dist
from optik.tasks.base import Task


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast when ``amp=true`` (opt-in: on CPUs without bf16 units it is far slower)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its ``device`` attribute (exported runtimes), else its first parameter or
    buffer, else the CPU — never an error for a module without parameters.

    >>> model_device(nn.Identity())
    device(type='cpu')
    """
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> dict[str, Any]:
    """Run ``model`` over ``loader``; returns the task metric's ``compute()`` plus ``loss``.

    Under torchrun each rank sees its shard (no padding) and the metric state is summed across
    ranks before computing, so the numbers equal a single-process evaluation.
    """
    was_training = model.training
    model.eval()
    metric = task.metric()
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of batch losses × n, n)
    for inputs, targets in loader:
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        with autocast(device, amp):
            outputs, losses = task.eval_step(model, inputs, targets)
        if losses is not None:
            n = len(inputs) if hasattr(inputs, "__len__") else 1
            loss_sum += torch.tensor([float(losses["loss"]) * n, n], dtype=torch.float64)
        task.update_metric(metric, outputs, targets)
    metric.sync()
    if dist.world_size() > 1:
        torch.distributed.all_reduce(loss_sum)
    result = dict(metric.compute())
    if loss_sum[1] > 0:
        result["loss"] = float(loss_sum[0] / loss_sum[1])
    model.train(was_training)
    return result
