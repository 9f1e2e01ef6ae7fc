"""The three segmentation flavours behind :class:`~optik.tasks.segment.SegmentTask`, one strategy each,
chosen once from ``subtask`` when the task is made:

* :class:`SemanticStrategy` — a class per pixel, mIoU. Plain logits models (``unet*``, ``fpn``, ``tv:deeplabv3…``,
  ``hf:`` SegFormer…) train with the task's loss; universal models (Mask2Former / OneFormer) speak the
  Segmenter protocol and return class scores. Which of the two the model is, is read once, when it is bound.
* :class:`MaskModelStrategy` — instances (boxes + masks), mask AP, COCO ``predictions.json`` rows; the model
  must speak the Segmenter protocol (:mod:`optik.models.segment.protocol`: its own loss and post-processing).
* :class:`PanopticStrategy` — non-overlapping segments (things and stuff), PQ; a mask model too.

A strategy turns one image's raw prediction into original pixels (``to_original``), pairs it with the ground
truth for its metric, builds the :class:`~optik.results.Results`, and says what serve and export need
(controls, colours, the export graph and its agreement measure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.data.detect_transforms import letterbox_shape
from optik.data.segmentation_dataset import IGNORE_INDEX, mask_boxes
from optik.errors import ConfigError, ExportError
from optik.metrics.detection import format_ap
from optik.models.segment.protocol import is_segmenter
from optik.results import Boxes, Masks, Results
from optik.tasks.base import Control
from optik.tasks.detect import threshold_controls, to_original

if TYPE_CHECKING:
    from optik.deploy.parity import Agreement
    from optik.tasks.segment import SegmentTask


def unletterbox(maps: Tensor, orig_hw: tuple[int, int], imgsz: int, mode: str = "bilinear") -> Tensor:
    """``(..., S, S)`` maps on the letterboxed input → ``(..., H, W)`` on the original image: crop the
    padding, then resize (``bilinear`` for scores/probabilities, ``nearest-exact`` for labels).

    >>> unletterbox(torch.zeros(2, 64, 64), (32, 64), 64).shape
    torch.Size([2, 32, 64])
    >>> unletterbox(torch.zeros(0, 64, 64), (32, 64), 64).shape  # no instance predicted
    torch.Size([0, 32, 64])
    """
    h, w = int(orig_hw[0]), int(orig_hw[1])
    nh, nw = letterbox_shape((h, w), imgsz)
    x = maps[..., :nh, :nw]
    if (nh, nw) == (h, w):
        return x
    lead = x.shape[:-2]
    if x.numel() == 0:  # no instance / segment: F.interpolate rejects an empty (1, 0, h, w) stack
        return x.new_zeros(*lead, h, w)
    x = x.reshape(1, -1, nh, nw)
    dtype = x.dtype
    x = x.float()
    x = F.interpolate(x, size=(h, w), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return x.to(dtype).reshape(*lead, h, w)


class SegmentStrategy:
    """What one flavour predicts, how it is measured and how its model is called."""

    subtask: ClassVar[str]
    fitness_key: ClassVar[str]  # mIoU / AP / PQ: the task's fitness_key
    default_model: ClassVar[str]
    smallest_model: ClassVar[str]  # for cheap smoke runs (tests/degenerate)
    data_kind: ClassVar[str]  # the annotation kind this flavour reads (Task.data_kind)
    example_data: ClassVar[str]
    compatible: ClassVar[tuple[str, ...]]  # annotation kinds that can feed it (panoptic data holds them all)
    fixed_conf: ClassVar[float | None] = None  # a conf used in val and predict alike when the user sets none
    pixel_weights: ClassVar[bool] = False  # class_weights=true applies (class maps: pixel frequencies)
    coco: ClassVar[bool] = False  # val collects COCO results rows (predictions.json)

    def __init__(self, task: SegmentTask) -> None:
        self.task = task
        self._segmenter: bool | None = None  # the model speaks the Segmenter protocol; read once in bind()

    # --- model ----------------------------------------------------------------------------
    def build_kwargs(self) -> dict[str, Any]:
        """Extra ``models.create`` arguments for this flavour."""
        return {}

    def bind(self, model: nn.Module) -> None:
        """Read the model's protocol once (the task calls it when it builds the model); :class:`ConfigError`
        when this flavour cannot use the model."""
        self._segmenter = is_segmenter(model)

    def segmenter(self, model: nn.Module) -> bool:
        if self._segmenter is None:  # a model the task did not build (a custom loop): bind it now
            self.bind(model)
        return bool(self._segmenter)

    def conf(self, default: float) -> float:
        cfg = self.task.cfg
        return cfg.conf if cfg.conf is not None else (self.fixed_conf if self.fixed_conf is not None else default)

    def predict_kwargs(self, default_conf: float) -> dict[str, Any]:
        cfg = self.task.cfg
        return {"conf": self.conf(default_conf), "iou": cfg.iou, "max_det": cfg.max_det}

    # The Segmenter protocol's calls (mask models; SemanticStrategy adds plain logits models).
    def train_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[dict[str, Tensor], Any]:
        # Targets go as the data gives them (kind=subtask): instance masks, panoptic segments, or a class
        # map that universal models split into one mask per class themselves.
        return model.forward_loss(inputs, targets), None

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        return model.forward_predict(inputs, **self.predict_kwargs(0.25))

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[Any, dict[str, Tensor] | None]:
        # COCO-style mask AP wants (nearly) every instance: conf 0.001 unless the user set one.
        return model.forward_predict(inputs, **self.predict_kwargs(0.001)), None

    # --- predictions ----------------------------------------------------------------------
    def to_original(self, out: Any, i: int, hw: tuple[int, int]) -> dict[str, Tensor]:
        """Prediction ``i`` of a batch in original pixels (``{"semantic"}`` or ``{"masks", "labels", "scores", "boxes"}``)."""
        raise NotImplementedError

    def metric(self) -> Any:
        raise NotImplementedError

    def metric_pair(self, pred: dict[str, Tensor], gt: dict[str, Any], image_id: int) -> tuple[Any, Any]:
        """``(prediction, ground truth)`` as this flavour's metric takes them."""
        return pred, gt

    def results(self, img: Any, path: str, p: dict[str, Tensor]) -> Results:
        raise NotImplementedError

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        return []

    # --- serving and export -----------------------------------------------------------------
    def controls(self) -> dict[str, Control]:
        return threshold_controls(self.task.cfg, self.conf(0.25))

    def colors(self, classes: list[str]) -> list[tuple[int, int, int] | None]:
        """Each class's colour in ``Results.plot`` overlays (None: drawn untinted)."""
        from optik.viz.draw import color_for

        return [color_for(i) for i in range(len(classes))]

    def export_module(self, model: nn.Module, preprocess: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        raise not_exportable(self.task, model, self.subtask)

    def export_agreement(self, model: nn.Module) -> Agreement:
        raise not_exportable(self.task, model, self.subtask)


def not_exportable(task: SegmentTask, model: nn.Module, subtask: str) -> ExportError:
    name = task.meta.get("model") or type(model).__name__
    return ExportError(
        f"model {name!r} (task={subtask}) cannot be exported: {type(model).__name__} returns a variable "
        "number of masks per image from data-dependent post-processing (thresholds, NMS / mask fusing) inside "
        "forward_predict; semantic logits models (unet*, fpn, tv:deeplabv3/fcn/lraspp …) and tv:maskrcnn export"
    )


class SemanticStrategy(SegmentStrategy):
    """A class per pixel. Logits models: ``model(x)`` and the task's loss; universal models: the Segmenter
    protocol's class scores (no eval-mode loss)."""

    subtask, fitness_key = "semantic", "mIoU"
    default_model, example_data = "unet_s", "synthetic:shapes-seg"
    compatible = ("semantic", "instance", "panoptic")  # instances: rasterised (overlaps, crowd void)
    data_kind, smallest_model = "semantic", "unet_s"  # a logits model: exports (mask2former: instance, panoptic)
    pixel_weights = True

    def train_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[dict[str, Tensor], Any]:
        if self.segmenter(model):
            return super().train_step(model, inputs, targets)
        outputs = model(inputs)
        return self.task.loss(outputs, targets), outputs

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        return super().forward(model, inputs) if self.segmenter(model) else model(inputs)

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[Any, dict[str, Tensor] | None]:
        if self.segmenter(model):
            return super().eval_step(model, inputs, targets)
        outputs = model(inputs)
        return outputs, self.task.loss(outputs, targets)

    def to_original(self, out: Any, i: int, hw: tuple[int, int]) -> dict[str, Tensor]:
        return {"semantic": unletterbox(out[i].float().cpu(), hw, self.task.cfg.imgsz).argmax(0)}

    def metric(self) -> Any:
        from optik.metrics.segmentation import SemanticMetrics

        names = self.task.meta["classes"]
        return SemanticMetrics(len(names), class_names=names, ignore_index=IGNORE_INDEX)

    def metric_pair(self, pred: dict[str, Tensor], gt: dict[str, Any], image_id: int) -> tuple[Any, Any]:
        return pred["semantic"], gt["semantic"]

    def results(self, img: Any, path: str, p: dict[str, Tensor]) -> Results:
        return Results(orig_img=img, path=path, names=self.task.meta["classes"], semantic=p["semantic"])

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "mIoU" not in metrics:
            return []
        from optik.metrics.segmentation import format_iou_table

        return [
            (f"- **mIoU**: {metrics['mIoU']:.4f} · pixel accuracy: {metrics['pixel_acc']:.4f} · "
             f"mean class accuracy: {metrics['mean_acc']:.4f} · fwIoU: {metrics['fwIoU']:.4f} · mDice: {metrics['mDice']:.4f}"),
            "", "```", format_iou_table(metrics), "```",
        ]  # fmt: skip

    def controls(self) -> dict[str, Control]:
        return {}  # a class map per pixel: no thresholds

    def colors(self, classes: list[str]) -> list[tuple[int, int, int] | None]:
        import numpy as np

        from optik.viz.draw import legend_items

        return [c for _, c in legend_items(np.arange(len(classes)), classes)]  # "background" untinted

    def export_module(self, model: nn.Module, preprocess: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        """Logits models export as they are (``logits (B, C, S, S)``, argmax outside); universal models cannot."""
        if self.segmenter(model):
            raise not_exportable(self.task, model, self.subtask)
        postprocess = {"type": "argmax", "axis": 1, "then": "crop the padding, resize to the original image (bilinear scores)"}
        return model, {"outputs": ["logits"], "preprocess": preprocess, "postprocess": postprocess}

    def export_agreement(self, model: nn.Module) -> Agreement:
        from optik.deploy.parity import MIOU

        return MIOU  # argmax maps compared


class MaskModelStrategy(SegmentStrategy):
    """Instances: boxes + masks from a Segmenter protocol model, mask AP (+ box AP), COCO results rows."""

    subtask, fitness_key = "instance", "AP"
    default_model, example_data, compatible = "tv:maskrcnn", "synthetic:shapes-inst", ("instance", "panoptic")
    data_kind, smallest_model = "instance", "mask2former"
    coco = True  # predictions.json rows (COCO "segm" results)

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        if not self._segmenter:
            raise ConfigError(f"model {self.task.meta.get('model')!r} is a semantic model; "
                              f"task={self.subtask} needs an instance/panoptic model")  # fmt: skip

    def to_original(self, out: Any, i: int, hw: tuple[int, int]) -> dict[str, Tensor]:
        cfg = self.task.cfg
        p = out[i]
        masks = p["masks"].cpu()
        if masks.dtype == torch.bool:  # panoptic segments
            masks = unletterbox(masks.to(torch.uint8), hw, cfg.imgsz, mode="nearest-exact").bool()
        else:  # instance mask probabilities
            masks = unletterbox(masks.float(), hw, cfg.imgsz) > cfg.mask_threshold
        res = {"masks": masks, "labels": p["labels"].cpu().long(), "scores": p["scores"].float().cpu()}
        res["boxes"] = to_original(p["boxes"], hw, cfg.imgsz) if "boxes" in p else mask_boxes(masks)
        return res

    def metric(self) -> Any:
        from optik.metrics.segmentation import InstanceMetrics

        names = self.task.meta["classes"]
        return InstanceMetrics(len(names), class_names=names)

    def metric_pair(self, pred: dict[str, Tensor], gt: dict[str, Any], image_id: int) -> tuple[Any, Any]:
        return {**pred, "image_id": image_id}, gt

    def results(self, img: Any, path: str, p: dict[str, Tensor]) -> Results:
        hw = img.shape[:2]
        boxes, masks = Boxes(p["boxes"], p["scores"], p["labels"], hw), Masks(p["masks"], hw)
        return Results(orig_img=img, path=path, names=self.task.meta["classes"], boxes=boxes, masks=masks)

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "AP" not in metrics:
            return []
        from optik.metrics.detection import format_ap_table

        return [
            f"- **mask mAP@[.50:.95]**: {format_ap(metrics['AP'])} · mask mAP@.50: {format_ap(metrics['AP50'])} · mAP@.75: {format_ap(metrics['AP75'])}",
            f"- box mAP@[.50:.95]: {format_ap(metrics.get('box_AP'))} · box mAP@.50: {format_ap(metrics.get('box_AP50'))}",
            "", "```", format_ap_table(metrics), "```",
        ]  # fmt: skip

    def export_module(self, model: nn.Module, preprocess: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        """Mask R-CNN (``tv:maskrcnn…``) exports torchvision's inference graph (one image per run, NMS and mask
        pasting inside, ``conf``/``iou``/``max_det`` baked in: :func:`optik.tasks.detect.tv_export_module`);
        other mask models raise :class:`ExportError`."""
        from optik.models.adapters.tv_instance import TVInstanceSegmenter

        if not isinstance(model, TVInstanceSegmenter):
            raise not_exportable(self.task, model, self.subtask)
        from optik.tasks.detect import tv_export_module

        return tv_export_module(model, self.task.cfg, preprocess)

    def export_agreement(self, model: nn.Module) -> Agreement:
        from optik.deploy.parity import MATCHED
        from optik.models.adapters.tv_instance import TVInstanceSegmenter

        if not isinstance(model, TVInstanceSegmenter):
            raise not_exportable(self.task, model, self.subtask)
        return MATCHED  # the one-image graph returns a variable number of detections


class PanopticStrategy(MaskModelStrategy):
    """Non-overlapping segments, things counted and stuff fused per class; PQ."""

    subtask, fitness_key = "panoptic", "PQ"
    default_model, example_data, compatible = "mask2former", "synthetic:shapes-pan", ("panoptic",)
    data_kind, smallest_model = "panoptic", "mask2former"
    fixed_conf = 0.5  # segments kept by a panoptic model: more confident ones, in val and predict alike
    coco = False

    def build_kwargs(self) -> dict[str, Any]:
        return {"isthing": list(self.task.meta.get("isthing") or [])}

    def metric(self) -> Any:
        from optik.metrics.segmentation import PanopticMetrics

        names = self.task.meta["classes"]
        return PanopticMetrics(len(names), isthing=self.task.meta["isthing"], class_names=names)

    def metric_pair(self, pred: dict[str, Tensor], gt: dict[str, Any], image_id: int) -> tuple[Any, Any]:
        return pred, gt

    def results(self, img: Any, path: str, p: dict[str, Tensor]) -> Results:
        names = self.task.meta["classes"]
        hw = img.shape[:2]
        isthing = self.task.meta.get("isthing") or [True] * len(names)
        panoptic = torch.zeros(hw, dtype=torch.int64)
        segments = []
        for k, (mask, label, score) in enumerate(zip(p["masks"], p["labels"].tolist(), p["scores"].tolist()), start=1):
            panoptic[mask] = k
            segments.append({"id": k, "label": label, "score": score, "isthing": bool(isthing[label]), "area": int(mask.sum())})
        return Results(orig_img=img, path=path, names=names, boxes=Boxes(p["boxes"], p["scores"], p["labels"], hw),
                       masks=Masks(p["masks"], hw), panoptic=panoptic, segments=segments)  # fmt: skip

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "PQ" not in metrics:
            return []
        from optik.metrics.segmentation import format_pq_table

        lines = [f"- **PQ**: {metrics['PQ']:.4f} · SQ: {metrics['SQ']:.4f} · RQ: {metrics['RQ']:.4f}"]
        for part, label in (("th", "things"), ("st", "stuff")):
            if f"PQ_{part}" in metrics:
                lines.append(f"- {label}: PQ {metrics[f'PQ_{part}']:.4f} · SQ {metrics[f'SQ_{part}']:.4f} · RQ {metrics[f'RQ_{part}']:.4f}")
        return lines + ["", "```", format_pq_table(metrics), "```"]


STRATEGIES: dict[str, type[SegmentStrategy]] = {s.subtask: s for s in (SemanticStrategy, MaskModelStrategy, PanopticStrategy)}

__all__ = ["STRATEGIES", "MaskModelStrategy", "PanopticStrategy", "SegmentStrategy", "SemanticStrategy"]
