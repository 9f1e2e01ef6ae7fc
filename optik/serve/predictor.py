"""The model behind ``optik serve``: loaded once, called from the server's worker threads.

Uploads are decoded here (in memory, with the same guarantees as :func:`optik.data.image.load_image`:
EXIF orientation, any mode → RGB, decompression-bomb guard, full decode) and predicted through the
engine's public path (:func:`~optik.engine.inference.load_trained` +
:func:`~optik.engine.inference.predict_stream`), so anything ``Model(...)`` accepts — weights file,
run dir, ``hf:`` model, an exported ``.onnx`` / ``.torchscript`` — serves without special cases.

>>> from optik.config import build_config
>>> p = Predictor(build_config("classify", "serve", {"model": "runs/classify/train"}))   # doctest: +SKIP
>>> p.predict(decode_image(open("cat.png", "rb").read(), "cat.png"), topk=3).verbose()  # doctest: +SKIP
'cat 0.93, dog 0.05, fox 0.01'
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from optik.config import CommonConfig, build_config
from optik.data.image import MAX_IMAGE_PIXELS, as_image_tensor, decode_image_bytes
from optik.results import Results

# Suffix of the loaded file → the "format" /info reports (anything else is eager PyTorch weights).
FORMATS = {".onnx": "onnx", ".torchscript": "torchscript", ".safetensors": "pytorch"}


def decode_image(data: bytes, name: str = "upload", *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Encoded image bytes → uint8 ``(3, H, W)`` RGB tensor, upright (EXIF), fully decoded.

    Mirrors :func:`optik.data.image.load_image` for bytes that never touch the disk; every failure
    is an :class:`ImageError` starting with ``name``.

    >>> import io; from PIL import Image; buf = io.BytesIO(); Image.new("RGB", (4, 2)).save(buf, "PNG")
    >>> decode_image(buf.getvalue(), "a.png").shape
    torch.Size([3, 2, 4])
    """
    return as_image_tensor(decode_image_bytes(data, name, max_pixels=max_pixels))


def predict_config(cfg: CommonConfig) -> CommonConfig:
    """The task's *predict* config for a serve config: the keys both share (model, device, imgsz,
    conf, iou, topk, …) carry over when the user set them; ``workers`` (server threads here,
    DataLoader processes there) does not."""
    cls_fields = set(type(build_config(cfg.task, "predict", {})).model_fields)
    keep = {k: getattr(cfg, k) for k in cfg.model_fields_set if k in cls_fields and k not in ("workers", "mode", "task")}
    for k in ("conf", "iou", "topk"):  # serve's defaults are the page's defaults too
        if k in cls_fields and getattr(cfg, k, None) is not None:
            keep.setdefault(k, getattr(cfg, k))
    return build_config(cfg.task, "predict", {**keep, "batch": 1, "save": False})


class Predictor:
    """One loaded model and its task; :meth:`predict` is safe to call from many threads.

    Thread safety: the model is shared and every forward (with the request's own thresholds set on
    the task) runs under one lock. Eval-mode forwards of most modules would be safe concurrently,
    but not every backend promises it (lazily cached anchors, HF/torchvision wrappers that set
    attributes, per-request thresholds living on ``task.cfg``), and on a CPU one forward already
    uses every intra-op thread, so parallel forwards would only contend. The lock keeps one copy of
    the weights in memory while decoding, drawing and encoding — most of a small model's request
    time — still run in parallel on the server's worker threads.
    """

    def __init__(self, cfg: CommonConfig) -> None:
        from optik.weights import resolve_model_arg
        from optik.engine.inference import load_trained

        self.task, self.model, self.cfg = load_trained(predict_config(cfg))
        self.task.cfg = self.cfg
        _, weights, self.meta = resolve_model_arg(str(cfg.model))
        self.weights = weights
        self.format = FORMATS.get(Path(weights).suffix, "pytorch") if weights is not None else "pytorch"
        self._lock = threading.Lock()

    @property
    def controls(self) -> list[str]:
        """Query parameters this model reads: ``topk`` (classify) or ``conf``/``iou`` (boxes/masks)."""
        fields = type(self.cfg).model_fields
        if self.task.name == "classify":
            return ["topk"]
        if getattr(self.task, "subtask", None) == "semantic":
            return []  # a class map per pixel: no thresholds
        return [k for k in ("conf", "iou") if k in fields]

    def defaults(self) -> dict[str, Any]:
        """The value each control has when a request does not set it."""
        out: dict[str, Any] = {"topk": getattr(self.cfg, "topk", 5)}
        if "conf" in self.controls:
            conf = self.cfg.conf
            if conf is None:  # the task's predict default (panoptic keeps more confident segments)
                conf = 0.5 if getattr(self.task, "subtask", None) == "panoptic" else 0.25
            out |= {"conf": conf, "iou": self.cfg.iou}
        return out

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` reports: task, classes, input size, model, format."""
        from optik import __version__
        classes = list(self.task.meta.get("classes", []))
        return {
            "task": self.task.name,
            "subtask": getattr(self.task, "subtask", None),
            "model": self.meta.get("model") or str(self.cfg.model),
            "weights": Path(self.weights).name if self.weights is not None else str(self.cfg.model),
            "format": self.format,
            "classes": classes,
            "colors": self._colors(classes),
            "imgsz": self.cfg.imgsz,
            "device": str(self.cfg.device),
            "controls": self.controls,
            "defaults": self.defaults(),
            "optik": __version__,
        }

    def _colors(self, classes: list[str]) -> list[str | None]:
        """Each class's colour in ``Results.plot`` overlays (None: drawn untinted, e.g. a semantic "background")."""
        import numpy as np

        from optik.viz.draw import color_for, legend_items

        if getattr(self.task, "subtask", None) == "semantic":
            rgb = [c for _, c in legend_items(np.arange(len(classes)), classes)]
        else:
            rgb = [color_for(i) for i in range(len(classes))]
        return [None if c is None else "#{:02x}{:02x}{:02x}".format(*c) for c in rgb]

    def predict(self, image: torch.Tensor, name: str = "image", *, conf: float | None = None, iou: float | None = None,
                topk: int | None = None) -> Results:
        """Predict one uint8 ``(3, H, W)`` image; ``None`` keeps the served default."""
        from optik.engine.inference import predict_stream

        asked = {"conf": conf, "iou": iou, "topk": topk}
        update = {k: v for k, v in asked.items() if v is not None and k in type(self.cfg).model_fields}
        cfg = self.cfg.model_copy(update=update) if update else self.cfg
        with self._lock:
            self.task.cfg = cfg
            try:
                (result,) = list(predict_stream(self.task, self.model, [image], cfg))
            finally:
                self.task.cfg = self.cfg
        result.path = name
        return result
