"""Segmentation behind the one Task interface: ``task=semantic | instance | panoptic``.

    optik segment train data=synthetic:shapes-seg model=unet_s epochs=10            # semantic (default)
    optik segment train task=instance data=synthetic:shapes-inst model=tv:maskrcnn
    optik segment train task=panoptic data=synthetic:shapes-pan model=mask2former

Data: :func:`optik.data.segmentation.load_segmentation_data` (synthetic scenes, mask-PNG folders, COCO
instances / panoptic, VOC). Models (registry keys = the subtask):

* semantic: plain modules returning logits ``(B, C, S, S)`` (``unet*``, ``fpn``, ``tv:deeplabv3_…``), the loss is
  the task's (:class:`~optik.models.segment.losses.SegmentationLoss`, ``loss=ce+dice`` …); or a universal
  model (Mask2Former/OneFormer) speaking the Segmenter protocol;
* instance / panoptic: the Segmenter protocol — ``forward_loss(images, targets)`` and
  ``forward_predict(images, conf=, iou=, max_det=)`` (see docs/architecture.md).

Images are letterboxed to ``imgsz`` (top-left, padded right/bottom). Validation maps every prediction back to
the original image (crop the padding, resize) and compares it with the dataset's original annotation, so
mIoU / mask AP / PQ are measured in source pixels, as the reference tools would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from optik.config import CommonConfig
from optik.config.segment import SegmentTrainConfig
from optik.data.detect_transforms import letterbox_shape
from optik.data.segmentation import IGNORE_INDEX, load_segmentation_data, mask_boxes, segmentation_collate
from optik.data.seg_transforms import seg_transforms
from optik.errors import ConfigError, DatasetError, ExportError
from optik.results import Boxes, Masks, Results
from optik.tasks.base import Task, TaskData
from optik.tasks.detect import to_original

log = logging.getLogger(__name__)

DEFAULT_MODELS = {"semantic": "unet_s", "instance": "tv:maskrcnn", "panoptic": "mask2former"}
# Which annotation kinds can feed which subtask (panoptic data holds both a class map and instances).
COMPATIBLE = {"semantic": ("semantic", "panoptic"), "instance": ("instance", "panoptic"), "panoptic": ("panoptic",)}
EXAMPLE_DATA = {"semantic": "synthetic:shapes-seg", "instance": "synthetic:shapes-inst", "panoptic": "synthetic:shapes-pan"}


def unletterbox(maps: Tensor, orig_hw: tuple[int, int], imgsz: int, mode: str = "bilinear") -> Tensor:
    """``(..., S, S)`` maps on the letterboxed input → ``(..., H, W)`` on the original image: crop the
    padding, then resize (``bilinear`` for scores/probabilities, ``nearest-exact`` for labels).

    >>> unletterbox(torch.zeros(2, 64, 64), (32, 64), 64).shape
    torch.Size([2, 32, 64])
    """
    h, w = int(orig_hw[0]), int(orig_hw[1])
    nh, nw = letterbox_shape((h, w), imgsz)
    x = maps[..., :nh, :nw]
    if (nh, nw) == (h, w):
        return x
    lead = x.shape[:-2]
    x = x.reshape(1, -1, nh, nw)
    dtype = x.dtype
    x = x.float()
    x = F.interpolate(x, size=(h, w), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return x.to(dtype).reshape(*lead, h, w)


class SegmentTask(Task):
    name = "segment"

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        saved = self.meta.get("subtask")
        if saved and "subtask" in cfg.model_fields_set and saved != cfg.subtask:
            raise ConfigError(f"bad value for 'task': {cfg.subtask!r} (the model was trained for task={saved})")
        self.subtask: str = saved or cfg.subtask
        self.meta["subtask"] = self.subtask
        self._model: nn.Module | None = None
        self._loss: Callable | None = None
        self._class_weights: Tensor | None = None
        self._val: Any = None  # val dataset: original annotations for the metric
        self._val_pos: dict[int, int] = {}

    @property
    def model_task(self) -> str:
        return self.subtask

    @property
    def fitness_key(self) -> str:  # type: ignore[override]
        return {"semantic": "mIoU", "instance": "AP", "panoptic": "PQ"}[self.subtask]

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> TaskData:
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError(f"missing key 'data' (e.g. data={EXAMPLE_DATA[self.subtask]})")
        try:  # kind=: a panoptic source also gives semantic maps or (thing) instances
            data = load_segmentation_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, strict=cfg.strict,
                                          skip_bad=cfg.skip_bad, kind=self.subtask)  # fmt: skip
        except DatasetError as e:
            if "cannot give" not in str(e):
                raise
            raise ConfigError(
                f"data: {e}; task={self.subtask} needs {' or '.join(COMPATIBLE[self.subtask])} annotations "
                f"(e.g. data={EXAMPLE_DATA[self.subtask]})"
            ) from None
        if self.meta.get("classes") and list(self.meta["classes"]) != list(data.classes) and cfg.mode != "train":
            raise ConfigError(f"data: classes {data.classes} differ from the model's classes {self.meta['classes']}")
        self.meta["classes"] = list(data.classes)
        if data.isthing is not None:
            self.meta["isthing"] = [bool(t) for t in data.isthing]
        if getattr(data.train, "cat_ids", None) is not None:
            self.meta["cat_ids"] = list(data.train.cat_ids)
        self.build_model()
        val = data.val.with_transform(self.transforms(train=False)) if data.val is not None else None
        self._val = val
        self._val_pos = {image_id: i for i, image_id in enumerate(val.image_ids)} if val is not None else {}
        train = data.train.with_transform(self.transforms(train=True)) if data.train is not None else None
        if isinstance(cfg, SegmentTrainConfig) and cfg.class_weights:
            self._class_weights = self._pixel_class_weights(data.train)
        return TaskData(train=train, val=val, meta=self.meta, description=data.description)

    def _pixel_class_weights(self, train: Any) -> Tensor:
        """scikit-learn's 'balanced' weights from the train set's pixel counts (void excluded):
        n_pixels / (C · count_c). Semantic only (instance/panoptic models own their losses)."""
        if self.subtask != "semantic":
            raise ConfigError(f"class_weights=true is for task=semantic (task={self.subtask} models own their losses)")
        c = len(self.meta["classes"])
        counts = np.zeros(c, dtype=np.float64)
        for i in range(len(train)):
            sem = train.load_target(i)["semantic"].numpy().ravel()
            counts += np.bincount(sem[sem != IGNORE_INDEX], minlength=c)[:c]
        w = counts.sum() / (c * np.maximum(counts, 1))
        log.info("class weights (balanced, from %d train masks): %s", len(train),
                 ", ".join(f"{n} {v:.2f}" for n, v in zip(self.meta["classes"], w)))  # fmt: skip
        return torch.tensor(w, dtype=torch.float32)

    def transforms(self, train: bool) -> Callable:
        cfg = self.cfg
        if not train or not isinstance(cfg, SegmentTrainConfig):
            return seg_transforms(cfg.imgsz, train=False)
        return seg_transforms(cfg.imgsz, train=True, hflip=cfg.hflip, scale_jitter=cfg.scale_jitter, photometric=cfg.photometric)

    def collate(self, batch: list[Any]) -> tuple[Any, Any]:
        return segmentation_collate(batch)

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self._model is not None:
            return self._model
        kwargs: dict[str, Any] = {}
        backbone = getattr(self.cfg, "backbone", None)
        if backbone:
            kwargs["backbone"] = backbone
        if self.subtask == "panoptic":
            kwargs["isthing"] = list(self.meta.get("isthing") or [])
        self._model = self.create_model(DEFAULT_MODELS[self.subtask], **kwargs)
        return self._model

    @staticmethod
    def _is_segmenter(model: nn.Module) -> bool:
        """Segmenter protocol (instance/panoptic/universal models) vs a plain logits model."""
        m = getattr(model, "module", model)  # DDP
        return hasattr(m, "forward_loss")

    # --- step -------------------------------------------------------------------------------
    def _loss_fn(self) -> Callable:
        if self._loss is None:
            from optik.models.segment.losses import SegmentationLoss

            cfg = self.cfg
            self._loss = SegmentationLoss(
                kind=getattr(cfg, "loss", "ce+dice"), ignore_index=IGNORE_INDEX, class_weights=self._class_weights,
                label_smoothing=getattr(cfg, "label_smoothing", 0.0),
            )
        return self._loss

    def loss(self, outputs: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        sem = torch.stack([t["semantic"] for t in targets]).to(outputs.device).long()
        return self._loss_fn()(outputs, sem)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[dict[str, Tensor], Any]:
        if self._is_segmenter(model):
            # Targets go as the data gives them (kind=subtask): instance masks, panoptic segments,
            # or a class map that universal models split into one mask per class themselves.
            return model.forward_loss(inputs, targets), None
        if self.subtask != "semantic":
            raise ConfigError(f"model {self.meta.get('model')!r} is a semantic model; task={self.subtask} needs an instance/panoptic model")
        outputs = model(inputs)
        return self.loss(outputs, targets), outputs

    def _predict_kwargs(self, default_conf: float) -> dict[str, Any]:
        cfg = self.cfg
        conf = cfg.conf if cfg.conf is not None else (0.5 if self.subtask == "panoptic" else default_conf)
        return {"conf": conf, "iou": cfg.iou, "max_det": cfg.max_det}

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        if self._is_segmenter(model):
            return model.forward_predict(inputs, **self._predict_kwargs(0.25))
        return model(inputs)

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[Any, dict[str, Tensor] | None]:
        if self._is_segmenter(model):
            # COCO-style mask AP wants (nearly) every instance: conf 0.001 unless the user set one.
            return model.forward_predict(inputs, **self._predict_kwargs(0.001)), None
        outputs = model(inputs)
        return outputs, self.loss(outputs, targets)

    # --- evaluation ---------------------------------------------------------------------------
    def metric(self) -> Any:
        from optik.metrics.segmentation import InstanceMetrics, PanopticMetrics, SemanticMetrics

        names = self.meta["classes"]
        if self.subtask == "semantic":
            return SemanticMetrics(len(names), class_names=names, ignore_index=IGNORE_INDEX)
        if self.subtask == "instance":
            return InstanceMetrics(len(names), class_names=names)
        return PanopticMetrics(len(names), isthing=self.meta["isthing"], class_names=names)

    def _original_target(self, t: dict) -> dict:
        """The val dataset's own annotation (original pixels) for a batch target, by image id."""
        pos = self._val_pos.get(t["image_id"]) if self._val is not None else None
        if pos is not None:
            return self._val.load_target(pos)
        hw = tuple(int(v) for v in t["orig_size"])  # a custom loader: map the letterboxed target back
        out = dict(t)
        if "semantic" in t:
            out["semantic"] = unletterbox(t["semantic"], hw, self.cfg.imgsz, mode="nearest-exact")
        if "masks" in t:
            out["masks"] = unletterbox(t["masks"].to(torch.uint8), hw, self.cfg.imgsz, mode="nearest-exact").bool()
            out["boxes"] = to_original(t["boxes"], hw, self.cfg.imgsz)
        return out

    def _to_original(self, out: Any, i: int, hw: tuple[int, int]) -> dict[str, Tensor]:
        """Prediction ``i`` of a batch in original pixels: {"semantic"} or {"masks", "labels", "scores"[, "boxes"]}."""
        imgsz = self.cfg.imgsz
        if self.subtask == "semantic":
            scores = out[i].float().cpu()
            return {"semantic": unletterbox(scores, hw, imgsz).argmax(0)}
        p = out[i]
        masks = p["masks"].cpu()
        if masks.dtype == torch.bool:
            masks = unletterbox(masks.to(torch.uint8), hw, imgsz, mode="nearest-exact").bool()
        else:
            masks = unletterbox(masks.float(), hw, imgsz) > self.cfg.mask_threshold
        res = {"masks": masks, "labels": p["labels"].cpu().long(), "scores": p["scores"].float().cpu()}
        res["boxes"] = to_original(p["boxes"], hw, imgsz) if "boxes" in p else mask_boxes(masks)
        return res

    def update_metric(self, metric: Any, outputs: Any, targets: list[dict]) -> None:
        preds, gts = [], []
        for i, t in enumerate(targets):
            hw = tuple(int(v) for v in t["orig_size"])
            p = self._to_original(outputs, i, hw)
            g = self._original_target(t)
            if self.subtask == "semantic":
                preds.append(p["semantic"])
                gts.append(g["semantic"])
                continue
            if self.subtask == "instance":
                p = {**p, "image_id": t["image_id"]}
            preds.append(p)
            gts.append(g)
        metric.update(preds, gts)
        if self.subtask == "instance" and getattr(self.cfg, "save_json", False):
            self.coco_rows += self._coco_results(preds)

    def _coco_results(self, preds: list[dict]) -> list[dict]:
        """COCO results rows with RLE ``segmentation`` (original pixels) for predictions.json."""
        from faster_coco_eval.core import mask as mask_utils

        from optik.metrics.detection import predictions_to_coco

        cat_ids = self.meta.get("cat_ids") or list(range(len(self.meta["classes"])))
        rows = []
        for p in preds:
            m = p["masks"].numpy().astype(np.uint8)
            rles = list(mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0)))) if len(m) else []
            for r in rles:  # JSON needs str counts
                r["counts"] = r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]
            fields = {k: p[k] for k in ("image_id", "boxes", "scores", "labels")}
            rows += predictions_to_coco([{**fields, "segmentation": rles}], cat_ids)
        return rows

    # --- predictions ----------------------------------------------------------------------------
    def postprocess(self, outputs: Any, meta: list[dict[str, Any]]) -> list[Results]:
        names = self.meta["classes"]
        results = []
        for i, m in enumerate(meta):
            img = m["orig_img"]
            hw = img.shape[:2]
            p = self._to_original(outputs, i, hw)
            if self.subtask == "semantic":
                results.append(Results(orig_img=img, path=m["path"], names=names, semantic=p["semantic"]))
                continue
            boxes = Boxes(p["boxes"], p["scores"], p["labels"], hw)
            masks = Masks(p["masks"], hw)
            if self.subtask == "instance":
                results.append(Results(orig_img=img, path=m["path"], names=names, boxes=boxes, masks=masks))
                continue
            isthing = self.meta.get("isthing") or [True] * len(names)
            panoptic = torch.zeros(hw, dtype=torch.int64)
            segments = []
            for k, (mask, label, score) in enumerate(zip(p["masks"], p["labels"].tolist(), p["scores"].tolist()), start=1):
                panoptic[mask] = k
                segments.append({"id": k, "label": label, "score": score, "isthing": bool(isthing[label]), "area": int(mask.sum())})
            results.append(Results(orig_img=img, path=m["path"], names=names, boxes=boxes, masks=masks,
                                   panoptic=panoptic, segments=segments))  # fmt: skip
        return results

    # --- export -----------------------------------------------------------------------------
    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """Semantic logits models export as they are (``logits (B, C, S, S)``, argmax outside). Mask R-CNN
        (``tv:maskrcnn…``) exports torchvision's inference graph (one image per run, NMS and mask pasting
        inside, ``boxes``/``scores``/``labels``/``masks`` out, ``conf``/``iou``/``max_det`` baked in as for
        torchvision detectors: :func:`optik.tasks.detect.tv_export_module`). Other Segmenter protocol models
        (Mask2Former/OneFormer…) raise :class:`ExportError`."""
        from optik.models.adapters.tv_instance import TVInstanceSegmenter

        name = self.meta.get("model") or type(model).__name__
        s = self.cfg.imgsz
        preprocess = {"letterbox": {"size": s, "align": "top-left", "pad": "right/bottom", "fill": 114},
                      "scale": "x / 255", "normalize": "inside the model", "layout": "NCHW RGB"}  # fmt: skip
        if isinstance(model, TVInstanceSegmenter) and self.subtask == "instance":
            from optik.tasks.detect import tv_export_module

            return tv_export_module(model, self.cfg, preprocess)
        if self._is_segmenter(model) or self.subtask != "semantic":
            raise ExportError(
                f"model {name!r} (task={self.subtask}) cannot be exported: {type(model).__name__} returns a variable "
                "number of masks per image from data-dependent post-processing (thresholds, NMS / mask fusing) inside "
                "forward_predict; semantic logits models (unet*, fpn, tv:deeplabv3/fcn/lraspp …) and tv:maskrcnn export"
            )
        postprocess = {"type": "argmax", "axis": 1, "then": "crop the padding, resize to the original image (bilinear scores)"}
        return model, {"outputs": ["logits"], "preprocess": preprocess, "postprocess": postprocess, "agreement": "miou"}

    # --- artifacts --------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        from optik.viz.plots import plot_bar, plot_confusion_matrix, plot_pr_curves

        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        names = self.meta["classes"]
        paths = []
        if "per_class_IoU" in metrics:
            paths.append(plot_bar(_finite(metrics["per_class_IoU"]), out / "per_class_iou.png", title="IoU per class", xlabel="IoU"))
            paths.append(plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), names, out / "confusion_matrix.png"))
        if "per_class_PQ" in metrics:
            paths.append(plot_bar(_finite(metrics["per_class_PQ"]), out / "per_class_pq.png", title="PQ per class", xlabel="PQ"))
        if "precision" in metrics:
            paths.append(plot_pr_curves(metrics, names, out / "pr_curve.png"))
        if val_data is not None and len(val_data) > 0:
            paths.append(self.prediction_grid(model, val_data, out / "val_predictions.png"))
        return paths

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "mIoU" in metrics:
            from optik.metrics.segmentation import format_iou_table

            return [
                f"- **mIoU**: {metrics['mIoU']:.4f} · pixel accuracy: {metrics['pixel_acc']:.4f} · "
                f"mean class accuracy: {metrics['mean_acc']:.4f} · fwIoU: {metrics['fwIoU']:.4f} · mDice: {metrics['mDice']:.4f}",
                "", "```", format_iou_table(metrics), "```",
            ]
        if "PQ" in metrics:
            lines = [f"- **PQ**: {metrics['PQ']:.4f} · SQ: {metrics['SQ']:.4f} · RQ: {metrics['RQ']:.4f}"]
            for part, label in (("th", "things"), ("st", "stuff")):
                if f"PQ_{part}" in metrics:
                    lines.append(f"- {label}: PQ {metrics[f'PQ_{part}']:.4f} · SQ {metrics[f'SQ_{part}']:.4f} · RQ {metrics[f'RQ_{part}']:.4f}")
            from optik.metrics.segmentation import format_pq_table

            return lines + ["", "```", format_pq_table(metrics), "```"]
        if "AP" in metrics:
            from optik.metrics.detection import format_ap_table

            return [
                f"- **mask mAP@[.50:.95]**: {metrics['AP']:.4f} · mask mAP@.50: {metrics['AP50']:.4f} · mAP@.75: {metrics['AP75']:.4f}",
                f"- box mAP@[.50:.95]: {metrics.get('box_AP', float('nan')):.4f} · box mAP@.50: {metrics.get('box_AP50', float('nan')):.4f}",
                "", "```", format_ap_table(metrics), "```",
            ]
        return []


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v == v}


__all__ = ["SegmentTask", "unletterbox"]
