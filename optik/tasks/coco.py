"""COCO-style results for tasks whose predictions pycocotools can score (detection boxes, instance masks).

:class:`CocoResults` is a mixin for a :class:`~optik.tasks.base.Task`: during ``val`` with ``save_json=true``
the task hands its predictions (original pixels, with ``image_id``) to :meth:`CocoResults.collect_coco`, and
``val`` mode's :meth:`~optik.tasks.base.Task.write_val_artifacts` writes them as ``predictions.json`` (COCO
results format, unrounded, for pycocotools or a leaderboard).

>>> class DetectTask(CocoResults, Task): ...                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class CocoResults:
    """Mixin: ``coco_rows`` collected during val, written to ``predictions.json`` by ``write_val_artifacts``.
    List it before :class:`~optik.tasks.base.Task` in the bases (its ``__init__`` and ``write_val_artifacts`` win)."""

    cfg: Any
    meta: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.coco_rows: list[dict[str, Any]] = []

    def collect_coco(self, preds: list[dict[str, Any]]) -> None:
        """Record per-image predictions (``image_id``, ``boxes`` xyxy, ``scores``, ``labels`` 0-based and,
        for instance segmentation, ``masks`` (N, H, W) bool) when ``save_json`` is on."""
        if getattr(self.cfg, "save_json", False):
            cat_ids = self.meta.get("cat_ids") or list(range(len(self.meta["classes"])))
            self.coco_rows += coco_rows(preds, cat_ids)

    @property
    def coco_results(self) -> bool:
        """Whether this task's val writes ``predictions.json`` (a segmentation flavour without COCO rows: False)."""
        return True

    def write_val_artifacts(self, run_dir: Path) -> list[Path]:
        # Written even with no prediction at all ("[]"): predictions.json is a documented val output, and
        # an empty list is what pycocotools' loadRes and a leaderboard expect for "nothing found".
        if not (self.coco_results and getattr(self.cfg, "save_json", False)):
            return []
        path = run_dir / "predictions.json"
        path.write_text(json.dumps(self.coco_rows))
        return [path]


def coco_rows(preds: list[dict[str, Any]], cat_ids: list[int]) -> list[dict[str, Any]]:
    """COCO results rows (``bbox`` [x, y, w, h], and RLE ``segmentation`` for predictions with ``masks``).

    >>> import torch
    >>> p = {"image_id": 1, "boxes": torch.tensor([[0., 0., 2., 2.]]), "scores": torch.tensor([.9]), "labels": torch.tensor([0])}
    >>> coco_rows([p], [7])[0]["category_id"]
    7
    """
    from optik.metrics.detection import predictions_to_coco

    if not any("masks" in p for p in preds):
        return predictions_to_coco(preds, cat_ids)
    from faster_coco_eval.core import mask as mask_utils

    rows = []
    for p in preds:
        m = p["masks"].numpy().astype(np.uint8)
        rles = list(mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0)))) if len(m) else []
        for r in rles:  # JSON needs str counts
            r["counts"] = r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]
        fields = {k: p[k] for k in ("image_id", "boxes", "scores", "labels")}
        rows += predictions_to_coco([{**fields, "segmentation": rles}], cat_ids)
    return rows


__all__ = ["CocoResults", "coco_rows"]
