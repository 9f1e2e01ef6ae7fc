"""Run exported models (``.onnx`` through onnxruntime, ``.torchscript`` through ``torch.jit.load``) behind
the same calls the tasks make on eager models.

An exported file is self-describing: its embedded JSON (ONNX ``metadata_props["optik"]``, TorchScript extra
file ``optik.json``) holds the weights' metadata (task, classes, imgsz, mean/std, model…) plus an ``export``
block (format, input, outputs, pre/postprocessing, parity). :func:`load_exported` returns an ``nn.Module``
whose ``model(x)`` gives what the eager model gives (classify: logits; semantic: logits) and, for the house
detector, ``forward_detect(x, conf=, iou=, max_det=, agnostic=)`` running the same NMS as eager
(:func:`optik.models.detect.house.postprocess`) on the exported ``boxes``/``scores``. torchvision detectors
and Mask R-CNN export with NMS inside a batch-1 graph: :class:`ExportedTVDetector` /
:class:`ExportedInstanceSegmenter` run it once per image and filter by the caller's ``conf``/``max_det``.

>>> model = load_exported("runs/classify/train/weights/best.onnx")     # doctest: +SKIP
>>> model(torch.rand(2, 3, 32, 32)).shape                              # doctest: +SKIP
torch.Size([2, 3])
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.segment.protocol import Segmenter
from optik.weights import META_KEY, TS_META_FILE, read_exported_meta  # noqa: F401  (re-exported for deploy)

EXPORTED_SUFFIXES = (".onnx", ".torchscript")

log = logging.getLogger(__name__)


def is_exported(path: str | Path) -> bool:
    """True for a path that names an exported model file (by suffix; the file need not exist yet).

    >>> is_exported("weights/best.onnx"), is_exported("weights/best.safetensors")
    (True, False)
    """
    return Path(str(path)).suffix.lower() in EXPORTED_SUFFIXES


class ExportedModel(nn.Module):
    """An exported model as a module: ``model(x)`` → the first (or only) output as a tensor on ``x``'s
    device; :meth:`run` → every output. Holds no trainable parameters; ``device`` says where it runs."""

    def __init__(self, path: str | Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path, self.meta = Path(path), meta
        info = meta["export"]
        self.format: str = info["format"]
        self.output_names: list[str] = list(info["outputs"])
        fixed = info["input"]["shape"][0]
        self.fixed_batch: int | None = fixed if isinstance(fixed, int) else None  # None: a dynamic batch axis
        s = int(info["input"]["shape"][-1])
        # What models.model_data_config() reads: the task builds its transforms from it, as for eager models.
        self.default_cfg = {"mean": tuple(meta.get("mean") or (0.485, 0.456, 0.406)),
                            "std": tuple(meta.get("std") or (0.229, 0.224, 0.225)), "input_size": (3, s, s)}  # fmt: skip
        self.num_classes = len(meta.get("classes") or [])
        # An empty frozen parameter carries the device, so `.to(device)` and code that still asks
        # `next(model.parameters()).device` keep working (engine code uses engine.evaluate.model_device).
        self._device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self._session: Any = None
        self.ts_module: nn.Module | None = None
        device = torch.device(device)
        if self.format == "torchscript":
            with warnings.catch_warnings():  # torch 2.9+: "torch.jit.load is deprecated" — still the way to load it
                warnings.simplefilter("ignore", FutureWarning)
                self.ts_module = torch.jit.load(str(self.path), map_location=device).eval()
        else:
            self._session = ort_session(self.path, device)
            self.input_name = self._session.get_inputs()[0].name
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    def run(self, x: Tensor) -> list[Tensor]:
        """Every output of the exported graph for a float32 ``(B, 3, S, S)`` batch (any B: a graph exported
        with a fixed batch gets zero-padded / chunked batches of its size, outputs trimmed)."""
        fixed = self.fixed_batch
        if fixed is not None and len(x) != fixed:
            parts = []
            for k in range(0, len(x), fixed):
                chunk = x[k : k + fixed]
                pad = torch.zeros((fixed - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype, device=chunk.device)
                parts.append([o[: len(chunk)] for o in self._run(torch.cat([chunk, pad]))])
            return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
        return self._run(x)

    def _run(self, x: Tensor) -> list[Tensor]:
        if self.ts_module is not None:
            out = self.ts_module(x.float().to(self.device))
            return list(out) if isinstance(out, (list, tuple)) else [out]
        on_cpu = x.device.type == "cpu"
        if on_cpu and x.dtype == torch.float32 and not x.requires_grad and x.is_contiguous():
            arr = x.numpy()  # the common case: no conversion, no copy (ORT reads the buffer)
        else:
            arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outs = self._session.run(self.output_names, {self.input_name: arr})
        return [torch.from_numpy(o) for o in outs] if on_cpu else [torch.from_numpy(o).to(x.device) for o in outs]

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)[0]

    def extra_repr(self) -> str:
        return f"path='{self.path}', format={self.format}, model={self.meta.get('model')!r}"


class ExportedDetector(ExportedModel):
    """An exported house detector (graph: raw maps + decode → ``boxes (B, A, 4)``, ``scores (B, A, C)``)
    with the Detector protocol's ``forward_detect``; NMS runs here, as in eager mode."""

    @torch.no_grad()
    def forward_detect(self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                       agnostic: bool = False, pre_nms_topk: int = 1000) -> list[dict[str, Tensor]]:  # fmt: skip
        from optik.models.detect.house import postprocess

        boxes, scores = self.run(images)[:2]
        size = (images.shape[-2], images.shape[-1])
        return [postprocess(b, s, size, conf, iou, max_det, agnostic, pre_nms_topk) for b, s in zip(boxes, scores)]


