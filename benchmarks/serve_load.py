"""``optik serve`` under load: requests/s and latency p50/p99 for 1, 4 and 16 concurrent HTTP
clients, against calling the same model in-process (``Model.predict`` on the decoded image), for
the eager weights and — when ``Model(run).export(format="onnx")`` works — the exported ONNX model.

The server runs as a separate ``python -m optik serve`` process (as users run it), so the load
generator's threads do not share its GIL. Each client posts the same 64 px PNG as multipart
``file`` to ``POST /predict`` back to back (closed loop, keep-alive). ``overhead_p50`` is the HTTP
p50 latency over the in-process p50: what decoding, multipart, JSON and the network stack add.

    python benchmarks/serve_load.py [--quick] [model=resnet] [seconds=10] [workers=2] [threads=N]

``threads`` sets torch's intra-op threads in both the server and the in-process loop (default:
torch's default). On a CPU shared with other busy processes, 2+ OpenMP threads per forward can
cost 100× on tiny models (every parallel region waits for a descheduled thread): try threads=1.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.serve.loadtest import run_load  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's intra-op threads in the server
    proc = subprocess.Popen([sys.executable, "-m", "optik", "serve", f"model={model}", f"port={port}", f"workers={workers}",
                             "max_queue=64"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"optik serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("optik serve did not start within 120 s")


def in_process(model: Model, image: np.ndarray, seconds: float) -> dict:
    """Closed loop on one thread: the same work minus HTTP (preprocess, forward, postprocess)."""
    model.predict(image)  # load + warm up
    lat = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        model.predict(image)[0].to_json()
        lat.append(1e3 * (time.perf_counter() - t0))
    a = np.asarray(lat)
    return {"rps": round(len(a) / (a.sum() / 1e3), 2), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "requests": len(a)}  # fmt: skip


def bench_model(path: str, fmt: str, image: np.ndarray, png: bytes, clients: list[int], seconds: float, workers: int,
                threads: int) -> list[dict]:  # fmt: skip
    base = in_process(Model(path), image, seconds)
    rows = [{"format": fmt, "mode": "in-process", "clients": 1, **base, "errors": 0, "overhead_p50": 1.0}]
    proc, url = start_server(path, workers, threads)
    try:
        run_load(url, png, clients=2, seconds=min(1.0, seconds))  # warm-up: first requests load lazily-built bits
        for n in clients:
            s = run_load(url, png, clients=n, seconds=seconds)
            rows.append({"format": fmt, "mode": "http", "clients": n, "rps": s["rps"], "p50_ms": s["p50_ms"],
                         "p99_ms": s["p99_ms"], "requests": s["requests"], "errors": s["errors"],
                         "overhead_p50": round(s["p50_ms"] / base["p50_ms"], 2)})  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    arch = args.get("model", "cnn" if quick else "resnet")
    seconds = float(args.get("seconds", 1.5 if quick else 10))
    workers = int(args.get("workers", 2))
    import torch

    threads = int(args.get("threads", torch.get_num_threads()))
    torch.set_num_threads(threads)
    clients = [1, 4] if quick else [1, 4, 16]
    imgsz = 32 if quick else 64
    from optik.data.synthetic import shapes_classification
    from PIL import Image

    imgs, _, _ = shapes_classification(n=1, size=64, classes=3, seed=1)
    buf = io.BytesIO()
    Image.fromarray(imgs[0]).save(buf, "PNG")
    png = buf.getvalue()
    rows: list[dict] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        m = Model(arch)
        m.train(data=f"synthetic:shapes?n={64 if quick else 256}&size=64&classes=3", epochs=1, imgsz=imgsz, batch=32,
                plots=False, project=tmp)  # fmt: skip
        weights = str(m.weights)
        rows += bench_model(weights, "pytorch", imgs[0], png, clients, seconds, workers, threads)
        try:
            onnx = str(Model(weights).export(format="onnx", parity=4))
        except Exception as e:  # noqa: BLE001 - the exporter is optional here: report why and go on
            notes["onnx"] = f"skipped: {type(e).__name__}: {e}"
        else:
            rows += bench_model(onnx, "onnx", imgs[0], png, clients, seconds, workers, threads)
    for r in rows:
        r["model"] = arch
    write_results("serve_load", rows, quick=quick, seconds_per_level=seconds, workers=workers, torch_threads=threads, imgsz=imgsz,
                  image="64x64 PNG, multipart POST /predict", cpu_count=os.cpu_count(), **notes)  # fmt: skip


if __name__ == "__main__":
    main()
