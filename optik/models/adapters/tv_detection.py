"""``tv:<name>`` — torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD) behind optik's Detector protocol.

Two name forms:

* small families built here, random init, any ``backbone`` torchvision has a builder for:
  ``tv:fasterrcnn`` (resnet18-FPN by default, or ``backbone="mobilenet_v3_large"``),
  ``tv:retinanet`` and ``tv:fcos`` (resnet18-FPN P3–P7), ``tv:ssdlite`` (SSDlite320 MobileNetV3);
* torchvision's own builders by name (``tv:fasterrcnn_resnet50_fpn``, ``tv:retinanet_resnet50_fpn_v2``,
  ``tv:ssd300_vgg16`` …, see ``torchvision.models.list_models(module=torchvision.models.detection)``).

The wrapper keeps optik's conventions at the boundary: class indices 0..C-1 (torchvision's
Faster R-CNN and SSD reserve label 0 for background; RetinaNet and FCOS score classes with
sigmoids and have none), ``[0, 1]`` letterboxed ``(B, 3, S, S)`` input that is normalised but never
resized again, and boxes in input pixels.

>>> model = create("tv:fasterrcnn", task="detect", num_classes=3, img_size=96)          # doctest: +SKIP
>>> losses = model.forward_loss(images, targets)        # {"loss", "loss_classifier", "loss_box_reg", …}
>>> preds = model.eval().forward_detect(images, conf=0.25, max_det=100)  # [{"boxes", "scores", "labels"}]
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from optik.errors import ModelError
from optik.models.detect.targets import checked_target

FAMILIES = ("fasterrcnn", "retinanet", "fcos", "ssdlite")  # built here, small and random by default
_DEFAULT_BACKBONE = {"fasterrcnn": "resnet18", "retinanet": "resnet18", "fcos": "resnet18", "ssdlite": None}
_BUILDER_PREFIXES = ("fasterrcnn_", "retinanet_", "fcos_", "ssd300_", "ssdlite320_")  # box-only detectors
_MIN_IMG_SIZE = {"ssd300_vgg16": 268}  # VGG's unpadded extra layers run out of pixels below this
_MIN_BOX_SIZE = 1e-2  # pixels; torchvision's RoIHeads threshold
_PRIOR_PROB = 0.01  # RetinaNet/FCOS start every class at p=0.01 so the focal loss begins stable


class LetterboxedTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize: optik already letterboxed to S×S.

    It still normalises with ``image_mean``/``image_std`` and pads the batch to ``size_divisible``;
    boxes stay in input pixels both ways (postprocess rescales by input/original = 1).
    """

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(Normalize(mean={self.image_mean}, std={self.image_std}), no resize)"


