"""Task-aligned assignment (TAL; TOOD, Feng et al. 2021), as YOLOv8 uses it: which points learn which
ground-truth box, and how confident they should be.

For every (GT, point) pair with the point's centre inside the GT box, the alignment metric is
``t = s^α · u^β`` — ``s`` the predicted score of the GT's class, ``u`` the IoU of the predicted box
with the GT. Each GT takes its top-k points by ``t``; a point claimed by several GTs goes to the one
its box overlaps most. The class target of a positive is IoU-aware: ``t`` normalised per GT so that
the GT's best point gets that GT's best IoU (``t / max t · max u``), 0 for background.

Vectorised over the batch with padded GTs (``gt_mask`` marks the real ones); zero-GT images simply
get no positives.

>>> labels, boxes, mask = pad_targets([{"boxes": torch.tensor([[0., 0., 32., 32.]]), "labels": torch.tensor([1])},
...                                    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
>>> labels.shape, boxes.shape, mask.tolist()
(torch.Size([2, 1]), torch.Size([2, 1, 4]), [[True], [False]])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from optik.models.detect.targets import checked_target


class Assignment(NamedTuple):
    """Per-point targets, ``A`` points per image."""

    labels: Tensor  # (B, A) int64, class of the assigned GT (0 for background — read it with fg)
    boxes: Tensor  # (B, A, 4) xyxy px of the assigned GT
    scores: Tensor  # (B, A, C) IoU-aware class targets in [0, 1]; all zero for background
    fg: Tensor  # (B, A) bool, positive points
    gt_index: Tensor  # (B, A) int64, index of the assigned GT in the padded GT tensors


def pad_targets(
    targets: list[dict[str, Any]], num_classes: int | None = None, device: Any = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image target dicts → padded ``labels (B, M)``, ``boxes (B, M, 4)``, ``mask (B, M)`` (M = most GTs).

    Raises:
        DatasetError: a label outside ``0 … num_classes-1`` or boxes not of shape (N, 4).
    """
    m = max((len(t["labels"]) for t in targets), default=0)
    labels = torch.zeros(len(targets), m, dtype=torch.long, device=device)
    boxes = torch.zeros(len(targets), m, 4, dtype=torch.float32, device=device)
    mask = torch.zeros(len(targets), m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        b, lab = checked_target(t, i, num_classes, device)
        n = len(lab)
        labels[i, :n], boxes[i, :n], mask[i, :n] = lab, b, True
    return labels, boxes, mask


def pairwise_box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of xyxy boxes that broadcast against each other: ``(..., 4), (..., 4) -> (...)``.

    ``torchvision.ops.box_iou`` is all-pairs on 2-D inputs only; the assigner needs (B, M, 1) × (B, 1, A).
    """
    inter = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


class TaskAlignedAssigner:
    """TAL with YOLOv8's defaults (``topk=10, alpha=0.5, beta=6``: IoU dominates the metric).

    >>> assigner = TaskAlignedAssigner(topk=4)
    >>> pts = torch.tensor([[4., 4.], [12., 4.], [4., 12.], [12., 12.]])
    >>> a = assigner(torch.full((1, 4, 2), 0.5), torch.tensor([[[0., 0., 8., 8.]] * 4]), pts,
    ...              torch.tensor([[1]]), torch.tensor([[[0., 0., 8., 8.]]]), torch.tensor([[True]]))
    >>> a.fg.tolist(), a.labels[0, 0].item()
    ([[True, False, False, False]], 1)
    """

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        gt_mask: Tensor,
    ) -> Assignment:
        """Assign GTs to points.

        Args:
            pred_scores: ``(B, A, C)`` class probabilities (after sigmoid).
            pred_boxes: ``(B, A, 4)`` predicted xyxy px.
            points: ``(A, 2)`` point centres (x, y) px.
            gt_labels: ``(B, M)`` int64; gt_boxes: ``(B, M, 4)`` xyxy px; gt_mask: ``(B, M)`` bool, real GTs.
        """
        b, a, c = pred_scores.shape
        if gt_boxes.shape[1] == 0:  # no GT anywhere in the batch: all background
            z = pred_scores.new_zeros((b, a), dtype=torch.long)
            return Assignment(z, pred_boxes.new_zeros(b, a, 4), torch.zeros_like(pred_scores), z.bool(), z)

        # (B, M, A): the point's centre lies strictly inside the (real) GT box
        ltrb = torch.cat([points - gt_boxes[:, :, None, :2], gt_boxes[:, :, None, 2:] - points], dim=-1)
        candidate = (ltrb.amin(-1) > self.eps) & gt_mask[..., None]

        iou = pairwise_box_iou(gt_boxes[:, :, None], pred_boxes[:, None]) * candidate
        score = pred_scores.transpose(1, 2).gather(1, gt_labels[..., None].expand(-1, -1, a))  # s of the GT's class
        metric = score.pow(self.alpha) * iou.pow(self.beta) * candidate

        top = metric.topk(min(self.topk, a), dim=-1).indices
        pos = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate

        # A point claimed by several GTs keeps only the one its predicted box overlaps most.
        shared = pos.sum(1, keepdim=True) > 1
        best = F.one_hot(iou.masked_fill(~pos, -1.0).argmax(1), gt_boxes.shape[1]).transpose(1, 2).bool()
        pos = torch.where(shared, best, pos)

        fg = pos.any(1)
        gt_index = pos.float().argmax(1)  # one-hot along M for fg points
        labels = gt_labels.gather(1, gt_index)
        boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))

        metric, iou = metric * pos, iou * pos
        quality = (metric / (metric.amax(-1, keepdim=True) + self.eps) * iou.amax(-1, keepdim=True)).amax(1)
        scores = F.one_hot(labels, c).to(pred_scores.dtype) * (quality * fg)[..., None]
        return Assignment(labels, boxes, scores, fg, gt_index)


__all__ = ["Assignment", "TaskAlignedAssigner", "pad_targets", "pairwise_box_iou"]
