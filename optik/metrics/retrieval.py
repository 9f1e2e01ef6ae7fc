"""Retrieval and image-text metrics: recall@k (image→text and text→image, several correct items per query),
CLIPScore, and the zero-shot validation metric that accumulates embeddings.

recall@k of a query is 1 when at least one of its correct items is among the ``k`` most similar gallery items
(ties broken by gallery order, as ``torch.topk``/``argsort`` of a stable sort); the metric is the mean over
queries (Karpathy & Fei-Fei 2015; the CLIP paper's Flickr30k / COCO tables).

>>> sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
>>> recall_at_k(sim, torch.tensor([[False, False, True], [True, False, False]]), (1, 2, 3))
{1: 0.0, 2: 0.5, 3: 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from optik.metrics.base import Metric

__all__ = ["ZeroShotMetric", "clip_score", "positives_from_ids", "recall_at_k", "retrieval_recalls"]


def recall_at_k(sim: Tensor, positives: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Mean over queries (rows of ``sim``, ``(Q, G)``) of "a correct gallery item is in the top k".

    ``positives`` (Q, G) bool marks the correct items; a query without any counts as a miss. ``k`` larger than
    the gallery is the whole gallery.
    """
    if sim.shape != positives.shape:
        raise ValueError(f"recall_at_k: similarities {tuple(sim.shape)} and positives {tuple(positives.shape)} differ")
    if sim.shape[0] == 0:
        return {int(k): float("nan") for k in ks}
    order = torch.argsort(sim.float(), dim=1, descending=True, stable=True)
    hits = torch.gather(positives.bool(), 1, order)  # (Q, G): is the r-th ranked item correct
    found = hits.any(1)
    first = hits.float().argmax(1)  # rank of the first correct item (meaningful where found)
    return {int(k): float((found & (first < k)).float().mean()) for k in ks}


def positives_from_ids(image_ids: Tensor, text_ids: Tensor) -> Tensor:
    """``(I, T)`` bool: image ``i`` and text ``t`` belong together when their ids are equal (a caption id per
    image; several texts may share an id, and several images a text)."""
    return image_ids.reshape(-1, 1) == text_ids.reshape(1, -1)


def retrieval_recalls(image_emb: Tensor, text_emb: Tensor, positives: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"i2t_R@k", "t2i_R@k"}`` from (unnormalised ok) embeddings: cosine similarity, image→text over the rows of
    ``positives`` (I, T), text→image over its columns."""
    sim = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
    i2t, t2i = recall_at_k(sim, positives, ks), recall_at_k(sim.T, positives.T, ks)
    return {**{f"i2t_R@{k}": v for k, v in i2t.items()}, **{f"t2i_R@{k}": v for k, v in t2i.items()}}


def clip_score(image_emb: Tensor, text_emb: Tensor, w: float = 2.5) -> Tensor:
    """CLIPScore per (image, text) pair (Hessel et al. 2021): ``100 · w · max(cos(image, text), 0)``, ``w = 2.5``
    as in the paper (its tables report the ×100 value); ``w=1`` gives torchmetrics' ``CLIPScore``. For generated
    images: embed them and their prompts with the same model (``encode_image`` / ``encode_text``).

    >>> clip_score(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).round(decimals=2)
    tensor([176.7800])
    """
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"clip_score: pairs expected, got image {tuple(image_emb.shape)} and text {tuple(text_emb.shape)}")
    cos = F.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return 100.0 * w * cos.clamp(min=0)


class ZeroShotMetric(Metric):
    """Zero-shot top-1 and retrieval recall@k over a validation pass.

    ``update(outputs, targets)``: ``outputs = {"image": (B, D), "text": (B, D), "logits": (B, C)}`` (each image's
    own caption embedding and its zero-shot class logits), ``targets = {"label": (B,), "caption_id": (B,)}``
    (label -1: no single class — the image is left out of top-1; caption_id: equal ids = the same caption text, so
    images sharing a caption are all correct for it). Retrieval runs over the unique captions of the pass.
    ``heldout``: class indices whose accuracy is also reported on its own, among those classes only
    (``top1_within_heldout``: chance = 1 / len(heldout)).
    """

    fitness_key: ClassVar[str] = "top1"
    _state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, classes: Sequence[str], heldout: Sequence[int] = (), ks: Sequence[int] = (1, 5, 10)) -> None:
        self.classes, self.heldout, self.ks = list(classes), list(heldout), tuple(ks)
        self._reset_state()

    def _reset_state(self) -> None:
        self.images: list[Tensor] = []
        self.texts: list[Tensor] = []
        self.logits: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.caption_ids: list[Tensor] = []

    def update(self, preds: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
        self.images.append(preds["image"].detach().float().cpu())
        self.texts.append(preds["text"].detach().float().cpu())
        self.logits.append(preds["logits"].detach().float().cpu())
        self.labels.append(targets["label"].detach().long().cpu())
        self.caption_ids.append(targets["caption_id"].detach().long().cpu())

    def sync(self) -> None:
        """Embeddings are not sums: gather every rank's lists (caption ids are global, set by the dataset)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        state = (self.images, self.texts, self.logits, self.labels, self.caption_ids)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, state)
        self.images, self.texts, self.logits, self.labels, self.caption_ids = ([x for g in gathered for x in g[k]] for k in range(5))

    def compute(self) -> dict[str, Any]:
        if not self.images:
            return {"top1": float("nan")}
        images, texts = torch.cat(self.images), torch.cat(self.texts)
        logits, labels, ids = torch.cat(self.logits), torch.cat(self.labels), torch.cat(self.caption_ids)
        out: dict[str, Any] = {}
        known = labels >= 0
        n = int(known.sum())
        out["top1"] = float((logits[known].argmax(1) == labels[known]).float().mean()) if n else float("nan")
        k5 = min(5, logits.shape[1])
        out["top5"] = float((logits[known].topk(k5, dim=1).indices == labels[known, None]).any(1).float().mean()) if n else float("nan")
        out["chance"] = 1.0 / max(1, logits.shape[1])
        out["images_classified"] = n
        if self.heldout:
            held = torch.tensor(self.heldout)
            mask = known & torch.isin(labels, held)
            if mask.any():
                sub = logits[mask][:, held]
                out["top1_within_heldout"] = float((held[sub.argmax(1)] == labels[mask]).float().mean())
                out["chance_within_heldout"] = 1.0 / len(held)
        # Retrieval over the pass's unique captions (first occurrence of each id gives its embedding).
        uniq, first = _first_occurrence(ids)
        out.update(retrieval_recalls(images, texts[first], positives_from_ids(ids, uniq), self.ks))
        out["captions"] = int(len(uniq))
        return out


def _first_occurrence(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Unique ids (sorted) and the index where each first occurs."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(uniq),), len(ids), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return uniq, first
