"""Prediction results: one :class:`Results` per image, whatever the task.

Mirrors the Ultralytics ``Results`` users know (``.probs.top1``, ``.plot()``, ``.to_json()``);
detection/segmentation/keypoint fields (``boxes``, ``masks``, ``keypoints``) join as those tasks land.

>>> import numpy as np, torch
>>> r = Results(np.zeros((8, 8, 3), np.uint8), path="a.png", names=["cat", "dog"], probs=torch.tensor([0.2, 0.8]))
>>> r.probs.top1, round(r.probs.top1conf, 2)
(1, 0.8)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


class Probs:
    """Class probabilities of one image: ``.data`` (C,), ``.top1``, ``.top5``, ``.top1conf``, ``.top5conf``."""

    def __init__(self, data: Tensor, topk: int = 5) -> None:
        self.data = data.detach().float().cpu()
        self.k = min(topk, len(self.data))
        conf, idx = torch.topk(self.data, self.k)
        self._idx, self._conf = idx.tolist(), conf.tolist()

    @property
    def top1(self) -> int:
        return self._idx[0]

    @property
    def top1conf(self) -> float:
        return self._conf[0]

    @property
    def top5(self) -> list[int]:
        return self._idx[:5]

    @property
    def top5conf(self) -> list[float]:
        return self._conf[:5]

    @property
    def topk(self) -> list[tuple[int, float]]:
        return list(zip(self._idx, self._conf))


@dataclass
class Results:
    """The prediction for one image.

    Attributes:
        orig_img: the input image, (H, W, 3) uint8 RGB.
        path: file path, or ``"image<i>"`` for in-memory inputs.
        names: class names (index → name).
        probs: :class:`Probs` for classification, else None.
        speed: milliseconds spent in ``preprocess``/``inference``/``postprocess`` (per image).
    """

    orig_img: np.ndarray
    path: str
    names: list[str]
    probs: Probs | Tensor | None = None
    topk: int = 5
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.probs, Tensor):
            self.probs = Probs(self.probs, self.topk)

    @property
    def orig_shape(self) -> tuple[int, int]:
        return self.orig_img.shape[:2]

    def summary(self) -> list[dict[str, Any]]:
        """JSON-able rows: one per top-k class for classification."""
        rows: list[dict[str, Any]] = []
        if isinstance(self.probs, Probs):
            rows += [{"class": i, "name": self.names[i], "confidence": round(c, 5)} for i, c in self.probs.topk]
        return rows

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps({"path": self.path, "shape": list(self.orig_shape), "predictions": self.summary()}, indent=indent)

    def verbose(self) -> str:
        """One line: ``"cat 0.93, dog 0.05"``."""
        return ", ".join(f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5])

    def plot(self, labels: bool = True) -> np.ndarray:
        """The image with the top-k labels drawn, (H', W', 3) uint8 RGB (small images are upscaled)."""
        from optik.viz.draw import draw_text_block

        lines = [f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5]] if labels else []
        return draw_text_block(self.orig_img, lines)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` as an image file."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(path)
        return path
