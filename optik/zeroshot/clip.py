"""The tiny CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"),
trained from scratch: an image tower from optik's model registry (its classifier head, sized ``embed_dim``, is the
image projection), the word-level :class:`~optik.zeroshot.text.TextTransformer`, and a learnable temperature.

Every zero-shot model in optik (this one and :class:`optik.zeroshot.hf.HFClip`) offers the same three things:
``encode_image(x)`` and ``encode_text(texts)`` → L2-normalised embeddings, and ``scale()`` → ``(logit_scale,
logit_bias)``; ``forward(x)`` is ``encode_image``.

>>> model = TinyCLIP(vocab=["<pad>", "<start>", "<end>", "<unk>", "a", "red", "circle"], image_model="cnn", embed_dim=16,
...                  text_width=16, text_layers=1, text_heads=2, img_size=32)
>>> img, txt = model.encode_image(torch.rand(2, 3, 32, 32)), model.encode_text(["a red circle", "a circle"])
>>> (img @ txt.T).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.zeroshot.text import TextTransformer
from optik.zeroshot.tokenizer import WordTokenizer

#: CLIP clamps the learned logit scale at 100 "to prevent scaling the logits by more than 100" (§2.5).
MAX_LOGIT_SCALE = math.log(100.0)
INIT_TEMPERATURE = 0.07


class TinyCLIP(nn.Module):
    def __init__(self, vocab: Sequence[str], image_model: str = "resnet", embed_dim: int = 128, text_width: int = 128,
                 text_layers: int = 2, text_heads: int = 4, context_length: int = 16, img_size: int | None = None,
                 in_chans: int = 3, image_config: dict[str, Any] | None = None, pretrained: bool | str | None = None) -> None:  # fmt: skip
        super().__init__()
        from optik import models

        self.tokenizer = WordTokenizer(vocab)
        self._config = dict(vocab=list(vocab), image_model=image_model, embed_dim=embed_dim, text_width=text_width,
                            text_layers=text_layers, text_heads=text_heads, context_length=context_length,
                            img_size=img_size, in_chans=in_chans)  # fmt: skip
        # pretrained= (a new model only; not part of the config: a saved CLIP holds its own tower weights)
        self.visual = models.create(image_model, task="classify", num_classes=embed_dim, in_chans=in_chans, img_size=img_size,
                                    config=image_config, **({"pretrained": pretrained} if pretrained else {}))  # fmt: skip
        if hasattr(self.visual, "config_dict"):
            self._config["image_config"] = self.visual.config_dict()
        self.text = TextTransformer(len(vocab), embed_dim, text_width, text_layers, text_heads, context_length)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))
        # The image tower's normalisation (ImageNet stats for native models, the pretrained cfg for timm:).
        self.default_cfg = getattr(self.visual, "default_cfg", None) or getattr(self.visual, "pretrained_cfg", None) or {}

    def config_dict(self) -> dict[str, Any]:
        """What rebuilds this model exactly (the vocabulary included), stored as the weights' ``model_config``."""
        return dict(self._config)

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.visual(images).float(), dim=-1)

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.text(tokens).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        device = self.logit_scale.device
        return self.encode_tokens(self.tokenizer.encode(list(texts), self.text.context_length).to(device))

    def scale(self) -> tuple[Tensor, Tensor | None]:
        """``(exp(logit_scale) clamped at 100, no bias)``."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp(), None

    def forward(self, images: Tensor) -> Tensor:
        return self.encode_image(images)


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, positives: Tensor | None = None) -> Tensor:
    """CLIP's symmetric InfoNCE: cross-entropy of image→text and text→image logits, averaged.

    ``positives`` (B, B) bool marks pairs that are equally correct (two images whose captions are the same text);
    the target of each row is then spread evenly over them (UniCL, Yang et al. 2022) instead of pushing identical
    captions apart. None = the diagonal only (plain CLIP).

    >>> e = F.normalize(torch.eye(3), dim=-1)
    >>> float(contrastive_loss(e, e, torch.tensor(100.0))) < 1e-6
    True
    """
    logits = logit_scale * image_emb.float() @ text_emb.float().T
    if positives is None:
        target = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    p = positives.float()
    return 0.5 * (F.cross_entropy(logits, p / p.sum(1, keepdim=True)) + F.cross_entropy(logits.T, p.T / p.T.sum(1, keepdim=True)))


def global_contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, caption_ids: Tensor) -> Tensor:
    """:func:`contrastive_loss` over the global batch under DistributedDataParallel: this rank's images are scored
    against every rank's captions and its captions against every rank's images (CLIP's cross-replica negatives),
    positives = equal caption ids. Each rank's loss is its share of the global loss (weighted by its row count), the
    gathered rows carry their gradient back (:func:`optik.distributed.all_gather_rows`), so the gradients DDP averages
    are the single-process gradients of the whole batch. One process: :func:`contrastive_loss` itself.

    >>> e = F.normalize(torch.eye(3), dim=-1)
    >>> float(global_contrastive_loss(e, e, torch.tensor(100.0), torch.arange(3))) < 1e-6
    True
    """
    from optik.distributed import all_gather_rows, world_size

    if world_size() == 1:
        return contrastive_loss(image_emb, text_emb, logit_scale, caption_ids[:, None] == caption_ids[None, :])
    images, texts = all_gather_rows(image_emb.float(), grad=True), all_gather_rows(text_emb.float(), grad=True)
    ids = all_gather_rows(caption_ids)
    p = (caption_ids[:, None] == ids[None, :]).float()  # (b, N): this rank's rows against the global batch
    i2t = F.cross_entropy(logit_scale * image_emb.float() @ texts.T, p / p.sum(1, keepdim=True))
    t2i = F.cross_entropy(logit_scale * text_emb.float() @ images.T, p / p.sum(1, keepdim=True))
    # Equal per-rank batches: the mean over ranks of these means is the global mean; uneven ones are reweighted.
    weight = world_size() * len(caption_ids) / len(ids)
    return 0.5 * (i2t + t2i) * weight

