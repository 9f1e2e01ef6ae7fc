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
numbers by design, so it is judged by agreement with eager instead and fails below :data:`INT8_FLOORS`:

* ``top1`` (classify): fraction of images whose top-1 class is unchanged, floor 0.8;
* ``miou`` (semantic): mean over images of the mean IoU between the eager and int8 argmax maps, floor 0.6;
* ``detections`` (detect): per image, overlap of the eager and int8 top-100 (point, class) candidates
  (what NMS sees), floor 0.5;
* ``matched`` (torchvision detectors / Mask R-CNN, whose one-image graphs run NMS inside and return a
  variable number of detections): share of the top-100 detections matched one to one between eager and
  exported (same label; fp32: same box and score within ``tol``, agreement floor 0.98; int8: IoU ≥ 0.5,
  floor 0.5) — :func:`matched_parity`.

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
from optik.deploy.runtime import TS_META_FILE, load_exported
from optik.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

SUFFIXES = {"torchscript": ".torchscript", "onnx": ".onnx", "onnx-int8": "-int8.onnx"}
INPUT_NAME = "images"
DEFAULT_TOL = 1e-3
INT8_FLOORS = {"top1": 0.8, "miou": 0.6, "detections": 0.5, "matched": 0.5}
FP32_MATCHED_FLOOR = 0.98  # fp32 "matched" parity: rare flips at a threshold / an NMS tie are all it may differ by
TOPK_CANDIDATES = 100


def export(cfg: ExportConfig) -> Path:
    """Export ``cfg.model`` to ``cfg.format`` (``torchscript`` | ``onnx`` | ``onnx-int8``); returns the file.

    >>> export(build_config("detect", "export", {"model": "runs/detect/train", "format": "onnx-int8"}))  # doctest: +SKIP
    PosixPath('runs/detect/train/weights/best-int8.onnx')
    """
    from optik.weights import resolve_model_arg
    from optik.engine.inference import load_trained

    task, model, cfg = load_trained(cfg)
    _, weights, wmeta = resolve_model_arg(cfg.model)
    name = str(wmeta.get("model") or cfg.model)
    out = _out_path(cfg, weights)
    module, info = task.export_module(model)  # ExportError for models that cannot be exported
    module = module.eval()
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

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".optik-export-", dir=out.parent))
    try:
        candidate = _write_graph(module, example, cfg, info["outputs"], tmp, name, calib, info.get("dynamic_axes"))
        meta["export"]["size_mb"] = round(candidate.stat().st_size / 2**20, 3)
        if images is None:
            log.warning("parity check skipped (parity=0): %s is not compared with the eager model", out.name)
            meta["export"]["parity"] = {"skipped": True}
        else:
            runtime = load_exported(candidate, meta=meta)
            report = parity(module, runtime, images, cfg, info.get("agreement", "top1"))
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
        return out
    if weights is None:
        raise ConfigError(f"missing key 'out' ({cfg.model!r} has no optik weights file to export next to)")
    return weights.with_name(weights.stem + SUFFIXES[cfg.format])


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
    import optik

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
        "optik_version": optik.__version__,
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
    for k in ("mean", "std", "subtask"):
        if k in task.meta and k not in meta:
            meta[k] = task.meta[k]
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
@torch.no_grad()
def parity(module: nn.Module, runtime: nn.Module, images: Tensor, cfg: ExportConfig, agreement: str) -> dict[str, Any]:
    """Eager ``module`` vs exported ``runtime`` on ``images``: per output max|Δ| and max|eager|, the task's
    agreement score, pass/fail (fp32: relative tolerance; int8: agreement floor). With a dynamic batch axis
    the first image also goes alone (batch 1 ≠ the traced batch). ``agreement="matched"`` (one-image graphs
    with NMS inside: torchvision detectors, Mask R-CNN) compares matched detections instead: :func:`matched_parity`."""
    if agreement == "matched":
        return matched_parity(module, runtime, images, cfg)
    eager, exported = [], []
    for k in range(0, len(images), cfg.batch):
        x = images[k : k + cfg.batch]
        eager.append(_as_list(module(x)))
        exported.append(runtime.run(x))
    if cfg.dynamic and len(images) > 1:
        eager.append(_as_list(module(images[:1])))
        exported.append(runtime.run(images[:1]))
    names = runtime.output_names
    e_out = [torch.cat([b[i] for b in eager]).float().cpu() for i in range(len(names))]
    x_out = [torch.cat([b[i] for b in exported]).float().cpu() for i in range(len(names))]
    int8 = cfg.format == "onnx-int8"
    tol = cfg.tol if cfg.tol is not None else DEFAULT_TOL
    rows = []
    for n, e, x in zip(names, e_out, x_out):
        if e.shape != x.shape:
            return {"passed": False, "reason": f"output '{n}' has shape {tuple(x.shape)}, eager {tuple(e.shape)}", "outputs": []}
        delta, scale = float((e - x).abs().max()), float(e.abs().max())
        limit = tol * max(1.0, scale)
        rows.append({"name": n, "shape": list(e.shape), "max_abs_diff": delta, "max_abs_eager": scale,
                     "limit": None if int8 and cfg.tol is None else limit, "ok": int8 and cfg.tol is None or delta <= limit})  # fmt: skip
    score = agreement_score(agreement, e_out, x_out)
    report: dict[str, Any] = {"images": int(len(images)), "outputs": rows, "agreement": {"kind": agreement, "value": score}}
    bad = [r for r in rows if not r["ok"]]
    if bad:
        r = bad[0]
        report.update(passed=False, reason=f"output '{r['name']}' max|Δ| {r['max_abs_diff']:.3g} > {r['limit']:.3g} "
                                           f"(tol {tol:g} × max(1, max|eager| {r['max_abs_eager']:.3g}))")  # fmt: skip
    elif int8 and score < INT8_FLOORS[agreement]:
        report.update(passed=False, reason=f"int8 {agreement} agreement {score:.3f} < floor {INT8_FLOORS[agreement]}")
    else:
        report.update(passed=True, reason="")
    if int8:
        report["agreement"]["floor"] = INT8_FLOORS[agreement]
    return report


