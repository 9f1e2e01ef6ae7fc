"""The house detector's training loss (YOLOv8, Ultralytics 2023): TAL targets, then

* **box** — CIoU (or GIoU) between predicted and assigned boxes, weighted per positive by its
  IoU-aware target score (``torchvision.ops.complete_box_iou_loss`` / ``generalized_box_iou_loss``);
* **dfl** — Distribution Focal Loss (GFL, Li et al. 2020): cross-entropy pulling each side's
  distribution onto the two bins around the true distance;
* **cls** — BCE of every class logit against the IoU-aware target (optionally focal, Lin et al. 2017,
  or varifocal, Zhang et al. 2021).

All three are sums normalised by the sum of target scores, so the loss scale does not depend on the
batch size or the number of objects. Returned terms are already weighted: ``loss = box + cls + dfl``.

>>> crit = DetectionLoss(num_classes=2, reg_max=16)
>>> maps = [torch.zeros(1, 66, 8, 8), torch.zeros(1, 66, 4, 4), torch.zeros(1, 66, 2, 2)]
>>> t = [{"boxes": torch.tensor([[8., 8., 40., 40.]]), "labels": torch.tensor([1])}]
>>> sorted(crit(maps, [8, 16, 32], t))
['box', 'cls', 'dfl', 'loss']
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

from optik.errors import ConfigError
from optik.models.detect.assigner import TaskAlignedAssigner, pad_targets
from optik.models.detect.head import boxes_to_distances, dfl_distances, distances_to_boxes, flatten_maps, make_anchors

IOU_LOSSES = {"ciou": complete_box_iou_loss, "giou": generalized_box_iou_loss}
CLS_LOSSES = ("bce", "focal", "varifocal")


def dfl_loss(dist: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss. ``dist (N, 4, R)`` logits, ``target (N, 4)`` in ``[0, R-1)`` → ``(N,)``.

    The true distance ``y`` lies between bins ``⌊y⌋`` and ``⌊y⌋+1``; the loss is their cross-entropies
    weighted by closeness, minimal when the expectation of the distribution is ``y``.
    """
    left = target.long()
    w_right = target - left
    ce = lambda idx: F.cross_entropy(dist.flatten(0, 1), idx.flatten(), reduction="none").view_as(target)  # noqa: E731
    return (ce(left) * (1 - w_right) + ce(left + 1) * w_right).mean(-1)


def varifocal_loss(logits: Tensor, target: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """VarifocalNet's loss, summed: positives weighted by their target quality ``q``, negatives
    down-weighted by ``α·p^γ`` (the focal idea applied to negatives only)."""
    p = logits.sigmoid()
    weight = torch.where(target > 0, target, alpha * p.detach().pow(gamma))
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum()


class DetectionLoss:
    """YOLOv8-style loss over the head's raw maps.

    Args:
        num_classes: C.
        reg_max: DFL bins per side (must match the head).
        box, cls, dfl: term weights (YOLOv8's 7.5 / 0.5 / 1.5).
        iou_loss: ``"ciou"`` (default) or ``"giou"``.
        cls_loss: ``"bce"`` (default), ``"focal"`` or ``"varifocal"``.
        topk, alpha, beta: :class:`TaskAlignedAssigner` settings.
    """

    def __init__(
        self,
        num_classes: int,
        reg_max: int = 16,
        *,
        box: float = 7.5,
        cls: float = 0.5,
        dfl: float = 1.5,
        iou_loss: str = "ciou",
        cls_loss: str = "bce",
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ) -> None:
        if iou_loss not in IOU_LOSSES:
            raise ConfigError(f"iou_loss={iou_loss!r}; choose one of {sorted(IOU_LOSSES)}")
        if cls_loss not in CLS_LOSSES:
            raise ConfigError(f"cls_loss={cls_loss!r}; choose one of {list(CLS_LOSSES)}")
        self.num_classes, self.reg_max = num_classes, reg_max
        self.weights = {"box": box, "cls": cls, "dfl": dfl}
        self.iou_loss, self.cls_loss = IOU_LOSSES[iou_loss], cls_loss
        self.assigner = TaskAlignedAssigner(topk, alpha, beta)

    def classification(self, logits: Tensor, target: Tensor) -> Tensor:
        """Summed classification loss, ``(B, A, C)`` logits vs IoU-aware targets."""
        if self.cls_loss == "focal":
            return sigmoid_focal_loss(logits, target, reduction="sum")
        if self.cls_loss == "varifocal":
            return varifocal_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")

    def __call__(self, maps: list[Tensor], strides: list[int], targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Loss of raw head maps ``L × (B, 4·reg_max + C, H_l, W_l)`` against per-image targets
        (``"boxes"`` (N, 4) xyxy px, ``"labels"`` (N,) int64). Returns ``{"loss", "box", "cls", "dfl"}``."""
        dist, logits = flatten_maps(maps, self.reg_max)
        points, stride = make_anchors(maps, strides)
        pred_boxes = distances_to_boxes(dfl_distances(dist, self.reg_max), points, stride)
        gt_labels, gt_boxes, gt_mask = pad_targets(targets, self.num_classes, logits.device)

        a = self.assigner(logits.detach().sigmoid(), pred_boxes.detach(), points, gt_labels, gt_boxes, gt_mask)
        norm = a.scores.sum().clamp(min=1.0)
        cls = self.classification(logits, a.scores) / norm

        weight = a.scores.sum(-1)[a.fg]  # (P,) each positive's target quality
        box = (self.iou_loss(pred_boxes[a.fg], a.boxes[a.fg], reduction="none") * weight).sum() / norm
        fg_points, fg_stride = points.expand_as(pred_boxes[..., :2])[a.fg], stride.expand_as(pred_boxes[..., :1])[a.fg]
        target_dist = boxes_to_distances(a.boxes[a.fg], fg_points, fg_stride).clamp(0, self.reg_max - 1 - 0.01)
        dfl = (dfl_loss(dist[a.fg].unflatten(-1, (4, self.reg_max)), target_dist) * weight).sum() / norm

        terms = {k: v * self.weights[k] for k, v in (("box", box), ("cls", cls), ("dfl", dfl))}
        return {"loss": terms["box"] + terms["cls"] + terms["dfl"], **{k: v.detach() for k, v in terms.items()}}


__all__ = ["CLS_LOSSES", "DetectionLoss", "IOU_LOSSES", "dfl_loss", "varifocal_loss"]
