"""Generating images from any :class:`~optik.models.generative.GenerativeModel`: the seeded calls that
validation, ``generate sample`` / ``eval`` and the sample artifacts share.

>>> from optik.models import create
>>> gan = create("cgan", task="generate", num_classes=3, in_chans=1, img_size=16, width=8)
>>> labels, per_row = class_grid_labels(6, 3)
>>> labels.tolist(), per_row
([0, 0, 1, 1, 2, 2], 2)
>>> generate_images(gan, 6, labels, seed=0).shape
torch.Size([6, 1, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from optik.device import model_device
from optik.models.generative.base import eval_mode, unwrap


@torch.no_grad()
def generate_images(model: nn.Module, n: int, labels: Tensor | None = None, *, seed: int = 0, **sampling: Any) -> Tensor:
    """``n`` images in ``[-1, 1]`` from ``model`` (or its DDP / EMA wrapper), in eval mode.

    ``labels`` condition a conditional model and are dropped for an unconditional one (datasets always
    carry labels); the same ``seed`` gives the same images. ``sampling``: the model's options (diffusion:
    ``steps``, ``guidance_scale``, ``sampler``, ``progress``; others ignore them).
    """
    inner = unwrap(model)
    if labels is not None:
        labels = labels.to(model_device(inner)) if inner.conditional else None
    with eval_mode(model):
        return inner.sample(n, labels, seed=seed, **sampling)


def generate_batches(
    model: nn.Module, n: int, labels: Tensor | None = None, *, batch: int, seed: int = 0, **sampling: Any
) -> Iterator[Tensor]:
    """:func:`generate_images` in batches of ``batch`` (batch ``k`` seeded ``seed + k``), each moved to the CPU.
    ``labels`` (``n`` of them, or None) are sliced along."""
    for k, start in enumerate(range(0, n, batch)):
        m = min(batch, n - start)
        lab = labels[start : start + m] if labels is not None else None
        yield generate_images(model, m, lab, seed=seed + k, **sampling).cpu()


def class_grid_labels(n: int, num_classes: int) -> tuple[Tensor | None, int]:
    """Labels for a grid with one row per class (``n`` images), and the row length (no classes: None, 8)."""
    if not num_classes:
        return None, min(8, n)
    per = max(1, math.ceil(n / num_classes))
    return torch.arange(num_classes).repeat_interleave(per)[:n], per


@torch.no_grad()
def latent_interpolation(model: nn.Module, rows: int = 6, steps: int = 8, seed: int = 0) -> Tensor | None:
    """Rows of images decoded along straight lines between random latent codes (class of row ``i``: ``i``);
    None for a model without a latent space (``latent`` is None)."""
    inner = unwrap(model)
    dim = inner.latent
    if not dim:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    a, b = torch.randn(rows, dim, generator=g), torch.randn(rows, dim, generator=g)
    t = torch.linspace(0, 1, steps)[None, :, None]
    dev = model_device(inner)
    z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, dim).to(dev)
    nc = inner.num_classes
    labels = (torch.arange(rows) % nc).repeat_interleave(steps).to(dev) if nc else None
    with eval_mode(model):
        return inner.decode(z, labels)


__all__ = ["class_grid_labels", "generate_batches", "generate_images", "latent_interpolation"]