class ExportedTVDetector(ExportedModel):
    """An exported torchvision detector (graph: one ``(1, 3, S, S)`` image → ``boxes (N, 4)``, ``scores (N,)``
    best first, ``labels (N,)``, NMS inside with the thresholds baked at export) with the Detector protocol's
    ``forward_detect``: the graph runs once per image, then the caller's ``conf``/``max_det`` filter further,
    boxes under 0.01 px are dropped and ``agnostic`` NMS runs — the order eager ``TVDetector.forward_detect``
    uses, so the results are the eager ones whenever ``conf``/``max_det`` are within the baked ones. ``iou``
    is fixed at export (``meta["export"]["postprocess"]["baked"]``)."""

    def __init__(self, path: str | Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        super().__init__(path, meta, device)
        self.baked: dict[str, Any] = dict(meta["export"].get("postprocess", {}).get("baked") or {})
        self._warned: set[str] = set()

    def run_each(self, images: Tensor) -> list[list[Tensor]]:
        """The graph's outputs for each image of a ``(B, 3, S, S)`` batch (one run per image)."""
        return [self._run(images[i : i + 1]) for i in range(len(images))]

    def run(self, x: Tensor) -> list[Tensor]:
        """The graph's raw outputs for one ``(1, 3, S, S)`` image (per-image detection lists do not stack:
        :meth:`run_each` for a batch)."""
        if len(x) != 1:
            raise ModelError(f"model: '{self.path}' runs one image at a time (got a batch of {len(x)}); use run_each() or forward_detect()")
        return self._run(x)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Any:  # type: ignore[override]
        """``forward_detect`` with its defaults (what the eager torchvision wrapper's ``forward`` gives)."""
        return self.forward_detect(x)

    def _filtered(self, outs: list[Tensor], conf: float, iou: float, max_det: int) -> list[Tensor]:
        import torchvision

        from optik.models.adapters.tv_detection import _MIN_BOX_SIZE

        fixed = self.baked.get("iou", iou)
        self._check("iou", abs(iou - fixed) > 1e-9, f"iou={iou:g} differs from the exported per-class NMS IoU {fixed:g}, "
                    f"which is fixed in the graph (re-export with iou={iou:g} to change it)")  # fmt: skip

        self._check("conf", conf < self.baked.get("conf", 0.0), f"conf={conf:g} is below the exported score threshold "
                    f"{self.baked.get('conf')}; detections under it are not in the graph's output")  # fmt: skip
        self._check("max_det", max_det > self.baked.get("max_det", max_det), f"max_det={max_det} is above the exported "
                    f"{self.baked.get('max_det')}; at most that many come out")  # fmt: skip
        scores = outs[1].float()
        order = torch.argsort(scores, descending=True, stable=True)  # NMS output is best first already: a no-op
        order = order[scores[order] > conf][:max_det]
        outs = [o[order] for o in outs]
        keep = torchvision.ops.remove_small_boxes(outs[0], _MIN_BOX_SIZE)
        return [o[keep] for o in outs]

    def _check(self, key: str, bad: bool, msg: str) -> None:
        if bad and key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self.path.name, msg)

    @torch.no_grad()
    def forward_detect(self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                       agnostic: bool = False, **_: Any) -> list[dict[str, Tensor]]:  # fmt: skip
        """Per image ``{"boxes" (N, 4) xyxy input px, "scores", "labels" 0-based}``; ``iou`` is used only by
        ``agnostic`` NMS (the per-class NMS inside the graph ran at the exported IoU)."""
        import torchvision

        out = []
        for outs in self.run_each(images):
            boxes, scores, labels = self._filtered(outs[:3], conf, iou, max_det)
            if agnostic and len(boxes):
                keep = torchvision.ops.nms(boxes.float(), scores.float(), iou)[:max_det]
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            out.append({"boxes": boxes.float(), "scores": scores.float(), "labels": labels.long()})
        return out


