"""The model behind ``optik serve``: loaded once, called from the server's worker threads.

Uploads are decoded here (in memory, with the same guarantees as :func:`optik.data.image.load_image`:
EXIF orientation, any mode → RGB, decompression-bomb guard, full decode) and predicted through the
engine's public path (the task's loader, by default :func:`~optik.engine.inference.load_trained`, +
:func:`~optik.engine.inference.predict_stream`), so anything ``Model(...)`` accepts — weights file,
run dir, ``hf:`` model, an exported ``.onnx`` / ``.torchscript`` — serves without special cases. What a
request may change (``conf``, ``topk``…) and what ``/info`` says about the task come from the task itself
(:meth:`~optik.tasks.base.Task.predict_controls`, :meth:`~optik.tasks.base.Task.describe`).

>>> from optik.config import build_config
>>> p = Predictor(build_config("classify", "serve", {"model": "runs/classify/train"}))   # doctest: +SKIP
>>> p.predict(decode_image(open("cat.png", "rb").read(), "cat.png"), topk=3).verbose()  # doctest: +SKIP
'cat 0.93, dog 0.05, fox 0.01'
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optik.config import CommonConfig, build_config
from optik.data.image import MAX_IMAGE_PIXELS, as_image_tensor, decode_image_bytes
from optik.device import model_device
from optik.errors import ConfigError
from optik.results import Results
from optik.tasks.base import Control

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
    return build_config(cfg.task, "predict", {**keep, "batch": 1, "save": False})


def with_serve_defaults(pcfg: CommonConfig, cfg: CommonConfig, controls: dict[str, Control]) -> CommonConfig:
    """``pcfg`` with the serve config's values of the task's controls where it has them (serve's defaults
    are the page's defaults too); a value the user set is already there."""
    update = {k: getattr(cfg, k) for k in controls
              if k in type(cfg).model_fields and k in type(pcfg).model_fields and getattr(cfg, k) is not None}  # fmt: skip
    return pcfg.model_copy(update=update) if update else pcfg


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
        from optik import catalog
        from optik.engine.fastpath import optimize_loaded
        from optik.tasks.base import Task, get_task
        from optik.weights import resolve_model_arg

        task_cls = get_task(cfg.task)
        # The engine's load_trained, unless the task loads more kinds of model= itself (embed: classify runs, timm:).
        self.task, self.model, self.cfg = catalog.load(task_cls.loader)(predict_config(cfg))
        if type(self.task.cfg) is type(self.cfg):  # what building the model resolved (hf: zero-shot: imgsz = its processor's crop)
            self.cfg = self.task.cfg
        self.cfg = with_serve_defaults(self.cfg, cfg, self.task.predict_controls())
        self.task.cfg = self.cfg
        self.model = optimize_loaded(self.task, self.model)  # the eager fast path (engine/fastpath.py), checked equal
        #: What a request may set (query parameters, page sliders), with this model's defaults: the task's say.
        self.controls: dict[str, Control] = self.task.predict_controls()
        _, weights, self.meta = resolve_model_arg(str(cfg.model))
        self.weights = weights
        self.format = FORMATS.get(Path(weights).suffix, "pytorch") if weights is not None else "pytorch"
        #: Whether ``POST /embed`` answers: the task says what an image embedding is (Task.image_embedding).
        self.embeds = task_cls.image_embedding is not Task.image_embedding
        self._lock = threading.Lock()

    def defaults(self) -> dict[str, Any]:
        """The value each control has when a request does not set it."""
        return {k: c.default for k, c in self.controls.items()}

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` reports: task (and what it says of itself: subtask, class colours, the page's
        text for an empty result), classes, input size, model, format, the controls and their defaults."""
        from optik.version import __version__

        return {
            "task": self.cfg.task,
            **self.task.describe(),  # subtask, colors, empty
            "model": self.meta.get("model") or str(self.cfg.model),
            "weights": Path(self.weights).name if self.weights is not None else str(self.cfg.model),
            "format": self.format,
            "classes": list(self.task.meta.get("classes", [])),
            "imgsz": self.cfg.imgsz,
            "device": str(self.cfg.device),
            "embeds": self.embeds,
            "controls": list(self.controls),
            "control_specs": {k: c.as_dict() for k, c in self.controls.items()},
            "defaults": self.defaults(),
            "optik": __version__,
        }

    def predict(self, image: torch.Tensor, name: str = "image", **settings: Any) -> Results:
        """Predict one uint8 ``(3, H, W)`` image with this request's ``settings`` (control name → value, e.g.
        ``conf=0.4``); ``None`` or a name the config does not know keeps the served default."""
        from optik.engine.inference import predict_stream

        update = {k: v for k, v in settings.items() if v is not None and k in type(self.cfg).model_fields}
        cfg = self.cfg.model_copy(update=update) if update else self.cfg
        with self._lock:
            self.task.cfg = cfg
            try:
                (result,) = list(predict_stream(self.task, self.model, [image], cfg))
            finally:
                self.task.cfg = self.cfg
        result.path = name
        return result

    @torch.no_grad()
    def embed(self, image: torch.Tensor, name: str = "image", normalize: bool = False) -> Embedding:
        """The embedding of one uint8 ``(3, H, W)`` image: the task's eval preprocessing (what predict uses) →
        :meth:`~optik.tasks.base.Task.image_embedding`; ``normalize``: L2-normalised."""
        from optik.engine.inference import eval_preprocess

        t0 = time.perf_counter()
        x = eval_preprocess(self.task)([image]).to(model_device(self.model))
        t1 = time.perf_counter()
        with self._lock:
            vec = self.task.image_embedding(self.model, x)
        if vec is None:
            raise ConfigError(f"the {self.cfg.task} task does not embed images")
        vec = vec.float().flatten(1)[0].cpu()
        if normalize:
            vec = torch.nn.functional.normalize(vec, dim=0)
        t2 = time.perf_counter()
        return Embedding(vec, name, normalize, {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1)})


@dataclass
class Embedding:
    """What :meth:`Predictor.embed` returns: the ``(D,)`` vector, the image's name, whether it was normalised, timings (ms)."""

    vector: torch.Tensor
    path: str
    normalized: bool
    speed: dict[str, float]
