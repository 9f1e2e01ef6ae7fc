"""Zero-shot task: a tiny CLIP trained from scratch on captioned images, and zero-shot classification / image↔text
retrieval with it or with a transformers CLIP / SigLIP (``model=hf:<dir>``).

``optik zeroshot train data=synthetic:captions model=resnet epochs=8 imgsz=64`` trains the image tower (any
classifier of the registry: its head becomes the image projection), a word-level text Transformer and the
temperature with CLIP's symmetric InfoNCE (captions that are the same text count as equally correct).
``data=`` may also be any classification source: each image's caption is a template with its class name.

Validation (every epoch, and ``optik zeroshot val``): zero-shot top-1 / top-5 over the class names with prompt
ensembling (synthetic:captions: every colour-shape pair, on scenes of the held-out pairs only) and recall@1/5/10
image→text and text→image on the split's captions. ``predict source=… labels=[cat,dog]`` gives
:class:`~optik.results.Results` with ``probs`` over the labels.

>>> from optik import Model
>>> m = Model("cnn", task="zeroshot")                                          # doctest: +SKIP
>>> m.train(data="synthetic:captions?n=2000", epochs=5, imgsz=64)              # doctest: +SKIP
>>> Model("runs/zeroshot/train", task="zeroshot").predict("img.png", labels=["red circle", "blue star"])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optik.config import PredictConfig, TrainConfig
from optik.errors import ConfigError, ModelError
from optik.results import Results
from optik.tasks.base import Control, DataSplits, Task, TextListControl
from optik.zeroshot import captions as cap
from optik.zeroshot.prompts import PHOTO_TEMPLATES, class_embeddings

DEFAULT_TOWER = "resnet"


def caption_id(text: str) -> int:
    """A stable 63-bit id of a caption text: equal texts, equal ids (across processes and ranks)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class _MetaTransform:
    """The eval/train transform built from the task's meta when first called — after :meth:`Task.build_model` has
    put the image tower's normalisation there (the trainer builds the data before the model)."""

    def __init__(self, task: ZeroshotTask, train: bool) -> None:
        self.task, self.train, self._fn = task, train, None

    def __call__(self, img: Tensor) -> Tensor:
        if self._fn is None:
            self._fn = self.task.transforms(self.train)
        return self._fn(img)


