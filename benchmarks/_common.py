"""Shared helpers for benchmark scripts: machine facts and writing results JSON + a table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


# CPU features the figures depend on (bf16 / int8 matmul units, vector width), as /proc/cpuinfo names them.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
                  "amx_tile", "amx_bf16", "amx_int8", "sse4_2", "neon", "asimd")  # fmt: skip


def cpu_flags() -> dict[str, Any]:
    """The CPU model and which of :data:`RELEVANT_FLAGS` it has (read from /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor(), "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": fields.get("model name", platform.processor()), "flags": [f for f in RELEVANT_FLAGS if f in flags]}


def peak_flops(dtype: str = "fp32", n: int = 2048, seconds: float = 3.0) -> float:
    """The matmul FLOP/s this machine reaches now: a ``n × n`` ``torch.mm`` loop in ``dtype`` (``fp32`` |
    ``bf16`` | ``fp16``) for about ``seconds`` on torch's current threads, best of the timed calls. MFU (model
    FLOP utilisation) = a model's achieved FLOP/s / this peak, comparable across CPUs; on a shared machine
    the peak is measured under the same load as the model, so the ratio stays meaningful.

    >>> peak_flops("bf16", n=256, seconds=0.05) > 0
    True
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(fn: Any) -> int:
    """FLOPs of one call of ``fn()`` (forward and backward if it runs both), counted by torch's
    ``FlopCounterMode`` (matmuls and convolutions, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_results(name: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    """Print ``rows`` as a table and save them with machine facts to results/<name>.json."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=name)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rows": rows, **extra}
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")
    return out
