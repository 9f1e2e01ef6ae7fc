"""Zero-shot models as exported files: the image tower with one label set baked in.

``optik zeroshot export model=<run | hf:dir> labels=[cat,dog]`` traces :class:`ZeroShotGraph`: image → ``logits``
over the label set (``scale · image_emb @ class_weights.T (+ bias)``, the prompt-ensembled class embeddings and
the temperature fixed at export) and ``embedding`` (the L2-normalised image embedding). The text tower is not in
the file, so :class:`ExportedZeroShot` answers over the baked labels only — any subset, in any order (a label's
logit does not depend on the others, so picking columns gives exactly what eager gives for those labels); another
label is a :class:`~optik.errors.ConfigError` naming ``labels``.

>>> import torch
>>> from torch import nn
>>> tower = type("Tower", (nn.Module,), {"encode_image": lambda self, x: nn.functional.normalize(x.flatten(1), dim=-1)})()
>>> g = ZeroShotGraph(tower, torch.eye(2, 12), torch.tensor(10.0))
>>> [t.shape for t in g(torch.rand(3, 3, 2, 2))]
[torch.Size([3, 2]), torch.Size([3, 12])]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from optik.deploy.runtime import ExportedModel
from optik.errors import ConfigError


class ZeroShotGraph(nn.Module):
    """What zero-shot export traces: ``(logits (B, C), embedding (B, D))`` of an image batch, for the fixed
    ``(C, D)`` unit-norm class weights and logit scale (and SigLIP's bias)."""

    def __init__(self, model: nn.Module, class_weights: Tensor, scale: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("class_weights", class_weights.detach().float().clone())
        self.register_buffer("scale", scale.detach().float().reshape(()).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().float().reshape(()).clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.model.encode_image(x).float()
        logits = self.scale * emb @ self.class_weights.T
        return (logits if self.bias is None else logits + self.bias), emb


class ExportedZeroShot(ExportedModel):
    """An exported zero-shot classifier (``.onnx`` / ``.torchscript`` from ``optik zeroshot export``):
    :meth:`logits` over any subset of :attr:`baked_labels`, :meth:`encode_image` (the ``embedding`` output)."""

    def __init__(self, path: str | Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        super().__init__(path, meta, device)
        post = meta["export"].get("postprocess") or {}
        self.baked_labels: list[str] = list(post.get("labels") or meta.get("classes") or [])
        self.templates: list[str] = list(post.get("templates") or meta.get("templates") or [])
        self.sigmoid = post.get("type") == "sigmoid"

    def columns(self, labels: Sequence[str]) -> list[int]:
        """Positions of ``labels`` among the baked ones; a ConfigError naming ``labels`` for any other."""
        index = {name: i for i, name in enumerate(self.baked_labels)}
        unknown = [name for name in labels if name not in index]
        if unknown:
            raise ConfigError(f"bad value for 'labels': {unknown} not among the labels '{self.path.name}' was exported with "
                              f"({', '.join(self.baked_labels)}); an exported file answers over those only — re-export with "
                              f"labels=[…] or use the .safetensors weights")  # fmt: skip
        return [index[name] for name in labels]

    @torch.no_grad()
    def logits(self, images: Tensor, labels: Sequence[str]) -> Tensor:
        out = self.run(images)[0]
        cols = self.columns(labels)
        return out if cols == list(range(len(self.baked_labels))) else out[:, cols]

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        return self.run(images)[1]

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        raise ConfigError(f"bad value for 'model': '{self.path.name}' is an exported zero-shot classifier (image tower and a fixed "
                          "label set); text embeddings need the .safetensors weights or the hf: model")  # fmt: skip