class ZeroshotTask(Task):
    name = "zeroshot"
    data_kind = "classification"  # captions written from class names; synthetic:captions is its own source
    smallest_model = "cnn"
    pipeline_modes: ClassVar[dict[str, str]] = {"val": "val", "predict": "predict", "export": "export"}

    def __init__(self, cfg: Any, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, meta)
        self._weights: tuple[int, tuple[str, ...], Tensor] | None = None  # (model version, labels, class weights)
        self._version = 0
        self._obj = _objective(self)  # objective=finetune / devise: their hooks (optik/zeroshot/finetune.py, devise.py)

    @property
    def fitness_key(self) -> str:  # type: ignore[override]
        return self._obj.fitness_key if self._obj is not None else "top1"

    # --- data -------------------------------------------------------------------------------
    def datasets(self) -> DataSplits:
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=synthetic:captions, data=digits, data=path/to/folder)")
        if self._obj is not None:  # labelled images (+ a shifted / unseen split), transforms built after the model
            train, val, description = self._obj.splits()
            train = train.with_transform(_MetaTransform(self, True))
            val = val.with_transform(_MetaTransform(self, False)) if val is not None else None
            return DataSplits(train=train, val=val, classes=list(self.meta["classes"]), meta=self.meta, description=description)
        train_mode = isinstance(cfg, TrainConfig)
        if isinstance(cfg.data, str) and cfg.data.split("?")[0] == "synthetic:captions":
            opts = cap.parse_caption_spec(cfg.data)
            spec = getattr(cfg, "holdout", None) if train_mode else None
            holdout = cap.parse_holdout(spec if spec is not None else self.meta.get("holdout"))
            size = max(cfg.imgsz, 32)
            train = cap.CaptionScenes(opts["n"], size, opts["seed"], "train", holdout)
            val = cap.CaptionScenes(opts["val"], size, opts["seed"], "val", holdout)
            self.meta.update(classes=cap.pair_names(), holdout=[f"{c}:{s}" for c, s in holdout],
                             heldout_classes=[f"{c} {s}" for c, s in holdout])  # fmt: skip
            self.meta.setdefault("templates", list(cap.GRAMMAR_TEMPLATES))
            vocab_texts = [*cap.pair_names(), *cap.PLACES, *cap.SIZES, "left of right of above below a"]
            description = f"synthetic:captions ({len(train)} train scenes without {len(holdout)} held-out pairs, {len(val)} val scenes of them)"
        else:
            from optik.data.sources import load_classification_data

            data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
            if train_mode or not self.meta.get("templates"):
                self.meta["templates"] = list(getattr(cfg, "templates", None) or cap.CLASS_TEMPLATES)
            classes = list(data.classes)
            templates = self.meta["templates"]
            train = cap.CaptionedView(data.train, classes, templates, cfg.seed, train=True)
            val = cap.CaptionedView(data.val, classes, templates, cfg.seed, train=False) if data.val is not None else None
            self.meta["classes"] = classes
            vocab_texts = [t.format(c) for c in classes for t in templates]
            description = data.description
        if train_mode:
            self.meta["vocab_texts"] = vocab_texts  # the new model's vocabulary (build_model)
        train = train.with_transform(_MetaTransform(self, True)) if hasattr(train, "with_transform") else _with(train, self, True)
        if val is not None:
            val = val.with_transform(_MetaTransform(self, False)) if hasattr(val, "with_transform") else _with(val, self, False)
        return DataSplits(train=train, val=val, classes=list(self.meta["classes"]), meta=self.meta, description=description)

    def transforms(self, train: bool) -> Callable:
        from torchvision.transforms import v2

        s = self.cfg.imgsz
        mean, std = self.meta.get("mean", (0.485, 0.456, 0.406)), self.meta.get("std", (0.229, 0.224, 0.225))
        interpolation = getattr(v2.InterpolationMode, str(self.meta.get("interpolation") or "bilinear").upper())
        # No flips or crops in training: captions name left/right and top/bottom, and a crop could cut a shape out.
        return v2.Compose([v2.Resize(s, interpolation=interpolation, antialias=True), v2.CenterCrop(s),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])  # fmt: skip

    def collate(self, batch: list[Any]) -> tuple[Tensor, dict[str, Any]]:
        if self._obj is not None:
            return self._obj.collate(batch)
        images = torch.stack([x for x, _ in batch])
        texts = [t["caption"] for _, t in batch]
        return images, {"captions": texts, "label": torch.tensor([int(t["label"]) for _, t in batch]),
                        "caption_id": torch.tensor([caption_id(c) for c in texts])}  # fmt: skip

    # --- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """``hf:<dir|id>`` → :class:`~optik.zeroshot.hf.HFClip` (inference only); otherwise a
        :class:`~optik.zeroshot.clip.TinyCLIP`: rebuilt from a weights file's ``model_config`` (its vocabulary
        included), or new with ``model=`` as its image tower."""
        from optik.weights import load_state_dict, resolve_model_arg
        from optik.zeroshot.clip import TinyCLIP

        cfg = self.cfg
        if self._obj is not None:
            return self._obj.build_model()
        arch, weights, wmeta = resolve_model_arg(cfg.model or DEFAULT_TOWER)
        if weights is not None and wmeta.get("task") not in (None, self.name):
            raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{wmeta['task']}', not '{self.name}'")
        if weights is not None and "export" in wmeta:
            return self._load_exported(weights, wmeta)  # optik zeroshot export: image tower + a baked label set
        if weights is None and arch.startswith("hf:"):
            if isinstance(cfg, TrainConfig):
                raise ConfigError("bad value for 'model': training (fine-tuning) a hf: CLIP is not implemented; use it with "
                                  "val / predict, or train a tiny CLIP with model=<image tower>")  # fmt: skip
            from optik.zeroshot.hf import HFClip

            model: nn.Module = HFClip.load(arch[3:])
            side = (model.default_cfg.get("input_size") or (None, None, None))[-1]
            if side and "imgsz" not in cfg.model_fields_set:  # the processor's crop size, unless imgsz= was given
                from optik.config import update_config

                self.cfg = update_config(cfg, imgsz=int(side))
            self.meta["model"], self.meta["model_config"] = arch, model.config_dict()
            self.meta.setdefault("templates", list(PHOTO_TEMPLATES))
            if self.meta.get("classes", [""])[0].startswith("LABEL_"):  # transformers' placeholder id2label
                self.meta["classes"] = []
        else:
            config = wmeta.get("model_config") or self.meta.get("model_config")
            if weights is None or not config:
                texts = self.meta.get("vocab_texts") or self.meta.get("classes") or []
                from optik.zeroshot.tokenizer import WordTokenizer

                config = dict(vocab=WordTokenizer.from_texts(texts).vocab, image_model=arch, img_size=cfg.imgsz,
                              **{k: getattr(cfg, k) for k in ("embed_dim", "text_width", "text_layers", "text_heads", "context_length")
                                 if hasattr(cfg, k)})  # fmt: skip
            # A new CLIP's image tower may start from pretrained weights (pretrained=<file|true>: e.g. the converted
            # EfficientNet-Lite0; its classifier becomes the image projection).
            pretrained = getattr(cfg, "pretrained", None) if isinstance(cfg, TrainConfig) and weights is None else None
            try:
                model = TinyCLIP(**config, pretrained=pretrained)
            except TypeError as e:
                raise ModelError(f"model: cannot rebuild the tiny CLIP from '{weights}' ({e})") from None
            if isinstance(cfg, TrainConfig) and cfg.freeze == "backbone":
                if cfg.freeze_epochs:
                    raise ConfigError("key 'freeze_epochs': zeroshot freezes the image tower for the whole run (freeze=backbone, "
                                      "LiT); a two-phase unfreeze is not implemented")  # fmt: skip
                from optik.models.transfer import freeze_backbone

                # LiT (Zhai et al. 2022): a locked image tower; its projection, the text tower and the temperature train.
                freeze_backbone(model.visual)
            if weights is not None:
                missing, unexpected = model.load_state_dict(load_state_dict(weights), strict=False)
                if missing or unexpected:
                    raise ModelError(f"model: '{weights}' does not fit the tiny CLIP it describes "
                                     f"({len(missing)} missing, {len(unexpected)} unexpected keys)")  # fmt: skip
            self.meta["model"] = wmeta.get("model") or arch
            self.meta["model_config"] = model.config_dict()
        self.meta.pop("vocab_texts", None)
        self._sigmoid = bool(getattr(model, "sigmoid", False))  # SigLIP: independent per-label probabilities
        data_cfg = getattr(model, "default_cfg", {}) or {}
        for key in ("mean", "std", "interpolation"):
            if data_cfg.get(key) is not None:
                self.meta[key] = list(data_cfg[key]) if key != "interpolation" else data_cfg[key]
        self.meta.setdefault("templates", list(cap.CLASS_TEMPLATES))
        if isinstance(self.cfg, PredictConfig):
            self.labels()  # no label set: say so before anything runs
        return model

    # --- step -------------------------------------------------------------------------------
    def embed(self, model: nn.Module, inputs: Tensor, targets: dict[str, Any]) -> dict[str, Tensor]:
        return {"image": model.encode_image(inputs), "text": model.encode_text(targets["captions"])}

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self._obj.param_groups(model) if self._obj is not None else super().param_groups(model)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Any]) -> tuple[dict[str, Tensor], Any]:
        if self._obj is not None:
            return self._obj.train_step(model, inputs, targets)
        from optik.zeroshot.clip import global_contrastive_loss

        self._version += 1  # the weights change: cached class embeddings are stale
        out = self.embed(model, inputs, targets)
        scale = model.scale()[0]
        # Under torchrun the negatives are every rank's captions (one process: exactly self.loss).
        loss = global_contrastive_loss(out["image"], out["text"], scale, targets["caption_id"])
        return {"loss": loss, "temperature": 1.0 / scale.detach().float()}, None

    def loss(self, outputs: dict[str, Tensor], targets: dict[str, Any]) -> dict[str, Tensor]:
        from optik.zeroshot.clip import contrastive_loss

        ids = targets["caption_id"]
        positives = ids[:, None] == ids[None, :]
        loss = contrastive_loss(outputs["image"], outputs["text"], outputs["scale"], positives)
        return {"loss": loss, "temperature": 1.0 / outputs["scale"].detach().float()}

    def labels(self) -> list[str]:
        """The zero-shot label set: ``labels=``, else the classes the data / weights name."""
        if self._obj is not None:  # a trained head: its classes only
            return self._obj.labels()
        labels = getattr(self.cfg, "labels", None) or self.meta.get("classes")
        if not labels:
            raise ConfigError(f"missing key 'labels' (the class names to choose among, e.g. labels=[cat,dog]); "
                              f"'{self.cfg.model}' names no classes of its own")  # fmt: skip
        return list(labels)

    def templates(self) -> list[str]:
        return list(getattr(self.cfg, "templates", None) or self.meta.get("templates") or cap.CLASS_TEMPLATES)

    def class_weights(self, model: nn.Module, labels: list[str]) -> Tensor:
        """``(C, D)`` prompt-ensembled text embeddings of ``labels``, cached until the weights change."""
        key = (self._version, tuple(labels))
        if self._weights is None or self._weights[:2] != key:
            was = model.training
            model.eval()
            try:
                self._weights = (*key, class_embeddings(model, labels, self.templates()))
            finally:
                model.train(was)
        return self._weights[2]

    def logits(self, model: nn.Module, image_emb: Tensor, labels: list[str]) -> Tensor:
        scale, bias = model.scale()
        out = scale.float() * image_emb.float() @ self.class_weights(model, labels).to(image_emb.device).T
        return out + bias if bias is not None else out

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        if self._obj is not None:
            return self._obj.forward(model, inputs)
        if getattr(model, "baked_labels", None) is not None:  # an exported classifier: its logits, columns per labels=
            return model.logits(inputs, self.labels())
        return self.logits(model, model.encode_image(inputs), self.labels())

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Any]) -> tuple[Any, dict[str, Tensor] | None]:
        if self._obj is not None:
            return self._obj.eval_step(model, inputs, targets)
        out = self.embed(model, inputs, targets)
        out["logits"] = self.logits(model, out["image"], self.labels())
        scale = model.scale()[0]
        return out, self.loss({**out, "scale": scale}, targets) if len(inputs) > 1 else None

    def update_metric(self, metric: Any, outputs: Any, targets: Any) -> None:
        metric.update(outputs, targets)

    def metric(self) -> Any:
        from optik.metrics.retrieval import ZeroShotMetric

        if self._obj is not None:
            return self._obj.metric()
        self._version += 1  # a new evaluation: recompute the class embeddings once
        labels = self.labels()
        held = [labels.index(c) for c in self.meta.get("heldout_classes", []) if c in labels]
        return ZeroShotMetric(labels, heldout=held)

    def postprocess(self, outputs: Tensor, meta: list[dict[str, Any]]) -> list[Results]:
        if self._obj is not None:
            return self._obj.postprocess(outputs, meta)
        topk = getattr(self.cfg, "topk", 5)
        probs = outputs.float().sigmoid() if getattr(self, "_sigmoid", False) else outputs.float().softmax(-1)
        names = self.labels()
        return [Results(orig_img=m["orig_img"], path=m["path"], names=names, probs=p, topk=topk) for p, m in zip(probs.cpu(), meta)]

    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Any) -> list[Path]:
        return self._obj.plots(run_dir, metrics) if self._obj is not None else []

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if self._obj is not None:
            return self._obj.report_lines(metrics)
        if "top1" not in metrics:
            return []
        lines = [f"- zero-shot top-1 {metrics['top1']:.3f} (top-5 {metrics.get('top5', float('nan')):.3f}; chance "
                 f"{metrics.get('chance', float('nan')):.3f}) on {metrics.get('images_classified', 0)} images"]  # fmt: skip
        if "top1_within_heldout" in metrics:
            lines.append(f"- among the held-out pairs only: top-1 {metrics['top1_within_heldout']:.3f} "
                         f"(chance {metrics['chance_within_heldout']:.3f})")  # fmt: skip
        if "i2t_R@1" in metrics:
            lines.append("- retrieval on {} captions: image→text R@1/5/10 {:.3f} / {:.3f} / {:.3f}, text→image {:.3f} / {:.3f} / {:.3f}".format(
                metrics.get("captions", 0), *(metrics[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))))  # fmt: skip
        return lines

    def predict_controls(self) -> dict[str, Control | TextListControl]:
        """``topk`` and the label set: ``optik serve``'s ``/predict?labels=cat,dog`` (an exported file: a subset of
        its baked labels only)."""
        labels = getattr(self.cfg, "labels", None) or self.meta.get("classes") or []
        baked = getattr(self, "_baked", None)
        hint = "Comma-separated class names to choose among" + (" (this exported file: a subset of its own)" if baked else "")
        # The slider ends at the label count only when the set is fixed (an exported file); a request may send more labels.
        return {"topk": Control(getattr(self.cfg, "topk", 5), 1, 1000, 1, "Top-k labels", "How many labels to list.", integer=True,
                                slider_max=max(1, min(len(baked), 20)) if baked else 20),
                "labels": TextListControl(list(labels) or None, "Labels", hint + ".", choices=tuple(baked) if baked else None)}  # fmt: skip

    def checkpoint_meta(self) -> dict[str, Any]:
        return {k: v for k, v in self.meta.items() if k != "vocab_texts"}

    # --- export and serving (optik zeroshot export / serve) ------------------------------------
    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """The image tower with this label set baked in (:class:`~optik.zeroshot.export.ZeroShotGraph`): image →
        ``logits`` over ``labels`` (prompt-ensembled class embeddings of ``templates`` and the logit scale fixed) and
        the L2-normalised ``embedding``. The file's ``classes`` are the labels; its metadata records the templates."""
        from optik.zeroshot.export import ZeroShotGraph

        if self._obj is not None:  # a fine-tuned classifier / DeViSE: a plain classifier over its fixed classes
            return Task.export_module(self, model)
        labels, templates = self.labels(), self.templates()
        weights = self.class_weights(model, labels)
        scale, bias = model.scale()
        _, info = super().export_module(model)  # the preprocessing block (resize, crop, normalise)
        kind = "sigmoid" if getattr(self, "_sigmoid", False) else "softmax"
        info.update(outputs=["logits", "embedding"], meta={"classes": labels, "templates": templates},
                    postprocess={"type": kind, "axis": -1, "labels": labels, "templates": templates, "then": "top-k",
                                 "embedding": "L2-normalised image embedding (the image tower's output)"})  # fmt: skip
        return ZeroShotGraph(model, weights, scale, bias), info

    def image_embedding(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The L2-normalised image embedding (``optik serve``'s ``/embed``)."""
        return model.encode_image(inputs).float()

    def _load_exported(self, weights: Any, wmeta: dict[str, Any]) -> nn.Module:
        from optik.config import ValConfig
        from optik.zeroshot.export import ExportedZeroShot

        cfg = self.cfg
        if isinstance(cfg, TrainConfig):
            raise ConfigError(f"bad value for 'model': '{weights}' is an exported model (inference only); train from its .safetensors weights")
        if isinstance(cfg, ValConfig):  # export's own config is a ValConfig too, but load_trained refuses exported files there
            raise ConfigError(f"bad value for 'model': '{weights}' is an exported zero-shot classifier (no text tower for the "
                              "retrieval metrics); run val on its .safetensors weights or the hf: model")  # fmt: skip
        model = ExportedZeroShot(weights, wmeta)
        self._baked, self._sigmoid = list(model.baked_labels), model.sigmoid
        self.meta.update(model=wmeta.get("model"), classes=list(model.baked_labels), templates=model.templates or self.templates())
        if isinstance(cfg, PredictConfig):
            model.columns(self.labels())  # a label the file was not exported with: say so before anything runs
        return model


def _objective(task: ZeroshotTask) -> Any:
    """The objective's hooks for a run: ``objective=`` of a train config, else the weights' ``objective``; None = CLIP."""
    from optik.zeroshot.objective import check_only_for

    cfg = task.cfg
    kind = getattr(cfg, "objective", None) or task.meta.get("objective") or "clip"
    if isinstance(cfg, TrainConfig):
        keys = {"head": "finetune", "wise": "finetune", "wise_alpha": "finetune", "shift_data": "finetune",
                "text_model": "devise", "unseen": "devise", "margin": "devise"}  # fmt: skip
        check_only_for(cfg, kind, keys)
    elif getattr(cfg, "wise_alpha", None) is not None and kind != "finetune":
        raise ConfigError(f"key 'wise_alpha' applies to a model fine-tuned with objective=finetune ('{cfg.model}' is objective={kind})")
    if kind == "finetune":
        from optik.zeroshot.finetune import FinetuneObjective

        return FinetuneObjective(task)
    if kind == "devise":
        from optik.zeroshot.devise import DeviseObjective

        return DeviseObjective(task)
    return None


def _with(data: Any, task: ZeroshotTask, train: bool) -> Any:
    """A :class:`~optik.zeroshot.captions.CaptionedView` with its base dataset's transform set."""
    data.base = data.base.with_transform(_MetaTransform(task, train))
    return data
