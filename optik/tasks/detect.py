"""Object detection behind the one Task interface.

Data: ``synthetic:shapes-det``, COCO JSON, YOLO ``data.yaml``, Pascal VOC (:func:`optik.data.sources.load_detection_data`).
Models: every registered detector speaks the Detector protocol (``forward_loss`` / ``forward_detect``):
the house one-stage detector, torchvision detectors (``tv:…``) and HF DETR-family models (``hf:…``).
Metric: COCO mAP through faster-coco-eval, identical to pycocotools (:mod:`optik.metrics.detection`).

Images are letterboxed to ``imgsz`` (aspect kept, top-left aligned, padded right/bottom), so a box
goes back to the original image by dividing by the per-axis resize factors — predictions and the
validation ground truth are compared in original-image pixels, where COCO's area ranges apply.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from optik.config import CommonConfig, ValConfig
from optik.config.detect import DetectTrainConfig
from optik.data.detect_transforms import Mosaic, detect_transforms, letterbox_shape
from optik.data.collate import detection_collate
from optik.data.sources import load_detection_data
from optik.errors import ConfigError, ExportError
from optik.metrics.detection import DetectionMetrics, format_ap, format_ap_table
from optik.results import Boxes, Results
from optik.tasks.base import Control, DataSplits, Task, TextListControl
from optik.tasks.coco import CocoResults

if TYPE_CHECKING:
    from optik.deploy.parity import Agreement

log = logging.getLogger(__name__)

DEFAULT_MODEL = "house"
FETCH_ALL = 10_000  # "no limit" for forward_detect's max_det (an int: torchvision's detections_per_img)


def letterbox_factors(orig_hw: tuple[int, int], imgsz: int) -> Tensor:
    """Per-axis resize factors ``(sx, sy, sx, sy)`` of :class:`LetterBox` to ``imgsz``."""
    h, w = int(orig_hw[0]), int(orig_hw[1])
    new_h, new_w = letterbox_shape((h, w), imgsz)
    return torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float32)


def to_original(boxes: Tensor, orig_hw: tuple[int, int], imgsz: int) -> Tensor:
    """Letterboxed-input boxes (N, 4) xyxy → original-image pixels, clipped to the image."""
    out = boxes.float().cpu() / letterbox_factors(orig_hw, imgsz)
    h, w = int(orig_hw[0]), int(orig_hw[1])
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], -1)


def finalize_detections(p: dict[str, Tensor], orig_hw: tuple[int, int], imgsz: int, max_det: int) -> dict[str, Tensor]:
    """One image's detections (letterboxed input px) → original pixels: clipped to the image, boxes with no
    width or height left (wholly in the letterbox padding) dropped, *then* the best ``max_det`` kept.

    The padding is part of the model's input, so a detector finds boxes there; clipped to the image they
    collapse to zero-area slivers (``y1 == y2 == H``) that would fill ``max_det`` slots, predictions.json
    and the metric.

    >>> p = {"boxes": torch.tensor([[0., 40., 64., 60.], [0., 0., 10., 10.]]), "scores": torch.tensor([.9, .8]),
    ...      "labels": torch.tensor([0, 1])}
    >>> finalize_detections(p, (32, 64), 64, max_det=1)["boxes"].tolist()  # the first lies below the image
    [[0.0, 0.0, 10.0, 10.0]]
    """
    boxes = to_original(p["boxes"], orig_hw, imgsz)
    scores, labels = p["scores"].float().cpu(), p["labels"].long().cpu()
    keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero().squeeze(1)
    keep = keep[scores[keep].argsort(descending=True, stable=True)][:max_det]  # detectors give best first already
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def detector_max_det(model: nn.Module, max_det: int) -> int:
    """How many detections to ask ``forward_detect`` for, so that ``max_det`` survive
    :func:`finalize_detections`: every box NMS keeps (:data:`FETCH_ALL`; each detector bounds it itself:
    pre-NMS top-k, queries × classes), or, for an exported torchvision graph, what its baked ``max_det``
    lets out (asking for more only logs a warning)."""
    baked = getattr(model, "baked", None)  # optik.deploy.runtime.ExportedTVDetector's thresholds
    if isinstance(baked, dict) and baked.get("max_det"):
        return max(max_det, int(baked["max_det"]))
    return max(max_det, FETCH_ALL)


def predict_conf(model: nn.Module | None) -> float:
    """The default predict threshold: 0.25, or the model's own (``predict_conf``: OWL's scores run lower, 0.1)."""
    return float(getattr(model, "predict_conf", 0.25))


def threshold_controls(cfg: Any, default_conf: float) -> dict[str, Control]:
    """``conf`` and ``iou`` as per-request controls (detection, instance/panoptic segmentation), defaults from
    ``cfg`` (``conf``: ``default_conf`` when unset)."""
    conf = cfg.conf if getattr(cfg, "conf", None) is not None else default_conf
    return {
        "conf": Control(conf, 0.0, 1.0, 0.01, "Confidence threshold", "Boxes and masks scoring below this are dropped."),
        "iou": Control(cfg.iou, 0.0, 1.0, 0.05, "NMS IoU", "Overlap above which the weaker box is suppressed.", min_exclusive=True),
    }


class DetectTask(CocoResults, Task):
    name = "detect"
    fitness_key = "AP"
    data_kind = "detection"
    smallest_model = "house_s"

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._model: nn.Module | None = None
        self._mosaic: Mosaic | None = None
        self._val_anns: dict[int, dict[str, np.ndarray]] = {}

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=synthetic:shapes-det, data=coco.json, data=data.yaml)")
        data = load_detection_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, strict=cfg.strict, skip_bad=cfg.skip_bad)
        if self.meta.get("open_vocabulary"):  # the data's classes are the queries (or prompts= describe them)
            self.meta["classes"] = []
        elif self.meta.get("classes") and list(self.meta["classes"]) != list(data.classes) and cfg.mode != "train":
            raise ConfigError(f"data: classes {data.classes} differ from the model's classes {self.meta['classes']}")
        self.meta["classes"] = list(data.classes)
        self.meta["cat_ids"] = list(getattr(data.train or data.val, "cat_ids", range(len(data.classes))))
        model = self.build_model()
        if self.meta.get("open_vocabulary"):
            model.set_queries(self._open_vocab_queries())
        val = data.val.with_transform(self.transforms(train=False)) if data.val is not None else None
        # Validation compares against the original annotations (boxes, crowd flags and areas as the
        # source gave them), exactly what dataset.to_coco() hands pycocotools.
        self._val_anns = {val.image_ids[i]: val.annotation(i) for i in range(len(val))} if val is not None else {}
        train = data.train
        if isinstance(cfg, DetectTrainConfig) and train is not None:
            tf = self.transforms(train=True)
            if cfg.mosaic > 0:
                self._mosaic = Mosaic(train, cfg.imgsz, p=cfg.mosaic, transform=tf)
                train = self._mosaic
            else:
                train = train.with_transform(tf)
        return DataSplits(train=train, val=val, meta=self.meta, description=data.description)

    def transforms(self, train: bool) -> Callable:
        cfg = self.cfg
        if not train:
            return detect_transforms(cfg.imgsz, train=False)
        return detect_transforms(
            cfg.imgsz, train=True, hflip=cfg.hflip, scale_jitter=cfg.scale_jitter, iou_crop=cfg.iou_crop, photometric=cfg.photometric
        )

    def collate(self, batch: list[Any]) -> tuple[Any, Any]:
        return detection_collate(batch)

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self._model is not None:
            return self._model
        backbone = getattr(self.cfg, "backbone", None)
        queries = self._open_vocab_queries()
        kwargs: dict[str, Any] = {"backbone": backbone} if backbone else {}
        if self.meta.get("open_vocabulary"):  # its classes are text queries, maybe not known before the data
            kwargs["num_classes"] = len(queries or ["object"])
        model = self.create_model(DEFAULT_MODEL, **kwargs)
        if getattr(model, "open_vocabulary", False):
            if isinstance(self.cfg, DetectTrainConfig):
                raise ConfigError(f"bad value for 'model': {self.cfg.model!r} is an open-vocabulary detector (inference only); "
                                  "use it with val / predict / label and prompts=")  # fmt: skip
            if queries:
                model.set_queries(queries)
        elif getattr(self.cfg, "prompts", None):
            raise ConfigError(f"key 'prompts' needs an open-vocabulary detector (model=hf:<OWL-ViT / OWLv2 dir>); "
                              f"{self.cfg.model!r} detects its fixed classes {self.meta['classes']}")  # fmt: skip
        self._model = model
        return model

    def _open_vocab_queries(self) -> list[str] | None:
        """An OWL-ViT / OWLv2 model's text queries: ``prompts=`` (val: one per data class, in order), else the
        data's class names; the classes are the prompts when no data names them (predict)."""
        if not self.meta.get("open_vocabulary"):
            return None
        prompts, classes = getattr(self.cfg, "prompts", None), self.meta.get("classes")
        if prompts and classes and len(prompts) != len(classes):
            raise ConfigError(f"bad value for 'prompts': {len(prompts)} prompts for the data's {len(classes)} classes "
                              f"{classes} (give one per class, in order, or leave prompts unset to use the class names)")  # fmt: skip
        if not prompts and not classes:
            if isinstance(self.cfg, ValConfig):
                return None  # the data names the classes (datasets())
            raise ConfigError(f"missing key 'prompts': {self.cfg.model!r} is an open-vocabulary detector; name what to find, "
                              "e.g. prompts=[a cat,a remote control]")  # fmt: skip
        if not classes:
            self.meta["classes"] = list(prompts)
        return list(prompts or classes)

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> nn.Module | None:
        cfg = self.cfg
        if self._mosaic is not None and isinstance(cfg, DetectTrainConfig):
            # Ultralytics' close_mosaic: finish on un-mosaicked images so the model sees real layouts.
            self._mosaic.enabled = epoch < epochs - cfg.close_mosaic
        return None

    # --- step -------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[dict[str, Tensor], Any]:
        return model.forward_loss(inputs, targets), None

    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:
        raise NotImplementedError("detectors compute their loss in forward_loss (see train_step)")

    def _detect_kwargs(self, model: nn.Module, default_conf: float) -> dict[str, Any]:
        cfg = self.cfg
        conf = cfg.conf if getattr(cfg, "conf", None) is not None else default_conf
        # max_det is the task's to apply, after padding boxes are dropped (finalize_detections).
        return {"conf": conf, "iou": cfg.iou, "max_det": detector_max_det(model, cfg.max_det), "agnostic": cfg.agnostic_nms}

    def forward(self, model: nn.Module, inputs: Tensor) -> list[dict[str, Tensor]]:
        prompts = getattr(self.cfg, "prompts", None)
        if prompts and getattr(model, "open_vocabulary", False) and list(prompts) != model.queries:
            model.set_queries(list(prompts))  # a served request's own prompts: they are its classes
            self.meta["classes"] = list(prompts)
        return model.forward_detect(inputs, **self._detect_kwargs(model, predict_conf(model)))

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[Any, None]:
        # COCO-style evaluation wants (nearly) all detections: conf 0.001 unless the user set one.
        return model.forward_detect(inputs, **self._detect_kwargs(model, 0.001)), None

    # --- evaluation ---------------------------------------------------------------------------
    def metric(self) -> DetectionMetrics:
        return DetectionMetrics(len(self.meta["classes"]), class_names=self.meta["classes"])

    def update_metric(self, metric: DetectionMetrics, outputs: list[dict], targets: list[dict]) -> None:
        preds, gts = [], []
        for p, t in zip(outputs, targets):
            hw = tuple(int(v) for v in t["orig_size"])
            preds.append({**finalize_detections(p, hw, self.cfg.imgsz, self.cfg.max_det), "image_id": t["image_id"]})
            ann = self._val_anns.get(t["image_id"])
            if ann is not None:
                gts.append({**ann, "image_id": t["image_id"], "orig_size": hw})
            else:  # not from the val dataset (a custom loader): map the letterboxed boxes back
                gts.append({**t, "boxes": to_original(t["boxes"], hw, self.cfg.imgsz), "labels": t["labels"].cpu()})
        metric.update(preds, gts)
        self.collect_coco(preds)

    def postprocess(self, outputs: list[dict[str, Tensor]], meta: list[dict[str, Any]]) -> list[Results]:
        results = []
        for p, m in zip(outputs, meta):
            hw = m["orig_img"].shape[:2]
            d = finalize_detections(p, hw, self.cfg.imgsz, self.cfg.max_det)
            boxes = Boxes(d["boxes"], d["scores"], d["labels"], hw)
            results.append(Results(orig_img=m["orig_img"], path=m["path"], names=self.meta["classes"], boxes=boxes))
        return results

    # --- export -----------------------------------------------------------------------------
    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """The house detector's raw maps **plus decode** → ``boxes (B, A, 4)`` xyxy input px and ``scores
        (B, A, C)`` probabilities; NMS stays outside the graph (the runtime runs the eager ``postprocess``),
        so ``conf``/``iou``/``max_det`` remain run-time choices.

        torchvision detectors (``tv:…``) export torchvision's own inference graph instead (its ONNX path):
        one image per run, NMS inside, ``boxes``/``scores``/``labels`` out, with this config's ``conf``
        (default 0.001, what ``val`` uses), ``iou`` and ``max_det`` baked in; at run time ``conf``/``max_det``
        only filter further and ``iou`` is fixed. Other detectors (Hugging Face) raise :class:`ExportError`."""
        from optik.models.adapters.tv_detection import TVDetector
        from optik.models.detect.house import HouseDetector

        name = self.meta.get("model") or type(model).__name__
        s = self.cfg.imgsz
        preprocess = {"letterbox": {"size": s, "align": "top-left", "pad": "right/bottom", "fill": 114},
                      "scale": "x / 255", "normalize": "inside the model", "layout": "NCHW RGB"}  # fmt: skip
        if isinstance(model, TVDetector):
            return tv_export_module(model, self.cfg, preprocess)
        if not isinstance(model, HouseDetector):
            kind = "Hugging Face" if str(name).startswith("hf:") else type(model).__name__
            raise ExportError(
                f"model {name!r} cannot be exported: {kind} detectors resize, decode and run NMS per image inside "
                "forward (Python control flow over a variable number of boxes); the house detector (house_s / house "
                "/ house_m) and torchvision detectors (tv:…) export"
            )
        postprocess = {"type": "nms", "scores": "sigmoid (already applied)", "boxes": "xyxy letterboxed input px",
                       "nms": "per class (batched_nms), pre_nms_topk 1000", "then": "divide by letterbox factors"}  # fmt: skip
        return _DecodedDetector(model), {"outputs": ["boxes", "scores"], "preprocess": preprocess, "postprocess": postprocess}

    def export_agreement(self, model: nn.Module) -> Agreement:
        """torchvision detectors (one-image graphs, NMS inside): matched detections; the house detector's
        decoded maps: overlap of the top score candidates NMS sees."""
        from optik.deploy.parity import DETECTIONS, MATCHED
        from optik.models.adapters.tv_detection import TVDetector

        return MATCHED if isinstance(model, TVDetector) else DETECTIONS

    # --- serving ----------------------------------------------------------------------------
    def predict_controls(self) -> dict[str, Control | TextListControl]:
        controls: dict[str, Control | TextListControl] = dict(threshold_controls(self.cfg, predict_conf(self._model)))
        if getattr(self._model, "open_vocabulary", False):  # OWL: what to look for, per request (?prompts=a cat,a dog)
            controls["prompts"] = TextListControl(list(getattr(self.cfg, "prompts", None) or self.meta.get("classes") or []) or None,
                                                  "Prompts", "Comma-separated text queries, one per class.", max_items=100)  # fmt: skip
        return controls

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "empty": "nothing found above the threshold"}

    # --- artifacts --------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        from optik.viz.plots import plot_detection_confusion_matrix, plot_pr_curves

        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        names = self.meta["classes"]
        paths = []
        if "AP" in metrics:
            paths.append(plot_pr_curves(metrics, names, out / "pr_curve.png"))
            paths.append(plot_detection_confusion_matrix(np.asarray(metrics["confusion_matrix"]), names, out / "confusion_matrix.png"))
        if val_data is not None and len(val_data) > 0:
            paths.append(self.prediction_grid(model, val_data, out / "val_predictions.png"))
        return paths

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "AP" not in metrics:
            return []
        lines = [
            f"- **mAP@[.50:.95]**: {format_ap(metrics['AP'])} · mAP@.50: {format_ap(metrics['AP50'])} · mAP@.75: {format_ap(metrics['AP75'])}",
            f"- AR@100: {format_ap(metrics['AR100'])} · small/medium/large AP: {format_ap(metrics['APs'], 3)} / {format_ap(metrics['APm'], 3)} / "
            f"{format_ap(metrics['APl'], 3)}",
        ]
        if "f1_conf" in metrics:
            lines.append(f"- best F1 {metrics.get('f1', float('nan')):.3f} at confidence {metrics['f1_conf']:.3f}")
        return lines + ["", "```", format_ap_table(metrics), "```"]


