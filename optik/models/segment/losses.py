"""Semantic segmentation losses: cross-entropy, focal (Lin et al. 2017, "Focal Loss for Dense Object
Detection", softmax form) and multi-class soft Dice (Milletari et al. 2016, "V-Net"), alone or summed.

Every term ignores ``ignore_index`` pixels, and a batch with no valid pixel gives 0 (not NaN), so a
crop of pure void never poisons training.

>>> criterion = SegmentationLoss("ce+dice")
>>> out = criterion(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
>>> sorted(out)
['ce', 'dice', 'loss']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from optik.errors import ConfigError

KINDS = ("ce", "dice", "focal", "ce+dice", "focal+dice")


def _weighted_mean(per_pixel: Tensor, target: Tensor, valid: Tensor, weight: Tensor | None) -> Tensor:
    """``sum(w[t] · loss) / sum(w[t])`` over valid pixels (torch's ``reduction="mean"``); 0 when none is valid."""
    w = valid.to(per_pixel.dtype)
    if weight is not None:
        w = w * weight[target]
    return (per_pixel * w).sum() / w.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = 255,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """``F.cross_entropy(..., reduction="mean")`` except that an all-ignore batch gives 0 instead of NaN.

    >>> cross_entropy(torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), 255)).item()
    0.0
    """
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    per_pixel = F.cross_entropy(logits, safe, weight=weight, reduction="none", label_smoothing=label_smoothing)
    # reduction="none" already multiplies by weight[target]; divide by the same weights' sum.
    w = valid.to(per_pixel.dtype) if weight is None else valid * weight[safe]
    return (per_pixel * valid).sum() / w.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    ignore_index: int = 255,
    weight: Tensor | None = None,
) -> Tensor:
    """Softmax focal loss ``-(1 - p_t)^γ · log p_t``, class-weighted mean over valid pixels (γ=0 is cross-entropy).

    >>> focal_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), gamma=0.0).item()  # log 2
    0.6931471824645996
    """
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    logp_t = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    per_pixel = -((1 - logp_t.exp()) ** gamma) * logp_t
    return _weighted_mean(per_pixel, safe, valid, weight)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = 255,
    weight: Tensor | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Multi-class soft Dice loss ``mean_c (1 - 2·|P_c ∩ T_c| / (|P_c| + |T_c|))`` on softmax probabilities.

    Sums run over the whole batch (as segmentation_models_pytorch does); ignore pixels count in neither
    P nor T; classes absent from both the target and the (argmax) prediction are left out of the mean
    (their Dice is undefined), and with no class left the loss is 0. ``weight`` gives a weighted mean
    over classes.

    >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])           # (1, 2, 1, 2): a perfect guess
    >>> round(dice_loss(logits, torch.tensor([[[0, 1]]])).item(), 4)
    0.0
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    safe = torch.where(valid.squeeze(1), target, 0)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(probs.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = (probs + onehot).sum(dims)
    dice = 2 * intersection / cardinality.clamp_min(eps)
    predicted = F.one_hot(logits.detach().argmax(1), num_classes).permute(0, 3, 1, 2) * valid
    present = ((onehot.sum(dims) > 0) | (predicted.sum(dims) > 0)).to(probs.dtype)
    if weight is not None:
        present = present * weight.to(probs.dtype)
    return ((1 - dice) * present).sum() / present.sum().clamp_min(eps)


class SegmentationLoss:
    """The semantic segmentation criterion: ``(logits (B, C, H, W), target (B, H, W) int64) -> dict``.

    Args:
        kind: ``"ce"``, ``"dice"``, ``"focal"``, ``"ce+dice"`` or ``"focal+dice"`` (terms summed, weight 1 each).
        ignore_index: target value of void pixels (255, as in optik's data and Pascal VOC).
        class_weights: per-class weights (length C) for the CE/focal pixel mean and the Dice class mean.
        focal_gamma: γ of the focal term.
        label_smoothing: for the CE term (torch's definition).

    Returns:
        ``{"loss"}`` plus each term by name (``"ce"`` or ``"focal"``, ``"dice"``), scalars.

    >>> loss = SegmentationLoss("focal+dice", class_weights=[0.5, 1.0, 1.0])
    >>> sorted(loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))))
    ['dice', 'focal', 'loss']
    """

    def __init__(
        self,
        kind: str = "ce+dice",
        ignore_index: int = 255,
        class_weights: Sequence[float] | Tensor | None = None,
        focal_gamma: float = 2.0,
        label_smoothing: float = 0.0,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"loss: unknown segmentation loss {kind!r}; choose one of {', '.join(KINDS)}")
        if focal_gamma < 0 or not 0 <= label_smoothing < 1:
            raise ConfigError(
                f"loss: need focal_gamma >= 0 and 0 <= label_smoothing < 1, got {focal_gamma}, {label_smoothing}"
            )
        self.kind, self.ignore_index = kind, ignore_index
        self.focal_gamma, self.label_smoothing = focal_gamma, label_smoothing
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if self.class_weights is not None and (self.class_weights.ndim != 1 or (self.class_weights < 0).any()):
            raise ConfigError(f"loss: class_weights must be a list of non-negative numbers, got {class_weights}")
        self.terms = kind.split("+")

    def __call__(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"segmentation loss needs logits (B, C, H, W) and target (B, H, W), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")  # fmt: skip
        weight = None
        if self.class_weights is not None:
            if len(self.class_weights) != logits.shape[1]:
                raise ConfigError(f"loss: {len(self.class_weights)} class_weights for {logits.shape[1]} classes")
            weight = self.class_weights.to(logits.device)
        target = target.long()
        out: dict[str, Tensor] = {}
        if "ce" in self.terms:
            out["ce"] = cross_entropy(logits.float(), target, ignore_index=self.ignore_index, weight=weight,
                                      label_smoothing=self.label_smoothing)  # fmt: skip
        if "focal" in self.terms:
            out["focal"] = focal_loss(logits, target, gamma=self.focal_gamma, ignore_index=self.ignore_index,
                                      weight=weight)  # fmt: skip
        if "dice" in self.terms:
            out["dice"] = dice_loss(logits, target, ignore_index=self.ignore_index, weight=weight)
        return {"loss": sum(out.values()), **out}  # type: ignore[dict-item]

    def __repr__(self) -> str:
        return f"SegmentationLoss(kind={self.kind!r}, ignore_index={self.ignore_index})"


__all__ = ["KINDS", "SegmentationLoss", "cross_entropy", "dice_loss", "focal_loss"]
