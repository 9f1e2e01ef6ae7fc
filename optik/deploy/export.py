"""``optik TASK export``: trained weights → a self-describing TorchScript / ONNX / int8 ONNX file, checked
against the eager model on real validation images before it is written.

    optik classify export model=runs/classify/train format=onnx            # → weights/best.onnx
    optik detect export model=runs/detect/train format=onnx-int8           # → weights/best-int8.onnx
    optik segment export model=runs/segment/train format=torchscript       # → weights/best.torchscript

What is traced comes from the task (:meth:`optik.tasks.base.Task.export_module`): a classifier's logits,
the house detector's decoded ``boxes``/``scores`` (NMS stays outside, so thresholds stay run-time
choices), a semantic model's logits, a torchvision detector's / Mask R-CNN's own inference graph (one
image per run, NMS inside, ``conf``/``iou``/``max_det`` baked in at export). The file embeds the weights' metadata plus an ``export`` block
(input, outputs, pre/postprocessing, versions, the parity result), so ``Model("best.onnx")`` predicts and
validates with no other key (:mod:`optik.deploy.runtime`).

Parity: ``cfg.parity`` val images go through eager and exported; fp32 fails (:class:`ExportError`, nothing
written) when ``max|Δ| > tol · max(1, max|eager|)`` for any output (``tol`` default 1e-3). int8 changes
numbers by design, so it is judged by agreement with eager instead and fails below the measure's floor. The
measure is the task's (:meth:`optik.tasks.base.Task.export_agreement`; the built-in ones — top-1, mean IoU,
detection candidates, matched detections — are in :mod:`optik.deploy.parity`).

>>> export(build_config("classify", "export", {"model": "runs/classify/train"})).name   # doctest: +SKIP
'best.onnx'
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from optik.config import ExportConfig
from optik.deploy.parity import (
    DEFAULT_TOL,
    FP32_MATCHED_FLOOR,
    INT8_FLOORS,
    TOPK_CANDIDATES,
    agreement_score,
    matched_parity,
    parity,
)
from optik.deploy.runtime import TS_META_FILE, load_exported
from optik.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

SUFFIXES = {"torchscript": ".torchscript", "onnx": ".onnx", "onnx-int8": "-int8.onnx"}
INPUT_NAME = "images"


def export(cfg: ExportConfig) -> Path:
    """Export ``cfg.model`` to ``cfg.format`` (``torchscript`` | ``onnx`` | ``onnx-int8``); returns the file.

    >>> export(build_config("detect", "export", {"model": "runs/detect/train", "format": "onnx-int8"}))  # doctest: +SKIP
    PosixPath('runs/detect/train/weights/best-int8.onnx')
    """
    from optik import catalog
    from optik.tasks.base import get_task
    from optik.weights import resolve_model_arg

    task, model, cfg = catalog.load(get_task(cfg.task).loader)(cfg)  # the engine's load_trained unless the task loads its own
    if type(task.cfg) is type(cfg):  # what building the model resolved (hf: zero-shot: imgsz = its processor's crop)
        cfg = task.cfg
    _, weights, wmeta = resolve_model_arg(cfg.model)
    name = str(wmeta.get("model") or cfg.model)
    out = _out_path(cfg, weights)
    module, info = task.export_module(model)  # ExportError for models that cannot be exported
    module = module.eval()
    agreement = task.export_agreement(model)  # how the exported file is judged against eager
    if info.get("batch") == 1:  # a one-image graph (torchvision detectors): no batch axis; parity, calibration per image
        cfg = cfg.model_copy(update={"batch": 1, "dynamic": False})

    images, calib = _images(task, cfg)
    # The traced batch: the fixed one, or (dynamic axis) a few real images — real data keeps value-dependent
    # paths honest; more than one image keeps the tracer from specialising on batch 1.
    if not cfg.dynamic:
        batch = cfg.batch
    else:
        batch = min(cfg.batch, len(images)) if images is not None else min(cfg.batch, 2)
    example = images[:batch] if images is not None and len(images) >= batch else _dummy_input(info, batch, cfg.imgsz)
    meta = _metadata(task, cfg, wmeta, info, batch)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".optik-export-", dir=out.parent))
    except OSError as e:  # no permission, read-only file system…
        raise ConfigError(f"bad value for 'out': cannot write to '{out.parent}' ({e.strerror or e})") from None
    try:
        candidate = _write_graph(module, example, cfg, info["outputs"], tmp, name, calib, info.get("dynamic_axes"))
        meta["export"]["size_mb"] = round(candidate.stat().st_size / 2**20, 3)
        if images is None:
            log.warning("parity check skipped (parity=0): %s is not compared with the eager model", out.name)
            meta["export"]["parity"] = {"skipped": True}
        else:
            runtime = load_exported(candidate, meta=meta)
            report = agreement.check(module, runtime, images, cfg)
            meta["export"]["parity"] = report
            _print_parity(report, out.name)
            if not report["passed"]:
                raise ExportError(f"{cfg.format} export of {name!r} failed the parity check: {report['reason']} (nothing written)")
        _finalize(candidate, out, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from optik.console import console

    console.print(f"Exported [bold]{name}[/bold] → [bold]{out}[/bold] ({meta['export']['size_mb']:.2f} MB)")
    return out


# --- inputs ------------------------------------------------------------------------------------
def _out_path(cfg: ExportConfig, weights: Path | None) -> Path:
    want = ".torchscript" if cfg.format == "torchscript" else ".onnx"
    if cfg.out:
        out = Path(cfg.out)
        if out.suffix.lower() != want:
            raise ConfigError(f"bad value for 'out': '{out}' (format={cfg.format} writes a {want} file; Model(path) picks the runtime by suffix)")
        _check_writable(out)
        return out
    if weights is None:
        raise ConfigError(f"missing key 'out' ({cfg.model!r} has no optik weights file to export next to)")
    return weights.with_name(weights.stem + SUFFIXES[cfg.format])


def _check_writable(out: Path) -> None:
    """``out=`` names a file that can be created: not a folder, and under folders (existing or not), not
    under a file — else a ConfigError naming 'out' (was a FileExistsError / NotADirectoryError traceback)."""
    if out.is_dir():
        raise ConfigError(f"bad value for 'out': '{out}' is a folder; name the file to write, e.g. out={out / 'model'}{out.suffix}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"bad value for 'out': '{out}' — '{parent}' is a file, not a folder")
            break


def _images(task: Any, cfg: ExportConfig) -> tuple[Tensor | None, list[Tensor] | None]:
    """``cfg.parity`` val images (transformed, stacked) and, for static int8, ``cfg.calib`` training
    images through the val transforms (no augmentation: calibration must see what inference sees)."""
    static = cfg.format == "onnx-int8" and cfg.int8 == "static"
    if not cfg.parity and not static:
        return None, None
    if cfg.data is None:
        need = "the parity check and int8 calibration need" if static else "the parity check needs"
        raise ConfigError(f"missing key 'data' ({need} images; the weights do not record their data)")
    data = task.datasets()
    images = None
    if cfg.parity:
        split = data.val if data.val is not None and len(data.val) else data.train.with_transform(task.transforms(train=False))
        n = min(cfg.parity, len(split))
        images = torch.stack([split[i][0] for i in range(n)]).float()
    calib = None
    if static:
        train = data.train if data.train is not None and len(data.train) else data.val
        train = train.with_transform(task.transforms(train=False))
        idx = np.linspace(0, len(train) - 1, num=min(cfg.calib, len(train))).astype(int)
        calib = [train[int(i)][0].float() for i in idx]
    return images, calib


def _dummy_input(info: dict[str, Any], batch: int, size: int) -> Tensor:
    g = torch.Generator().manual_seed(0)
    normalized = isinstance(info["preprocess"].get("normalize"), dict)
    return torch.randn(batch, 3, size, size, generator=g) if normalized else torch.rand(batch, 3, size, size, generator=g)


def _metadata(task: Any, cfg: ExportConfig, wmeta: dict[str, Any], info: dict[str, Any], batch: int) -> dict[str, Any]:
    from optik.version import __version__

    norm = info["preprocess"].get("normalize")
    block: dict[str, Any] = {
        "format": cfg.format,
        "input": {"name": INPUT_NAME, "shape": ["batch" if cfg.dynamic else batch, 3, cfg.imgsz, cfg.imgsz], "dtype": "float32",
                  "range": "(x / 255 - mean) / std" if isinstance(norm, dict) else "[0, 1]"},  # fmt: skip
        "outputs": list(info["outputs"]),
        "dynamic": cfg.dynamic,
        "preprocess": info["preprocess"],
        "transforms": repr(task.transforms(train=False)),
        "postprocess": info["postprocess"],
        "optik_version": __version__,
        "torch_version": torch.__version__,
        "source": str(cfg.model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cfg.format != "torchscript":
        block["opset"] = cfg.opset
    if cfg.format == "onnx-int8":
        block["int8"] = cfg.int8
        if cfg.int8 == "static":
            block["calibration_images"] = cfg.calib
    meta = {k: v for k, v in wmeta.items() if k != "export"}
    meta.update(model=wmeta.get("model") or task.meta.get("model"), task=cfg.task, imgsz=cfg.imgsz,
                classes=list(task.meta.get("classes") or wmeta.get("classes") or []))  # fmt: skip
    for k, v in task.checkpoint_meta().items():  # what a weights file of this task says (normalisation, flavour…)
        meta.setdefault(k, v)
    meta.update(info.get("meta") or {})  # what the graph fixes (zero-shot: its baked label set as the classes)
    meta["export"] = block
    return meta


# --- writing -----------------------------------------------------------------------------------
@contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about Python ints taken from shapes (expected: the spatial size is fixed) and, on
    this torch, that TorchScript/``dynamo=False`` are deprecated; neither is the user's concern."""
    with warnings.catch_warnings():
        for cat in (FutureWarning, DeprecationWarning, UserWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", cat)
        yield


def _write_graph(module: nn.Module, example: Tensor, cfg: ExportConfig, outputs: list[str], tmp: Path, name: str,
                 calib: list[Tensor] | None, extra_axes: dict[str, dict[int, str]] | None = None) -> Path:  # fmt: skip
    """The exported graph in ``tmp`` (no metadata yet); tracing/export failures → one-line ExportError.
    ``extra_axes``: more dynamic ONNX axes (a detection count), merged with the batch axis."""
    fmt = "torchscript" if cfg.format == "torchscript" else "onnx"
    try:
        with _quiet(), torch.no_grad():
            if fmt == "torchscript":
                path = tmp / "model.torchscript"
                torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(path))
            else:
                path = tmp / "model.onnx"
                axes = {n: {0: "batch"} for n in (INPUT_NAME, *outputs)} if cfg.dynamic else {}
                for n, a in (extra_axes or {}).items():
                    axes[n] = {**axes.get(n, {}), **a}
                torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=cfg.opset, input_names=[INPUT_NAME],
                                  output_names=list(outputs), dynamic_axes=axes or None, do_constant_folding=True)  # fmt: skip
    except ExportError:
        raise
    except Exception as e:  # tracing / ONNX conversion raise many types; the first line says what failed
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"cannot export model {name!r} to {fmt}: {type(e).__name__}: {first}") from None
    if cfg.format == "onnx-int8":
        from optik.deploy.quantize import calibration_batches, quantize_onnx

        q = tmp / "model-int8.onnx"
        batches = calibration_batches(calib, cfg.batch) if calib is not None else None
        if batches is not None and not cfg.dynamic:  # a fixed-batch graph takes only full batches
            batches = (b for b in batches if len(b) == cfg.batch)
        return quantize_onnx(path, q, mode=cfg.int8, calib=batches)
    return path


