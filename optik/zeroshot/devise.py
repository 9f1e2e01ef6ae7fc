"""``optik zeroshot train objective=devise``: DeViSE (Frome et al. 2013, "DeViSE: A Deep Visual-Semantic Embedding
Model") with generalised zero-shot evaluation (Xian et al. 2018, "Zero-Shot Learning — A Comprehensive Evaluation of
the Good, the Bad and the Ugly").

An image tower (any classifier of the registry; its head, sized like the text embeddings, is DeViSE's linear map M)
is trained so that M·v(image) ranks the *fixed* text embedding of the image's label above every other training
label, with DeViSE's hinge rank loss (§3.3)::

    loss(image, y) = Σ_{j ∈ seen, j ≠ y} max(0, margin − t_y · M v + t_j · M v)        (margin 0.1)

The label embeddings t are unit-norm, prompt-ensembled text embeddings of the class names from a trained CLIP's
text tower (``text_model=``: a zeroshot weights file / run dir, or ``hf:<CLIP dir>``), computed once and stored in
the weights. Training sees the **seen** classes only; a test image is scored against every label (seen ∪ unseen).

Generalised zero-shot metric (:class:`GZSLMetric`): per-class-mean top-1 over all labels on the seen classes'
test images (S) and on the unseen classes' test images (U), and their harmonic mean H = 2SU / (S + U); conventional
ZSL accuracy (``zsl``): unseen test images choosing among the unseen labels only.

>>> scores = torch.tensor([[0.5, 0.2, 0.9]])        # t_j · M v for labels 0, 1, 2; label 2 unseen
>>> float(devise_loss(scores, torch.tensor([0]), torch.tensor([True, True, False])))  # max(0, 0.1 − 0.5 + 0.2)
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError
from optik.metrics.base import Metric
from optik.zeroshot.objective import Concat, Objective, Tagged, load_clip, unknown_words


def devise_loss(scores: Tensor, labels: Tensor, candidates: Tensor, margin: float = 0.1) -> Tensor:
    """DeViSE's hinge rank loss, summed over the wrong ``candidates`` (the training labels) and averaged over the
    batch. ``scores`` (B, C) = t_j · M v; ``labels`` (B,) indices into C (each a candidate); ``candidates`` (C,) bool."""
    scores = scores.float()
    pos = scores.gather(1, labels[:, None])
    hinge = (margin - pos + scores).clamp(min=0)
    wrong = candidates[None, :].to(scores.device) & (torch.arange(scores.shape[1], device=scores.device)[None, :] != labels[:, None])
    return (hinge * wrong).sum(1).mean()


class DeViSE(nn.Module):
    """Image tower → M·v (``embed_dim``); ``forward`` gives its dot products with every label's text embedding."""

    def __init__(self, image_model: str = "cnn", embed_dim: int = 128, num_classes: int = 2, img_size: int | None = None,
                 in_chans: int = 3, image_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        from optik import models

        self._config = dict(image_model=image_model, embed_dim=embed_dim, num_classes=num_classes, img_size=img_size, in_chans=in_chans)
        self.visual = models.create(image_model, task="classify", num_classes=embed_dim, in_chans=in_chans, img_size=img_size,
                                    config=image_config)  # fmt: skip
        if hasattr(self.visual, "config_dict"):
            self._config["image_config"] = self.visual.config_dict()
        # Fixed (never trained): unit-norm label embeddings, and which labels training saw.
        self.register_buffer("label_embeddings", torch.zeros(num_classes, embed_dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.default_cfg = getattr(self.visual, "default_cfg", None) or getattr(self.visual, "pretrained_cfg", None) or {}

    def config_dict(self) -> dict[str, Any]:
        return dict(self._config)

    def embed(self, images: Tensor) -> Tensor:
        """M·v: the image's point in the text embedding space (not normalised, as in DeViSE)."""
        return self.visual(images).float()

    def encode_image(self, images: Tensor) -> Tensor:
        """M·v, L2-normalised (cosines with the unit label embeddings rank labels as ``forward`` does)."""
        return torch.nn.functional.normalize(self.embed(images), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        return self.embed(images) @ self.label_embeddings.float().T


class GZSLMetric(Metric):
    """Generalised zero-shot accuracies from per-class counts (sums: exact under DDP).

    ``update({"scores": (B, C)}, {"label": (B,)})``; ``compute()`` → ``S``, ``U``, ``H`` (the fitness), ``zsl``,
    ``top1`` (plain accuracy over every test image and every label), ``seen_images``, ``unseen_images``. S and U
    average over the classes that have test images (as scikit-learn's ``balanced_accuracy_score``).
    """

    fitness_key: ClassVar[str] = "H"
    _state_names: ClassVar[tuple[str, ...]] = ("gzsl", "zsl", "count")

    def __init__(self, seen: Sequence[bool] | Tensor) -> None:
        self.seen_mask = torch.as_tensor(seen, dtype=torch.bool).cpu()
        if self.seen_mask.all() or not self.seen_mask.any():
            raise ValueError("GZSL needs both seen and unseen classes")
        self._reset_state()

    def _reset_state(self) -> None:
        n = len(self.seen_mask)
        self.gzsl, self.zsl, self.count = (torch.zeros(n, dtype=torch.float64) for _ in range(3))

    def update(self, preds: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
        self._check_updatable()
        scores, labels = preds["scores"].detach().float().cpu(), targets["label"].detach().long().cpu()
        n = len(self.seen_mask)
        self.gzsl += torch.bincount(labels, weights=(scores.argmax(1) == labels).double(), minlength=n)
        unseen = (~self.seen_mask).nonzero().flatten()
        zsl_pred = unseen[scores[:, unseen].argmax(1)]  # among the unseen labels only
        self.zsl += torch.bincount(labels, weights=(zsl_pred == labels).double(), minlength=n)
        self.count += torch.bincount(labels, minlength=n).double()

    def compute(self) -> dict[str, Any]:
        has = self.count > 0
        acc = torch.where(has, self.gzsl / self.count.clamp(min=1), torch.zeros_like(self.gzsl))
        s_cls, u_cls = has & self.seen_mask, has & ~self.seen_mask
        nan = float("nan")
        s = float(acc[s_cls].mean()) if s_cls.any() else nan
        u = float(acc[u_cls].mean()) if u_cls.any() else nan
        h = 2 * s * u / (s + u) if s + u > 0 else (0.0 if s == s and u == u else nan)
        zsl = float((self.zsl / self.count.clamp(min=1))[u_cls].mean()) if u_cls.any() else nan
        total = float(self.count.sum())
        return {"H": h, "S": s, "U": u, "zsl": zsl, "top1": float(self.gzsl.sum()) / total if total else nan,
                "seen_images": int(self.count[self.seen_mask].sum()), "unseen_images": int(self.count[~self.seen_mask].sum()),
                "chance_zsl": 1.0 / int((~self.seen_mask).sum())}  # fmt: skip


def gzsl_from_scores(scores: Tensor, labels: Tensor, seen: Sequence[bool] | Tensor) -> dict[str, Any]:
    """:class:`GZSLMetric` of one ``(N, C)`` score matrix (any model: DeViSE, a CLIP's zero-shot logits)."""
    m = GZSLMetric(seen)
    m.update({"scores": scores}, {"label": labels})
    return m.compute()


class DeviseObjective(Objective):
    """``objective=devise`` (see the module docstring)."""

    name = "devise"
    fitness_key = "H"

    # --- data ----------------------------------------------------------------------------------
    def splits(self) -> tuple[Any, Any, str]:
        """Train: the seen classes' training images. Val (the GZSL test set): the seen classes' held-out images and
        every image of an unseen class (synthetic:captions: the val split's one-shape scenes of held-out pairs)."""
        cfg = self.cfg
        if cfg.data is None:
            raise ConfigError("missing key 'data' (e.g. data=synthetic:captions, or a classification source with unseen=[a,b])")
        if isinstance(cfg.data, str) and cfg.data.split("?")[0] == "synthetic:captions":
            return self._caption_splits()
        from optik.data.sources import load_classification_data

        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        classes = list(data.classes)
        unseen = list(getattr(cfg, "unseen", None) or []) if self.training else list(self.meta.get("unseen") or [])
        if not unseen:
            raise ConfigError("missing key 'unseen': objective=devise on a classification source needs the classes held "
                              f"out of training, e.g. unseen=[{classes[-1]}] (classes: {', '.join(classes[:20])})")  # fmt: skip
        bad = [u for u in unseen if u not in classes]
        if bad:
            raise ConfigError(f"bad value for 'unseen': {bad} not among the data's classes {classes[:20]}")
        if len(unseen) >= len(classes):
            raise ConfigError("bad value for 'unseen': every class is unseen; nothing is left to train on")
        if not self.training and list(self.meta.get("classes") or classes) != classes:
            raise ConfigError(f"data: classes {classes} differ from the model's {self.meta['classes']}")
        unseen_idx = {classes.index(u) for u in unseen}
        tr_targets = list(data.train.targets)
        train = Tagged(data.train, 0, [i for i, t in enumerate(tr_targets) if int(t) not in unseen_idx])
        parts = [Tagged(data.train, 1, [i for i, t in enumerate(tr_targets) if int(t) in unseen_idx])]
        if data.val is not None and len(data.val):
            parts.insert(0, Tagged(data.val, 0))
        self.meta.update(classes=classes, unseen=unseen)
        return train, Concat(parts), f"{data.description}; unseen: {', '.join(unseen)}"

    def _caption_splits(self) -> tuple[Any, Any, str]:
        from optik.zeroshot import captions as cap

        cfg = self.cfg
        if getattr(cfg, "unseen", None):
            raise ConfigError("key 'unseen': on synthetic:captions the unseen classes are the held-out pairs (holdout=colour:shape,…)")
        opts = cap.parse_caption_spec(cfg.data)
        spec = getattr(cfg, "holdout", None) if self.training else self.meta.get("holdout")
        if spec is None and self.training and cfg.text_model:  # default: the pairs the text CLIP never saw either
            from optik.weights import resolve_model_arg

            try:
                spec = resolve_model_arg(cfg.text_model)[2].get("holdout")
            except Exception:  # noqa: BLE001 — a bad text_model is reported by build_model, naming the key
                spec = None
        holdout = cap.parse_holdout(spec)
        size = max(cfg.imgsz, 32)
        scenes = cap.CaptionScenes(opts["n"], size, opts["seed"], "train", holdout)
        single = [i for i, t in enumerate(scenes.targets) if t >= 0]  # one-shape scenes: one class each
        order = np.random.default_rng(cfg.seed).permutation(len(single))
        n_test = int(round(len(single) * cfg.val_fraction))
        test_seen = sorted(single[k] for k in order[:n_test])
        train_idx = sorted(single[k] for k in order[n_test:])
        val = cap.CaptionScenes(opts["val"], size, opts["seed"], "val", holdout)
        unseen_idx = [i for i, t in enumerate(val.targets) if t >= 0]
        label = lambda t: int(t["label"])  # noqa: E731
        classes = cap.pair_names()
        unseen = [f"{c} {s}" for c, s in holdout]
        self.meta.update(classes=classes, unseen=unseen, holdout=[f"{c}:{s}" for c, s in holdout])
        self.meta.setdefault("templates", list(cap.GRAMMAR_TEMPLATES))
        parts = [Tagged(scenes, 0, test_seen, label), Tagged(val, 1, unseen_idx, label)]
        what = (f"synthetic:captions one-shape scenes ({len(train_idx)} train of {len(classes) - len(unseen)} seen pairs; test: "
                f"{len(test_seen)} seen, {len(unseen_idx)} of {len(unseen)} held-out pairs)")  # fmt: skip
        return Tagged(scenes, 0, train_idx, label), Concat(parts), what

    # --- model ---------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from optik.weights import load_state_dict, resolve_model_arg
        from optik.zeroshot import captions as cap
        from optik.zeroshot.prompts import PHOTO_TEMPLATES, class_embeddings

        cfg = self.cfg
        arch, weights, wmeta = resolve_model_arg(cfg.model or "cnn")
        if self.training:
            if weights is not None:
                raise ConfigError(f"bad value for 'model': objective=devise trains a new image tower: give an architecture "
                                  f"(cnn, resnet, timm:…), not the weights file '{weights}'; the CLIP goes in text_model=")  # fmt: skip
            if not cfg.text_model:
                raise ConfigError("missing key 'text_model': objective=devise regresses onto the label embeddings of a trained "
                                  "CLIP's text tower (text_model=<zeroshot weights file or run dir> or hf:<CLIP dir>)")  # fmt: skip
            clip, cmeta = load_clip(cfg.text_model, "text_model")
            classes = list(self.meta["classes"])
            hf = "hf" in cmeta.get("model_config", {})
            templates = list(cfg.templates or cmeta.get("templates") or (PHOTO_TEMPLATES if hf else cap.CLASS_TEMPLATES))
            unknown = unknown_words(clip, classes)
            if unknown:
                raise ConfigError(f"bad value for 'text_model': its vocabulary lacks {', '.join(unknown[:8])} (class names of "
                                  "the data); DeViSE needs a text embedding per label")  # fmt: skip
            emb = class_embeddings(clip, classes, templates).float()
            model = DeViSE(arch, embed_dim=emb.shape[1], num_classes=len(classes), img_size=cfg.imgsz)
            with torch.no_grad():
                model.label_embeddings.copy_(emb)
                model.seen.copy_(torch.tensor([c not in self.meta["unseen"] for c in classes]))
            self.meta.update(objective="devise", model=arch, model_config=model.config_dict(), templates=templates,
                             text_model=cmeta.get("file") or cmeta.get("model"), margin=cfg.margin)  # fmt: skip
        else:
            if weights is None or "export" in wmeta:
                raise ConfigError(f"bad value for 'model': {cfg.model!r} (a DeViSE model loads from its .safetensors weights)")
            try:
                model = DeViSE(**self.meta["model_config"])
            except TypeError as e:
                raise ModelError(f"model: cannot rebuild DeViSE from '{weights}' ({e})") from None
            missing, unexpected = model.load_state_dict(load_state_dict(weights), strict=False)
            if missing or unexpected:
                raise ModelError(f"model: '{weights}' does not fit the DeViSE model it describes ({len(missing)} missing, "
                                 f"{len(unexpected)} unexpected keys)")  # fmt: skip
            self.labels()
        for key in ("mean", "std", "interpolation"):
            if model.default_cfg.get(key) is not None:
                self.meta[key] = list(model.default_cfg[key]) if key != "interpolation" else model.default_cfg[key]
        return model

    # --- step ----------------------------------------------------------------------------------
    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(inputs)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
        return {"loss": devise_loss(model(inputs), targets["label"], model.seen, self._margin(model))}, None

    def _margin(self, model: nn.Module) -> float:
        return float(getattr(self.cfg, "margin", None) or self.meta.get("margin", 0.1))

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Tensor]) -> tuple[Any, dict[str, Tensor] | None]:
        scores = model(inputs)
        seen = model.seen.to(scores.device)[targets["label"]]
        loss = devise_loss(scores[seen], targets["label"][seen], model.seen, self._margin(model)) if seen.any() else None
        return {"scores": scores}, ({"loss": loss} if loss is not None else None)

    def metric(self) -> GZSLMetric:
        classes = list(self.meta["classes"])
        unseen = set(self.meta.get("unseen") or [])
        return GZSLMetric([c not in unseen for c in classes])

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "H" not in metrics:
            return []
        n_unseen = len(self.meta.get("unseen") or [])
        return [f"- DeViSE, generalised zero-shot over all {len(self.meta.get('classes') or [])} labels (per-class mean top-1): "
                f"seen S {metrics['S']:.3f} ({metrics.get('seen_images', 0)} images), unseen U {metrics['U']:.3f} "
                f"({metrics.get('unseen_images', 0)} images), H {metrics['H']:.3f}",
                f"- conventional zero-shot (unseen images among the {n_unseen} unseen labels only): {metrics['zsl']:.3f} "
                f"(chance {metrics.get('chance_zsl', float('nan')):.3f})"]  # fmt: skip


__all__ = ["DeViSE", "DeviseObjective", "GZSLMetric", "devise_loss", "gzsl_from_scores"]
