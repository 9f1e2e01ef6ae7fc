"""Image classification: the reference :class:`Task` implementation.

Data: ``digits``, ``synthetic:shapes``, ImageFolder dirs, CSVs, HF datasets
(:mod:`optik.data.sources`). Models: the native zoo, ``timm:<name>``, ``hf:<id|dir>`` or an optik
weights file (:mod:`optik.models`). Loss: cross-entropy (label smoothing, class weights, soft
MixUp/CutMix targets); with ``teacher=`` Hinton's distillation loss (:mod:`optik.deploy.distill`).
Metric: top-k accuracy, P/R/F1, confusion matrix (equal to scikit-learn).

Multi-label data (a set of labels per image — ``synthetic:shapes-multi``, a CSV with ``a|b`` labels, a
folder with a ``multilabel.csv``) switches the same models to per-class sigmoids: BCE-with-logits
(``class_weights``: per-class ``pos_weight``), ``loss=asl`` (Ridnik et al. 2021) or ``loss=focal``;
MixUp/CutMix mix the multi-hot targets. Metric: mAP (the fitness), F1, Hamming loss, subset accuracy
(:mod:`optik.metrics.multilabel`). At every validation the per-class thresholds that maximise F1 on
the val split are stored with the weights (``meta["thresholds"]``; 0.5 without val) and predict uses them.
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
from optik.data.transforms import PHOTO_AUGMENT, augment_settings, batch_mix, classify_transforms
from optik import distributed as dist
from optik.errors import ConfigError
from optik.metrics.classification import ClassificationMetrics, format_per_class_table
from optik.metrics.multilabel import DEFAULT_THRESHOLD, MultiLabelMetrics, format_multilabel_table
from optik.results import Results
from optik.tasks.base import Control, Task, DataSplits

log = logging.getLogger(__name__)

DEFAULT_MODEL = "cnn"
#: Report / console rows of the per-class table; more classes (an ImageNet head: 1000) list the lowest-F1 ones.
PER_CLASS_ROWS = 50


def _class_diff(data: list[str], model: list[str]) -> str:
    """How the data's class list differs from the model's, short even for 1000 ImageNet classes.

    >>> _class_diff(["cat", "dog"], ["cat", "dog", "fox"])
    "['cat', 'dog'] differ from the model's classes ['cat', 'dog', 'fox']"
    """
    if len(data) <= 20 and len(model) <= 20:
        return f"{list(data)} differ from the model's classes {list(model)}"
    n = min(len(data), len(model))
    first = next((i for i in range(n) if data[i] != model[i]), n)
    where = f"class {first}: {data[first]!r} in the data, {model[first]!r} in the model" if first < n else f"class {n}"
    return f"({len(data)}) differ from the model's {len(model)} classes (first difference at {where})"


class ClassifyTask(Task):
    name = "classify"
    data_kind = "classification"
    smallest_model = "cnn"
    scratch_lr = True

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._model: nn.Module | None = None
        self._class_weights: Tensor | None = None
        self._unfrozen = False
        self._teacher: nn.Module | None = None  # TeacherAdapter when cfg.teacher is set (training only)
        self._pos_weight: Tensor | None = None  # multi-label class_weights: BCE pos_weight per class
        self._epoch_metric: MultiLabelMetrics | None = None  # this epoch's val metric (multi-label training)

    @property
    def multilabel(self) -> bool:
        """True for multi-label data / a model trained on it (``meta["multilabel"]``)."""
        return bool(self.meta.get("multilabel"))

    @property
    def fitness_key(self) -> str:  # type: ignore[override]
        return "mAP" if self.multilabel else "top1"

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=digits, data=synthetic:shapes, data=path/to/folder)")
        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        multilabel = bool(getattr(data.train, "multilabel", False))
        if self.meta.get("classes") and cfg.mode != "train" and self.multilabel != multilabel:
            kinds = ("single-label", "multi-label")
            raise ConfigError(f"data: {data.description} is {kinds[multilabel]} but the model was trained "
                              f"{kinds[self.multilabel]}; validate on data of the same kind")  # fmt: skip
        if multilabel:
            self.meta["multilabel"] = True
        else:
            self.meta.pop("multilabel", None)
        self._check_loss_keys(data.description)
        if self.meta.get("classes") and list(self.meta["classes"]) != list(data.classes) and cfg.mode != "train":
            raise ConfigError(f"data: classes {_class_diff(data.classes, self.meta['classes'])}; "
                              "validate on data with the same class names")  # fmt: skip
        self.meta["classes"] = list(data.classes)
        self.meta["skipped"] = len(data.skipped)
        model = self.build_model()  # transforms need the model's normalisation (timm/HF pretrained cfgs)
        norm = models.model_data_config(model)
        self.meta["mean"], self.meta["std"] = list(norm["mean"]), list(norm["std"])
        if isinstance(cfg, ClassifyTrainConfig):
            self._resolve_augment(data)
        train_tf = self.transforms(train=True) if isinstance(cfg, ClassifyTrainConfig) else None
        val_tf = self.transforms(train=False)
        train = data.train.with_transform(train_tf) if train_tf is not None else data.train
        val = data.val.with_transform(val_tf) if data.val is not None else None
        if isinstance(cfg, ClassifyTrainConfig) and cfg.class_weights and multilabel:
            # BCE's pos_weight = negatives / positives per class (torch's documented use); a class with
            # no positive keeps 1 (nothing to up-weight).
            pos = data.train.label_matrix().sum(0).astype(np.float64)
            self._pos_weight = torch.tensor(np.where(pos > 0, (len(data.train) - pos) / np.maximum(pos, 1), 1.0),
                                            dtype=torch.float32)  # fmt: skip
        elif isinstance(cfg, ClassifyTrainConfig) and cfg.class_weights:
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

    def _check_loss_keys(self, data: str) -> None:
        """Refuse loss keys that do not fit the data (a multi-label loss on single-label data, softmax-only
        options on multi-label data, a loss's option without that loss), naming the key."""
        cfg = self.cfg
        if not isinstance(cfg, ClassifyTrainConfig):
            return
        if self.multilabel:
            refuse = {
                "loss": (cfg.loss == "ce", "bad value for 'loss': ce (softmax cross-entropy) needs one label per image"),
                "label_smoothing": (cfg.label_smoothing > 0, "key 'label_smoothing' applies to single-label cross-entropy"),
                "sampler": (cfg.sampler == "weighted", ("bad value for 'sampler': weighted balances one label per image "
                            "(use class_weights=true, BCE's per-class pos_weight, or loss=asl)")),
                "class_weights": (cfg.class_weights and cfg.loss in ("asl", "focal"), (f"key 'class_weights' is BCE's "
                                  f"pos_weight; loss={cfg.loss} does its own re-weighting (use one of the two)")),
                "teacher": (bool(cfg.teacher), "key 'teacher' distils softmax outputs (single-label only)"),
            }  # fmt: skip
            for bad, msg in refuse.values():
                if bad:
                    raise ConfigError(f"{msg}; data {data} is multi-label")
        elif cfg.loss in ("bce", "asl", "focal"):
            raise ConfigError(
                f"bad value for 'loss': {cfg.loss} is a multi-label loss, but data {data} has one label per image "
                "(use loss=auto or ce; multi-label data: a CSV with 'a|b' labels, a folder with multilabel.csv, "
                "synthetic:shapes-multi)"
            )
        loss = self._loss_kind()
        for key, needs in (("asl_gamma_neg", "asl"), ("asl_gamma_pos", "asl"), ("asl_clip", "asl"),
                           ("focal_gamma", "focal"), ("focal_alpha", "focal")):  # fmt: skip
            if getattr(cfg, key) != ClassifyTrainConfig.model_fields[key].default and loss != needs:
                raise ConfigError(f"key '{key}' needs loss={needs} (the loss is {loss})")

    def _loss_kind(self) -> str:
        """The loss in use: ``ce`` (single-label) or ``bce`` / ``asl`` / ``focal`` (multi-label)."""
        loss = getattr(self.cfg, "loss", "auto")
        return ("bce" if self.multilabel else "ce") if loss == "auto" else loss

    def _resolve_augment(self, data: DataSplits) -> None:
        """Fill the augmentation keys the run left unset (``hflip``, ``scale``) with the data source's defaults
        (digits, synthetic shapes: no flips, no zooming crop; photos: flips and a 0.6-1.0 crop) and log them.
        ``self.cfg`` becomes a copy holding the values used: the trainer writes it to the run's config.yaml, so a
        resume or a re-run from that file trains with the same augmentation."""
        cfg = self.cfg
        given = {k: getattr(cfg, k) for k in PHOTO_AUGMENT}
        used = augment_settings(given, data.augment_defaults)
        if used != given:
            self.cfg = cfg.model_copy(update=used)
        if dist.is_main():
            origin = ", ".join(
                f"{k}={list(v) if isinstance(v, tuple) else v}"
                + (" (set)" if given[k] is not None else " (default for this data)" if k in data.augment_defaults else " (photo default)")
                for k, v in used.items()
            )  # fmt: skip
            log.info("train augmentation: %s", origin)

    def transforms(self, train: bool) -> Callable:
        cfg = self.cfg
        mean, std = tuple(self.meta.get("mean", (0.485, 0.456, 0.406))), tuple(self.meta.get("std", (0.229, 0.224, 0.225)))
        if not train:  # a pretrained model's own eval crop and filter (timm pretrained_cfg) where its meta names them
            return classify_transforms(cfg.imgsz, train=False, mean=mean, std=std, crop_pct=self.meta.get("crop_pct") or 1.0,
                                       interpolation=self.meta.get("interpolation") or "bilinear")  # fmt: skip
        # Unset keys (transforms() before datasets() resolved them for the data): the photo defaults.
        aug = augment_settings({k: getattr(cfg, k) for k in PHOTO_AUGMENT})
        return classify_transforms(
            cfg.imgsz, train=True, augment=cfg.augment, hflip=aug["hflip"], vflip=cfg.vflip, scale=aug["scale"],
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
        self._epoch_metric = None  # thresholds are tuned only on an epoch that is validated
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
        if self.multilabel:
            cfg, kind = self.cfg, self._loss_kind()
            pos_weight = self._pos_weight.to(outputs.device) if self._pos_weight is not None else None
            return {"loss": multilabel_loss(
                outputs.float(), targets.float(), kind, pos_weight=pos_weight,
                gamma_neg=getattr(cfg, "asl_gamma_neg", 4.0), gamma_pos=getattr(cfg, "asl_gamma_pos", 0.0),
                clip=getattr(cfg, "asl_clip", 0.05), focal_gamma=getattr(cfg, "focal_gamma", 2.0),
                focal_alpha=getattr(cfg, "focal_alpha", 0.25),
            )}  # fmt: skip
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

    def metric(self) -> ClassificationMetrics | MultiLabelMetrics:
        if not self.multilabel:
            return ClassificationMetrics(len(self.meta["classes"]), class_names=self.meta["classes"])
        training = isinstance(self.cfg, ClassifyTrainConfig)
        # Training measures F1 at 0.5 (comparable across epochs) and tunes thresholds; val / predict of a
        # trained model use the thresholds stored with it.
        m = MultiLabelMetrics(len(self.meta["classes"]), class_names=self.meta["classes"],
                              thresholds=None if training else self.meta.get("thresholds"))  # fmt: skip
        if training:
            self._epoch_metric = m
        return m

    def thresholds(self) -> list[float]:
        """Multi-label: the per-class thresholds predict applies (tuned on val, else 0.5)."""
        return list(self.meta.get("thresholds") or [DEFAULT_THRESHOLD] * len(self.meta["classes"]))

    def checkpoint_meta(self) -> dict[str, Any]:
        meta = dict(self.meta)
        if self.multilabel and isinstance(self.cfg, ClassifyTrainConfig):
            # The thresholds that maximise each class's F1 on this epoch's val predictions go with these
            # weights (EMA ones when EMA is on: what was validated); an epoch without val keeps none (0.5).
            m = self._epoch_metric
            if m is not None and m.compute()["count"] > 0:
                meta["thresholds"] = self.meta["thresholds"] = m.tuned_thresholds
            else:
                meta.pop("thresholds", None)
        return meta

    def postprocess(self, outputs: Tensor, meta: list[dict[str, Any]]) -> list[Results]:
        topk = getattr(self.cfg, "topk", 5)
        if self.multilabel:  # independent per-label scores; the label set is what reaches its threshold
            scores, thresholds = outputs.float().sigmoid().cpu(), self.thresholds()
            return [
                Results(orig_img=m["orig_img"], path=m["path"], names=self.meta["classes"], probs=p, topk=topk,
                        thresholds=thresholds)
                for p, m in zip(scores, meta)
            ]  # fmt: skip
        probs = outputs.float().softmax(-1).cpu()
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
        return {**super().describe(), "empty": "no labels" if self.multilabel else "no classes"}

    # --- export -----------------------------------------------------------------------------
    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        module, info = super().export_module(model)
        if self.multilabel:  # the graph still gives logits; what a consumer does with them is sigmoid, not softmax
            info["postprocess"] = {"type": "sigmoid", "then": "labels with score >= threshold",
                                   "thresholds": self.thresholds()}  # fmt: skip
        return module, info

    def export_agreement(self, model: nn.Module) -> Any:
        if not self.multilabel:
            return super().export_agreement(model)
        from optik.deploy.parity import LabelSetAgreement

        return LabelSetAgreement(self.thresholds())

    # --- artifacts --------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        from optik.viz.plots import plot_bar, plot_confusion_matrix, plot_prediction_grid

        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        names = self.meta["classes"]
        paths = []
        if self.multilabel:
            if isinstance(self.cfg, ClassifyTrainConfig) and metrics.get("tuned_thresholds"):
                self.meta["thresholds"] = list(metrics["tuned_thresholds"])  # the best weights' (just evaluated)
            if "per_class" in metrics:
                ap = metrics["per_class"]["ap"]
                paths.append(plot_bar(dict(zip(names, ap)), out / "per_class_ap.png", title="Per-class AP (val)", xlabel="AP"))
            if val_data is not None and len(val_data) > 0:
                paths.append(self._multilabel_grid(model, val_data, out / "val_predictions.png"))
            return paths
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

    def _multilabel_report(self, metrics: dict[str, Any]) -> list[str]:
        training = isinstance(self.cfg, ClassifyTrainConfig)
        at = "threshold 0.5" if training else ("the model's per-class thresholds" if self.meta.get("thresholds") else "threshold 0.5")
        lines = [
            f"- **mAP** (macro average precision): {metrics['mAP']:.4f}; micro: {metrics['mAP_micro']:.4f}",
            (f"- at {at}: macro / micro F1 {metrics['f1_macro']:.4f} / {metrics['f1_micro']:.4f}, "
             f"Hamming loss {metrics['hamming_loss']:.4f}, subset accuracy {metrics['subset_accuracy']:.4f}"),
        ]
        if training:
            lines.append(f"- per-class thresholds tuned for F1 on this split (stored with the weights, used by predict): "
                         f"macro F1 {metrics['f1_macro_tuned']:.4f} (optimistic: tuned and measured on the same images)")  # fmt: skip
        lines += ["", "```", format_multilabel_table(metrics), "```"]
        return lines

    @torch.no_grad()
    def _multilabel_grid(self, model: nn.Module, data: Any, path: Path, n: int = 16) -> Path:
        """Up to ``n`` evenly spaced val images, each with its true label set and the predicted one."""
        from PIL import Image

        from optik.device import model_device
        from optik.viz.draw import draw_text_block

        idx = np.linspace(0, len(data) - 1, num=min(n, len(data))).astype(int).tolist()
        was = model.training
        model.eval()
        try:
            outputs = model(torch.stack([data[i][0] for i in idx]).to(model_device(model)))
        finally:
            model.train(was)
        names = self.meta["classes"]
        meta = [{"orig_img": data.load(i).permute(1, 2, 0).numpy(), "path": data.source(i)} for i in idx]
        tiles = []
        for i, r in zip(idx, self.postprocess(outputs, meta)):
            true = ", ".join(names[k] for k in data.targets[i]) or "-"
            img = draw_text_block(r.orig_img, [f"true: {true}", f"pred: {r.verbose()}"])
            tiles.append(np.asarray(Image.fromarray(img).resize((256, 256))))
        while len(tiles) % 4:
            tiles.append(np.full_like(tiles[0], 255))
        rows = [np.concatenate(tiles[k : k + 4], 1) for k in range(0, len(tiles), 4)]
        Image.fromarray(np.concatenate(rows, 0)).save(path)
        return path

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "mAP" in metrics and "per_class" in metrics:
            return self._multilabel_report(metrics)
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
        lines.append(
            f"- macro precision / recall / F1: {metrics['precision_macro']:.4f} / {metrics['recall_macro']:.4f} / {metrics['f1_macro']:.4f}"
        )
        if "specificity_macro" in metrics:
            lines.append(f"- macro specificity / false-positive rate: {metrics['specificity_macro']:.4f} / {metrics['fpr_macro']:.4f} "
                         "(per class below, one class vs the rest: FP(I) = type I errors, FN(II) = type II errors)")  # fmt: skip
        lines += [
            "",
            "```",
            format_per_class_table(metrics, max_rows=PER_CLASS_ROWS),
            "```",
        ]
        return lines


def asymmetric_loss(logits: Tensor, targets: Tensor, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05) -> Tensor:  # fmt: skip
    """Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021),
    averaged over images and classes: with p = sigmoid(x) and the shifted p_m = max(p - clip, 0),

        L = -y (1 - p)^gamma_pos log(p) - (1 - y) p_m^gamma_neg log(1 - p_m)

    Defaults are the paper's (gamma_neg 4, gamma_pos 0, clip 0.05). The focusing weights keep their
    gradient (the paper's loss; the authors' code can detach them to save memory). With
    gamma_neg = gamma_pos = clip = 0 it is binary cross-entropy with logits.

    >>> x, y = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    >>> bool(torch.isclose(asymmetric_loss(x, y, gamma_neg=0, clip=0), F.binary_cross_entropy_with_logits(x, y)))
    True
    """
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)  # stable log(p) for large |x|
    if clip > 0:
        p_m = (p - clip).clamp(min=0)
        log_1m = torch.log1p(-p_m)  # 1 - p_m >= clip > 0: finite
    else:
        p_m, log_1m = p, F.logsigmoid(-logits)

    def focus(base: Tensor, gamma: float) -> Tensor | float:
        # clamp: d/db b^g at b = 0 is inf·0 = NaN for g < 1 (and for g = 0 torch's pow backward too)
        return base.clamp(min=1e-12).pow(gamma) if gamma > 0 else 1.0

    loss = targets * focus(1 - p, gamma_pos) * log_p + (1 - targets) * focus(p_m, gamma_neg) * log_1m
    return -loss.mean()


def multilabel_loss(
    logits: Tensor, targets: Tensor, kind: str = "bce", *, pos_weight: Tensor | None = None, gamma_neg: float = 4.0,
    gamma_pos: float = 0.0, clip: float = 0.05, focal_gamma: float = 2.0, focal_alpha: float = 0.25,
) -> Tensor:  # fmt: skip
    """The multi-label losses over (B, C) logits and (B, C) multi-hot (or MixUp-soft) targets, each
    averaged over images and classes: ``bce`` (``binary_cross_entropy_with_logits``, ``pos_weight`` per
    class), ``asl`` (:func:`asymmetric_loss`) or ``focal`` (``torchvision.ops.sigmoid_focal_loss``, Lin
    et al. 2017; ``focal_alpha < 0``: no positive/negative weighting).

    >>> round(multilabel_loss(torch.zeros(2, 3), torch.ones(2, 3)).item(), 4)  # log 2
    0.6931
    """
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    if kind == "asl":
        return asymmetric_loss(logits, targets, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    if kind == "focal":
        from torchvision.ops import sigmoid_focal_loss

        return sigmoid_focal_loss(logits, targets, alpha=focal_alpha, gamma=focal_gamma, reduction="mean")
    raise ConfigError(f"bad value for 'loss': {kind!r} (multi-label losses: bce, asl, focal)")


def _resize_uint8(img: Tensor, size: int) -> Tensor:
    """Thumbnail for plots: nearest for tiny images (digits stay crisp), area otherwise."""
    x = img.unsqueeze(0).float()
    mode = "nearest" if img.shape[-1] < size else "area"
    return F.interpolate(x, size=(size, size), mode=mode).clamp(0, 255).to(torch.uint8)[0]


__all__ = ["DEFAULT_MODEL", "ClassifyTask", "asymmetric_loss", "multilabel_loss"]