class TVDetector(nn.Module):
    """A torchvision detection model with optik's Detector protocol.

    Args:
        model: a torchvision ``FasterRCNN``/``RetinaNet``/``FCOS``/``SSD`` (held as ``.model``).
        num_classes: C, optik's number of classes (without background).
        img_size: the S of the S×S input it is trained on (recorded only; the model takes any size).
        config: extra ``create`` kwargs that rebuild it, e.g. ``{"backbone": "resnet18"}``.

    Labels are shifted by ``label_offset`` (1 for models with a background class) on the way in
    and back on the way out, so callers only ever see 0..C-1.
    """

    #: amp=auto trains it in fp32 (:func:`optik.device.resolve_amp`): torchvision's detection losses (FCOS's
    #: centerness, RetinaNet's focal loss, Mask R-CNN's mask head) went NaN within a few bf16 steps in the tests;
    #: torchvision's own references train them in fp32 or fp16 with a gradient scaler. amp=true still forces it.
    amp_auto_train = False

    def __init__(
        self, model: nn.Module, num_classes: int, *, img_size: int | None = None, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.label_offset = 1 if isinstance(model, (tvd.FasterRCNN, SSD)) else 0
        self._config = dict(config or {})
        self.default_cfg = {
            "mean": tuple(model.transform.image_mean),
            "std": tuple(model.transform.image_std),
            "input_size": None if img_size is None else (3, img_size, img_size),
            "interpolation": "bilinear",
        }

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        """``forward_loss`` with targets, else ``forward_detect`` with its defaults."""
        return self.forward_detect(images) if targets is None else self.forward_loss(images, targets)

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Loss terms for ``(B, 3, S, S)`` images in [0, 1] and per-image targets (xyxy pixels, 0-based labels).

        Returns torchvision's named terms (e.g. ``loss_classifier``, ``loss_box_reg``,
        ``loss_objectness``, ``loss_rpn_box_reg`` for Faster R-CNN) plus their sum as ``"loss"``.
        Works in eval mode too (a validation loss): only the loss branch is switched on, BatchNorm
        statistics are left alone.
        """
        tv_targets = [self._to_tv_target(t, i, images.device) for i, t in enumerate(targets)]
        with _loss_branch(self.model):
            losses = self.model(list(images.unbind(0)), tv_targets)
        return {"loss": sum(losses.values()), **losses}

    @torch.no_grad()
    def forward_detect(
        self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, agnostic: bool = False
    ) -> list[dict[str, Tensor]]:
        """Detections for ``(B, 3, S, S)`` images: per image ``{"boxes" (N, 4) xyxy input pixels, "scores", "labels"}``.

        ``conf``/``iou``/``max_det`` become the model's score threshold, NMS IoU and detections per
        image (torchvision's per-class NMS); ``agnostic=True`` adds a class-agnostic NMS after it.
        Boxes under 0.01 px a side are dropped, as Faster R-CNN itself does.
        Call in eval mode (in train mode torchvision would compute losses instead).
        """
        if self.model.training:
            raise ModelError("TVDetector.forward_detect needs eval mode: call model.eval() first")
        self._set_postprocess(conf, iou, max_det)
        preds = self.model(list(images.unbind(0)))
        out = []
        for p in preds:
            # Drop zero-area boxes (RetinaNet/FCOS/SSD can emit them; Faster R-CNN already does this).
            keep = torchvision.ops.remove_small_boxes(p["boxes"], _MIN_BOX_SIZE)
            boxes, scores, labels = p["boxes"][keep], p["scores"][keep], p["labels"][keep] - self.label_offset
            if agnostic and len(boxes):
                keep = torchvision.ops.nms(boxes, scores, iou)[:max_det]
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            out.append({"boxes": boxes.float(), "scores": scores.float(), "labels": labels.long()})
        return out

    def get_classifier(self) -> nn.Module:
        """The module whose size depends on ``num_classes`` (skipped by ``load_weights`` when it differs)."""
        m = self.model
        if isinstance(m, tvd.FasterRCNN):
            return m.roi_heads.box_predictor
        return m.head.classification_head

    def config_dict(self) -> dict[str, Any]:
        """What ``create`` needs besides name, num_classes and img_size: ``{"backbone", "frozen_bn"}``.

        >>> twin = create("tv:fasterrcnn", task="detect", num_classes=3, img_size=96,
        ...               **model.config_dict())                      # doctest: +SKIP
        """
        frozen = any(isinstance(m, misc_ops.FrozenBatchNorm2d) for m in self.model.backbone.modules())
        return {**self._config, "frozen_bn": frozen}

    def export_graph(self, *, conf: float = 0.001, iou: float = 0.7, max_det: int = 300) -> nn.Module:
        """The traceable inference graph for ``optik TASK export``: one ``(1, 3, S, S)`` image in [0, 1] →
        ``boxes (N, 4)`` xyxy input px, ``scores (N,)`` best first, ``labels (N,)`` 0-based (plus ``masks
        (N, S, S)`` probabilities for Mask R-CNN), with torchvision's own resize-free transform, score
        threshold ``conf``, per-class NMS at ``iou`` and ``max_det`` baked in (torchvision's ONNX path: batch 1
        per graph, NMS inside). A run-time ``conf``/``max_det`` can only filter further.

        >>> graph = model.eval().export_graph(conf=0.001, iou=0.7, max_det=300)      # doctest: +SKIP
        >>> boxes, scores, labels = graph(torch.rand(1, 3, 64, 64))                   # doctest: +SKIP
        """
        return TVExportGraph(self, conf=conf, iou=iou, max_det=max_det)

    def _set_postprocess(self, conf: float, iou: float, max_det: int) -> None:
        holder = self.model.roi_heads if isinstance(self.model, tvd.FasterRCNN) else self.model
        holder.score_thresh, holder.nms_thresh, holder.detections_per_img = float(conf), float(iou), int(max_det)

    def _to_tv_target(self, target: dict[str, Any], index: int, device: torch.device) -> dict[str, Tensor]:
        boxes, labels = checked_target(target, index, self.num_classes, device)
        # torchvision rejects zero-area boxes (an augmentation can squash one); they carry no signal.
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"boxes": boxes[keep], "labels": labels[keep] + self.label_offset}


class TVExportGraph(nn.Module):
    """:meth:`TVDetector.export_graph`: ``images (1, 3, S, S) → (boxes, scores, labels[, masks])`` of one image,
    thresholds fixed at construction (set again on every call, so eager ``forward_detect`` calls in between
    cannot change what is traced or compared). Boxes under 0.01 px are *not* dropped here: the runtime drops
    them after its ``conf``/``max_det`` filter, in the order eager ``forward_detect`` does."""

    def __init__(self, detector: TVDetector, *, conf: float, iou: float, max_det: int) -> None:
        super().__init__()
        self.detector = detector
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.with_masks = isinstance(detector.model, tvd.MaskRCNN)
        self.output_names = ["boxes", "scores", "labels", *(["masks"] if self.with_masks else [])]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        d = self.detector
        d._set_postprocess(self.conf, self.iou, self.max_det)
        p = d.model([images[0]])[0]  # batch 1 per graph (torchvision's ONNX support); the runtime loops images
        out = (p["boxes"].float(), p["scores"].float(), p["labels"].long() - d.label_offset)
        return (*out, p["masks"][:, 0].float()) if self.with_masks else out

    def thresholds(self) -> dict[str, Any]:
        return {"conf": self.conf, "iou": self.iou, "max_det": self.max_det}


@contextlib.contextmanager
def _loss_branch(model: nn.Module) -> Iterator[None]:
    # torchvision picks "losses" vs "detections" from the `training` flag of the detector itself (and of
    # its RPN/RoI heads). Setting only those flags gives a loss in eval mode without BatchNorm updates.
    gates = [m for m in (model, getattr(model, "rpn", None), getattr(model, "roi_heads", None)) if m is not None]
    before = [m.training for m in gates]
    for m in gates:
        m.training = True
    try:
        yield
    finally:
        for m, flag in zip(gates, before):
            m.training = flag


def _fpn_backbone(backbone: str, pretrained: bool, *, p3_p7: bool) -> nn.Module:
    """A torchvision backbone + FPN: resnet* (P2–P5 + pool, or P3–P7 for RetinaNet/FCOS) or mobilenet_v3_*."""
    # Random init trains BatchNorm; ImageNet init freezes it, as torchvision's own builders do.
    norm = misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    weights = "DEFAULT" if pretrained else None
    trainable = 3 if pretrained else 5
    if backbone.startswith(("resnet", "resnext", "wide_resnet")):
        extra = dict(returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)) if p3_p7 else {}
        return resnet_fpn_backbone(
            backbone_name=backbone, weights=weights, norm_layer=norm, trainable_layers=trainable, **extra
        )
    if backbone.startswith("mobilenet") and not p3_p7:
        return mobilenet_backbone(
            backbone_name=backbone, weights=weights, fpn=True, norm_layer=norm, trainable_layers=3 if pretrained else 6
        )
    kinds = "resnet*/resnext*/wide_resnet*" + ("" if p3_p7 else " or mobilenet_v2/mobilenet_v3_*")
    raise ModelError(f"backbone {backbone!r} is not supported here; use a torchvision {kinds} name")


def _build_family(family: str, num_classes: int, backbone: str | None, pretrained: bool, **kwargs: Any) -> nn.Module:
    if family == "ssdlite":
        if backbone is not None:
            raise ModelError("tv:ssdlite has a fixed MobileNetV3-Large backbone; drop backbone=")
        return _build_builder("ssdlite320_mobilenet_v3_large", num_classes, pretrained, **kwargs)
    backbone = backbone or _DEFAULT_BACKBONE[family]
    if family == "fasterrcnn":
        body = _fpn_backbone(backbone, pretrained, p3_p7=False)
        if backbone.startswith("mobilenet"):  # 3 levels (2 stages + pool), several sizes per level
            anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
            kwargs.setdefault("rpn_anchor_generator", anchors)
        return tvd.FasterRCNN(body, num_classes=num_classes + 1, **kwargs)
    body = _fpn_backbone(backbone, pretrained, p3_p7=True)
    cls = tvd.RetinaNet if family == "retinanet" else tvd.FCOS
    return cls(body, num_classes=num_classes, **kwargs)


def _build_builder(name: str, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    fn = getattr(tvd, name)
    background = 1 if name.startswith(("fasterrcnn", "ssd")) else 0
    if not pretrained:
        return fn(weights=None, weights_backbone=None, num_classes=num_classes + background, **kwargs)
    model = fn(weights="DEFAULT", **kwargs)  # COCO weights fix 91 classes; the class head is then rebuilt
    reset_class_head(model, num_classes)
    return model


def freeze_backbone_batchnorm(model: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` in ``model.backbone.body`` by torchvision's ``FrozenBatchNorm2d`` (same buffers).

    In place. torchvision builds pretrained backbones this way; rebuilding a checkpoint of one with the
    same modules keeps its numerics when training resumes (identical in eval mode either way).
    """
    body = model.backbone.body if hasattr(model.backbone, "body") else model.backbone
    for name, module in list(body.named_modules()):
        if type(module) is nn.BatchNorm2d and module.affine and module.track_running_stats:
            frozen = misc_ops.FrozenBatchNorm2d(module.num_features, eps=module.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(module, key).detach())
            body.set_submodule(name, frozen)


def reset_class_head(model: nn.Module, num_classes: int) -> None:
    """Give a torchvision detector a fresh classification head for ``num_classes`` (optik's C, no background).

    In place; every other weight is kept, which is the usual COCO → custom-classes fine-tune.

    >>> model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None)        # doctest: +SKIP
    >>> reset_class_head(model, 3)                       # 91 COCO classes → 3
    """
    if isinstance(model, tvd.FasterRCNN):
        old = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, num_classes + 1)
    elif isinstance(model, (tvd.RetinaNet, tvd.FCOS)):
        head = model.head.classification_head
        old = head.cls_logits
        new = nn.Conv2d(old.in_channels, head.num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(new.weight, std=0.01)
        nn.init.constant_(new.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))
        head.cls_logits, head.num_classes = new, num_classes
    elif isinstance(model, SSD):
        head = model.head.classification_head
        old_columns, head.num_columns = head.num_columns, num_classes + 1
        for i, block in enumerate(head.module_list):
            # The last conv of each level's block outputs anchors × classes channels.
            name, conv = [(n, m) for n, m in block.named_modules() if isinstance(m, nn.Conv2d)][-1]
            new = nn.Conv2d(
                conv.in_channels, conv.out_channels // old_columns * head.num_columns, conv.kernel_size,
                stride=conv.stride, padding=conv.padding,
            )
            nn.init.xavier_uniform_(new.weight)
            nn.init.zeros_(new.bias)
            if name:
                block.set_submodule(name, new)
            else:
                head.module_list[i] = new
    else:
        raise ModelError(f"cannot reset the class head of {type(model).__name__}")


