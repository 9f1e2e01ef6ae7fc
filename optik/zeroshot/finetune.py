"""``optik zeroshot train objective=finetune``: a trained CLIP fine-tuned end to end on a labelled set, with WiSE-FT.

The classifier is the CLIP's image tower, its L2-normalised embedding, and a linear head. ``head=zeroshot`` (default)
initialises the head with the prompt-ensembled text embeddings of the class names times the CLIP's logit scale (bias
0), so before any step it *is* the zero-shot classifier (Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models", §2; their ``ClassificationHead(normalize=True, weights=logit_scale · zeroshot_weights)``); ``head=linear``
starts from nn.Linear's random init for comparison. Fine-tuning is plain cross-entropy through the one Trainer.

**WiSE-FT** (weight-space ensembling): θ_α = (1 − α)·θ_zeroshot + α·θ_finetuned for every floating tensor of the
state dict — parameters *and* BatchNorm running statistics, so the running mean / variance always describe the
interpolated weights' own two endpoints (integer buffers, BN's ``num_batches_tracked``, take the fine-tuned value;
eval-mode BN never reads them). :class:`WiseFT` keeps the zero-shot endpoint as a frozen copy next to the trained
network, so every validation scores the whole α grid (``wise=``) without another training run, the weights file
holds both endpoints, and ``val`` / ``predict`` merge them once at ``wise_alpha`` (the training's choice unless
given) into a plain :class:`CLIPClassifier`.

>>> import torch
>>> a, b = {"w": torch.zeros(2), "n": torch.tensor(3)}, {"w": torch.ones(2), "n": torch.tensor(9)}
>>> interpolate_state(a, b, 0.25)["w"].tolist(), int(interpolate_state(a, b, 0.25)["n"])
([0.25, 0.25], 9)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError
from optik.metrics.base import Metric
from optik.zeroshot.objective import Concat, Objective, Tagged, load_clip, unknown_words

log = logging.getLogger(__name__)

#: The α grid scored at every validation unless ``wise=`` is given (the paper's figures sweep α in steps of 0.1).
DEFAULT_WISE: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def interpolate_state(theta_0: dict[str, Tensor], theta_1: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """WiSE-FT's θ_α = (1 − α)·θ_0 + α·θ_1 over a state dict: floating tensors interpolated (α = 0 / 1 return the
    endpoints' own tensors, so they are reproduced exactly), other tensors (BN's batch counter) from ``theta_1``."""
    if theta_0.keys() != theta_1.keys():
        raise ModelError(f"WiSE-FT: the two endpoints differ in keys ({sorted(set(theta_0) ^ set(theta_1))[:4]})")
    out = {}
    for k, t1 in theta_1.items():
        t0 = theta_0[k]
        if not t1.is_floating_point() or alpha == 1.0:
            out[k] = t1
        elif alpha == 0.0:
            out[k] = t0
        else:
            out[k] = torch.lerp(t0, t1, float(alpha))  # t0 + α (t1 − t0)
    return out


class _HFImageTower(nn.Module):
    """A transformers CLIP's image path (vision model → pooled output → visual projection), unnormalised."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.vision_model, self.visual_projection = hf.vision_model, hf.visual_projection

    def forward(self, images: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values=images).pooler_output)


class CLIPClassifier(nn.Module):
    """A CLIP image tower + L2 normalisation + a linear head: ``logits = W · normalize(visual(x)) + b``.

    ``config`` = ``{"clip": <the CLIP's model_config>, "num_classes": C}`` rebuilds it (``hf`` CLIPs from their folder).
    """

    def __init__(self, config: dict[str, Any], visual: nn.Module | None = None) -> None:
        super().__init__()
        self._config = {"clip": dict(config["clip"]), "num_classes": int(config["num_classes"])}
        if visual is None:
            visual = _tower(load_base(self._config["clip"]))
        self.visual = visual
        dim = int(config.get("embed_dim") or _embed_dim(visual))
        self._config["embed_dim"] = dim
        self.head = nn.Linear(dim, self._config["num_classes"])
        self.default_cfg = dict(getattr(visual, "default_cfg", None) or config.get("default_cfg") or {})

    @classmethod
    def from_clip(cls, clip: nn.Module, num_classes: int) -> CLIPClassifier:
        """The classifier on ``clip``'s image tower (shared, not copied); the head randomly initialised."""
        net = cls({"clip": clip.config_dict(), "num_classes": num_classes}, visual=_tower(clip))
        net.default_cfg = dict(getattr(clip, "default_cfg", {}) or {})
        return net

    @torch.no_grad()
    def init_zeroshot_head(self, clip: nn.Module, classnames: Sequence[str], templates: Sequence[str]) -> None:
        """Head ← logit scale × prompt-ensembled text embeddings of ``classnames``, bias ← 0: the zero-shot
        classifier's logits, exactly (:meth:`zeroshot_logits`)."""
        from optik.zeroshot.prompts import class_embeddings

        weights = class_embeddings(clip, list(classnames), list(templates))
        scale = clip.scale()[0].detach().float()
        self.head.weight.copy_(scale * weights)
        self.head.bias.zero_()

    def config_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.visual(images).float(), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encode_image(images))