def _finalize(candidate: Path, out: Path, meta: dict[str, Any]) -> Path:
    """Embed ``meta`` and move the file into place atomically."""
    from optik.weights import atomic_write

    text = json.dumps(meta, default=str)
    if candidate.suffix == ".torchscript":
        with _quiet():
            ts = torch.jit.load(str(candidate))

        def save(tmp: str) -> None:
            with _quiet():
                torch.jit.save(ts, tmp, _extra_files={TS_META_FILE: text})

        return atomic_write(out, save)
    import onnx

    proto = onnx.load(str(candidate))
    for kv in [kv for kv in proto.metadata_props if kv.key == "optik"]:
        proto.metadata_props.remove(kv)
    proto.metadata_props.add(key="optik", value=text)
    proto.producer_name, proto.doc_string = "optik", f"optik {meta['task']} model {meta['model']} (metadata_props['optik'])"
    return atomic_write(out, lambda tmp: onnx.save(proto, tmp))


# --- parity ------------------------------------------------------------------------------------
def _print_parity(report: dict[str, Any], label: str) -> None:
    from rich.table import Table

    from optik.console import console

    table = Table(title=f"parity vs eager: {label} ({report['images']} val images)")
    for c in ("output", "shape", "max |Δ|", "max |eager|", "limit", "ok"):
        table.add_column(c)
    for r in report["outputs"]:
        table.add_row(r["name"], "×".join(map(str, r["shape"])), f"{r['max_abs_diff']:.3g}", f"{r['max_abs_eager']:.3g}",
                      "-" if r["limit"] is None else f"{r['limit']:.3g}", "✓" if r["ok"] else "✗")  # fmt: skip
    a = report["agreement"]
    floor = f" (floor {a['floor']})" if "floor" in a else ""
    table.caption = f"{a['kind']} agreement {a['value']:.3f}{floor}" + ("" if report["passed"] else f" — FAILED: {report['reason']}")
    console.print(table)


__all__ = ["DEFAULT_TOL", "FP32_MATCHED_FLOOR", "INT8_FLOORS", "agreement_score", "export", "matched_parity", "parity"]