def _known_names() -> list[str]:
    builders = torchvision.models.list_models(module=tvd)
    return [*FAMILIES, *(b for b in builders if b.startswith(_BUILDER_PREFIXES))]


def create_tv_detector(
    name: str,
    *,
    num_classes: int = 80,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    backbone: str | None = None,
    frozen_bn: bool | None = None,
    **kwargs: Any,
) -> TVDetector:
    """Build ``tv:<name>`` for ``num_classes`` classes (0-based, no background) on ``img_size``² inputs.

    Args:
        name: a family (``fasterrcnn``, ``retinanet``, ``fcos``, ``ssdlite``) or a torchvision builder name.
        backbone: for ``fasterrcnn``/``retinanet``/``fcos``: a torchvision classifier name
            (``resnet18`` default, ``resnet50``, ``mobilenet_v3_large`` for Faster R-CNN only).
        pretrained: ``None``/``False`` random; ``True`` torchvision's download (COCO weights for builder
            names, ImageNet backbone for families) with a new class head; a path loads an optik or
            torchvision state dict, a class head of another size skipped.
        frozen_bn: ``True`` turns the backbone's BatchNorms into ``FrozenBatchNorm2d``, as torchvision does
            for pretrained backbones (``config_dict()`` records it, so a rebuild matches); ``None`` leaves
            torchvision's choice.
        **kwargs: passed to the torchvision constructor (``rpn_anchor_generator``, ``topk_candidates`` …).

    Raises:
        ModelError: unknown name or backbone, a failing torchvision constructor or download.
    """
    check_request(name, in_chans, num_classes, _known_names(), "detector")
    kwargs.pop("class_names", None)  # torchvision models carry no label names
    if img_size is not None and img_size < _MIN_IMG_SIZE.get(name, 0):
        raise ModelError(f"tv:{name} needs img_size >= {_MIN_IMG_SIZE[name]}, got {img_size}")
    if name not in FAMILIES and backbone is not None:
        raise ModelError(f"tv:{name} fixes its backbone; use tv:fasterrcnn/retinanet/fcos with backbone={backbone!r}")
    with explained_build_errors(name, pretrained):
        if name in FAMILIES:
            model = _build_family(name, num_classes, backbone, pretrained is True, **kwargs)
            backbone = backbone or _DEFAULT_BACKBONE[name]
        else:
            model = _build_builder(name, num_classes, pretrained is True, **kwargs)
    return wrap_tv_model(TVDetector, model, num_classes, img_size, backbone, frozen_bn, pretrained)


