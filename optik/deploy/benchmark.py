"""``optik TASK benchmark``: every deployment format of one model in one table (Ultralytics'
benchmark mode, plus throughput and the parity of each export).

For each format (``pytorch`` = the eager weights as ``val`` / ``predict`` run them, i.e. through the eager fast path
of :mod:`optik.engine.fastpath`, ``torchscript``, ``onnx``, ``onnx-int8``): export it
into the run directory, then measure on *real validation images*

- size on disk (MB),
- latency at batch 1 (p50 / p95 ms of ``iters`` timed calls after ``warmup``),
- throughput at batch ``batch`` (images/s, median batch time),
- the task's headline metric on the whole val split (top-1, mAP, mIoU, PQ) through the same
  evaluation code as ``optik TASK val``.

Timings cover the model call as the task makes it (for detectors: including NMS), not decoding
or resizing, so formats are compared on the same tensors. A format that fails to export gets a row
with its error instead of stopping the table.

>>> from optik import Model
>>> rows = Model("runs/classify/train").benchmark(formats=["pytorch", "onnx"], iters=10)  # doctest: +SKIP
>>> [(r["format"], r["latency_p50_ms"]) for r in rows]                                   # doctest: +SKIP
[('pytorch', 1.9), ('onnx', 0.7)]
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from optik.config import BenchmarkConfig, build_config
from optik.console import console
from optik.device import autocast, precision_name, resolve_amp
from optik.engine.evaluate import evaluate
from optik.engine.fastpath import optimize_loaded
from optik.engine.inference import load_trained
from optik.engine.rundir import new_run_dir
from optik.errors import ConfigError, OptikError
from optik.weights import resolve_model_arg

log = logging.getLogger(__name__)

SUFFIX = {"torchscript": ".torchscript", "onnx": ".onnx", "onnx-int8": "-int8.onnx"}
# BenchmarkConfig keys that are not ExportConfig keys.
_BENCH_ONLY = {"formats", "iters", "warmup", "task", "mode", "format", "out", "batch", "name", "exist_ok", "project", "plots"}


def time_calls(fn: Callable[[], Any], iters: int, warmup: int) -> np.ndarray:
    """Wall-clock milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        out[i] = 1e3 * (time.perf_counter() - t0)
    return out


def _export_cfg(cfg: BenchmarkConfig, fmt: str, out: Path) -> Any:
    keys = {k: getattr(cfg, k) for k in cfg.model_fields_set if k not in _BENCH_ONLY}
    keys.update(model=cfg.model, format=fmt, out=str(out), data=cfg.data, imgsz=cfg.imgsz)
    return build_config(cfg.task, "export", keys)


