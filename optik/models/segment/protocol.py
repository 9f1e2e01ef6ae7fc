"""The Segmenter protocol: how instance, panoptic and universal segmentation models talk to the task.

Semantic models are plain modules, ``(B, 3, S, S)`` in [0, 1] → logits ``(B, C, S, S)``, and the task owns
their loss. Models whose loss and post-processing are their own (Mask R-CNN, Mask2Former / OneFormer, an
exported Mask R-CNN) say so explicitly by subclassing :class:`Segmenter` — a declaration, not a duck-typed
``hasattr`` check — and implement its two calls.

>>> class Mine(nn.Module, Segmenter): ...
>>> is_segmenter(Mine()), is_segmenter(nn.Conv2d(3, 2, 1))
(True, False)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Segmenter:
    """Mixin declaring the Segmenter protocol (list it after ``nn.Module`` or the adapter base).

    * ``forward_loss(images, targets) -> {"loss", …}`` (train mode): targets as the data gives them
      (``masks`` (N, S, S) bool + ``labels``…, or a ``semantic`` class map for universal models);
    * ``forward_predict(images, *, conf, iou, max_det)`` (eval mode) → instance ``[{"boxes", "scores",
      "labels", "masks" (N, S, S) probabilities}]``, panoptic ``[{"masks" (N, S, S) bool non-overlapping,
      "labels", "scores"}]`` or semantic ``(B, C, S, S)`` scores, on the letterboxed input.
    """

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} declares the Segmenter protocol but has no forward_loss")

    def forward_predict(self, images: Tensor, *, conf: float, iou: float, max_det: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} declares the Segmenter protocol but has no forward_predict")


def is_segmenter(model: nn.Module) -> bool:
    """True when ``model`` (or the module a DDP wrapper holds) declares the Segmenter protocol."""
    return isinstance(getattr(model, "module", model), Segmenter)


__all__ = ["Segmenter", "is_segmenter"]
