"""Representation learning: self-supervised training and one way to measure any representation.

``optik embed train model=<backbone> data=<classification data> method=simclr|moco|dino`` trains through the one
engine: each training image becomes two augmented views (:mod:`optik.embed.views`), the method's loss comes from
:meth:`~optik.embed.ssl.EmbedModel.ssl_loss`, and the momentum encoder / EMA teacher / queue / centre live in the
model as submodules and buffers, so checkpoints and resume carry them. The data's labels are never used for
training; validation scores the features by cosine k-NN (k=20, T=0.07, DINO's ``eval_knn``) against the training
split — ``knn_top1`` is the fitness — and optionally a linear probe.

``val`` / ``predict`` / ``index`` / ``search`` (:mod:`optik.embed.run`) take any representation: an embed run, a
classify run (its backbone), ``timm:<name>`` (``pretrained=<file>``) or ``hf:<dir>``.

>>> from optik import Model
>>> Model("cnn", task="embed").train(data="digits", method="simclr", epochs=5, imgsz=32)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from optik.config import CommonConfig, TrainConfig
from optik.config.embed import EmbedTrainConfig
from optik.data.splits import DataSplits
from optik.errors import ConfigError
from optik.metrics.knn import KNNMetric
from optik.results import Results
from optik.tasks.base import Task

log = logging.getLogger(__name__)

DEFAULT_MODEL = "cnn"


class EmbedTask(Task):
    name = "embed"
    fitness_key = "knn_top1"
    data_kind = "classification"  # any classification source; labels only evaluate
    smallest_model = "cnn"
    pipeline_modes: ClassVar[dict[str, str]] = {"val": "val", "predict": "predict", "export": "export"}

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._model: nn.Module | None = None
        self._bank: Dataset | None = None  # training split with eval transforms: the k-NN bank
        self._metric: KNNMetric | None = None
        self._need_bank = False
        self._total_steps = 0
        self._n_train = 0

    @property
    def training(self) -> bool:
        return isinstance(self.cfg, TrainConfig)

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        from optik.data.sources import load_classification_data

        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=digits, data=synthetic:shapes, data=path/to/folder)")
        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        if getattr(data.train, "multilabel", False):
            raise ConfigError(f"data: {data.description} is multi-label; embed evaluates with one label per image")
        self.meta["classes"] = list(data.classes)
        self._n_train = len(data.train)
        self.build_model()  # normalisation comes from the backbone
        eval_tf = self.transforms(train=False)
        train = data.train.with_transform(self.transforms(train=True) if self.training else eval_tf)
        val = data.val.with_transform(eval_tf) if data.val is not None else None
        bank = data.train.with_transform(eval_tf)
        limit = getattr(cfg, "knn_bank", 50000)
        if len(bank) > limit:  # evenly spaced: every class keeps its share
            bank = bank.subset(np.linspace(0, len(bank) - 1, limit).round().astype(int))
        self._bank = bank
        if self.training:
            self._total_steps = cfg.epochs * max(1, math.ceil(len(train) / cfg.batch))
        return DataSplits(train=train, val=val, meta=self.meta, description=data.description)

    def transforms(self, train: bool) -> Callable:
        from optik.data.transforms import classify_transforms
        from optik.embed.views import local_crops, ssl_views

        cfg = self.cfg
        mean, std = tuple(self.meta.get("mean", (0.485, 0.456, 0.406))), tuple(self.meta.get("std", (0.229, 0.224, 0.225)))
        if train and isinstance(cfg, EmbedTrainConfig):
            return ssl_views(cfg.method, cfg.imgsz, mean=mean, std=std, crop_scale=cfg.crop_scale, hflip=cfg.hflip, jitter=cfg.jitter,
                             local_crops=local_crops(cfg), local_size=cfg.local_size, local_scale=cfg.local_scale)  # fmt: skip
        return classify_transforms(cfg.imgsz, train=False, mean=mean, std=std, crop_pct=self.meta.get("crop_pct") or 1.0,
                                   interpolation=self.meta.get("interpolation") or "bilinear")  # fmt: skip

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """``cfg.model`` as an :class:`~optik.embed.ssl.EmbedModel` (see :func:`optik.embed.build.build_embedder`)."""
        if self._model is not None:
            return self._model
        from optik.embed.build import MAE_KEYS, build_embedder
        from optik.embed.views import local_crop_side

        cfg = self.cfg
        if isinstance(cfg, EmbedTrainConfig):
            queue = cfg.queue
            if cfg.method == "moco" and self._n_train and queue > self._n_train:
                # A longer queue would hold stale keys of the same image as "negatives" of its own views.
                log.info("moco: queue %d capped at the %d training images", queue, self._n_train)
                queue = self._n_train
            model, meta = build_embedder(cfg.model or DEFAULT_MODEL, img_size=cfg.imgsz, method=cfg.method, pretrained=cfg.pretrained,
                                         proj_dim=cfg.proj_dim, hidden=cfg.hidden, queue=queue, backbone_args=cfg.backbone_args,
                                         local_size=local_crop_side(cfg),
                                         mae={k: getattr(cfg, k) for k in MAE_KEYS} if cfg.method == "mae" else None)  # fmt: skip
        else:
            model, meta = build_embedder(cfg.model or DEFAULT_MODEL, img_size=cfg.imgsz, pretrained=getattr(cfg, "pretrained", None))
        self.meta.update(mean=meta["mean"], std=meta["std"], model=model.info.get("backbone"), model_config=model.config_dict(),
                         method=model.method, embed_dim=model.feature_dim)  # fmt: skip
        if meta.get("source_task") == "classify":
            self.meta["encoder_from"] = cfg.model
        self._model = model
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The default groups over the trained parameters only (momentum encoders / teachers are EMA copies)."""
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    # --- step -------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, inputs: Any, targets: Any) -> tuple[dict[str, Tensor], Any]:
        cfg = self.cfg
        if not isinstance(inputs, (list, tuple)):
            raise ConfigError("embed train: the training transform must give a list of views (optik.embed.views)")
        opts = {"temperature": cfg.temperature, "momentum": cfg.teacher_momentum, "teacher_temp": cfg.teacher_temp,
                "student_temp": cfg.student_temp, "center_momentum": cfg.center_momentum, "total_steps": self._total_steps}  # fmt: skip
        return model.ssl_loss(list(inputs), **opts), None

    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:  # train_step computes the method's own loss
        raise NotImplementedError

    def train_fitness(self, train_logs: dict[str, float]) -> float:
        return float("nan")  # an SSL loss does not rank representations: without validation, the latest is best

    # --- evaluation ---------------------------------------------------------------------------
    def metric(self) -> KNNMetric:
        cfg = self.cfg
        m = KNNMetric(len(self.meta.get("classes") or [0]), k=getattr(cfg, "knn_k", 20), temperature=getattr(cfg, "knn_t", 0.07),
                      probe=getattr(cfg, "probe", False))  # fmt: skip
        self._metric, self._need_bank = m, True
        return m

    @torch.no_grad()
    def bank_features(self, model: nn.Module, device: torch.device) -> tuple[Tensor, Tensor]:
        """Features and labels of the k-NN bank (the training split, eval transforms) from ``model``."""
        if self._bank is None:
            raise ConfigError("embed: no training split to build the k-NN bank from (call datasets() first)")
        feats, labels = [], []
        for x, y in DataLoader(self._bank, batch_size=self.cfg.batch, num_workers=self.cfg.workers):
            feats.append(model(x.to(device)).float().flatten(1).cpu())
            labels.append(torch.as_tensor(y))
        return torch.cat(feats), torch.cat(labels)

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Any, dict[str, Tensor] | None]:
        if self._need_bank and self._metric is not None:  # once per evaluation, with the weights being evaluated
            self._metric.set_bank(*self.bank_features(model, inputs.device))
            self._need_bank = False
        return model(inputs).flatten(1), None

    def postprocess(self, outputs: Tensor, meta: list[dict[str, Any]]) -> list[Results]:
        """One :class:`Results` per image with its pooled feature as ``.embedding`` (a 1-D float tensor)."""
        out = []
        for f, m in zip(outputs.float().cpu(), meta):
            r = Results(orig_img=m["orig_img"], path=m["path"], names=list(self.meta.get("classes") or []))
            r.embedding = f  # type: ignore[attr-defined]
            out.append(r)
        return out

    # --- artifacts ----------------------------------------------------------------------------
    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        """``plots/embedding_map.png``: a 2-D PCA (or t-SNE, ``map=tsne``) of the val features coloured by class."""
        kind = getattr(self.cfg, "map", "pca")
        if kind in (None, "none") or val_data is None or len(val_data) < 3:
            return []
        from optik.device import model_device
        from optik.embed.plots import embedding_map

        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = model_device(model)
                feats, labels = [], []
                for x, y in DataLoader(val_data, batch_size=self.cfg.batch):
                    feats.append(model(x.to(device)).float().flatten(1).cpu())
                    labels.append(torch.as_tensor(y))
        finally:
            model.train(was)
        path = run_dir / "plots" / "embedding_map.png"
        return [embedding_map(torch.cat(feats).numpy(), torch.cat(labels).numpy(), self.meta.get("classes") or [], path, method=kind,
                              seed=self.cfg.seed)]  # fmt: skip

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "knn_top1" not in metrics:
            return []
        k, t = getattr(self.cfg, "knn_k", 20), getattr(self.cfg, "knn_t", 0.07)
        vote = f"weighted vote T={t}" if t else "majority vote"
        lines = [f"- **k-NN top-1**: {metrics['knn_top1']:.4f} (cosine, k={k}, {vote}; bank: {metrics.get('bank')} training images)"]
        if "knn_top5" in metrics:
            lines.append(f"- k-NN top-5: {metrics['knn_top5']:.4f}")
        if "probe_top1" in metrics:
            lines.append(f"- **linear probe top-1**: {metrics['probe_top1']:.4f} (logistic regression on frozen, standardised features)")
        method = self.meta.get("method")
        if method and method != "none":
            lines.append(f"- representation: {method} ({'teacher' if method == 'dino' else 'backbone'} features, {self.meta.get('embed_dim')}-d)")
        return lines

    # --- export and serving -------------------------------------------------------------------
    #: export / serve load any representation (embed or classify run, timm:/hf: backbone, an exported file).
    loader: ClassVar[str] = "optik.embed.run:load_embedder"

    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """The graph image → ``features`` (what ``optik embed predict`` writes) and ``embedding`` (the same,
        L2-normalised: cosine similarity = dot product); ``optik embed predict model=x.onnx`` reads the first."""
        _, info = super().export_module(model)
        info["outputs"] = ["features", "embedding"]
        info["postprocess"] = {"type": "features", "dim": int(self.meta.get("embed_dim") or getattr(model, "feature_dim", 0)),
                               "then": "embedding = features / ||features||; cosine similarity = dot product"}  # fmt: skip
        return FeatureGraph(model), info

    def export_agreement(self, model: nn.Module) -> Any:
        from optik.deploy.parity import COSINE

        return COSINE

    def image_embedding(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The pooled feature ``(B, D)``, as ``optik embed predict`` gives it (not normalised)."""
        return model(inputs).float().flatten(1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "empty": "no features"}


class FeatureGraph(nn.Module):
    """What embed export traces: ``(features, L2-normalised features)`` of a batch.

    >>> g = FeatureGraph(nn.Flatten())
    >>> [t.shape for t in g(torch.ones(2, 3, 1, 1))], float(g(torch.ones(1, 4, 1, 1))[1].norm())
    ([torch.Size([2, 3]), torch.Size([2, 3])], 1.0)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.model(x).float().flatten(1)
        return f, torch.nn.functional.normalize(f, dim=1)