@torch.no_grad()
def matched_parity(module: nn.Module, runtime: Any, images: Tensor, cfg: ExportConfig) -> dict[str, Any]:
    """Parity of a one-image graph that returns detections (``boxes``, ``scores``, ``labels``[, ``masks``]):
    the lists may differ in length (a score at the threshold, an NMS tie resolved the other way) and in the
    order of equal scores, so detections are matched one to one, best eager first, to an exported one of the
    same label with — fp32 — every box coordinate within ``tol · max(1, max|box|)`` and the score within
    ``tol`` (int8: box IoU ≥ 0.5 or every coordinate within 1 px), the closest box first. Agreement: per image, the matched share of eager's and exported's top
    :data:`TOPK_CANDIDATES` detections, averaged. fp32 passes with agreement ≥ :data:`FP32_MATCHED_FLOOR`
    and matched masks within ``tol``; int8 against :data:`INT8_FLOORS` ``["matched"]``."""
    int8 = cfg.format == "onnx-int8"
    tol = cfg.tol if cfg.tol is not None else DEFAULT_TOL
    names = list(runtime.output_names)
    delta = dict.fromkeys(names, 0.0)
    scale = dict.fromkeys(names, 0.0)
    counts = {"eager": 0, "exported": 0, "matched": 0}
    scores = []
    for k in range(len(images)):
        x = images[k : k + 1]
        e = [t.detach().float().cpu() for t in _as_list(module(x))]
        o = [t.detach().float().cpu() for t in runtime.run(x)]
        pairs = _match_detections(e, o, tol, int8)
        counts["eager"] += len(e[0])
        counts["exported"] += len(o[0])
        counts["matched"] += len(pairs)
        ke, ko = min(TOPK_CANDIDATES, len(e[0])), min(TOPK_CANDIDATES, len(o[0]))
        hit = sum(i < ke for i, _ in pairs) + sum(j < ko for _, j in pairs)
        scores.append(1.0 if ke + ko == 0 else hit / (ke + ko))
        for n, a, b in zip(names, e, o):
            scale[n] = max(scale[n], float(a.abs().max()) if a.numel() else 0.0)
            if pairs:
                i, j = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
                delta[n] = max(delta[n], float((a[i] - b[j]).abs().max()) if a[i].numel() else 0.0)
    score = float(np.mean(scores)) if scores else 1.0
    rows = []
    for n in names:
        limit = tol * max(1.0, scale[n])
        rows.append({"name": n, "shape": [counts["eager"]], "max_abs_diff": delta[n], "max_abs_eager": scale[n],
                     "limit": None if int8 and cfg.tol is None else limit,
                     "ok": int8 and cfg.tol is None or delta[n] <= limit})  # fmt: skip
    report: dict[str, Any] = {"images": int(len(images)), "outputs": rows, "detections": counts,
                              "agreement": {"kind": "matched", "value": score}}  # fmt: skip
    floor = INT8_FLOORS["matched"] if int8 else FP32_MATCHED_FLOOR
    bad = [r for r in rows if not r["ok"]]
    if bad:
        r = bad[0]
        report.update(passed=False, reason=f"matched detections' '{r['name']}' max|Δ| {r['max_abs_diff']:.3g} > {r['limit']:.3g} "
                                           f"(tol {tol:g} × max(1, max|eager| {r['max_abs_eager']:.3g}))")  # fmt: skip
    elif score < floor:
        report.update(passed=False, reason=f"{'int8' if int8 else 'fp32'} matched-detection agreement {score:.3f} < floor {floor} "
                                           f"({counts['matched']} of {counts['eager']} eager / {counts['exported']} exported detections matched)")  # fmt: skip
    else:
        report.update(passed=True, reason="")
    report["agreement"]["floor"] = floor
    return report


