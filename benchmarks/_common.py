"""Shared helpers for benchmark scripts: machine facts and writing results JSON + a table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    return {
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
