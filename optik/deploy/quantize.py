"""int8 ONNX models with ``onnxruntime.quantization``.

* ``static``: QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer
  kernels), uint8 activations / int8 weights (per output channel), activation ranges calibrated (MinMax)
  on real images passed through the task's val transforms;
* ``dynamic``: weights quantized offline, activation ranges computed per batch at run time (no
  calibration; convolutions become ``ConvInteger`` with uint8 weights, which onnxruntime's CPU provider
  implements — int8 ``ConvInteger`` it does not).

Which is faster depends on the CPU (``benchmarks/export_speed.py`` measures it); ``ExportConfig.int8``
defaults to the faster one on the reference machine.

>>> quantize_onnx("best.onnx", "best-int8.onnx", mode="static", calib=[np.zeros((8, 3, 32, 32), np.float32)])  # doctest: +SKIP
PosixPath('best-int8.onnx')
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np

from optik.errors import ExportError

log = logging.getLogger(__name__)


class _Reader:
    """``CalibrationDataReader`` over an iterable of float32 NCHW arrays (one feed per array)."""

    def __init__(self, input_name: str, calib: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(calib)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        self.count += 1
        return {self.input_name: np.ascontiguousarray(np.asarray(batch, dtype=np.float32))}


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    mode: Literal["static", "dynamic"] = "static",
    calib: Iterable[np.ndarray] | None = None,
    per_channel: bool = True,
) -> Path:
    """Quantize the fp32 ONNX model ``src`` to int8 at ``dst``; ``calib`` (static only) yields float32 NCHW
    batches already preprocessed as the model expects them. Raises :class:`ExportError` on failure.

    >>> quantize_onnx("best.onnx", "best-int8.onnx", mode="dynamic")   # doctest: +SKIP
    PosixPath('best-int8.onnx')
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    if mode not in ("static", "dynamic"):
        raise ExportError(f"int8 mode {mode!r}: expected 'static' or 'dynamic'")
    with tempfile.TemporaryDirectory(prefix="optik-quant-") as tmp, _root_log_level(logging.ERROR):
        model_in = _preprocess(src, Path(tmp) / "pre.onnx")
        try:
            if mode == "dynamic":
                quantize_dynamic(model_in, dst, weight_type=QuantType.QUInt8, per_channel=per_channel)
            else:
                if calib is None:
                    raise ExportError("static int8 quantization needs calibration images (calib=…)")
                import onnx

                graph = onnx.load(str(model_in), load_external_data=False).graph
                reader = type("Reader", (_Reader, CalibrationDataReader), {})(graph.input[0].name, calib)
                quantize_static(
                    model_in, dst, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=shape_nodes(graph),
                )
                if reader.count == 0:
                    raise ExportError("static int8 quantization got no calibration batches")
        except ExportError:
            dst.unlink(missing_ok=True)
            raise
        except Exception as e:  # onnxruntime.quantization raises plain exceptions of many kinds
            dst.unlink(missing_ok=True)
            raise ExportError(f"int8 ({mode}) quantization of '{src}' failed: {type(e).__name__}: {e}") from None
    return dst


# Inputs that are sizes, not image data: (op type → input positions). The float arithmetic feeding them must
# stay float — quantized, a padding amount of 1 can round to 0 or 2.
_SHAPE_INPUTS = {"Pad": (1, 3), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3), "Expand": (1,), "Tile": (1,),
                 "ConstantOfShape": (0,), "Range": (0, 1, 2), "Unsqueeze": (1,), "Squeeze": (1,), "TopK": (1,), "Split": (1,)}  # fmt: skip


def shape_nodes(graph: Any) -> list[str]:
    """Names of the nodes that compute sizes (padding amounts, reshape targets…) from tensor shapes: every
    ancestor of a size input (:data:`_SHAPE_INPUTS`) up to the ``Shape`` / ``Size`` ops that read a tensor's
    shape (whose data never matters). Static int8 must leave them alone: TF-"same" convolutions (timm's
    ``Conv2dSame``, e.g. ``tf_efficientnet_lite0``) trace their padding as ``Shape → Div → Ceil → Sub → Mul
    → Add`` in float, and quantizing that arithmetic shifts the padding — on EfficientNet-Lite0 it took
    int8 top-1 agreement with fp32 on real photos from 0.72 up to 0.92.

    >>> shape_nodes(onnx.load("best.onnx").graph)[:2]     # doctest: +SKIP
    ['/conv_stem/Shape', '/conv_stem/Gather']
    """
    producer = {out: node for node in graph.node for out in node.output}
    todo = [n.input[i] for n in graph.node for i in _SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input) and n.input[i]]
    seen: set[str] = set()
    names: list[str] = []
    while todo:
        tensor = todo.pop()
        node = producer.get(tensor)
        if tensor in seen or node is None:
            continue
        seen.add(tensor)
        if node.name and node.name not in names:
            names.append(node.name)
        if node.op_type not in ("Shape", "Size"):  # past a Shape op is image data: its values do not reach the size
            todo.extend(i for i in node.input if i)
    return names


@contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """onnxruntime.quantization logs through the root logger ("Axis 1 is out-of-range for weight …" for
    1-D constants it leaves in float, which is fine); keep that out of the user's console."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(level, old))
    try:
        yield
    finally:
        root.setLevel(old)


def _preprocess(src: Path, out: Path) -> Path:
    """onnxruntime's recommended pre-quantization pass (shape inference + graph optimisation, so
    Conv+BN+ReLU are fused before ranges are calibrated); the original model if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        return out
    except Exception as e:  # best effort: quantizing the unprocessed graph still works, only less fused
        log.warning("quantization pre-processing skipped (%s: %s)", type(e).__name__, e)
        return src


def calibration_batches(arrays: Iterable[Any], batch: int) -> Iterator[np.ndarray]:
    """Single ``(3, S, S)`` images (tensors or arrays) → float32 ``(B, 3, S, S)`` batches for :func:`quantize_onnx`.

    >>> [b.shape for b in calibration_batches([np.zeros((3, 4, 4))] * 5, 2)]
    [(2, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4)]
    """
    buf: list[np.ndarray] = []
    for a in arrays:
        buf.append(np.asarray(a.numpy() if hasattr(a, "numpy") else a, dtype=np.float32))
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


__all__ = ["calibration_batches", "quantize_onnx", "shape_nodes"]
