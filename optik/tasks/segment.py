"""Segmentation behind the one Task interface: ``task=semantic | instance | panoptic``.

    optik segment train data=synthetic:shapes-seg model=unet_s epochs=10            # semantic (default)
    optik segment train task=instance data=synthetic:shapes-inst model=tv:maskrcnn
    optik segment train task=panoptic data=synthetic:shapes-pan model=mask2former

Data: :func:`optik.data.sources.load_segmentation_data` (synthetic scenes, mask-PNG folders, COCO
instances / panoptic, VOC). Models (registry keys = the subtask):

* semantic: plain modules returning logits ``(B, C, S, S)`` (``unet*``, ``fpn``, ``tv:deeplabv3_…``), the loss is
  the task's (:class:`~optik.models.segment.losses.SegmentationLoss`, ``loss=ce+dice`` …); or a universal
  model (Mask2Former/OneFormer) speaking the Segmenter protocol;
* instance / panoptic: the Segmenter protocol (:mod:`optik.models.segment.protocol`, declared by the model) —
  ``forward_loss(images, targets)`` and ``forward_predict(images, conf=, iou=, max_det=)``.

What differs between the three flavours lives in one strategy each (:mod:`optik.tasks.segment_strategies`),
chosen once from ``subtask``; this module holds what they share (data, thresholds, the way back to source
pixels, plots).

Images are letterboxed to ``imgsz`` (top-left, padded right/bottom). Validation maps every prediction back to
the original image (crop the padding, resize) and compares it with the dataset's original annotation, so
mIoU / mask AP / PQ are measured in source pixels, as the reference tools would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from optik.config import CommonConfig
from optik.config.segment import SegmentTrainConfig
from optik.data.seg_transforms import seg_transforms
from optik.data.collate import segmentation_collate
from optik.data.segmentation_dataset import IGNORE_INDEX
from optik.data.sources import load_segmentation_data
from optik.errors import ConfigError, DatasetError
from optik.results import Results
from optik.tasks.base import Control, Task, DataSplits, hex_colors
from optik.tasks.coco import CocoResults
from optik.tasks.detect import to_original
from optik.tasks.segment_strategies import STRATEGIES, SegmentStrategy, unletterbox

if TYPE_CHECKING:
    from optik.deploy.parity import Agreement

log = logging.getLogger(__name__)

#: Semantic models on a timm backbone (``backbone=timm:<name>``) whose ``pretrained=`` initialises that backbone.
BACKBONE_MODELS = ("fpn", "unet_timm")


class SegmentTask(CocoResults, Task):
    name = "segment"

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        saved = self.meta.get("subtask")
        if saved and "subtask" in cfg.model_fields_set and saved != cfg.subtask:
            raise ConfigError(f"bad value for 'task': {cfg.subtask!r} (the model was trained for task={saved})")
        self.subtask: str = saved or cfg.subtask
        self.meta["subtask"] = self.subtask
        self.strategy: SegmentStrategy = STRATEGIES[self.subtask](self)  # the flavour, chosen once
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
        return self.strategy.fitness_key

    @property
    def data_kind(self) -> str:  # type: ignore[override]
        return self.strategy.data_kind

    @property
    def smallest_model(self) -> str:  # type: ignore[override]
        return self.strategy.smallest_model

    @property
    def coco_results(self) -> bool:  # type: ignore[override]
        return self.strategy.coco  # instance only: semantic / panoptic val write no predictions.json

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        cfg, strategy = self.cfg, self.strategy
        if cfg.data is None:
            raise ConfigError(f"missing key 'data' (e.g. data={strategy.example_data})")
        try:  # kind=: a panoptic source also gives semantic maps or (thing) instances
            data = load_segmentation_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, strict=cfg.strict,
                                          skip_bad=cfg.skip_bad, kind=self.subtask)  # fmt: skip
        except DatasetError as e:
            if "cannot give" not in str(e):
                raise
            raise ConfigError(
                f"data: {e}; task={self.subtask} needs {' or '.join(strategy.compatible)} annotations "
                f"(e.g. data={strategy.example_data})"
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
        return DataSplits(train=train, val=val, meta=self.meta, description=data.description)

    def _pixel_class_weights(self, train: Any) -> Tensor:
        """scikit-learn's 'balanced' weights from the train set's pixel counts (void excluded):
        n_pixels / (C · count_c). Class maps only (instance/panoptic models own their losses)."""
        if not self.strategy.pixel_weights:
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
        kwargs: dict[str, Any] = self.strategy.build_kwargs()
        backbone = self._backbone()
        if backbone:
            kwargs["backbone"] = backbone
        model = self.create_model(self.strategy.default_model, **kwargs)
        self.strategy.bind(model)  # logits model or Segmenter protocol: read once
        self._model = model
        return model

    def _backbone(self) -> str | None:
        """``backbone=``, or for a model on a timm backbone (``fpn``, ``unet_timm``) given ``pretrained=`` an optik
        weights file of a timm classifier (``optik models convert`` output), the architecture that file holds:
        ``model=fpn pretrained=lite0.safetensors`` builds the FPN on ``timm:tf_efficientnet_lite0``."""
        given = getattr(self.cfg, "backbone", None)
        pretrained = getattr(self.cfg, "pretrained", None)
        if (self.cfg.model or self.strategy.default_model) not in BACKBONE_MODELS or not isinstance(pretrained, str):
            return given
        path = Path(pretrained)
        if path.suffix != ".safetensors" or not path.is_file():
            return given
        from optik.weights import read_meta

        arch = str(read_meta(path).get("model") or "")
        if not arch.startswith("timm:"):
            return given
        if given and given != arch:
            raise ConfigError(f"bad value for 'backbone': {given!r}, but pretrained='{pretrained}' holds {arch} weights "
                              f"(leave backbone unset to use {arch})")  # fmt: skip
        return arch

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
        """The task's loss of logits models (``loss=ce+dice`` …); Segmenter protocol models bring their own."""
        sem = torch.stack([t["semantic"] for t in targets]).to(outputs.device).long()
        return self._loss_fn()(outputs, sem)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[dict[str, Tensor], Any]:
        return self.strategy.train_step(model, inputs, targets)

    def forward(self, model: nn.Module, inputs: Tensor) -> Any:
        return self.strategy.forward(model, inputs)

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: list[dict]) -> tuple[Any, dict[str, Tensor] | None]:
        return self.strategy.eval_step(model, inputs, targets)

    # --- evaluation ---------------------------------------------------------------------------
    def metric(self) -> Any:
        return self.strategy.metric()

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

    def update_metric(self, metric: Any, outputs: Any, targets: list[dict]) -> None:
        preds, gts = [], []
        for i, t in enumerate(targets):
            hw = tuple(int(v) for v in t["orig_size"])
            p, g = self.strategy.metric_pair(self.strategy.to_original(outputs, i, hw), self._original_target(t), t["image_id"])
            preds.append(p)
            gts.append(g)
        metric.update(preds, gts)
        if self.strategy.coco:
            self.collect_coco(preds)

    # --- predictions ----------------------------------------------------------------------------
    def postprocess(self, outputs: Any, meta: list[dict[str, Any]]) -> list[Results]:
        results = []
        for i, m in enumerate(meta):
            img = m["orig_img"]
            results.append(self.strategy.results(img, m["path"], self.strategy.to_original(outputs, i, img.shape[:2])))
        return results

    # --- serving and export -------------------------------------------------------------------
    def predict_controls(self) -> dict[str, Control]:
        return self.strategy.controls()

    def describe(self) -> dict[str, Any]:
        colors = hex_colors(self.strategy.colors(list(self.meta.get("classes") or [])))
        return {"subtask": self.subtask, "colors": colors, "empty": "nothing found above the threshold"}

    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """Semantic logits models export as they are (``logits (B, C, S, S)``, argmax outside). Mask R-CNN
        (``tv:maskrcnn…``) exports torchvision's inference graph (one image per run, NMS and mask pasting
        inside, ``boxes``/``scores``/``labels``/``masks`` out, ``conf``/``iou``/``max_det`` baked in as for
        torchvision detectors: :func:`optik.tasks.detect.tv_export_module`). Other Segmenter protocol models
        (Mask2Former/OneFormer…) raise :class:`ExportError`."""
        s = self.cfg.imgsz
        preprocess = {"letterbox": {"size": s, "align": "top-left", "pad": "right/bottom", "fill": 114},
                      "scale": "x / 255", "normalize": "inside the model", "layout": "NCHW RGB"}  # fmt: skip
        return self.strategy.export_module(model, preprocess)

    def export_agreement(self, model: nn.Module) -> Agreement:
        return self.strategy.export_agreement(model)

    # --- artifacts --------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        from optik.viz.plots import plot_bar, plot_confusion_matrix, plot_pr_curves

        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        names = self.meta["classes"]
        paths = []
        # A class absent from the val ground truth has no IoU / PQ (NaN): no bar; a val split without any
        # annotated pixel or segment has none at all, so no chart (plot_bar refuses an empty one).
        if "per_class_IoU" in metrics:
            if iou := _finite(metrics["per_class_IoU"]):
                paths.append(plot_bar(iou, out / "per_class_iou.png", title="IoU per class", xlabel="IoU"))
            paths.append(plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), names, out / "confusion_matrix.png"))
        if "per_class_PQ" in metrics and (pq := _finite(metrics["per_class_PQ"])):
            paths.append(plot_bar(pq, out / "per_class_pq.png", title="PQ per class", xlabel="PQ"))
        if "precision" in metrics:
            paths.append(plot_pr_curves(metrics, names, out / "pr_curve.png"))
        if val_data is not None and len(val_data) > 0:
            paths.append(self.prediction_grid(model, val_data, out / "val_predictions.png"))
        return paths

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        return self.strategy.report_lines(metrics)


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v == v}


__all__ = ["SegmentTask", "unletterbox"]
