"""Image classification: the reference :class:`Task` implementation.

Data: ``digits``, ``synthetic:shapes``, ImageFolder dirs, CSVs, HF datasets
(:mod:`optik.data.sources`). Models: the native zoo, ``timm:<name>``, ``hf:<id|dir>`` or an optik
weights file (:mod:`optik.models`). Loss: cross-entropy (label smoothing, class weights, soft
MixUp/CutMix targets); with ``teacher=`` Hinton's distillation loss (:mod:`optik.deploy.distill`).
Metric: top-k accuracy, P/R/F1, confusion matrix (equal to scikit-learn).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from optik import models
from optik.config import CommonConfig
from optik.config.classify import ClassifyTrainConfig
from optik.data.sources import load_classification_data
from optik.data.transforms import batch_mix, classify_transforms
from optik import distributed as dist
from optik.errors import ConfigError
from optik.metrics.classification import ClassificationMetrics, format_per_class_table
from optik.results import Results
from optik.tasks.base import Control, Task, DataSplits

log = logging.getLogger(__name__)

DEFAULT_MODEL = "cnn"


class ClassifyTask(Task):
    name = "classify"
    fitness_key = "top1"
    data_kind = "classification"
    smallest_model = "cnn"

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._model: nn.Module | None = None
        self._class_weights: Tensor | None = None
        self._unfrozen = False
        self._teacher: nn.Module | None = None  # TeacherAdapter when cfg.teacher is set (training only)

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=digits, data=synthetic:shapes, data=path/to/folder)")
        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        if self.meta.get("classes") and list(self.meta["classes"]) != list(data.classes) and cfg.mode != "train":
            raise ConfigError(
                f"data: classes {data.classes} differ from the model's classes {self.meta['classes']}; "
                "validate on data with the same class names"
            )
        self.meta["classes"] = list(data.classes)
        self.meta["skipped"] = len(data.skipped)
        model = self.build_model()  # transforms need the model's normalisation (timm/HF pretrained cfgs)
        norm = models.model_data_config(model)
        self.meta["mean"], self.meta["std"] = list(norm["mean"]), list(norm["std"])
        train_tf = self.transforms(train=True) if isinstance(cfg, ClassifyTrainConfig) else None
        val_tf = self.transforms(train=False)
        train = data.train.with_transform(train_tf) if train_tf is not None else data.train
        val = data.val.with_transform(val_tf) if data.val is not None else None
        if isinstance(cfg, ClassifyTrainConfig) and cfg.class_weights:
            counts = np.bincount(np.asarray(data.train.targets), minlength=len(data.classes)).astype(np.float64)
            w = len(data.train.targets) / (len(data.classes) * np.maximum(counts, 1))  # sklearn 'balanced'
            self._class_weights = torch.tensor(w, dtype=torch.float32)
        if isinstance(cfg, ClassifyTrainConfig) and cfg.teacher:
            self._setup_teacher(val)
        elif isinstance(cfg, ClassifyTrainConfig):
            for key in ("distill_alpha", "distill_T"):  # a distillation key without a teacher: say so, don't ignore it
                if getattr(cfg, key) != ClassifyTrainConfig.model_fields[key].default:
                    raise ConfigError(f"key '{key}' needs 'teacher' (the trained model to distil from, e.g. teacher=runs/classify/train)")
        return DataSplits(train=train, val=val, meta=self.meta, description=data.description)

    def transforms(self, train: bool) -> Callable:
        cfg = self.cfg
        mean, std = tuple(self.meta.get("mean", (0.485, 0.456, 0.406))), tuple(self.meta.get("std", (0.229, 0.224, 0.225)))
        if not train:
            return classify_transforms(cfg.imgsz, train=False, mean=mean, std=std)
        return classify_transforms(
            cfg.imgsz, train=True, augment=cfg.augment, hflip=cfg.hflip, vflip=cfg.vflip, scale=cfg.scale,
            color_jitter=cfg.color_jitter, erasing=cfg.erasing, mean=mean, std=std,
        )

    def train_sampler(self, dataset: Dataset) -> Sampler | None:
        if getattr(self.cfg, "sampler", "none") != "weighted":
            return None
        targets = np.asarray(dataset.targets)
        freq = np.bincount(targets, minlength=len(self.meta["classes"]))
        return dist.WeightedEpochSampler(torch.tensor(1.0 / freq[targets]), seed=self.cfg.seed)

    def batch_transform(self) -> Callable[[Any, Any], tuple[Any, Any]] | None:
        cfg = self.cfg
        if not isinstance(cfg, ClassifyTrainConfig):
            return None
        return batch_mix(len(self.meta["classes"]), mixup=cfg.mixup, cutmix=cfg.cutmix)

    def _setup_teacher(self, val: Dataset | None) -> None:
        """Load ``cfg.teacher`` once, wrapped to take the student's batches, and record its val top-1."""
        from optik.deploy.distill import TeacherAdapter, load_teacher, teacher_accuracy
        from optik.device import resolve_device

        cfg = self.cfg
        device = resolve_device(cfg.device)
        teacher, tmeta = load_teacher(cfg.teacher, self.meta["classes"], device=str(device), task=self.name)
        norm = models.model_data_config(teacher) if "mean" not in tmeta else tmeta
        self._teacher = TeacherAdapter(
            teacher, self.meta["mean"], self.meta["std"], norm["mean"], norm["std"], tmeta.get("imgsz") or cfg.imgsz
        )
        info: dict[str, Any] = {
            "teacher": tmeta["weights"], "teacher_model": tmeta["model"], "teacher_imgsz": tmeta.get("imgsz"),
            "alpha": cfg.distill_alpha, "T": cfg.distill_T,
        }
        if val is not None and len(val) > 0 and dist.is_main():
            info["teacher_top1"] = teacher_accuracy(self._teacher, val, cfg.batch, device)
            log.info("teacher %s: top-1 %.4f on the val split", tmeta["weights"], info["teacher_top1"])
        self.meta["distill"] = info  # stored in the student's weights: where its knowledge came from

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self._model is not None:
            return self._model
        cfg = self.cfg
        model = self.create_model(DEFAULT_MODEL)
        if isinstance(cfg, ClassifyTrainConfig) and cfg.freeze == "backbone":
            models.freeze_backbone(model)
        self._model = model
        return model

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> nn.Module | None:
        cfg = self.cfg
        # Two-phase fine-tune: head only for freeze_epochs, then everything (the schedule lowers lr).
        # ">=" + a flag: a run resumed after the switch must come back unfrozen, exactly once.
        phase2 = isinstance(cfg, ClassifyTrainConfig) and cfg.freeze == "backbone" and cfg.freeze_epochs and epoch >= cfg.freeze_epochs
        if phase2 and not self._unfrozen:
            self._unfrozen = True
            models.unfreeze(model)
            if dist.is_main():
                log.info("epoch %d: backbone unfrozen, lr × %g", epoch + 1, cfg.finetune_lr)
            return model
        return None

    # --- step -------------------------------------------------------------------------------
    def loss(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        weight = self._class_weights.to(outputs.device) if self._class_weights is not None else None
        smoothing = getattr(self.cfg, "label_smoothing", 0.0)
        return {"loss": F.cross_entropy(outputs.float(), targets, weight=weight, label_smoothing=smoothing)}

    def train_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        if self._teacher is None:
            return super().train_step(model, inputs, targets)
        from optik.deploy.distill import distillation_loss

        outputs = self.forward(model, inputs)
        # The teacher hangs off the task, not the model: under DDP (TrainStep wraps task + model)
        # it is no DDP parameter, and each rank runs its own frozen copy on its own shard.
        cfg = self.cfg
        ce = self.loss(outputs, targets)["loss"]  # label smoothing / class weights / soft MixUp targets
        return distillation_loss(outputs, self._teacher(inputs), targets, alpha=cfg.distill_alpha, T=cfg.distill_T, ce=ce), outputs

    def metric(self) -> ClassificationMetrics:
        return ClassificationMetrics(len(self.meta["classes"]), class_names=self.meta["classes"])

    def postprocess(self, outputs: Tensor, meta: list[dict[str, Any]]) -> list[Results]:
        probs = outputs.float().softmax(-1).cpu()
        topk = getattr(self.cfg, "topk", 5)
        return [
            Results(orig_img=m["orig_img"], path=m["path"], names=self.meta["classes"], probs=p, topk=topk)
            for p, m in zip(probs, meta)
        ]

    # --- serving ----------------------------------------------------------------------------
    def predict_controls(self) -> dict[str, Control]:
        n = len(self.meta.get("classes") or [])
        topk = Control(getattr(self.cfg, "topk", 5), 1, 1000, 1, "Top-k classes", "How many classes to list.", integer=True,
                       slider_max=max(1, min(n, 20)))  # fmt: skip
        return {"topk": topk}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "empty": "no classes"}

    # --- artifacts --------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        from optik.viz.plots import plot_bar, plot_confusion_matrix, plot_prediction_grid

        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        names = self.meta["classes"]
        paths = []
        if "confusion_matrix" in metrics:
            paths.append(plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), names, out / "confusion_matrix.png"))
            f1 = metrics["per_class"]["f1"]
            paths.append(plot_bar(dict(zip(names, f1)), out / "per_class_f1.png", title="Per-class F1 (val)", xlabel="F1"))
        if val_data is not None and len(val_data) > 0:
            paths.append(self._prediction_grid(model, val_data, out / "val_predictions.png", plot_prediction_grid))
        return paths

    @torch.no_grad()
    def _prediction_grid(self, model: nn.Module, data: Any, path: Path, plot: Callable) -> Path:
        from optik.device import model_device

        device = model_device(model)
        idx = np.linspace(0, len(data) - 1, num=min(16, len(data))).astype(int).tolist()
        batch = torch.stack([data[i][0] for i in idx]).to(device)
        was = model.training
        model.eval()
        probs = model(batch).float().softmax(-1).cpu()
        model.train(was)
        images = torch.stack([_resize_uint8(data.load(i), 64) for i in idx])
        conf, pred = probs.max(-1)
        return plot(images.numpy(), [data.targets[i] for i in idx], pred.tolist(), conf.tolist(), self.meta["classes"], path)

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "top1" not in metrics:
            return []
        lines = [f"- **top-1 accuracy**: {metrics['top1']:.4f}"]
        kd = self.meta.get("distill")
        if kd:
            teacher_top1 = f", teacher top-1 {kd['teacher_top1']:.4f}" if kd.get("teacher_top1") is not None else ""
            lines.append(
                f"- distilled from `{kd['teacher']}` ({kd['teacher_model']}, imgsz {kd['teacher_imgsz']}{teacher_top1}; "
                f"alpha {kd['alpha']}, T {kd['T']})"
            )
        if "top5" in metrics:
            lines.append(f"- **top-5 accuracy**: {metrics['top5']:.4f}")
        lines += [
            f"- macro precision / recall / F1: {metrics['precision_macro']:.4f} / {metrics['recall_macro']:.4f} / {metrics['f1_macro']:.4f}",
            "",
            "```",
            format_per_class_table(metrics),
            "```",
        ]
        return lines


def _resize_uint8(img: Tensor, size: int) -> Tensor:
    """Thumbnail for plots: nearest for tiny images (digits stay crisp), area otherwise."""
    x = img.unsqueeze(0).float()
    mode = "nearest" if img.shape[-1] < size else "area"
    return F.interpolate(x, size=(size, size), mode=mode).clamp(0, 255).to(torch.uint8)[0]


__all__ = ["ClassifyTask", "DEFAULT_MODEL"]
