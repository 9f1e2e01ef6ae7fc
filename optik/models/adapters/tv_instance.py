"""``tv:maskrcnn`` (task="instance") — torchvision Mask R-CNN (He et al. 2017) behind optik's Segmenter protocol.

Two name forms:

* ``tv:maskrcnn``: built here, random init, a resnet18-FPN backbone by default (``backbone="resnet50"``,
  ``"mobilenet_v3_large"`` …, any backbone ``tv:fasterrcnn`` takes);
* torchvision's own builders by name: ``tv:maskrcnn_resnet50_fpn``, ``tv:maskrcnn_resnet50_fpn_v2``
  (``pretrained=True`` downloads the COCO weights and gives them new class heads).

The boundary is the detection adapter's (:mod:`optik.models.adapters.tv_detection`, whose pieces this
module reuses): 0-based labels, ``[0, 1]`` letterboxed ``(B, 3, S, S)`` input normalised but never resized
again, boxes in input pixels; masks come back as ``(N, S, S)`` probabilities pasted at input size.

>>> model = create("tv:maskrcnn", task="instance", num_classes=3, img_size=96)        # doctest: +SKIP
>>> model.forward_loss(images, targets)["loss"].backward()   # masks (N,S,S), labels     # doctest: +SKIP
>>> model.eval().forward_predict(images, conf=0.25)  # [{"boxes", "scores", "labels", "masks"}]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from optik.errors import DatasetError, ModelError
from optik.models.adapters.tv_detection import (
    _MIN_BOX_SIZE,
    TVDetector,
    _fpn_backbone,
    _loss_branch,
    check_request,
    explained_build_errors,
    reset_class_head,
    wrap_tv_model,
)
from optik.models.detect.targets import checked_target
from optik.models.segment.protocol import Segmenter

FAMILY = "maskrcnn"
_DEFAULT_BACKBONE = "resnet18"
# Small-family defaults for 64–512 px inputs (torchvision's are for ~800 px COCO images): the box head
# (a 12544→1024 fc layer) runs on every sampled RoI in training and on every proposal at inference,
# which dominates a CPU step at small sizes.
_FAMILY_DEFAULTS = {"box_batch_size_per_image": 128, "rpn_post_nms_top_n_test": 300}  # torchvision: 512, 1000


def _plain(x: Any, device: Any = None) -> Tensor:
    return torch.as_tensor(x).as_subclass(Tensor).to(device=device)


class TVInstanceSegmenter(TVDetector, Segmenter):
    """A torchvision ``MaskRCNN`` with optik's Segmenter protocol (``subtask = "instance"``).

    It is a :class:`~optik.models.adapters.tv_detection.TVDetector` (so ``forward_detect`` gives boxes only)
    whose targets also carry masks and whose ``forward_predict`` adds the mask probabilities.
    """

    subtask = "instance"

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        """``forward_loss`` with targets, else ``forward_predict`` with its defaults."""
        return self.forward_predict(images) if targets is None else self.forward_loss(images, targets)

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Mask R-CNN's loss terms (``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``,
        ``loss_rpn_box_reg``) and their sum ``"loss"`` for ``(B, 3, S, S)`` images in [0, 1].

        Targets per image: ``masks`` (N, S, S) bool/uint8, ``labels`` (N,) 0-based, optional ``boxes`` (N, 4)
        xyxy (else taken from the masks) and ``iscrowd`` (crowd regions are dropped: not training targets).
        Works in eval mode too (a validation loss without BatchNorm updates).
        """
        tv_targets = [self._to_tv_target(t, i, images.device) for i, t in enumerate(targets)]
        with _loss_branch(self.model):
            losses = self.model(list(images.unbind(0)), tv_targets)
        return {"loss": sum(losses.values()), **losses}

    @torch.no_grad()
    def forward_predict(
        self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 100
    ) -> list[dict[str, Tensor]]:
        """Instances for ``(B, 3, S, S)`` images: per image ``{"boxes" (N, 4) xyxy input pixels, "scores" (N,),
        "labels" (N,) 0-based, "masks" (N, S, S) float probabilities in [0, 1]}``, best first.

        ``conf``/``iou``/``max_det`` are the RoI heads' score threshold, per-class NMS IoU and detections
        per image. Call in eval mode.
        """
        if self.model.training:
            raise ModelError("TVInstanceSegmenter.forward_predict needs eval mode: call model.eval() first")
        self._set_postprocess(conf, iou, max_det)
        out = []
        for p in self.model(list(images.unbind(0))):
            keep = torchvision.ops.remove_small_boxes(p["boxes"], _MIN_BOX_SIZE)
            out.append({
                "boxes": p["boxes"][keep].float(), "scores": p["scores"][keep].float(),
                "labels": (p["labels"][keep] - self.label_offset).long(),
                "masks": p["masks"][keep, 0].float().clamp_(0, 1),  # (N, 1, S, S) pasted at input size
            })  # fmt: skip
        return out

    def get_classifier(self) -> nn.Module:
        """The RoI heads: both class-sized layers (box predictor, mask logits) live there, so ``load_weights``
        skips exactly the mismatched ones when the class count changes."""
        return self.model.roi_heads

    def _to_tv_target(self, target: dict[str, Any], index: int, device: torch.device) -> dict[str, Tensor]:
        where = f"image {target.get('image_id', index)}"
        if "masks" not in target:
            raise DatasetError(f"{where}: an instance target needs 'masks' (N, H, W)")
        masks = _plain(target["masks"], device).to(torch.uint8)
        labels = _plain(target["labels"], device).long().reshape(-1)
        if masks.ndim != 3 or len(masks) != len(labels):
            raise DatasetError(f"{where}: 'masks' must be ({len(labels)}, H, W) to match 'labels', got {tuple(masks.shape)}")
        if "boxes" in target:
            boxes, labels = checked_target(target, index, self.num_classes, device)
        else:
            boxes = torchvision.ops.masks_to_boxes(masks) if len(masks) else masks.new_zeros((0, 4), dtype=torch.float32)
            boxes, labels = checked_target({**target, "boxes": boxes.float()}, index, self.num_classes, device)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & masks.flatten(1).bool().any(1)
        if "iscrowd" in target:
            keep &= _plain(target["iscrowd"], device).reshape(-1) == 0
        return {"boxes": boxes[keep], "labels": labels[keep] + self.label_offset, "masks": masks[keep]}


