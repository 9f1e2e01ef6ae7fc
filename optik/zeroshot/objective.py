"""What the ``objective=finetune`` and ``objective=devise`` modes of ``optik zeroshot`` share: loading a trained CLIP
(a tiny CLIP weights file / run dir, or ``hf:<dir>``), labelled datasets tagged with a split kind, and the base class
of an objective (the part of :class:`optik.tasks.zeroshot.ZeroshotTask` that differs from CLIP training).

An objective never imports the task: the task hands itself over and calls the objective's hooks (as segmentation's
strategies do), so this package stays below ``optik.tasks`` in the import graph.

>>> Tagged([(0, 1), (0, 2)], domain=1)[1]
(0, {'label': 2, 'domain': 1})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError


def load_clip(ref: str, key: str = "model") -> tuple[nn.Module, dict[str, Any]]:
    """A trained CLIP and its metadata: a zeroshot weights file / run dir trained with the CLIP objective
    (:class:`~optik.zeroshot.clip.TinyCLIP`) or ``hf:<dir|id>`` (:class:`~optik.zeroshot.hf.HFClip`). ``key`` names
    the config key in errors."""
    from optik.weights import load_state_dict, resolve_model_arg
    from optik.zeroshot.clip import TinyCLIP

    try:
        arch, weights, meta = resolve_model_arg(ref)
    except ModelError as e:
        raise ConfigError(f"bad value for '{key}': {e}") from None
    if weights is None and arch.startswith("hf:"):
        from optik.zeroshot.hf import HFClip

        model = HFClip.load(arch[3:])
        return model, {"model": arch, "templates": None, "model_config": model.config_dict()}
    if weights is None:
        raise ConfigError(f"bad value for '{key}': {ref!r} is not a trained CLIP (give a zeroshot weights file or run "
                          "dir trained by `optik zeroshot train`, or hf:<CLIP dir>)")  # fmt: skip
    if meta.get("task") != "zeroshot" or meta.get("objective", "clip") != "clip" or "export" in meta:
        what = f"a {meta.get('task')} model" if meta.get("task") != "zeroshot" else f"objective={meta.get('objective')}"
        raise ConfigError(f"bad value for '{key}': '{weights}' is {what if 'export' not in meta else 'an exported file'}, "
                          "not a CLIP trained by `optik zeroshot train` (objective=clip)")  # fmt: skip
    model = TinyCLIP(**meta["model_config"])
    missing, unexpected = model.load_state_dict(load_state_dict(weights), strict=False)
    if missing or unexpected:
        raise ModelError(f"{key}: '{weights}' does not fit the tiny CLIP it describes ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys)")  # fmt: skip
    return model.eval(), {**meta, "file": str(weights)}


def unknown_words(clip: nn.Module, names: Sequence[str]) -> list[str]:
    """Words of ``names`` outside a tiny CLIP's vocabulary (they encode as ``<unk>``); [] for hf: CLIPs (BPE)."""
    tok = getattr(clip, "tokenizer", None)
    if tok is None or not hasattr(tok, "unknown"):
        return []
    return sorted({w for n in names for w in tok.unknown(n)})


class Tagged(torch.utils.data.Dataset):
    """A labelled dataset whose targets become ``{"label": int, "domain": int}`` (``domain``: which evaluation
    group an image belongs to — in-distribution 0 / shifted 1 for WiSE-FT, seen 0 / unseen 1 for DeViSE)."""

    def __init__(self, base: Any, domain: int = 0, indices: Sequence[int] | None = None, label_of: Callable[[Any], int] | None = None) -> None:
        self.base, self.domain = base, int(domain)
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.label_of = label_of or (lambda t: int(t))

    def __len__(self) -> int:
        return len(self.indices)

    def with_transform(self, transform: Callable | None) -> Tagged:
        base = self.base.with_transform(transform) if hasattr(self.base, "with_transform") else self.base
        return Tagged(base, self.domain, self.indices, self.label_of)

    def source(self, i: int) -> str:
        return self.base.source(self.indices[i]) if hasattr(self.base, "source") else str(i)

    def load(self, i: int) -> tuple[Tensor, Any]:
        return self.base.load(self.indices[i])

    def __getitem__(self, i: int) -> tuple[Any, dict[str, int]]:
        img, target = self.base[self.indices[i]]
        return img, {"label": self.label_of(target), "domain": self.domain}