def benchmark(cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    """Run the benchmark; writes ``benchmark.csv``, ``benchmark.json``, ``report.md`` and a latency
    plot into ``runs/<task>/benchmark*/`` and returns one dict per format."""
    from optik.deploy.export import export
    from optik.deploy.runtime import load_exported

    task, eager, cfg = load_trained(cfg)
    if cfg.data is None:
        raise ConfigError("missing key 'data' (the weights do not record the data they were trained on)")
    data = task.datasets()
    # The pytorch row times what val / predict / serve run: the eager fast path (BN folded into packed, fused
    # convolutions; engine/fastpath.py), not the model as built. Exports trace their own, unfused load.
    eager = optimize_loaded(task, eager)
    val = data.val
    if val is None or len(val) == 0:
        raise ConfigError(f"data: {cfg.data!r} has no val split to benchmark on")
    weights = resolve_model_arg(cfg.model)[1]
    if weights is None and isinstance(getattr(cfg, "pretrained", None), str):
        weights = Path(cfg.pretrained)  # model=timm:<arch> pretrained=<file>: the eager row's file is that one
    run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "benchmark", cfg.exist_ok)
    loader = DataLoader(val, batch_size=cfg.batch, num_workers=cfg.workers, collate_fn=task.collate)
    x1, _ = task.collate([val[0]])
    xb, _ = task.collate([val[i % len(val)] for i in range(cfg.batch)])
    key = task.fitness_key
    rows: list[dict[str, Any]] = []
    for fmt in cfg.formats:
        row: dict[str, Any] = {"format": fmt}
        try:
            if fmt == "pytorch":
                model, path = eager, Path(weights)
                row["fastpath"] = getattr(eager, "optik_fastpath", None)  # None: ran as built (nothing to fuse, or OPTIK_FASTPATH=0)
            else:
                path = Path(export(_export_cfg(cfg, fmt, run_dir / f"model{SUFFIX[fmt]}")))
                model = load_exported(path)
            # The eager row runs in the precision val / predict use (amp=auto: bf16 on CPUs with bf16 units);
            # exported files compute in their own precision (fp32, int8) whatever autocast says.
            amp = resolve_amp(cfg.amp, torch.device("cpu")) if fmt == "pytorch" else None
            row["precision"] = precision_name(amp) if fmt == "pytorch" else ("int8" if "int8" in fmt else "fp32")
            with torch.no_grad(), autocast(torch.device("cpu"), amp):
                lat = time_calls(lambda: task.forward(model, x1), cfg.iters, cfg.warmup)
                big = time_calls(lambda: task.forward(model, xb), max(3, cfg.iters // 5), min(cfg.warmup, 1))
            metrics = evaluate(task, model, loader, torch.device("cpu"), amp)
            row.update(
                size_mb=round(path.stat().st_size / 1e6, 3),
                latency_p50_ms=float(np.percentile(lat, 50)),
                latency_p95_ms=float(np.percentile(lat, 95)),
                throughput_ips=float(cfg.batch / (np.median(big) / 1e3)),
                **{key: float(metrics[key])},
                file=str(path),
            )
        except OptikError as e:
            row["error"] = str(e)
            log.warning("benchmark: %s failed: %s", fmt, e)
        rows.append(row)
    _write(run_dir, rows, cfg, key, len(val))
    return rows


def _write(run_dir: Path, rows: list[dict[str, Any]], cfg: BenchmarkConfig, key: str, n_val: int) -> None:
    from rich.table import Table

    cols = ["format", "size_mb", "latency_p50_ms", "latency_p95_ms", "throughput_ips", key, "error"]
    base = next((r for r in rows if r["format"] == "pytorch" and "latency_p50_ms" in r), None)
    table = Table(title=f"{cfg.task} benchmark · {cfg.model} · batch 1 latency, batch {cfg.batch} throughput · {n_val} val images")
    for c, label in zip(cols, ["format", "size MB", "p50 ms", "p95 ms", f"img/s (b={cfg.batch})", key, "error"]):
        table.add_column(label, justify="left" if c in ("format", "error") else "right")
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        if base is not None and "latency_p50_ms" in r and r is not base:
            cells[2] += f" ({base['latency_p50_ms'] / r['latency_p50_ms']:.2f}×)"
        table.add_row(*cells)
    console.print(table)
    with open(run_dir / "benchmark.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols + ["file"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (run_dir / "benchmark.json").write_text(json.dumps({"model": cfg.model, "task": cfg.task, "batch": cfg.batch,
                                                        "iters": cfg.iters, "val_images": n_val, "rows": rows}, indent=2))
    ok = [r for r in rows if "latency_p50_ms" in r]
    if ok:
        from optik.viz.plots import plot_bar

        (run_dir / "plots").mkdir(exist_ok=True)
        plot_bar({r["format"]: r["latency_p50_ms"] for r in ok}, run_dir / "plots" / "latency.png",
                 title="Latency at batch 1 (p50)", xlabel="ms")
    lines = [f"# {cfg.task} benchmark of `{cfg.model}`", "", f"{n_val} validation images; latency at batch 1 over "
             f"{cfg.iters} runs, throughput at batch {cfg.batch}.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    console.print(f"Results saved to [bold]{run_dir}[/bold]")


__all__ = ["benchmark", "time_calls"]
