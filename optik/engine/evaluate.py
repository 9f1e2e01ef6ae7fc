"""One validation pass, shared by the trainer (every epoch) and ``optik TASK val``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from optik import distributed as dist
from optik.device import autocast, float_outputs, input_memory_format, model_device, resolve_amp, to_device  # noqa: F401  (the engine's names)
from optik.tasks.base import Task


@torch.no_grad()
def evaluate(
    task: Task, model: nn.Module, loader: DataLoader, device: torch.device, amp: bool | str | torch.dtype | None = False
) -> dict[str, Any]:
    """Run ``model`` over ``loader``; returns the task metric's ``compute()`` plus ``loss``.

    ``amp``: the precision (a dtype from :func:`optik.device.resolve_amp`, or an ``amp=`` key value); the
    model's outputs reach the metric in fp32 whatever it is. Batches go in the model's memory format
    (channels-last models get NHWC inputs). Under torchrun each rank sees its shard (no padding) and the
    metric state is summed across ranks before computing, so the numbers equal a single-process evaluation.
    """
    was_training = model.training
    model.eval()
    metric = task.metric()
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of batch losses × n, n)
    amp = resolve_amp(amp, device, model)  # once for the pass (None for an exported file: it fixes its own)
    memory_format = input_memory_format(model)
    for inputs, targets in loader:
        inputs, targets = to_device(inputs, device, memory_format), to_device(targets, device)
        with autocast(device, amp):
            outputs, losses = task.eval_step(model, inputs, targets)
        outputs = float_outputs(outputs)  # scores and boxes in fp32: bf16 ties and rounding would move the metric
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
