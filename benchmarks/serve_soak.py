"""``optik serve`` soak: ``duration`` seconds of a mixed, hostile load from ``clients`` concurrent clients against
the server in its own process, loopback only.

A tiny ``cnn`` classifier is trained into a temp folder; ``python -m optik serve`` serves its run dir on
127.0.0.1 (a free port, ``workers=2 threads=1 max_upload_mb=1 upload_timeout=4 timeout=10``, and an API key
through ``OPTIK_API_KEY`` unless ``auth=false``), with its working directory, ``HOME`` and ``TMPDIR`` in that
temp folder. Each client picks request kinds at random (seeded; :class:`optik.serve.loadtest.SoakMix`):

- ``valid_png`` / ``valid_jpeg`` / ``valid_json``: multipart PNG → ``/predict``, raw JPEG → ``/predict/image``,
  base64 JSON → ``/predict?overlay=true`` (→ 200);
- ``thin``: strips (1×6000, 6000×1, 3×500, 2×3000) and a 1×1 image → overlays (→ 200, bounded in size);
- ``oversized``: 1 MB + 64 KB, with or without Content-Length (→ 413); ``truncated`` PNG / JPEG (→ 422);
- ``non_image``: text bodies and files (→ 415), random bytes, a decompression-bomb header, bad base64, JSON nested
  20,000 deep (→ 422), multipart without a boundary (→ 400); ``bad_query`` (→ 422);
- ``slow``: a valid PNG trickled in 8 pieces over 0.4–1.6 s (→ 200); ``stalled``: half a body, then silence
  (→ 408 after ``upload_timeout``); ``no_key`` / ``wrong_key`` (→ 401); ``health`` (→ 200).

Kinds that reach the worker pool may also get 503 / 504 (the server's refusals by design). Checked: **0 responses
5xx other than 503 / 504**, every status in its kind's allowed set, no dropped connection; latency p50 / p95 / p99
per kind (client side; ``server_p99`` is the server's own time); server RSS sampled every second (psutil), **flat
within 10 % after a 15 s warm-up** (the medians of 10 s windows; single samples swing with the requests in flight,
reported as ``peak_pct``); **no file written outside the run dir** (snapshots of the temp folder — the
server's cwd, HOME and TMPDIR are in it — before and after). This process's cwd is snapshotted too and its changes
reported (``cwd_changes``), but not judged: in a shared work tree other people's edits land there.

    python benchmarks/serve_soak.py [duration=120] [clients=16] [warmup=15] [workers=2] [auth=true] [seed=0]

Exit status 1 when a check fails. Results: ``benchmarks/results/serve_soak.json``.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results

from optik.serve.loadtest import (
    RssSampler,
    SoakMix,
    SoakServer,
    changed_files,
    changes_outside,
    run_soak,
    snapshot,
)

# Not entered when snapshotting this process's cwd (the repository): tool caches and virtual environments.
CWD_SKIP = (".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache",
            ".hypothesis", "results")  # fmt: skip


def main() -> int:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    duration = float(args.get("duration", 120))
    clients = int(args.get("clients", 16))
    warmup = float(args.get("warmup", 15))
    workers = int(args.get("workers", 2))
    seed = int(args.get("seed", 0))
    auth = args.get("auth", "true").lower() in ("1", "true", "yes")
    keys = {"workers": workers, "threads": 1, "max_upload_mb": 1, "upload_timeout": 4, "timeout": 10}
    api_key = secrets.token_urlsafe(24) if auth else None

    from optik import Model

    cwd = Path.cwd()
    load_before = [round(x, 2) for x in os.getloadavg()]  # the CPU is shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="optik-soak-") as tmp:
        scratch = Path(tmp)
        m = Model("cnn")
        m.train(data="synthetic:shapes?n=64&size=64&classes=3", epochs=1, imgsz=32, batch=32, plots=False,
                project=str(scratch / "runs"))  # fmt: skip
        run_dir = Path(m.weights).parent.parent
        inside = str(run_dir.relative_to(scratch))
        srv = SoakServer(run_dir, scratch, api_key=api_key, **keys)  # makes the server's cwd, HOME and TMPDIR
        before, cwd_before = snapshot(scratch), snapshot(cwd, CWD_SKIP)
        t0 = time.monotonic()
        with srv:
            started_s = round(time.monotonic() - t0, 1)
            mix = SoakMix(srv.url, max_upload_mb=keys["max_upload_mb"], upload_timeout=keys["upload_timeout"],
                          api_key=api_key, seed=seed)  # fmt: skip
            with RssSampler(srv.pid, interval=1.0) as rss:
                res = run_soak(mix, clients=clients, seconds=duration, seed=seed)
            exit_code = srv.stop()
        after, cwd_after = snapshot(scratch), snapshot(cwd, CWD_SKIP)
        outside = changes_outside(before, after, inside)
        cwd_changes = changed_files(cwd_before, cwd_after)  # reported, not judged (see the docstring)
        log = list(srv.log)

    mem = rss.summary(warmup)
    rows = [{"kind": r["kind"], "requests": r["requests"],
             "statuses": " ".join(f"{k}:{v}" for k, v in r["statuses"].items()), "unexpected": r["unexpected"],
             "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"], "server_p99_ms": r["server_p99_ms"]}
            for r in res["kinds"]]  # fmt: skip
    rows.append({"kind": "ALL", "requests": res["requests"], "statuses": " ".join(f"{k}:{v}" for k, v in res["statuses"].items()),
                 "unexpected": res["unexpected"], "p50_ms": res["valid_p50_ms"], "p95_ms": res["valid_p95_ms"],
                 "p99_ms": res["valid_p99_ms"], "server_p99_ms": res["valid_server_p99_ms"]})  # fmt: skip
    checks = {
        "no_5xx_but_503_504": res["server_errors"] == 0,
        "every_status_allowed": res["unexpected"] == 0 and res["transport_errors"] == 0,
        "rss_flat_10pct": mem.get("drift_pct", 1e9) <= 10,
        "no_file_outside_run_dir": not outside["files"],
        "clients_finished": not res["client_crashes"] and res["stuck_clients"] == 0,
        "no_traceback_in_server_log": not any("Traceback" in line for line in log),
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"{res['requests']:,} requests in {res['seconds']} s ({res['rps']} req/s); 5xx other than 503/504: "
          f"{res['server_errors']}; valid p50/p95/p99 {res['valid_p50_ms']}/{res['valid_p95_ms']}/{res['valid_p99_ms']} ms; "
          f"RSS {mem.get('start_mb')} → {mem.get('end_mb')} MB after {warmup:g} s warm-up (10 s medians: max drift "
          f"{mem.get('drift_pct')} %; single-sample peak +{mem.get('peak_pct')} %)")  # fmt: skip
    write_results(
        "serve_soak", rows, duration_s=duration, clients=clients, seed=seed, auth=auth, server_keys=keys,
        server_start_s=started_s, server_exit_code=exit_code, load_average_before=load_before,
        totals={k: v for k, v in res.items() if k != "kinds"}, kinds=res["kinds"], rss=mem,
        rss_samples=rss.samples, files_outside_run_dir=outside, cwd_changes=cwd_changes, checks=checks,
        passed=all(checks.values()), server_log_tail=log[-20:],
        note="ALL row: the status counts of every request; its latencies are those of the valid requests answered 200",
    )  # fmt: skip
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