def reset_mask_head(model: tvd.MaskRCNN, num_classes: int) -> None:
    """New box and mask class heads for ``num_classes`` (optik's C, no background), every other weight kept.

    >>> model = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)        # doctest: +SKIP
    >>> reset_mask_head(model, 3)                        # 91 COCO classes → 3        # doctest: +SKIP
    """
    reset_class_head(model, num_classes)  # box predictor (FasterRCNN part)
    old = model.roi_heads.mask_predictor
    model.roi_heads.mask_predictor = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels, num_classes + 1)


def _build(name: str, num_classes: int, backbone: str | None, pretrained: bool, **kwargs: Any) -> nn.Module:
    if name == FAMILY:
        kwargs = {**_FAMILY_DEFAULTS, **kwargs}
        body = _fpn_backbone(backbone or _DEFAULT_BACKBONE, pretrained, p3_p7=False)
        if (backbone or "").startswith("mobilenet"):  # 3 levels (2 stages + pool), several sizes per level
            anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
            kwargs.setdefault("rpn_anchor_generator", anchors)
        return tvd.MaskRCNN(body, num_classes=num_classes + 1, **kwargs)
    fn = getattr(tvd, name)
    if not pretrained:
        return fn(weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs)
    model = fn(weights="DEFAULT", **kwargs)  # COCO weights fix 91 classes; the class heads are then rebuilt
    reset_mask_head(model, num_classes)
    return model


def _known_names() -> list[str]:
    return [FAMILY, *(b for b in torchvision.models.list_models(module=tvd) if b.startswith("maskrcnn_"))]


def create_tv_instance(
    name: str,
    *,
    num_classes: int = 80,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    backbone: str | None = None,
    frozen_bn: bool | None = None,
    **kwargs: Any,
) -> TVInstanceSegmenter:
    """Build ``tv:<name>`` (``maskrcnn`` or a torchvision ``maskrcnn_*`` builder) for ``num_classes`` classes.

    Args:
        name: ``maskrcnn`` (built here, resnet18-FPN default; 128 sampled RoIs per image and 300 proposals at
            inference instead of torchvision's 512 and 1000 — ``box_batch_size_per_image=``,
            ``rpn_post_nms_top_n_test=`` change them) or ``maskrcnn_resnet50_fpn`` / ``…_v2``.
        backbone: for ``maskrcnn``: a torchvision classifier name (``resnet18``, ``resnet50``, ``mobilenet_v3_large``).
        pretrained: ``None``/``False`` random; ``True`` torchvision's download (COCO for builder names,
            ImageNet backbone for ``maskrcnn``) with new class heads; a path loads optik or torchvision weights.
        frozen_bn: ``True`` turns the backbone's BatchNorms into ``FrozenBatchNorm2d`` (recorded by ``config_dict``).
        **kwargs: to the torchvision constructor (``rpn_anchor_generator``, ``box_detections_per_img`` …);
            ``subtask``/``isthing``/``class_names`` are accepted and ignored (instances are all things).

    Raises:
        ModelError: unknown name or backbone, a failing constructor or download, ``subtask`` other than instance.

    >>> model = create_tv_instance("maskrcnn", num_classes=2, img_size=64)
    >>> sorted(model.config_dict())
    ['backbone', 'frozen_bn']
    """
    subtask = kwargs.pop("subtask", None)
    if subtask not in (None, "instance"):
        raise ModelError(f"tv:{name} is an instance segmenter; task={subtask} needs mask2former/oneformer")
    for key in ("class_names", "isthing"):
        kwargs.pop(key, None)
    check_request(name, in_chans, num_classes, _known_names(), "instance segmenter")
    if name != FAMILY and backbone is not None:
        raise ModelError(f"tv:{name} fixes its backbone; use tv:maskrcnn with backbone={backbone!r}")
    with explained_build_errors(name, pretrained):
        model = _build(name, num_classes, backbone, pretrained is True, **kwargs)
    if name == FAMILY:
        backbone = backbone or _DEFAULT_BACKBONE
    return wrap_tv_model(TVInstanceSegmenter, model, num_classes, img_size, backbone, frozen_bn, pretrained)


__all__ = ["TVInstanceSegmenter", "create_tv_instance", "reset_mask_head"]
