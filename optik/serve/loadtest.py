"""A small closed-loop load generator for ``optik serve``: N clients, each posting the same image
back to back for a fixed time (used by the load test and ``benchmarks/serve_load.py``).

>>> stats = run_load("http://127.0.0.1:8000", open("cat.png", "rb").read(), clients=8, seconds=5)  # doctest: +SKIP
>>> stats["errors"], stats["p50_ms"] < stats["p95_ms"]                                             # doctest: +SKIP
(0, True)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np


def run_load(url: str, image: bytes, *, clients: int = 8, seconds: float = 5.0, path: str = "/predict",
             params: dict[str, Any] | None = None, filename: str = "image.png") -> dict[str, Any]:
    """Each of ``clients`` threads keeps one request in flight (its own keep-alive connection) for
    ``seconds``; returns request count, errors (non-200 or transport failures), requests/s and
    latency percentiles in ms."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            start_gate.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                try:
                    r = http.post(path, params=params, files={"file": (filename, image, "image/png")})
                    code: int | str = r.status_code
                    r.read()
                except httpx.HTTPError as e:  # a refused/reset connection is an error, not a crash
                    code = type(e).__name__
                dt = 1e3 * (time.perf_counter() - t0)
                with lock:
                    statuses[code] += 1
                    if code == 200:
                        latencies.append(dt)
                    elif len(failures) < 5:
                        failures.append(str(code))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t_start = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    n = sum(statuses.values())
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": n,
        "errors": n - statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "rps": round(statuses.get(200, 0) / elapsed, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "first_errors": failures,
    }
