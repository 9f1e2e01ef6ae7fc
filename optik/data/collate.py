"""Batching (image, target) pairs for DataLoaders: one image tensor per batch, targets kept as a
list of per-image dicts (their object counts differ), tv_tensors unwrapped to plain tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optik.errors import DatasetError


def stack_images(batch: Sequence[tuple[Tensor, Any]], transforms: str) -> Tensor:
    """The images of ``(image, target)`` pairs as one (B, 3, S, S) plain tensor; different sizes are a
    DatasetError pointing at the letterboxing ``transforms``."""
    images = [img.as_subclass(Tensor) for img, _ in batch]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise DatasetError(
            f"cannot batch images of different sizes {sorted(shapes)}; letterbox them to one "
            f"size ({transforms})"
        )
    return torch.stack(images)


def detection_collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """[(image (3, S, S), target)] -> (images (B, 3, S, S) plain tensor, targets with plain
    tensor boxes). All images must share one size (use a LetterBox transform).

    >>> imgs, tgts = detection_collate([(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})])
    >>> imgs.shape, tgts[0]["boxes"].shape
    (torch.Size([1, 3, 4, 4]), torch.Size([0, 4]))
    """
    images = stack_images(batch, "detect_transforms")
    targets = []
    for _, t in batch:
        t = dict(t)
        t["boxes"] = t["boxes"].as_subclass(Tensor)
        targets.append(t)
    return images, targets


def segmentation_collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """[(image (3, S, S), target)] -> (images (B, 3, S, S), per-image targets with plain tensors:
    semantic int64 (S, S), masks bool (N, S, S), boxes float32). Images must share one size.

    >>> imgs, t = segmentation_collate([(torch.zeros(3, 4, 4), {"semantic": torch.zeros(4, 4)})])
    >>> imgs.shape, t[0]["semantic"].dtype
    (torch.Size([1, 3, 4, 4]), torch.int64)
    """
    images = stack_images(batch, "seg_transforms")
    targets = []
    for _, t in batch:
        t = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in t.items()}
        if "semantic" in t:
            t["semantic"] = t["semantic"].long()
        if "masks" in t:
            t["masks"] = t["masks"].bool()
        targets.append(t)
    return images, targets


__all__ = ["detection_collate", "segmentation_collate", "stack_images"]
