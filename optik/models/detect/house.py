"""optik's house detector: a one-stage anchor-free detector in the YOLOv8 (Ultralytics 2023) / FCOS
(Tian et al. 2019) family, small enough to train on a CPU.

    images [0, 1] → normalise → backbone (C3, C4, C5) → PAN-FPN (P3, P4, P5) → decoupled head
    → raw maps (forward)  →  TAL + CIoU/DFL/BCE loss (forward_loss)
                          →  DFL decode, sigmoid, top-k, NMS (forward_detect)

``forward`` is pure tensor code (ONNX-exportable); assignment and NMS live outside it.

>>> model = create("house", task="detect", num_classes=3)                      # doctest: +SKIP
>>> [m.shape for m in model(torch.rand(2, 3, 128, 128))]                        # doctest: +SKIP
[torch.Size([2, 67, 16, 16]), torch.Size([2, 67, 8, 8]), torch.Size([2, 67, 4, 4])]
>>> model.eval().forward_detect(torch.rand(1, 3, 128, 128), conf=0.25)[0].keys()  # doctest: +SKIP
dict_keys(['boxes', 'scores', 'labels'])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, nms

from optik.errors import ConfigError, ModelError
from optik.models.detect.backbone import build_backbone
from optik.models.detect.head import DecoupledHead, dfl_distances, distances_to_boxes, flatten_maps, make_anchors
from optik.models.detect.loss import DetectionLoss
from optik.models.detect.neck import PANFPN
from optik.models.registry import register_model

# Backbone widths (stem, /4, /8, /16, /32) and CSP depths per stage; one neck/head width.
VARIANTS: dict[str, dict[str, Any]] = {
    "house_s": {"widths": (16, 24, 48, 96, 192), "depths": (1, 1, 1, 1), "neck_width": 48, "neck_depth": 1},
    "house": {"widths": (16, 32, 64, 128, 256), "depths": (1, 2, 2, 1), "neck_width": 64, "neck_depth": 1},
    "house_m": {"widths": (24, 48, 96, 192, 384), "depths": (1, 2, 3, 1), "neck_width": 96, "neck_depth": 2},
}


class HouseDetector(nn.Module):
    """Backbone → PAN-FPN → decoupled DFL head, with the Detector protocol (see module docstring).

    Args:
        num_classes: C (class indices 0 … C-1).
        in_chans: input channels.
        img_size: the training side in pixels (recorded only; any multiple of 32 works).
        widths, depths: native CSP backbone layout (ignored for a timm backbone).
        neck_width, neck_depth: width of P3–P5 and bottlenecks per neck block.
        backbone: None (native CSP) or ``"timm:<name>"``.
        backbone_pretrained: timm backbone weights: False, True (hub) or a local file.
        reg_max: DFL bins per box side.
        **loss_kwargs: :class:`DetectionLoss` options (``box``, ``cls``, ``dfl``, ``iou_loss``,
            ``cls_loss``, ``topk``, ``alpha``, ``beta``).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int | None = None,
        widths: tuple[int, ...] = VARIANTS["house"]["widths"],
        depths: tuple[int, ...] = VARIANTS["house"]["depths"],
        neck_width: int = 64,
        neck_depth: int = 1,
        backbone: str | None = None,
        backbone_pretrained: bool | str = False,
        reg_max: int = 16,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ModelError(f"a detector needs num_classes >= 1, got {num_classes}")
        if reg_max < 2:
            raise ModelError(f"reg_max must be >= 2 (DFL bins per side), got {reg_max}")
        if img_size is not None and img_size % 32:  # the stride-32 level must tile the input: say so before training starts
            raise ConfigError(f"bad value for 'imgsz': {img_size} (the house detector needs a multiple of 32, "
                              f"e.g. imgsz={max(32, round(img_size / 32) * 32)})")  # fmt: skip
        self.num_classes, self.img_size, self.reg_max = num_classes, img_size, reg_max
        self._config = {
            "widths": tuple(widths), "depths": tuple(depths), "neck_width": neck_width, "neck_depth": neck_depth,
            "backbone": backbone, "reg_max": reg_max,
        }  # fmt: skip
        self.backbone = build_backbone(backbone, tuple(widths), tuple(depths), in_chans, backbone_pretrained)
        self.strides = list(self.backbone.strides)
        if self.strides != [8, 16, 32]:
            raise ModelError(f"backbone {backbone!r} gives strides {self.strides}; the house detector needs [8, 16, 32]")
        self.neck = PANFPN(self.backbone.channels, neck_width, neck_depth)
        self.head = DecoupledHead(num_classes, neck_width, len(self.strides), reg_max)
        mean, std = self.backbone.mean, self.backbone.std
        if len(mean) != in_chans:  # grey input: the mean of the RGB statistics
            mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
        # Not persistent: derived from the backbone, so checkpoints stay architecture-only.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.criterion = DetectionLoss(num_classes, reg_max, **loss_kwargs)

    def config_dict(self) -> dict[str, Any]:
        """Architecture kwargs that, with ``num_classes``, rebuild this model through ``create``."""
        return dict(self._config)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``(B, C, H, W)`` in [0, 1], H and W multiples of 32 → raw maps
        ``[(B, 4·reg_max + C, H/s, W/s) for s in (8, 16, 32)]`` (DFL logits, then class logits)."""
        if not torch.jit.is_tracing() and (images.shape[-1] % 32 or images.shape[-2] % 32):
            raise ModelError(f"house detector input must be a multiple of 32 px per side, got {tuple(images.shape[-2:])}")
        x = (images - self.mean) / self.std
        return self.head(self.neck(self.backbone(x)))

    def decode(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Raw maps → ``boxes (B, A, 4)`` xyxy input px and ``scores (B, A, C)`` probabilities (traceable)."""
        dist, logits = flatten_maps(maps, self.reg_max)
        points, stride = make_anchors(maps, self.strides)
        return distances_to_boxes(dfl_distances(dist, self.reg_max), points, stride), logits.sigmoid()

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """``{"loss", "box", "cls", "dfl"}`` for a batch; targets hold ``"boxes"`` (N, 4) xyxy px, ``"labels"`` (N,)."""
        return self.criterion(self(images), self.strides, targets)

    @torch.no_grad()
    def forward_detect(
        self,
        images: Tensor,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        agnostic: bool = False,
        pre_nms_topk: int = 1000,
    ) -> list[dict[str, Tensor]]:
        """Detections per image: ``{"boxes" (N, 4) xyxy input px, "scores" (N,), "labels" (N,) int64}``."""
        boxes, scores = self.decode(self(images))
        size = (images.shape[-2], images.shape[-1])
        return [postprocess(b, s, size, conf, iou, max_det, agnostic, pre_nms_topk) for b, s in zip(boxes, scores)]


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
    pre_nms_topk: int = 1000,
) -> dict[str, Tensor]:
    """One image's ``boxes (A, 4)`` and class probabilities ``scores (A, C)`` → final detections.

    Every (point, class) pair above ``conf`` is a candidate (a point may report two classes); the best
    ``pre_nms_topk`` go through per-class NMS (``batched_nms``; plain ``nms`` when ``agnostic``), the
    best ``max_det`` survivors are kept, boxes clipped to ``image_size`` (H, W).

    >>> out = postprocess(torch.tensor([[0., 0., 10., 10.], [1., 0., 10., 10.]]), torch.tensor([[0.9], [0.8]]), (32, 32))
    >>> out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()
    ([[0.0, 0.0, 10.0, 10.0]], [0.8999999761581421], [0])
    """
    num_classes = scores.shape[1]
    flat = scores.flatten()
    idx = (flat > conf).nonzero().squeeze(1)
    if idx.numel() > pre_nms_topk:
        idx = idx[flat[idx].topk(pre_nms_topk).indices]
    point, labels, kept_scores = idx // num_classes, idx % num_classes, flat[idx]
    kept_boxes = clip_boxes_to_image(boxes[point], image_size)
    keep = nms(kept_boxes, kept_scores, iou) if agnostic else batched_nms(kept_boxes, kept_scores, labels, iou)
    keep = keep[:max_det]  # both NMS functions return indices sorted by decreasing score
    return {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]}


@register_model("house_s", task="detect")
def house_s(**kwargs: Any) -> HouseDetector:
    """Smallest house detector: narrower, one bottleneck per stage."""
    return HouseDetector(**{**VARIANTS["house_s"], **kwargs})


@register_model("house", task="detect")
def house(**kwargs: Any) -> HouseDetector:
    """The default house detector (~2.0 M params), fast on CPU at 128 px."""
    return HouseDetector(**{**VARIANTS["house"], **kwargs})


@register_model("house_m", task="detect")
def house_m(**kwargs: Any) -> HouseDetector:
    """A wider, deeper house detector for 320–640 px inputs."""
    return HouseDetector(**{**VARIANTS["house_m"], **kwargs})


__all__ = ["VARIANTS", "HouseDetector", "house", "house_m", "house_s", "postprocess"]
