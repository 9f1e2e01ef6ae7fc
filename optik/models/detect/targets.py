"""The one check of a detection target that every detector runs before its loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optik.errors import DatasetError


def checked_target(target: dict[str, Any], index: int, num_classes: int | None, device: Any = None) -> tuple[Tensor, Tensor]:
    """``target["boxes"]`` (N, 4) float and ``target["labels"]`` (N,) long on ``device``, as plain
    tensors (tv_tensors unwrapped). Raises :class:`DatasetError` naming the image when the shapes
    disagree or a label lies outside ``0 … num_classes-1``.

    >>> b, l = checked_target({"boxes": [[0, 0, 4, 4]], "labels": [1]}, 0, num_classes=2)
    >>> b.shape, l.tolist()
    (torch.Size([1, 4]), [1])
    """
    boxes = torch.as_tensor(target["boxes"]).as_subclass(Tensor).to(device=device, dtype=torch.float32)
    labels = torch.as_tensor(target["labels"]).as_subclass(Tensor).to(device=device, dtype=torch.long).reshape(-1)
    n = len(labels)
    where = f"image {target.get('image_id', index)}"
    if boxes.shape != (n, 4) and not (n == 0 and boxes.numel() == 0):
        raise DatasetError(f"{where}: 'boxes' must be ({n}, 4) to match 'labels', got {tuple(boxes.shape)}")
    if n and num_classes is not None and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise DatasetError(f"{where}: 'labels' {labels.tolist()} outside 0..{num_classes - 1} (num_classes={num_classes})")
    return boxes.reshape(-1, 4), labels
