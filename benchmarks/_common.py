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
