"""A short soak of ``optik serve`` (the mix of ``benchmarks/serve_soak.py``, ~10 s, 8 clients, loopback only)
and regression tests for what the soak exposed: a stalled upload held its connection forever (now 408 after
``upload_timeout``), deeply nested JSON was a 500 (now 422)."""

from __future__ import annotations

import shutil
import signal
import socket
import time

import pytest

KEY = "soak-key-0123456789"


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch):
    monkeypatch.delenv("OPTIK_API_KEY", raising=False)


def test_short_soak_mixed_hostile_load(tiny_run, tmp_path):
    """8 clients for 10 s of valid / oversized / truncated / non-image / slow / stalled / bad-query /
    unauthenticated requests against ``python -m optik serve`` in its own process: every answer is one
    its request allows (no 5xx but 503/504 by design, no dropped connection), no file appears outside the
    run dir, RSS stays within a loose bound."""
    from optik.serve.loadtest import (
        RssSampler,
        SoakMix,
        SoakServer,
        changes_outside,
        run_soak,
        snapshot,
    )

    scratch = tmp_path / "soak"
    run = scratch / "run"
    shutil.copytree(tiny_run["run_dir"], run)
    keys = {"workers": 2, "threads": 1, "max_upload_mb": 0.25, "upload_timeout": 2, "timeout": 10}
    srv = SoakServer(run, scratch, api_key=KEY, **keys)  # makes the server's cwd, HOME and TMPDIR in scratch
    before = snapshot(scratch)
    with srv:
        mix = SoakMix(srv.url, max_upload_mb=keys["max_upload_mb"], upload_timeout=keys["upload_timeout"], api_key=KEY)
        with RssSampler(srv.pid, interval=0.5) as rss:
            res = run_soak(mix, clients=8, seconds=10, seed=1)
        code = srv.stop()
    after = snapshot(scratch)
    log = "\n".join(srv.log)
    summary = {k: v for k, v in res.items() if k != "kinds"}
    assert not res["client_crashes"] and res["stuck_clients"] == 0, summary
    assert res["server_errors"] == 0, summary  # 5xx other than 503 / 504
    assert res["unexpected"] == 0, res["first_unexpected"]  # every status in its kind's allowed set
    assert res["transport_errors"] == 0, summary
    seen = {r["kind"] for r in res["kinds"] if r["requests"]}
    assert {"valid_png", "valid_jpeg", "valid_json", "oversized", "truncated", "non_image", "no_key"} <= seen, seen
    assert res["valid_ok"] >= 20 and res["requests"] >= 100, summary
    assert "Traceback" not in log, log[-3000:]
    assert code in (0, -signal.SIGTERM), code  # a graceful stop (uvicorn re-raises the SIGTERM it handled), not a kill
    outside = changes_outside(before, after, "run")
    assert outside["files"] == [], outside  # nothing written outside the run dir (cwd, HOME, TMPDIR included)
    assert not (scratch / "cwd").exists() or not any((scratch / "cwd").iterdir())  # the server's cwd stays empty
    mem = rss.summary(warmup=3, window=2)
    assert mem["drift_pct"] < 50, mem  # loose: 10 s is too short to judge flatness (the benchmark does, 120 s)


def _raw(url: str, head: bytes, body: bytes, wait: float) -> tuple[bytes, float]:
    """Send ``head`` + ``body`` on a bare socket, then wait up to ``wait`` s for the answer; returns all of it
    (read until the server closes, or a pause of ``wait``: the head and the body may arrive in separate
    segments) and the seconds until its first bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(head + body)
        t0 = time.monotonic()
        answer, first = b"", None
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            first = time.monotonic() if first is None else first
            answer += chunk
        return answer, (first or time.monotonic()) - t0


def test_a_stalled_upload_is_408_after_upload_timeout(tiny_run, serve_config, shape_png):
    """Regression: a client that sent half its body and then nothing kept its connection (and the buffered
    half) forever: there was no time limit on reading the body. Now: 408 + Connection: close."""
    from optik.serve.app import ServerThread

    with ServerThread(serve_config(tiny_run["best"], upload_timeout=0.5)) as url:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(shape_png)}\r\n\r\n"
        answer, waited = _raw(url, head.encode(), shape_png[: len(shape_png) // 2], wait=10)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 0.3 < waited < 5 and b"connection: close" in answer.lower()
        assert b"upload_timeout=0.5" in answer
        # a slow but steady upload within the limit is served
        chunked = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(shape_png)}\r\n\r\n"
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(chunked.encode())
            step = len(shape_png) // 4 + 1
            for i in range(0, len(shape_png), step):
                time.sleep(0.05)
                s.sendall(shape_png[i : i + step])
            assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_deeply_nested_json_is_422_not_500(tiny_run, make_client):
    """Regression: ``[[[[…]]]]`` deeper than the interpreter's stack raised RecursionError → 500."""
    c = make_client(tiny_run["best"])
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"image":' * 50_000 + b"1" + b"}" * 50_000):
        r = c.post("/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]


def test_oversized_chunked_upload_is_413_and_the_connection_closes(tiny_run, serve_config):
    """No Content-Length: refused once past the limit, answered while the client is still sending, and the
    connection (its body half read) is closed instead of being reused."""
    from optik.serve.app import ServerThread

    with ServerThread(serve_config(tiny_run["best"], max_upload_mb=0.01)) as url:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"4000\r\n" + b"\0" * 0x4000 + b"\r\n"  # 16 KiB: over the 10 KiB limit
        answer, _ = _raw(url, head, chunk, wait=10)
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