class Concat(torch.utils.data.ConcatDataset):
    """``ConcatDataset`` of :class:`Tagged` parts that keeps ``with_transform`` / ``load`` / ``source``."""

    def with_transform(self, transform: Callable | None) -> Concat:
        return Concat([d.with_transform(transform) for d in self.datasets])

    def _locate(self, i: int) -> tuple[Any, int]:
        import bisect

        k = bisect.bisect_right(self.cumulative_sizes, i)
        return self.datasets[k], i - (self.cumulative_sizes[k - 1] if k else 0)

    def load(self, i: int) -> tuple[Tensor, Any]:
        d, j = self._locate(i)
        return d.load(j)

    def source(self, i: int) -> str:
        d, j = self._locate(i)
        return d.source(j)

    @property
    def targets(self) -> list[int]:
        return [d.label_of(d.base.targets[j]) if hasattr(d.base, "targets") else -1 for d in self.datasets for j in d.indices]


def collate_labelled(batch: list[Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """Images and ``{"label", "domain"}`` of :class:`Tagged` samples."""
    images = torch.stack([x for x, _ in batch])
    return images, {"label": torch.tensor([t["label"] for _, t in batch]), "domain": torch.tensor([t["domain"] for _, t in batch])}


class Objective:
    """The hooks of :class:`~optik.tasks.zeroshot.ZeroshotTask` an objective other than CLIP training replaces. ``task``
    is the task (its ``cfg`` and ``meta``); each hook has the Task interface's meaning."""

    name = "objective"
    fitness_key = "top1"

    def __init__(self, task: Any) -> None:
        self.task = task

    @property
    def cfg(self) -> Any:
        return self.task.cfg

    @property
    def meta(self) -> dict[str, Any]:
        return self.task.meta

    @property
    def training(self) -> bool:
        from optik.config import TrainConfig

        return isinstance(self.cfg, TrainConfig)

    def labels(self) -> list[str]:
        """The fixed label set (the trained head's classes); ``labels=`` may only repeat it."""
        classes = list(self.meta.get("classes") or [])
        given = getattr(self.cfg, "labels", None)
        if given and list(given) != classes:
            raise ConfigError(f"bad value for 'labels': a model trained with objective={self.name} answers over its own "
                              f"{len(classes)} classes {classes[:10]}{'…' if len(classes) > 10 else ''} only; drop labels= "
                              "(or use the CLIP it started from for other labels)")  # fmt: skip
        return classes

    def collate(self, batch: list[Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return collate_labelled(batch)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Trainable parameters only (a frozen zero-shot copy / fixed label embeddings stay out of the optimizer);
        no weight decay on biases and norms."""
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def postprocess(self, outputs: Tensor, meta: list[dict[str, Any]]) -> list[Any]:
        from optik.results import Results

        topk = getattr(self.cfg, "topk", 5)
        names = self.labels()
        probs = outputs.float().softmax(-1).cpu()
        return [Results(orig_img=m["orig_img"], path=m["path"], names=names, probs=p, topk=topk) for p, m in zip(probs, meta)]

    def plots(self, run_dir: Path, metrics: dict[str, Any]) -> list[Path]:
        return []


def check_only_for(cfg: Any, objective: str, keys_for: dict[str, str]) -> None:
    """A key set for another objective is an error naming it (``wise=`` with objective=clip would be a silent no-op)."""
    fields = type(cfg).model_fields
    for key, needs in keys_for.items():  # a non-default value (config.yaml of a resumed run names every key)
        if needs != objective and getattr(cfg, key) is not None and getattr(cfg, key) != fields[key].default:
            raise ConfigError(f"key '{key}' applies to objective={needs} (this run's objective is {objective})")


__all__ = ["Concat", "Objective", "Tagged", "check_only_for", "collate_labelled", "load_clip", "unknown_words"]