def check_request(name: str, in_chans: int, num_classes: int, known: list[str], what: str) -> None:
    """The argument checks every ``tv:`` builder shares: RGB, at least one class, a known name."""
    if in_chans != 3:
        raise ModelError(f"tv:{name} takes RGB input (in_chans=3), got in_chans={in_chans}")
    if num_classes < 1:
        raise ModelError(f"tv:{name} needs num_classes >= 1, got {num_classes}")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join('tv:' + c for c in close)}?" if close else ""
        raise ModelError(f"no torchvision {what} {name!r}; known: {', '.join(known)}{hint}")


@contextlib.contextmanager
def explained_build_errors(name: str, pretrained: Any) -> Iterator[None]:
    """A failing torchvision constructor (or download) → one ModelError line saying what to do."""
    try:
        yield
    except ModelError:
        raise
    except (TypeError, ValueError, RuntimeError, OSError, KeyError) as e:
        where = " (pretrained=True downloads torchvision weights; offline, pass pretrained=<file>)"
        where = where if pretrained is True else ""
        raise ModelError(f"cannot create tv:{name}{where}: {type(e).__name__}: {e}") from e


def wrap_tv_model(
    cls: type[TVDetector], model: nn.Module, num_classes: int, img_size: int | None, backbone: str | None,
    frozen_bn: bool | None, pretrained: Any,
) -> Any:
    """Letterboxed transform (normalise, never resize), optional frozen BN, optik's wrapper ``cls``,
    then ``pretrained=<file>`` weights loaded into the wrapper."""
    old = model.transform
    model.transform = LetterboxedTransform(
        old.min_size, old.max_size, old.image_mean, old.image_std, size_divisible=old.size_divisible
    )
    if frozen_bn:
        freeze_backbone_batchnorm(model)
    wrapper = cls(model, num_classes, img_size=img_size, config={"backbone": backbone}).train()
    if isinstance(pretrained, str) and pretrained:
        from optik.models.transfer import load_into_wrapper

        load_into_wrapper(wrapper, pretrained)
    return wrapper


__all__ = [
    "FAMILIES",
    "LetterboxedTransform",
    "TVDetector",
    "TVExportGraph",
    "create_tv_detector",
    "freeze_backbone_batchnorm",
    "reset_class_head",
]
