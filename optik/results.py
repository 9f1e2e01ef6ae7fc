"""Prediction results: one :class:`Results` per image, whatever the task.

Mirrors the Ultralytics ``Results`` users know (``.probs.top1``, ``.boxes.xyxy``, ``.masks.xy``,
``.plot()``, ``.to_json()``, ``.save_txt()``). One class for every task: classification sets ``probs``,
detection ``boxes``, instance segmentation ``boxes`` + ``masks``, semantic segmentation ``semantic``
(a class map), panoptic segmentation ``panoptic`` (a segment-id map) + ``segments``.

>>> import numpy as np, torch
>>> r = Results(np.zeros((8, 8, 3), np.uint8), path="a.png", names=["cat", "dog"], probs=torch.tensor([0.2, 0.8]))
>>> r.probs.top1, round(r.probs.top1conf, 2)
(1, 0.8)

Multi-label classification gives ``probs`` per-label sigmoid scores and ``thresholds`` (one per class):
the predicted label set is every class whose score reaches its threshold.

>>> r = Results(np.zeros((8, 8, 3), np.uint8), path="a.png", names=["cat", "dog", "bird"],
...             probs=torch.tensor([0.9, 0.2, 0.6]), thresholds=[0.5, 0.5, 0.7])
>>> r.probs.labels, r.verbose()
([0], 'cat 0.90')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = 255  # void pixels of a semantic class map (same value as optik.data.segmentation_dataset)


class Probs:
    """Class probabilities of one image: ``.data`` (C,), ``.top1``, ``.top5``, ``.top1conf``, ``.top5conf``.

    Multi-label (``thresholds`` given: one per class, or one for all): ``.data`` holds independent
    per-label (sigmoid) scores, ``.labels`` the predicted label set — every class with
    ``score >= threshold``, highest score first — and ``.multilabel`` is True.
    """

    def __init__(self, data: Tensor, topk: int = 5, thresholds: Sequence[float] | Tensor | float | None = None) -> None:
        self.data = data.detach().float().cpu()
        self.k = min(topk, len(self.data))
        # The ranking and the label set are computed at first use: predict builds a Probs per image, and a
        # server that only reads .top1 (or a loop that keeps .data) should not pay for top-k lists per image.
        self._top: tuple[list[int], list[float]] | None = None
        self._label_set: list[int] | None = None
        self.multilabel = thresholds is not None
        self.thresholds: Tensor | None = None
        if thresholds is not None:
            t = torch.as_tensor(thresholds, dtype=torch.float32).reshape(-1)
            if t.numel() not in (1, len(self.data)):
                raise ValueError(f"Probs: {t.numel()} thresholds for {len(self.data)} classes")
            self.thresholds = t.expand(len(self.data)).clone()

    @property
    def _idx(self) -> list[int]:
        return self._ranked()[0]

    @property
    def _conf(self) -> list[float]:
        return self._ranked()[1]

    def _ranked(self) -> tuple[list[int], list[float]]:
        if self._top is None:
            conf, idx = torch.topk(self.data, self.k)
            self._top = idx.tolist(), conf.tolist()
        return self._top

    @property
    def _labels(self) -> list[int]:
        if self._label_set is None:
            self._label_set = []
            if self.thresholds is not None:
                hit = torch.nonzero(self.data >= self.thresholds).reshape(-1)  # float32 vs float32: as the metric decides
                order = torch.sort(self.data[hit], descending=True, stable=True).indices
                self._label_set = hit[order].tolist()
        return self._label_set

    @property
    def labels(self) -> list[int]:
        """The predicted label set, highest score first (multi-label); ``[top1]`` for a single-label result."""
        return list(self._labels) if self.multilabel else self._idx[:1]

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


def _rle_str(rles: list[dict]) -> list[dict[str, Any]]:
    """faster-coco-eval returns ``counts`` as bytes; JSON wants str (pycocotools accepts both back)."""
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def encode_rle(masks: np.ndarray | Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLEs ``{"size": [H, W], "counts": str}`` of bool masks (N, H, W) or (H, W).

    >>> encode_rle(np.eye(3, dtype=bool))
    [{'size': [3, 3], 'counts': '013000'}]
    """
    from faster_coco_eval.core import mask as mask_utils

    m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    m = m[None] if m.ndim == 2 else m
    if not len(m):
        return []
    # RLE runs down columns (Fortran order), one mask per last-axis slice.
    return _rle_str(mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8))))


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of one bool (H, W) mask as (K, 2) float32 (x, y) pixel arrays, largest first.

    Points are pixel indices (``cv2.findContours``): ``cv2.fillPoly`` on them gives the mask back.

    >>> m = np.zeros((8, 8), bool); m[2:5, 3:7] = True
    >>> mask_contours(m)[0].tolist()
    [[3.0, 2.0], [3.0, 4.0], [6.0, 4.0], [6.0, 2.0]]
    """
    import cv2

    found, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Rank by area, then by point count so 1-px-wide lines (area 0) still order sensibly.
    found = sorted(found, key=lambda c: (cv2.contourArea(c), len(c)), reverse=True)
    return [c.reshape(-1, 2).astype(np.float32) for c in found]


class Masks:
    """Instance masks of one image in original-image pixels.

    ``.data`` bool (N, H, W) (float input is thresholded at 0.5), ``.xy`` largest outer polygon per
    mask as (K, 2) float32 pixel coordinates (empty (0, 2) for an empty mask), ``.xyn`` the same
    normalised by (W, H), ``.segments`` every outer polygon per mask, ``.rle`` COCO RLEs, ``.area``
    pixel counts, ``.boxes()`` xyxy boxes (pixel j spans [j, j+1)); ``len(masks)`` is N.

    >>> m = torch.zeros(1, 6, 8, dtype=torch.bool); m[0, 1:3, 2:6] = True
    >>> masks = Masks(m)
    >>> len(masks), masks.area.tolist(), masks.boxes().tolist(), masks.rle[0]["size"]
    (1, [8], [[2.0, 1.0, 6.0, 3.0]], [6, 8])
    """

    def __init__(self, data: Tensor | np.ndarray, orig_shape: tuple[int, int] | None = None) -> None:
        t = torch.as_tensor(data).detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise ValueError(f"Masks expects (N, H, W) masks, got shape {tuple(t.shape)}")
        self.data = t if t.dtype == torch.bool else t.float() > 0.5
        self.orig_shape: tuple[int, int] = tuple(orig_shape or t.shape[-2:])  # type: ignore[assignment]
        if tuple(self.data.shape[-2:]) != self.orig_shape:
            raise ValueError(f"Masks of size {tuple(self.data.shape[-2:])} for an image of size {self.orig_shape}: "
                             "map masks back to original pixels first")
        self._segments: list[list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: Any) -> Masks:
        return Masks(self.data[idx].reshape(-1, *self.orig_shape), self.orig_shape)

    @property
    def segments(self) -> list[list[np.ndarray]]:
        """All outer contours of each mask, largest first (cached: contours cost a pass per mask)."""
        if self._segments is None:
            self._segments = [mask_contours(m) for m in self.data.numpy()]
        return self._segments

    @property
    def xy(self) -> list[np.ndarray]:
        return [s[0] if s else np.zeros((0, 2), np.float32) for s in self.segments]

    @property
    def xyn(self) -> list[np.ndarray]:
        h, w = self.orig_shape
        return [p / np.array([w, h], np.float32) for p in self.xy]

    @property
    def rle(self) -> list[dict[str, Any]]:
        return encode_rle(self.data)

    @property
    def area(self) -> Tensor:
        return self.data.sum((1, 2))

    def boxes(self) -> Tensor:
        """(N, 4) float xyxy, x2/y2 exclusive (COCO's ``toBbox`` convention); zeros for empty masks."""
        out = torch.zeros(len(self), 4)
        nonempty = self.data.flatten(1).any(1)
        if nonempty.any():
            from torchvision.ops import masks_to_boxes

            out[nonempty] = masks_to_boxes(self.data[nonempty]).float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
        return out


def _round_box(b: list[float]) -> dict[str, float]:
    return {"x1": round(b[0], 2), "y1": round(b[1], 2), "x2": round(b[2], 2), "y2": round(b[3], 2)}


def _flat_polygon(poly: np.ndarray) -> list[float]:
    """COCO polygon layout ``[x1, y1, x2, y2, …]``."""
    return [round(float(v), 2) for v in poly.reshape(-1)]


@dataclass
class Results:
    """The prediction for one image.

    Attributes:
        orig_img: the input image, (H, W, 3) uint8 RGB.
        path: file path, or ``"image<i>"`` for in-memory inputs.
        names: class names (index → name).
        probs: :class:`Probs` for classification, else None.
        boxes: :class:`Boxes` for detection and instance segmentation (class + confidence per mask).
        masks: :class:`Masks` (N, H, W) for instance segmentation / SAM (a bool Tensor is wrapped).
        semantic: (H, W) int64 class map, ``IGNORE_INDEX`` (255) where void.
        panoptic: (H, W) int64 segment-id map, 0 = void; ``segments`` describes each id. When set,
            it is what summary/plot/verbose/save_txt/to_coco report (``boxes``/``masks`` may also be
            given, one per segment, for code that wants them).
        segments: ``[{"id", "label", "score", "isthing", "area"}]`` for ``panoptic``.
        speed: milliseconds spent in ``preprocess``/``inference``/``postprocess`` (per image).
        thresholds: multi-label classification: one threshold per class (or one for all) on ``probs``,
            which then hold per-label sigmoid scores; the predicted label set is ``probs.labels``.
        text: generated text about the image (``optik vl caption``: the caption).
        question, answer: visual question answering (``optik vl vqa``): the question asked and the answer.

    >>> img = np.zeros((6, 8, 3), np.uint8)
    >>> sem = torch.zeros(6, 8, dtype=torch.long); sem[:, :2] = 1
    >>> Results(img, path="a.png", names=["background", "road"], semantic=sem).verbose()
    'background 75%, road 25%'
    """

    orig_img: np.ndarray
    path: str
    names: list[str]
    probs: Probs | Tensor | None = None
    boxes: Boxes | None = None
    topk: int = 5
    speed: dict[str, float] = field(default_factory=dict)
    masks: Masks | Tensor | None = None
    semantic: Tensor | None = None
    panoptic: Tensor | None = None
    segments: list[dict[str, Any]] | None = None
    thresholds: Sequence[float] | Tensor | None = None
    text: str | None = None
    question: str | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.probs, Tensor):
            self.probs = Probs(self.probs, self.topk, self.thresholds)
        self._shape: tuple[int, int] = tuple(self.orig_img.shape[:2])  # type: ignore[assignment]
        if self.masks is not None and not isinstance(self.masks, Masks):
            self.masks = Masks(self.masks, self._shape)
        if isinstance(self.masks, Masks) and self.boxes is not None and len(self.masks) != len(self.boxes):
            raise ValueError(f"Results: {len(self.masks)} masks but {len(self.boxes)} boxes (one box per mask)")
        for key in ("semantic", "panoptic"):
            value = getattr(self, key)
            if value is None:
                continue
            value = torch.as_tensor(value).detach().cpu().long()
            if tuple(value.shape) != self._shape:
                raise ValueError(f"Results.{key} has shape {tuple(value.shape)}, the image is {self._shape}")
            setattr(self, key, value)
        if self.panoptic is not None and self.segments is None:
            ids = [int(i) for i in torch.unique(self.panoptic).tolist() if i]
            self.segments = [{"id": i, "label": 0, "score": None, "isthing": True} for i in ids]

    @property
    def orig_shape(self) -> tuple[int, int]:
        return self._shape

    def release_image(self) -> None:
        """Drop the pixels (keep predictions and ``orig_shape``): long videos stay in constant memory."""
        self.orig_img = np.empty((0, 0, 3), np.uint8)

    # --- views shared by summary / save_txt / to_coco ---------------------------------------------
    def _name(self, k: int) -> str:
        return self.names[k] if 0 <= k < len(self.names) else str(k)

    def _instances(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """(xyxy, conf, cls) of boxes or masks; masks without boxes count as class 0, confidence 1.
        None for panoptic results: their segments (which may also be given as boxes + masks) speak."""
        if self.panoptic is not None:
            return None
        if self.boxes is not None:
            return self.boxes.xyxy, self.boxes.conf, self.boxes.cls
        if isinstance(self.masks, Masks):
            n = len(self.masks)
            return self.masks.boxes(), torch.ones(n), torch.zeros(n, dtype=torch.long)
        return None

    def _semantic_present(self) -> list[tuple[int, int]]:
        """(class, pixels) of every class present in ``semantic`` (void excluded), by class index."""
        assert self.semantic is not None
        values, counts = torch.unique(self.semantic, return_counts=True)
        return [(int(v), int(c)) for v, c in zip(values.tolist(), counts.tolist()) if v != IGNORE_INDEX and v >= 0]

    def _segment_masks(self) -> tuple[list[dict[str, Any]], Masks]:
        assert self.panoptic is not None and self.segments is not None
        data = torch.stack([self.panoptic == int(s["id"]) for s in self.segments]) if self.segments else \
            torch.zeros(0, *self._shape, dtype=torch.bool)
        return self.segments, Masks(data, self._shape)

    def _text_lines(self) -> list[str]:
        """``text`` and ``Q: …`` / ``A: …`` lines of a vision-language result (empty for other results)."""
        lines = [self.text] if self.text is not None else []
        lines += [f"Q: {self.question}"] if self.question is not None else []
        return lines + ([f"A: {self.answer}"] if self.answer is not None else [])

    def _multilabel(self) -> Probs | None:
        return self.probs if isinstance(self.probs, Probs) and self.probs.multilabel else None

    def summary(self) -> list[dict[str, Any]]:
        """JSON-able rows: top-k classes (classification; multi-label: the predicted labels and the top-k,
        highest score first, each with its ``threshold`` and ``positive``); per instance ``class, name, confidence, box``
        (+ ``rle``, ``polygon`` in COCO layout when masks exist); per present semantic class ``class,
        name, pixels, rle``; per panoptic segment ``id, class, name, isthing, area, rle`` (+ ``confidence``)."""
        rows: list[dict[str, Any]] = []
        ml = self._multilabel()
        if ml is not None:
            assert ml.thresholds is not None
            shown = sorted(set(ml.labels) | {i for i, _ in ml.topk}, key=lambda i: (-float(ml.data[i]), i))
            rows += [{"class": i, "name": self._name(i), "confidence": round(float(ml.data[i]), 5),
                      "threshold": round(float(ml.thresholds[i]), 5), "positive": i in ml.labels} for i in shown]  # fmt: skip
        elif isinstance(self.probs, Probs):
            rows += [{"class": i, "name": self.names[i], "confidence": round(c, 5)} for i, c in self.probs.topk]
        inst = self._instances()
        if inst is not None:
            masks = self.masks if isinstance(self.masks, Masks) else None
            rles, polys = (masks.rle, masks.xy) if masks is not None else ([], [])
            for i, (b, c, k) in enumerate(zip(inst[0].tolist(), inst[1].tolist(), inst[2].tolist())):
                row = {"class": k, "name": self._name(k), "confidence": round(c, 5), "box": _round_box(b)}
                if masks is not None:
                    row |= {"rle": rles[i], "polygon": _flat_polygon(polys[i])}
                rows.append(row)
        if self.semantic is not None:
            present = self._semantic_present()
            rles = encode_rle(torch.stack([self.semantic == k for k, _ in present])) if present else []
            rows += [{"class": k, "name": self._name(k), "pixels": n, "rle": r} for (k, n), r in zip(present, rles)]
        if self.panoptic is not None:
            segments, masks = self._segment_masks()
            for s, r, a in zip(segments, masks.rle, masks.area.tolist()):
                k = int(s["label"])
                row = {"id": int(s["id"]), "class": k, "name": self._name(k), "isthing": bool(s.get("isthing", True)),
                       "area": int(a), "rle": r}
                if s.get("score") is not None:
                    row["confidence"] = round(float(s["score"]), 5)
                rows.append(row)
        return rows

    def to_json(self, indent: int | None = None) -> str:
        """``{"path", "shape", "predictions": summary()}``; multi-label results add ``"labels"`` (the
        predicted label names, highest score first); vision-language results add ``"text"`` / ``"question"``,
        ``"answer"``."""
        out: dict[str, Any] = {"path": self.path, "shape": list(self.orig_shape)}
        ml = self._multilabel()
        if ml is not None:
            out["labels"] = [self._name(i) for i in ml.labels]
        out |= {k: getattr(self, k) for k in ("text", "question", "answer") if getattr(self, k) is not None}
        out["predictions"] = self.summary()
        return json.dumps(out, indent=indent)

    def verbose(self) -> str:
        """One line: ``"cat 0.93, dog 0.05"`` (classification; multi-label: the predicted labels only, or
        ``"no labels"``), ``"2 circle, 1 star"`` (detection,
        instance), ``"background 61%, circle 20%"`` (semantic: share of the image, largest first),
        ``"2 circle, sky 40%"`` (panoptic: things counted, stuff as a share), the text (vision-language)."""
        if self._text_lines():
            return " | ".join(self._text_lines())
        inst = self._instances()
        if inst is not None:
            counts = np.bincount(inst[2].numpy(), minlength=len(self.names)) if len(inst[2]) else []
            what = "detections" if self.masks is None else "masks"
            return ", ".join(f"{n} {self._name(k)}" for k, n in enumerate(counts) if n) or f"no {what}"
        total = self._shape[0] * self._shape[1] or 1
        if self.semantic is not None:
            present = sorted(self._semantic_present(), key=lambda kn: -kn[1])
            return ", ".join(f"{self._name(k)} {100 * n / total:.0f}%" for k, n in present) or "all void"
        if self.panoptic is not None:
            segments, masks = self._segment_masks()
            things: dict[int, int] = {}
            stuff: dict[int, int] = {}
            for s, a in zip(segments, masks.area.tolist()):
                k = int(s["label"])
                if s.get("isthing", True):
                    things[k] = things.get(k, 0) + 1
                else:
                    stuff[k] = stuff.get(k, 0) + a
            parts = [f"{n} {self._name(k)}" for k, n in sorted(things.items())]
            parts += [f"{self._name(k)} {100 * a / total:.0f}%" for k, a in sorted(stuff.items(), key=lambda ka: -ka[1])]
            return ", ".join(parts) or "no segments"
        ml = self._multilabel()
        if ml is not None:
            return ", ".join(f"{self._name(i)} {float(ml.data[i]):.2f}" for i in ml.labels) or "no labels"
        return ", ".join(f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5])

    def plot(self, labels: bool = True, alpha: float = 0.5) -> np.ndarray:
        """The image with predictions drawn, (H', W', 3) uint8 RGB (small images are upscaled, within
        bounds: :func:`optik.viz.draw.enlarge_for_display` — a 1×4000 image gives 128×4000):
        mask overlays + boxes (instance; per-instance colours when there is one class, e.g. SAM),
        class overlay + legend (semantic), segment overlay + contours + labels (panoptic)."""
        from optik.viz import draw

        if self.panoptic is not None:
            return draw.draw_panoptic(self.orig_img, self.panoptic.numpy(), self.segments or [], self.names,
                                      alpha=alpha, labels=labels)
        # No mask at all: the (empty) boxes / plain image below, the same size draw_masks would give.
        if isinstance(self.masks, Masks) and len(self.masks):
            inst = self._instances()
            assert inst is not None
            by_instance = len(self.names) <= 1
            return draw.draw_masks(self.orig_img, self.masks.data.numpy(), inst[2].numpy(), self.names, alpha=alpha,
                                   boxes=self.boxes.xyxy.numpy() if self.boxes is not None else None,
                                   scores=inst[1].numpy() if self.boxes is not None else None,
                                   labels=labels, color_by="instance" if by_instance else "class")
        if self.semantic is not None:
            return draw.draw_semantic(self.orig_img, self.semantic.numpy(), self.names, alpha=alpha, legend=labels)
        if self.boxes is not None:
            return draw.draw_boxes(self.orig_img, self.boxes.xyxy.numpy(), self.boxes.cls.numpy(),
                                   self.boxes.conf.numpy(), self.names, labels=labels)
        if self._text_lines():  # vision-language: the caption / question and answer
            return draw.draw_text_block(self.orig_img, self._text_lines() if labels else [])
        ml = self._multilabel()
        if ml is not None:  # the predicted label set (all of it), or say there is none
            lines = [f"{self._name(i)} {float(ml.data[i]):.2f}" for i in ml.labels] or ["no labels"]
        else:
            lines = [f"{r['name']} {r['confidence']:.2f}" for r in self.summary()[:5]]
        return draw.draw_text_block(self.orig_img, lines if labels else [])

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write the predictions as text, YOLO style (coordinates normalised to [0, 1]):
        masks → ``cls x1 y1 x2 y2 …`` (largest polygon per mask), semantic → one polygon line per
        region of each present class, panoptic → one line per segment (largest polygon), boxes only →
        ``cls cx cy w h``, classification → ``confidence name`` (top-k; multi-label: the predicted label
        set, an empty file for none). ``save_conf`` appends the confidence
        (instances / segments with a score). Empty masks (no polygon) are left out.
        """
        h, w = self._shape
        scale = np.array([w, h], np.float32)
        lines: list[str] = []

        def poly_line(k: int, poly: np.ndarray, conf: float | None) -> None:
            if len(poly) < 3:  # a point or a 2-point line is no polygon: nothing to fill
                return
            line = f"{k} " + " ".join(f"{v:.6f}" for v in (poly / scale).reshape(-1).tolist())
            lines.append(line + (f" {conf:.6f}" if save_conf and conf is not None else ""))

        inst = self._instances()
        if isinstance(self.masks, Masks) and inst is not None:
            for poly, c, k in zip(self.masks.xy, inst[1].tolist(), inst[2].tolist()):
                poly_line(k, poly, c)
        elif self.boxes is not None:
            for b, c, k in zip(self.boxes.xywhn.tolist(), self.boxes.conf.tolist(), self.boxes.cls.tolist()):
                lines.append(f"{k} " + " ".join(f"{v:.6f}" for v in b) + (f" {c:.6f}" if save_conf else ""))
        if self.semantic is not None:
            for k, _ in self._semantic_present():
                for poly in mask_contours((self.semantic == k).numpy()):
                    poly_line(k, poly, None)
        if self.panoptic is not None:
            segments, masks = self._segment_masks()
            for s, poly in zip(segments, masks.xy):
                poly_line(int(s["label"]), poly, s.get("score"))
        ml = self._multilabel()
        if ml is not None:
            lines += [f"{float(ml.data[i]):.6f} {self._name(i)}" for i in ml.labels]
        elif isinstance(self.probs, Probs):
            lines += [f"{c:.6f} {self.names[i]}" for i, c in self.probs.topk]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def to_coco(self, image_id: int, cat_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO results rows (``bbox`` as x, y, w, h; ``category_id`` via ``cat_ids``), unrounded.
        Instance masks add ``segmentation`` (RLE); semantic maps give one ``{image_id, category_id,
        segmentation}`` row per present class (COCO stuff results); panoptic one row per segment."""
        cats = list(cat_ids) if cat_ids is not None else list(range(len(self.names)))
        rows: list[dict[str, Any]] = []
        inst = self._instances()
        if inst is not None:
            from optik.metrics.detection import predictions_to_coco

            pred: dict[str, Any] = {"image_id": image_id, "boxes": inst[0], "scores": inst[1], "labels": inst[2]}
            if isinstance(self.masks, Masks):
                pred["segmentation"] = self.masks.rle
            rows += predictions_to_coco([pred], cats)
        if self.semantic is not None:
            present = self._semantic_present()
            rles = encode_rle(torch.stack([self.semantic == k for k, _ in present])) if present else []
            rows += [{"image_id": image_id, "category_id": cats[k], "segmentation": r} for (k, _), r in zip(present, rles)]
        if self.panoptic is not None:
            segments, masks = self._segment_masks()
            for s, r in zip(segments, masks.rle):
                row = {"image_id": image_id, "category_id": cats[int(s["label"])], "segmentation": r}
                rows.append(row | ({"score": float(s["score"])} if s.get("score") is not None else {}))
        return rows

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` as an image file."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(path)
        return path