class ExportedInstanceSegmenter(ExportedTVDetector, Segmenter):
    """An exported Mask R-CNN: :class:`ExportedTVDetector` plus a ``masks (N, S, S)`` output, behind the
    Segmenter protocol's ``forward_predict`` (declared, as the eager model does; ``forward_loss`` refuses:
    an exported model is inference only)."""

    subtask = "instance"

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        raise ModelError(f"model: '{self.path}' is an exported model (inference only); train from its .safetensors weights")

    @torch.no_grad()
    def forward(self, x: Tensor) -> Any:  # type: ignore[override]
        return self.forward_predict(x)

    @torch.no_grad()
    def forward_predict(self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 100,
                        **_: Any) -> list[dict[str, Tensor]]:  # fmt: skip
        """Per image ``{"boxes", "scores", "labels", "masks" (N, S, S) probabilities}``, best first."""
        out = []
        for outs in self.run_each(images):
            boxes, scores, labels, masks = self._filtered(outs[:4], conf, iou, max_det)
            out.append({"boxes": boxes.float(), "scores": scores.float(), "labels": labels.long(),
                        "masks": masks.float().clamp_(0, 1)})  # fmt: skip
        return out


def ort_session(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """One onnxruntime session: CUDA provider when asked for and available, else CPU; intra-op threads =
    torch's (so an exported model uses the cores an eager one would, no more)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    # No busy-waiting between runs: spinning ORT workers steal the cores torch's own threads (data loading,
    # NMS, the eager model next to it) need, which on a small or shared CPU costs far more than it saves.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as e:  # onnxruntime's own exception types (InvalidGraph, Fail…)
        raise ModelError(f"model: onnxruntime cannot load '{path}' ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_exported(path: str | Path, device: str | torch.device = "cpu", meta: dict[str, Any] | None = None) -> ExportedModel:
    """An exported ``.onnx`` / ``.torchscript`` file as a module the tasks call like the eager model.

    >>> model = load_exported("weights/best.onnx")                 # doctest: +SKIP
    >>> model.forward_detect(x, conf=0.25)[0]["boxes"].shape        # doctest: +SKIP
    torch.Size([3, 4])
    """
    meta = meta if meta is not None else read_exported_meta(path)
    kind = meta["export"].get("postprocess", {}).get("type")
    if kind == "in_graph_nms":  # torchvision detectors / Mask R-CNN: one image per run, NMS inside
        cls: type[ExportedModel] = ExportedInstanceSegmenter if "masks" in meta["export"]["outputs"] else ExportedTVDetector
    else:
        cls = ExportedDetector if kind == "nms" else ExportedModel
    return cls(path, meta, device).eval()


__all__ = ["EXPORTED_SUFFIXES", "ExportedDetector", "ExportedInstanceSegmenter", "ExportedModel", "ExportedTVDetector",
           "is_exported", "load_exported", "ort_session", "read_exported_meta"]  # fmt: skip
