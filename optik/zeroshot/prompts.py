"""Zero-shot classifier weights from class names: each class's prompts (one per template) are encoded,
L2-normalised, averaged and re-normalised — prompt ensembling as in CLIP's ImageNet notebook
(``zeroshot_classifier``: ``class_embeddings /= norm; mean; /= norm``).

>>> expand(["red circle"], ("a {}", "a small {}"))
[['a red circle', 'a small red circle']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: A few of the 80 templates CLIP's notebook ensembles for ImageNet, for ``hf:`` models trained on web captions.
PHOTO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.", "a photo of the small {}.",
    "a cropped photo of a {}.", "a bright photo of a {}.", "a drawing of a {}.", "itap of a {}.",
)  # fmt: skip


def expand(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Each class name written with each template (a template without ``{}`` gets the name appended)."""
    return [[t.format(c) if "{}" in t else f"{t} {c}" for t in templates] for c in classnames]


@torch.no_grad()
def class_embeddings(model: Any, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
    """``(C, D)`` unit-norm zero-shot weights of ``classnames`` for ``model`` (anything with ``encode_text``)."""
    prompts = expand(classnames, templates)
    flat = [p for row in prompts for p in row]
    emb = model.encode_text(flat).float().reshape(len(classnames), len(templates), -1)
    return F.normalize(F.normalize(emb, dim=-1).mean(1), dim=-1)
