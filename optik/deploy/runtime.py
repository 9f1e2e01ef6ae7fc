"""Run exported models (``.onnx`` through onnxruntime, ``.torchscript`` through ``torch.jit.load``) behind
the same calls the tasks make on eager models.

An exported file is self-describing: its embedded JSON (ONNX ``metadata_props["optik"]``, TorchScript extra
file ``optik.json``) holds the weights' metadata (task, classes, imgsz, mean/std, model…) plus an ``export``
block (format, input, outputs, pre/postprocessing, parity). :func:`load_exported` returns an ``nn.Module``
whose ``model(x)`` gives what the eager model gives (classify: logits; semantic: logits) and, for the house
detector, ``forward_detect(x, conf=, iou=, max_det=, agnostic=)`` running the same NMS as eager
(:func:`optik.models.detect.house.postprocess`) on the exported ``boxes``/``scores``.

>>> model = load_exported("runs/classify/train/weights/best.onnx")     # doctest: +SKIP
>>> model(torch.rand(2, 3, 32, 32)).shape                              # doctest: +SKIP
torch.Size([2, 3])
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optik.errors import ModelError

EXPORTED_SUFFIXES = (".onnx", ".torchscript")
META_KEY = "optik"  # ONNX metadata_props key; TorchScript: extra file "optik.json"
TS_META_FILE = "optik.json"


def is_exported(path: str | Path) -> bool:
    """True for a path that names an exported model file (by suffix; the file need not exist yet).

    >>> is_exported("weights/best.onnx"), is_exported("weights/best.safetensors")
    (True, False)
    """
    return Path(str(path)).suffix.lower() in EXPORTED_SUFFIXES


def read_exported_meta(path: str | Path) -> dict[str, Any]:
    """The optik metadata embedded in an exported file; :class:`ModelError` naming the file when it is
    missing, unreadable or has none.

    >>> read_exported_meta("weights/best.onnx")["export"]["format"]      # doctest: +SKIP
    'onnx'
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model: exported file '{p}' not found")
    raw: str | None = None
    if p.suffix.lower() == ".onnx":
        import onnx

        try:  # metadata only: external tensor data is not needed
            proto = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError / its own types for a corrupt file
            raise ModelError(f"model: '{p}' is not a readable ONNX file ({type(e).__name__}: {e})") from None
        raw = next((kv.value for kv in proto.metadata_props if kv.key == META_KEY), None)
    else:
        # A TorchScript file is a zip; reading the extra file directly avoids deserialising the model.
        try:
            with zipfile.ZipFile(p) as z:
                name = next((n for n in z.namelist() if n.endswith(f"/extra/{TS_META_FILE}")), None)
                raw = z.read(name).decode() if name else None
        except zipfile.BadZipFile:
            raise ModelError(f"model: '{p}' is not a readable TorchScript file (not a zip archive)") from None
    if not raw:
        raise ModelError(f"model: '{p}' has no optik metadata (not exported by optik; re-export with `optik TASK export`)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(f"model: '{p}' has unreadable optik metadata ({e})") from None
    if not isinstance(meta, dict) or not meta.get("model") or "export" not in meta:
        raise ModelError(f"model: '{p}' has incomplete optik metadata (no 'model' or 'export' entry)")
    return meta


class ExportedModel(nn.Module):
    """An exported model as a module: ``model(x)`` → the first (or only) output as a tensor on ``x``'s
    device; :meth:`run` → every output. Holds no trainable parameters; ``device`` says where it runs."""

    def __init__(self, path: str | Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path, self.meta = Path(path), meta
        info = meta["export"]
        self.format: str = info["format"]
        self.output_names: list[str] = list(info["outputs"])
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
        fixed = self.meta["export"]["input"]["shape"][0]
        if isinstance(fixed, int) and len(x) != fixed:
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
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outs = self._session.run(self.output_names, {self.input_name: arr})
        return [torch.from_numpy(o).to(x.device) for o in outs]

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
    detector = meta["export"].get("postprocess", {}).get("type") == "nms"
    return (ExportedDetector if detector else ExportedModel)(path, meta, device).eval()


__all__ = ["EXPORTED_SUFFIXES", "ExportedDetector", "ExportedModel", "is_exported", "load_exported", "ort_session",
           "read_exported_meta"]  # fmt: skip