def _match_detections(e: list[Tensor], o: list[Tensor], tol: float, int8: bool) -> list[tuple[int, int]]:
    """One-to-one ``(eager index, exported index)`` pairs (see :func:`matched_parity`), greedy, best eager first.

    >>> b = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    >>> _match_detections([b, torch.tensor([.9, .8]), torch.tensor([0, 1])],
    ...                   [b.flip(0), torch.tensor([.8, .9]), torch.tensor([1, 0])], 1e-3, False)
    [(0, 1), (1, 0)]
    """
    from torchvision.ops import box_iou

    (be, se, le), (bo, so, lo) = e[:3], o[:3]
    if not len(be) or not len(bo):
        return []
    ok = le[:, None] == lo[None]
    gap = (be[:, None] - bo[None]).abs().amax(-1)  # largest coordinate difference (zero-area boxes have no IoU)
    if int8:
        ok &= (box_iou(be, bo).nan_to_num(0.0) >= 0.5) | (gap <= 1.0)
    else:
        ok &= (gap <= tol * max(1.0, float(be.abs().max()))) & ((se[:, None] - so[None]).abs() <= tol)
    cost = torch.where(ok, gap, torch.full_like(gap, float("inf")))
    pairs, used = [], torch.zeros(len(bo), dtype=torch.bool)
    for i in torch.argsort(se, descending=True, stable=True).tolist():
        cand = cost[i].masked_fill(used, float("inf"))
        j = int(cand.argmin())
        if torch.isfinite(cand[j]):
            pairs.append((i, j))
            used[j] = True
    return sorted(pairs)


def _as_list(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def agreement_score(kind: str, eager: list[Tensor], exported: list[Tensor]) -> float:
    """How much two models agree on what matters downstream (1.0 = identical decisions).

    >>> agreement_score("top1", [torch.tensor([[1., 0.], [0., 1.]])], [torch.tensor([[2., 0.], [1., 0.]])])
    0.5
    """
    if kind == "top1":
        return float((eager[0].argmax(-1) == exported[0].argmax(-1)).float().mean())
    if kind == "miou":
        a, b = eager[0].argmax(1), exported[0].argmax(1)
        ious = []
        for pa, pb in zip(a, b):
            per = [float(((pa == c) & (pb == c)).sum()) / float(((pa == c) | (pb == c)).sum())
                   for c in torch.unique(torch.cat([pa.flatten(), pb.flatten()])).tolist()]  # fmt: skip
            ious.append(sum(per) / len(per))
        return float(np.mean(ious))
    if kind == "detections":
        se, sx = eager[1].flatten(1), exported[1].flatten(1)  # scores (B, A·C)
        k = min(TOPK_CANDIDATES, se.shape[1])
        te, tx = se.topk(k, dim=1).indices, sx.topk(k, dim=1).indices
        return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(te, tx)]))
    raise ExportError(f"unknown parity agreement kind {kind!r} (expected {', '.join(INT8_FLOORS)})")


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