class _DecodedDetector(nn.Module):
    """``images → (boxes (B, A, 4), scores (B, A, C))``: the traceable part of ``forward_detect``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.decode(self.model(images))


def tv_export_module(model: nn.Module, cfg: Any, preprocess: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A torchvision detector / Mask R-CNN's export graph (:meth:`TVDetector.export_graph`) and how to run it:
    batch 1 per run, thresholds from ``cfg`` (``conf`` default 0.001) baked in and recorded under
    ``postprocess``; parity by matching detections (:data:`optik.deploy.parity.MATCHED`)."""
    conf = cfg.conf if getattr(cfg, "conf", None) is not None else 0.001
    graph = model.export_graph(conf=conf, iou=cfg.iou, max_det=cfg.max_det)
    postprocess = {
        "type": "in_graph_nms",
        "baked": graph.thresholds(),
        "nms": f"per class inside the graph, IoU {cfg.iou:g} fixed at export (a run-time iou is ignored; agnostic "
               "NMS, when asked for, runs after it at the run-time iou)",
        "conf": f"run time keeps scores > conf; conf below the exported {conf:g} cannot bring back dropped detections",
        "max_det": f"run time keeps the first max_det (at most the exported {cfg.max_det})",
        "boxes": "xyxy letterboxed input px, best first; boxes under 0.01 px a side dropped at run time",
        "then": "divide by letterbox factors",
        **({"masks": "(N, S, S) probabilities on the letterboxed input; crop the padding, resize, threshold"}
           if graph.with_masks else {}),
    }  # fmt: skip
    return graph, {"outputs": list(graph.output_names), "preprocess": preprocess, "postprocess": postprocess,
                   "batch": 1, "dynamic_axes": {n: {0: "detections"} for n in graph.output_names}}  # fmt: skip


__all__ = ["DetectTask", "detector_max_det", "finalize_detections", "letterbox_factors", "threshold_controls",
           "to_original", "tv_export_module"]
