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


class Boxes:
    """Detections of one image in original-image pixels.

    ``.xyxy`` (N,4), ``.xywh`` (centre x, centre y, w, h), ``.xyxyn``/``.xywhn`` (normalised by the
    image size), ``.conf`` (N,), ``.cls`` (N,) class indices; ``len(boxes)`` is N.
    """

    def __init__(self, xyxy: Tensor, conf: Tensor, cls: Tensor, orig_shape: tuple[int, int]) -> None:
        self.xyxy = xyxy.detach().float().cpu().reshape(-1, 4)
        self.conf = conf.detach().float().cpu().reshape(-1)
        self.cls = cls.detach().long().cpu().reshape(-1)
        self.orig_shape = orig_shape

    def __len__(self) -> int:
        return len(self.conf)

    @property
    def xywh(self) -> Tensor:
        x1, y1, x2, y2 = self.xyxy.unbind(-1)
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)

    @property
    def _norm(self) -> Tensor:
        h, w = self.orig_shape
        return torch.tensor([w, h, w, h], dtype=torch.float32)

    @property
    def xyxyn(self) -> Tensor:
        return self.xyxy / self._norm

    @property
    def xywhn(self) -> Tensor:
        return self.xywh / self._norm


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
    boxes: Boxes | None = None
    topk: int = 5
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.probs, Tensor):
            self.probs = Probs(self.probs, self.topk)
        self._shape: tuple[int, int] = tuple(self.orig_img.shape[:2])  # type: ignore[assignment]

    @property
    def orig_shape(self) -> tuple[int, int]:
        return self._shape

    def release_image(self) -> None:
        """Drop the pixels (keep predictions and ``orig_shape``): long videos stay in constant memory."""
        self.orig_img = np.empty((0, 0, 3), np.uint8)

    def summary(self) -> list[dict[str, Any]]:
        """JSON-able rows: one per top-k class for classification."""
        rows: list[dict[str, Any]] = []
        if isinstance(self.probs, Probs):
            rows += [{"class": i, "name": self.names[i], "confidence": round(c, 5)} for i, c in self.probs.topk]
        if self.boxes is not None:
            for b, c, k in zip(self.boxes.xyxy.tolist(), self.boxes.conf.tolist(), self.boxes.cls.tolist()):
                rows.append({"class": k, "name": self.names[k], "confidence": round(c, 5),
                             "box": {"x1": round(b[0], 2), "y1": round(b[1], 2), "x2": round(b[2], 2), "y2": round(b[3], 2)}})
        return rows

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps({"path": self.path, "shape": list(self.orig_shape), "predictions": self.summary()}, indent=indent)

    def verbose(self) -> str:
        """One line: ``"cat 0.93, dog 0.05"`` (classification) or ``"2 circle, 1 star"`` (detection)."""
        if self.boxes is not None:
            counts = np.bincount(self.boxes.cls.numpy(), minlength=len(self.names)) if len(self.boxes) else []
            return ", ".join(f"{n} {self.names[k]}" for k, n in enumerate(counts) if n) or "no detections"
        return ", ".join(f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5])

    def plot(self, labels: bool = True) -> np.ndarray:
        """The image with predictions drawn, (H', W', 3) uint8 RGB (small images are upscaled)."""
        from optik.viz.draw import draw_boxes, draw_text_block

        if self.boxes is not None:
            return draw_boxes(self.orig_img, self.boxes.xyxy.numpy(), self.boxes.cls.numpy(), self.boxes.conf.numpy(),
                              self.names, labels=labels)
        lines = [f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5]] if labels else []
        return draw_text_block(self.orig_img, lines)

    def to_coco(self, image_id: int, cat_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO results rows (``bbox`` as x, y, w, h; ``category_id`` via ``cat_ids``), unrounded."""
        if self.boxes is None:
            return []
        from optik.metrics.detection import predictions_to_coco

        pred = {"image_id": image_id, "boxes": self.boxes.xyxy, "scores": self.boxes.conf, "labels": self.boxes.cls}
        return predictions_to_coco([pred], cat_ids or list(range(len(self.names))))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` as an image file."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(path)
        return path