def zeroshot_logits(clip: nn.Module, images: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
    """The zero-shot classifier of ``clip`` computed the way :class:`CLIPClassifier` computes it (the scale folded
    into the class weights, a zero bias): ``F.linear(normalize(image), scale · T, 0)``."""
    from optik.zeroshot.prompts import class_embeddings

    w = clip.scale()[0].detach().float() * class_embeddings(clip, list(classnames), list(templates))
    return F.linear(clip.encode_image(images).float(), w, torch.zeros(len(w), device=w.device))


def _tower(clip: nn.Module) -> nn.Module:
    if hasattr(clip, "visual"):  # TinyCLIP
        return clip.visual
    if hasattr(clip, "hf") and hasattr(clip.hf, "visual_projection"):
        return _HFImageTower(clip.hf)
    raise ConfigError(f"bad value for 'model': {type(getattr(clip, 'hf', clip)).__name__} has no image tower to fine-tune "
                      "(expected a tiny CLIP or a transformers CLIPModel)")  # fmt: skip


def _embed_dim(visual: nn.Module) -> int:
    if isinstance(visual, _HFImageTower):
        return int(visual.visual_projection.out_features)
    return int(getattr(visual, "num_classes", None) or visual.get_classifier().out_features)


def load_base(clip_config: dict[str, Any]) -> nn.Module:
    """The CLIP architecture of a fine-tuned classifier's ``model_config["clip"]`` (random weights for a tiny CLIP; a
    ``hf`` CLIP's folder is read again — its weights are then replaced by the file's)."""
    if "hf" in clip_config:
        from optik.zeroshot.hf import HFClip

        return HFClip.load(str(clip_config["hf"]))
    from optik.zeroshot.clip import TinyCLIP

    try:
        return TinyCLIP(**clip_config)
    except TypeError as e:
        raise ModelError(f"model: cannot rebuild the CLIP of a fine-tuned classifier ({e})") from None


class WiseFT(nn.Module):
    """The network being fine-tuned (``net``) and a frozen copy of its zero-shot start (``zeroshot``): WiSE-FT at any
    α without a second file. Training steps ``net``; :meth:`logits_at` evaluates θ_α; :meth:`merged` builds θ_α as a
    plain :class:`CLIPClassifier`."""

    def __init__(self, net: CLIPClassifier, alpha: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.zeroshot = copy.deepcopy(net).requires_grad_(False).eval()
        self.alpha = float(alpha)
        self.default_cfg = net.default_cfg
        self._cache: tuple[Any, dict[str, Tensor]] | None = None

    def config_dict(self) -> dict[str, Any]:
        return self.net.config_dict()

    def train(self, mode: bool = True) -> WiseFT:
        super().train(mode)
        self.zeroshot.eval()  # never trained; its BN statistics stay the zero-shot ones
        return self

    def state_at(self, alpha: float) -> dict[str, Tensor]:
        """θ_α, cached until a weight changes (in-place optimizer steps bump tensors' version counters)."""
        ft, zs = self.net.state_dict(keep_vars=True), self.zeroshot.state_dict(keep_vars=True)
        key = (float(alpha), tuple((id(t), t._version) for t in ft.values()), tuple((id(t), t._version) for t in zs.values()))
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                state = interpolate_state({k: v.detach() for k, v in zs.items()}, {k: v.detach() for k, v in ft.items()}, alpha)
            self._cache = (key, state)
        return self._cache[1]

    def logits_at(self, images: Tensor, alpha: float) -> Tensor:
        if alpha == 1.0:
            return self.net(images)
        if alpha == 0.0:
            return self.zeroshot(images)
        return torch.func.functional_call(self.net, self.state_at(alpha), (images,))

    def merged(self, alpha: float) -> CLIPClassifier:
        """θ_α as a stand-alone classifier (a copy: this module is unchanged)."""
        net = copy.deepcopy(self.net)
        net.load_state_dict(interpolate_state(self.zeroshot.state_dict(), self.net.state_dict(), alpha))
        return net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images) if self.training else self.logits_at(images, self.alpha)


def alpha_key(alpha: float) -> str:
    """The metrics suffix of one α: ``0.25`` → ``"a0.25"``."""
    return f"a{alpha:g}"


class WiseMetric(Metric):
    """Top-1 / top-5 of every α of the grid, in-distribution (domain 0) and on the shifted split (domain 1).

    ``update({"logits": (A, B, C)}, {"label": (B,), "domain": (B,)})``. ``compute()``: ``top1`` / ``top5`` / ``loss``
    (cross-entropy) of the chosen α in-distribution (``top1`` is the fitness), ``shift_top1`` / ``shift_top5`` /
    ``shift_loss``, and per α ``top1@a<α>`` / ``shift_top1@a<α>``. State: correct counts and summed losses per
    (α, domain), image counts per domain — sums, so DDP sync is exact. (The loss is the metric's own: the engine's
    per-batch loss would average over both domains.)
    """

    fitness_key: ClassVar[str] = "top1"
    _state_names: ClassVar[tuple[str, ...]] = ("correct1", "correct5", "nll", "count")

    def __init__(self, alphas: Sequence[float], chosen: float, on_compute: Any = None) -> None:
        self.alphas = [float(a) for a in alphas]
        self.chosen = self.alphas.index(float(chosen))
        self.on_compute = on_compute
        self._reset_state()

    def _reset_state(self) -> None:
        self.correct1 = torch.zeros(len(self.alphas), 2, dtype=torch.float64)
        self.correct5 = torch.zeros(len(self.alphas), 2, dtype=torch.float64)
        self.nll = torch.zeros(len(self.alphas), 2, dtype=torch.float64)
        self.count = torch.zeros(2, dtype=torch.float64)

    def update(self, preds: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
        self._check_updatable()
        logits = preds["logits"].detach().float().cpu()
        labels, domain = targets["label"].detach().long().cpu(), targets["domain"].detach().long().cpu()
        k = min(5, logits.shape[-1])
        top1 = (logits.argmax(-1) == labels).double()  # (A, B)
        top5 = (logits.topk(k, dim=-1).indices == labels[None, :, None]).any(-1).double()
        nll = -logits.log_softmax(-1).gather(-1, labels[None, :, None].expand(len(logits), -1, 1))[..., 0].double()
        for d in (0, 1):
            m = domain == d
            self.correct1[:, d] += top1[:, m].sum(1)
            self.correct5[:, d] += top5[:, m].sum(1)
            self.nll[:, d] += nll[:, m].sum(1)
            self.count[d] += float(m.sum())

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d, prefix in ((0, ""), (1, "shift_")):
            if self.count[d] == 0:
                continue
            acc1, acc5 = (self.correct1[:, d] / self.count[d]).tolist(), (self.correct5[:, d] / self.count[d]).tolist()
            out[f"{prefix}top1"], out[f"{prefix}top5"] = acc1[self.chosen], acc5[self.chosen]
            out[f"{prefix}loss"] = float(self.nll[self.chosen, d] / self.count[d])
            out[f"{prefix}images"] = int(self.count[d])
            if len(self.alphas) > 1:
                out.update({f"{prefix}top1@{alpha_key(a)}": v for a, v in zip(self.alphas, acc1)})
        if "top1" not in out:
            out["top1"] = float("nan")
        if self.on_compute is not None:
            self.on_compute(out)
        return out


class FinetuneObjective(Objective):
    """``objective=finetune`` (see the module docstring)."""

    name = "finetune"

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        self._clip: tuple[nn.Module, dict[str, Any]] | None = None

    # --- keys ----------------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        given = getattr(self.cfg, "wise_alpha", None)
        return float(given if given is not None else self.meta.get("wise_alpha", 0.5))

    def alphas(self) -> list[float]:
        if not self.training:
            return [self.alpha]
        grid = self.cfg.wise if self.cfg.wise is not None else DEFAULT_WISE
        return sorted({*map(float, grid), self.alpha})

    # --- data ----------------------------------------------------------------------------------
    def splits(self) -> tuple[Any, Any, str]:
        from optik.config import update_config
        from optik.data.sources import load_classification_data

        cfg = self.cfg
        if isinstance(cfg.data, str) and cfg.data.split("?")[0] == "synthetic:captions":
            raise ConfigError("bad value for 'data': objective=finetune trains a classifier on a classification source "
                              "(synthetic:shapes, digits, a folder, a CSV…); synthetic:captions scenes have no single class")  # fmt: skip
        if self.training:
            self._clip = load_clip(cfg.model or "", "model") if cfg.model else None
            if self._clip is None:
                raise ConfigError("missing key 'model': objective=finetune starts from a trained CLIP (model=<zeroshot "
                                  "weights file or run dir> or model=hf:<CLIP dir>)")  # fmt: skip
            clip, cmeta = self._clip
            size = cmeta.get("imgsz") or (getattr(clip, "default_cfg", {}).get("input_size") or (None,))[-1]
            if size and "imgsz" not in cfg.model_fields_set:  # the CLIP's own input size unless imgsz= is given
                self.task.cfg = cfg = update_config(cfg, imgsz=int(size))
        data = load_classification_data(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, skip_bad=cfg.skip_bad)
        if getattr(data.train, "multilabel", False):
            raise ConfigError(f"bad value for 'data': {data.description} is multi-label; objective=finetune trains one label per image")
        classes = list(data.classes)
        if not self.training and self.meta.get("classes") and list(self.meta["classes"]) != classes:
            raise ConfigError(f"data: classes {classes} differ from the fine-tuned classifier's {self.meta['classes']}; "
                              "validate on data with the same class names")  # fmt: skip
        self.meta["classes"] = classes
        train = Tagged(data.train, 0)
        parts = [Tagged(data.val, 0)] if data.val is not None and len(data.val) else []
        description = data.description
        shift = getattr(cfg, "shift_data", None)
        if self.training and shift:
            sdata = load_classification_data(shift, val_fraction=0.0, seed=cfg.seed, skip_bad=cfg.skip_bad)
            if list(sdata.classes) != classes:
                raise ConfigError(f"bad value for 'shift_data': its classes {list(sdata.classes)} differ from data's {classes}")
            parts += [Tagged(s, 1) for s in (sdata.train, sdata.val) if s is not None and len(s)]
            description += f"; shifted: {sdata.description}"
        val = Concat(parts) if parts else None
        return train, val, description

    # --- model ---------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        cfg = self.cfg
        if not self.training:
            return self._load_trained()
        from optik.zeroshot import captions as cap
        from optik.zeroshot.prompts import PHOTO_TEMPLATES

        clip, cmeta = self._clip if self._clip is not None else load_clip(cfg.model or "", "model")
        classes = list(self.meta["classes"])
        hf = "hf" in cmeta.get("model_config", {})
        templates = list(cfg.templates or cmeta.get("templates") or (PHOTO_TEMPLATES if hf else cap.CLASS_TEMPLATES))
        unknown = unknown_words(clip, classes)
        if unknown and cfg.head == "zeroshot":
            log.warning("head=zeroshot: the CLIP's vocabulary lacks %s (encoded as <unk>); those classes' zero-shot weights "
                        "carry no meaning (rename the classes or use head=linear)", ", ".join(unknown[:8]))  # fmt: skip
        net = CLIPClassifier.from_clip(clip, len(classes))
        if cfg.head == "zeroshot":
            net.init_zeroshot_head(clip, classes, templates)
        model = WiseFT(net, alpha=self.alpha)
        for key in ("mean", "std", "interpolation"):
            if net.default_cfg.get(key) is not None:
                self.meta[key] = list(net.default_cfg[key]) if key != "interpolation" else net.default_cfg[key]
        self.meta.update(objective="finetune", head=cfg.head, wise_alpha=self.alpha, templates=templates,
                         base_model=cmeta.get("file") or cmeta.get("model"), model=f"clip-finetune",
                         model_config=net.config_dict())  # fmt: skip
        self.meta.pop("holdout", None), self.meta.pop("heldout_classes", None)
        return model

    def _load_trained(self) -> nn.Module:
        from optik.weights import load_state_dict, resolve_model_arg

        _, weights, _ = resolve_model_arg(self.cfg.model)
        if weights is None or "export" in self.meta:
            raise ConfigError(f"bad value for 'model': {self.cfg.model!r} (a fine-tuned classifier loads from its .safetensors weights)")
        model = WiseFT(CLIPClassifier(self.meta["model_config"]))
        missing, unexpected = model.load_state_dict(load_state_dict(weights), strict=False)
        if missing or unexpected:
            raise ModelError(f"model: '{weights}' does not fit the fine-tuned CLIP classifier it describes "
                             f"({len(missing)} missing, {len(unexpected)} unexpected keys)")  # fmt: skip
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"bad value for 'wise_alpha': {self.alpha} (expected 0 ≤ α ≤ 1)")
        self.labels()
        return model.merged(self.alpha).eval()

    # --- step ----------------------------------------------------------------------------------
    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model.logits_at(inputs, self.alpha) if isinstance(model, WiseFT) else model(inputs)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
        logits = model(inputs)  # WiseFT in train mode: the network being fine-tuned
        return {"loss": F.cross_entropy(logits.float(), targets["label"])}, None

    def eval_step(self, model: nn.Module, inputs: Tensor, targets: dict[str, Tensor]) -> tuple[Any, None]:
        if isinstance(model, WiseFT):
            logits = torch.stack([model.logits_at(inputs, a).float() for a in self.alphas()])
        else:  # val / predict: θ_α merged already
            logits = model(inputs).float()[None]
        return {"logits": logits}, None  # WiseMetric computes the loss per domain

    def metric(self) -> WiseMetric:
        def remember(out: dict[str, Any]) -> None:  # the weights file says what each α scored at its epoch
            self.meta["wise"] = {k: round(v, 6) for k, v in out.items() if "@a" in k}

        return WiseMetric(self.alphas(), self.alpha, on_compute=remember if self.training else None)

    # --- artifacts -----------------------------------------------------------------------------
    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if "top1" not in metrics:
            return []
        a = self.alpha
        lines = [f"- fine-tuned CLIP classifier (head={self.meta.get('head', '?')}) at WiSE-FT α={a:g}: top-1 "
                 f"{metrics['top1']:.3f} (top-5 {metrics.get('top5', float('nan')):.3f}) on {metrics.get('images', 0)} val images"]  # fmt: skip
        if "shift_top1" in metrics:
            lines.append(f"- shifted data: top-1 {metrics['shift_top1']:.3f} on {metrics.get('shift_images', 0)} images")
        grid = [x for x in self.alphas() if f"top1@{alpha_key(x)}" in metrics]
        if len(grid) > 1:
            lines += ["", "| α (0 = zero-shot, 1 = fine-tuned) | val top-1 | shifted top-1 |", "|---|---|---|"]
            for x in grid:
                s = metrics.get(f"shift_top1@{alpha_key(x)}")
                lines.append(f"| {x:g} | {metrics[f'top1@{alpha_key(x)}']:.3f} | {'' if s is None else f'{s:.3f}'} |")
            lines += ["", f"- the saved weights hold both endpoints (θ_zeroshot, θ_finetuned); val / predict use "
                      f"θ_α = (1−α)·θ_zeroshot + α·θ_finetuned at α = {a:g} (wise_alpha=; wise.json, plots/wise.png)"]  # fmt: skip
        return lines

    def plots(self, run_dir: Path, metrics: dict[str, Any]) -> list[Path]:
        """``wise.json`` (every α's accuracies) and ``plots/wise.png`` (top-1 vs α, in-distribution and shifted)."""
        import json

        grid = [x for x in self.alphas() if f"top1@{alpha_key(x)}" in metrics]
        if len(grid) < 2:
            return []
        rows = [{"alpha": x, "top1": metrics[f"top1@{alpha_key(x)}"], "shift_top1": metrics.get(f"shift_top1@{alpha_key(x)}")} for x in grid]
        (run_dir / "wise.json").write_text(json.dumps({"wise_alpha": self.alpha, "head": self.meta.get("head"), "alphas": rows}, indent=1))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(grid, [r["top1"] for r in rows], "o-", label="val (in-distribution)")
        if all(r["shift_top1"] is not None for r in rows):
            ax.plot(grid, [r["shift_top1"] for r in rows], "s--", label="shifted")
        ax.axvline(self.alpha, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="α  (0 = zero-shot, 1 = fine-tuned)", ylabel="top-1", title="WiSE-FT")
        ax.legend()
        fig.tight_layout()
        path = run_dir / "plots" / "wise.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]


__all__ = ["CLIPClassifier", "DEFAULT_WISE", "FinetuneObjective", "WiseFT", "WiseMetric", "interpolate_state", "zeroshot_logits"]
