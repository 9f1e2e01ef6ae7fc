"""Load for ``optik serve``: a small closed-loop generator (N clients, each posting the same image back to back
for a fixed time: the load test and ``benchmarks/serve_load.py``) and a soak (:func:`run_soak`: a mixed, hostile
load of valid, oversized, truncated, non-image, slow, stalled and unauthenticated requests against a server in its
own process, :class:`SoakServer`: ``tests/serve/test_serve_soak.py`` and ``benchmarks/serve_soak.py``).
Only the loopback interface is ever contacted.

>>> stats = run_load("http://127.0.0.1:8000", open("cat.png", "rb").read(), clients=8, seconds=5)  # doctest: +SKIP
>>> stats["errors"], stats["p50_ms"] < stats["p95_ms"]                                             # doctest: +SKIP
(0, True)
"""

from __future__ import annotations

import base64
import os
import random
import re
import select
import socket
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _run_clients(threads: list[threading.Thread], gate: threading.Barrier, stop_at: list[float], seconds: float,
                 join_timeout: float | None = None) -> float:  # fmt: skip
    """Start the client threads, set the shared deadline, release them together through ``gate`` (the caller
    is its last party) and wait for them; the seconds from release to the last thread's end."""
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t_start = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join(timeout=join_timeout)
    return time.perf_counter() - t_start

def run_load(url: str, image: bytes, *, clients: int = 8, seconds: float = 5.0, path: str = "/predict",
             params: dict[str, Any] | None = None, filename: str = "image.png",
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Each of ``clients`` threads keeps one request in flight (its own keep-alive connection) for
    ``seconds``; returns request count, errors (non-200 or transport failures), requests/s and
    latency percentiles in ms. ``headers`` go with every request (e.g. ``Authorization: Bearer …``)."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            start_gate.wait()
            for _ in range(10_000_000):  # bounded in count as well as in time
                if time.perf_counter() >= stop_at[0]:
                    break
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

    elapsed = _run_clients([threading.Thread(target=client, daemon=True) for _ in range(clients)], start_gate, stop_at, seconds)
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


# --- soak: a mixed, hostile load against a server in its own process -------------------------------------
#
# ``run_soak`` drives ``clients`` threads for ``seconds``; each picks a request *kind* at random (seeded) and
# records its status and latency. Every kind says which statuses are right for it: a valid upload → 200, an
# oversized one → 413, a body trickled slower than ``upload_timeout`` → 408… Kinds that reach the worker pool
# may also get 503 (pool full) and 504 (over ``timeout``): refusals the server makes by design. Anything else —
# above all a 500, or a connection dropped without an answer — is *unexpected*. Every loop is bounded in count
# and time, and only 127.0.0.1 is ever contacted.

BY_DESIGN = frozenset({503, 504})  # the 5xx the server answers on purpose (busy, too slow)


@dataclass
class Kind:
    """One kind of request of the soak mix: ``send(mix, client) -> status`` and the statuses that are right."""

    name: str
    weight: float
    allowed: frozenset[int | str]
    send: Callable[[SoakMix, Any], int | str]
    pooled: bool = False  # reaches the worker pool: 503 / 504 are right answers too

    def ok(self, status: int | str) -> bool:
        return status in self.allowed or (self.pooled and status in BY_DESIGN)


def _png(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class SoakMix:
    """The payloads and request kinds of a soak against ``url`` (``http://127.0.0.1:PORT``); ``api_key`` adds the
    valid header to every request that should pass and the ``no_key`` / ``wrong_key`` kinds."""

    def __init__(self, url: str, *, max_upload_mb: float, upload_timeout: float, api_key: str | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the soak only talks to the loopback interface, not {parts.hostname!r}")
        self.url, self.host, self.port = url, parts.hostname, parts.port
        self.api_key, self.upload_timeout = api_key, upload_timeout
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        rng = np.random.default_rng(seed)
        # Photos-like content (smooth + noise) at a few sizes, including a tall and a wide one.
        self.images = []
        for h, w in ((64, 64), (48, 80), (120, 90), (32, 256)):
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
            self.images.append(np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8))
        self.pngs = [_png(a) for a in self.images]
        # Extreme shapes (strips, a single pixel): their overlays must stay bounded (issue 17: a 1×8000 strip was
        # enlarged to a 1 GB+ overlay and a 500).
        self.thin = [_png(np.full((h, w, 3), 200, np.uint8)) for h, w in ((1, 6000), (6000, 1), (3, 500), (1, 1), (2, 3000))]
        self.jpegs = [_jpeg(a) for a in self.images]
        self.limit = int(max_upload_mb * 1024 * 1024)
        # Incompressible bytes just over the limit (PNG signature first: it looks like an image upload).
        self.oversized = b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, self.limit + 64 * 1024, dtype=np.uint8).tobytes()
        import io

        from PIL import Image

        bomb = io.BytesIO()
        Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx declared in a few KB
        self.bomb = bomb.getvalue()
        self.kinds = self.default_kinds()

    # -- helpers -----------------------------------------------------------------------------------------
    def _post(self, http: Any, path: str, headers: dict[str, str] | None = None, **kw: Any) -> int | str:
        import httpx

        try:
            r = http.post(path, headers={**self.auth, **(headers or {})}, **kw)
            r.read()
        except httpx.HTTPError as e:  # a dropped connection is recorded, never raised
            return type(e).__name__
        if r.status_code == 200:  # the server's own time for the request (the rest is network + client)
            if "x-optik-time-ms" in r.headers:
                http.server_ms = float(r.headers["x-optik-time-ms"])
            elif r.headers.get("content-type", "").startswith("application/json"):
                http.server_ms = r.json().get("timings", {}).get("total")
        return r.status_code

    def raw(self, head: bytes, chunks: list[tuple[bytes, float]], deadline: float) -> int | str:
        """One request over a bare socket: send ``head``, then each ``(data, pause)`` after its pause; stop
        sending as soon as the server answers (an early 401/408/413). Returns the status, ``"closed"`` (no
        answer before the server closed) or ``"timeout"`` (no answer before ``deadline`` seconds)."""
        end = time.monotonic() + deadline
        try:
            with socket.create_connection((self.host, self.port), timeout=deadline) as s:
                s.sendall(head)
                for data, pause in chunks:
                    readable, _, _ = select.select([s], [], [], max(0.0, min(pause, end - time.monotonic())))
                    if readable or time.monotonic() >= end:
                        break
                    try:
                        s.sendall(data)
                    except OSError:  # the server answered and closed while we were sending: read its answer
                        break
                buf = b""
                while b"\r\n" not in buf and time.monotonic() < end:
                    s.settimeout(max(0.01, end - time.monotonic()))
                    part = s.recv(4096)
                    if not part:
                        break
                    buf += part
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return type(e).__name__
        line = buf.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[1].isdigit():
            return int(line[1])
        return "closed" if buf == b"" else "garbled"

    def _head(self, path: str, ctype: str, length: int | None, auth: bool = True) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Type: {ctype}", "Connection: close"]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        if auth and self.api_key:
            lines.append(f"Authorization: Bearer {self.api_key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # -- kinds ---------------------------------------------------------------------------------------------
    def valid_png(self, c: Any) -> int | str:
        data = self.pngs[c.rng.randrange(len(self.pngs))]
        return self._post(c.http, "/predict", files={"file": ("image.png", data, "image/png")})

    def valid_jpeg(self, c: Any) -> int | str:  # raw body → the overlay PNG
        data = self.jpegs[c.rng.randrange(len(self.jpegs))]
        return self._post(c.http, "/predict/image?name=photo.jpg", content=data, headers={"Content-Type": "image/jpeg"})

    def valid_json(self, c: Any) -> int | str:  # base64 JSON, with the overlay
        data = self.pngs[c.rng.randrange(len(self.pngs))]
        return self._post(c.http, "/predict?overlay=true", json={"image": base64.b64encode(data).decode(), "name": "b64.png"})

    def oversized(self, c: Any) -> int | str:
        if c.rng.random() < 0.5:  # honest Content-Length: refused before a byte is read
            return self._post(c.http, "/predict", content=self.oversized, headers={"Content-Type": "image/png"})
        # no Content-Length (chunked): refused while reading, once past the limit
        step = 256 * 1024
        chunks = [(b"%x\r\n" % len(self.oversized[i : i + step]) + self.oversized[i : i + step] + b"\r\n", 0.0)
                  for i in range(0, len(self.oversized), step)] + [(b"0\r\n\r\n", 0.0)]  # fmt: skip
        return self.raw(self._head("/predict", "image/png", None), chunks, deadline=30)

    def truncated(self, c: Any) -> int | str:
        data = (self.pngs + self.jpegs)[c.rng.randrange(2 * len(self.pngs))]
        cut = data[: max(16, int(len(data) * c.rng.uniform(0.2, 0.9)))]
        return self._post(c.http, "/predict", files={"file": ("cut.png", cut, "image/png")})

    def non_image(self, c: Any) -> int | str:
        pick = c.rng.randrange(7)
        if pick == 0:  # text as the body → 415
            return self._post(c.http, "/predict", content=b"hello, world", headers={"Content-Type": "text/plain"})
        if pick == 1:  # a text file in the form → 415
            return self._post(c.http, "/predict", files={"file": ("notes.txt", b"just text", "text/plain")})
        if pick == 2:  # random bytes claiming to be a PNG → 422
            junk = bytes(c.rng.getrandbits(8) for _ in range(c.rng.randrange(1, 4096)))
            return self._post(c.http, "/predict", content=junk, headers={"Content-Type": "image/png"})
        if pick == 3:  # a decompression bomb's header → 422 before any pixel is decoded
            return self._post(c.http, "/predict/image", files={"file": ("bomb.png", self.bomb, "image/png")})
        if pick == 4:  # multipart without a boundary → 400
            return self._post(c.http, "/predict", content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"})
        if pick == 5:  # JSON nested deeper than the interpreter's stack → 422
            return self._post(c.http, "/predict", content=b"[" * 20_000 + b"]" * 20_000,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        return self._post(c.http, "/predict", json={"image": "%% not base64 %%"})  # → 422

    def thin(self, c: Any) -> int | str:
        data = self.thin[c.rng.randrange(len(self.thin))]
        if c.rng.random() < 0.5:
            return self._post(c.http, "/predict/image", content=data, headers={"Content-Type": "image/png"})
        return self._post(c.http, "/predict?overlay=true", files={"file": ("strip.png", data, "image/png")})

    def bad_query(self, c: Any) -> int | str:
        query = ("topk=0", "topk=abc", "topk=100000", "overlay=maybe")[c.rng.randrange(4)]
        return self._post(c.http, f"/predict?{query}", files={"file": ("image.png", self.pngs[0], "image/png")})

    def slow(self, c: Any) -> int | str:
        """A valid PNG trickled in 8 pieces over ~0.4-1.6 s: well within upload_timeout → served."""
        data = self.pngs[c.rng.randrange(len(self.pngs))]
        step = -(-len(data) // 8)
        pause = c.rng.uniform(0.05, 0.2)
        chunks = [(data[i : i + step], pause) for i in range(0, len(data), step)]
        return self.raw(self._head("/predict", "image/png", len(data)), chunks, deadline=self.upload_timeout + 30)

    def stalled(self, c: Any) -> int | str:
        """Half a PNG, then nothing: the server must give up after upload_timeout (408), not wait forever."""
        data = self.pngs[0]
        head = self._head("/predict", "image/png", len(data))
        chunks = [(data[: len(data) // 2], 0.0)] + [(b"", 0.25)] * int(4 * (self.upload_timeout + 10))
        return self.raw(head, chunks, deadline=self.upload_timeout + 10)

    def no_key(self, c: Any) -> int | str:
        import httpx

        try:
            r = c.http.post("/predict", files={"file": ("image.png", self.pngs[0], "image/png")}, headers={"Authorization": ""})
            return r.status_code
        except httpx.HTTPError as e:
            return type(e).__name__

    def wrong_key(self, c: Any) -> int | str:
        return self._post(c.http, "/predict" if c.rng.random() < 0.5 else "/info",
                          headers={"Authorization": f"Bearer wrong-{c.rng.randrange(10**6)}"},
                          files={"file": ("image.png", self.pngs[0], "image/png")})  # fmt: skip

    def health(self, c: Any) -> int | str:
        import httpx

        try:
            return c.http.get("/health").status_code
        except httpx.HTTPError as e:
            return type(e).__name__

    def default_kinds(self) -> list[Kind]:
        f = frozenset
        kinds = [
            Kind("valid_png", 22, f({200}), SoakMix.valid_png, pooled=True),
            Kind("valid_jpeg", 12, f({200}), SoakMix.valid_jpeg, pooled=True),
            Kind("valid_json", 10, f({200}), SoakMix.valid_json, pooled=True),
            Kind("thin", 4, f({200}), SoakMix.thin, pooled=True),
            Kind("oversized", 6, f({413}), SoakMix.oversized),
            Kind("truncated", 8, f({422}), SoakMix.truncated, pooled=True),
            Kind("non_image", 10, f({400, 415, 422}), SoakMix.non_image, pooled=True),
            Kind("bad_query", 6, f({422}), SoakMix.bad_query),
            Kind("slow", 6, f({200, 408}), SoakMix.slow, pooled=True),
            Kind("stalled", 2, f({408}), SoakMix.stalled),
            Kind("health", 4, f({200}), SoakMix.health),
        ]
        if self.api_key:
            kinds += [Kind("no_key", 4, f({401}), SoakMix.no_key), Kind("wrong_key", 4, f({401}), SoakMix.wrong_key)]
        return kinds


def percentiles(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.asarray(ms)
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}


def run_soak(mix: SoakMix, *, clients: int = 16, seconds: float = 120.0, seed: int = 0,
             kinds: list[Kind] | None = None) -> dict[str, Any]:  # fmt: skip
    """``clients`` threads, each sending requests of random kinds (weights, seeded) back to back for ``seconds``.
    Returns per-kind rows (requests, statuses, unexpected, p50/p95/p99 ms) and totals; ``unexpected`` lists
    the first few wrong answers as ``kind: status``."""
    import httpx

    kinds = kinds or mix.kinds
    records: dict[str, list[tuple[int | str, float]]] = {k.name: [] for k in kinds}
    server_ms: dict[str, list[float]] = {k.name: [] for k in kinds}
    lock = threading.Lock()
    gate = threading.Barrier(clients + 1)
    stop_at = [0.0]
    crashed: list[str] = []

    class Client:
        def __init__(self, i: int) -> None:
            self.rng = random.Random(seed * 1000 + i)
            self.http = httpx.Client(base_url=mix.url, timeout=60)

    def loop(i: int) -> None:
        c = Client(i)
        try:
            gate.wait()
            for _ in range(1_000_000):  # bounded in count as well as in time
                if time.perf_counter() >= stop_at[0]:
                    break
                kind = c.rng.choices(kinds, weights=[k.weight for k in kinds])[0]
                c.http.server_ms = None
                t0 = time.perf_counter()
                status = kind.send(mix, c)
                dt = 1e3 * (time.perf_counter() - t0)
                with lock:
                    records[kind.name].append((status, dt))
                    if c.http.server_ms is not None:
                        server_ms[kind.name].append(c.http.server_ms)
        except Exception as e:  # noqa: BLE001 - a client bug must show in the results, not hang the soak
            crashed.append(f"client {i}: {type(e).__name__}: {e}")
        finally:
            c.http.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True, name=f"soak-{i}") for i in range(clients)]
    elapsed = _run_clients(threads, gate, stop_at, seconds, join_timeout=seconds + 120)
    rows, unexpected, total = [], [], 0
    for k in kinds:
        recs = records[k.name]
        statuses = Counter(str(s) for s, _ in recs)
        bad = [s for s, _ in recs if not k.ok(s)]
        unexpected += [f"{k.name}: {s}" for s in bad]
        total += len(recs)
        rows.append({"kind": k.name, "requests": len(recs), "statuses": dict(sorted(statuses.items())),
                     "allowed": sorted(map(str, k.allowed | (BY_DESIGN if k.pooled else frozenset()))),
                     "unexpected": len(bad), **percentiles([dt for _, dt in recs]),
                     "server_p99_ms": percentiles(server_ms[k.name])["p99_ms"]})  # fmt: skip
    every = [(s, dt) for recs in records.values() for s, dt in recs]
    all_status = Counter(str(s) for s, _ in every)
    server_errors = sum(1 for s, _ in every if isinstance(s, int) and s >= 500 and s not in BY_DESIGN)
    valid = [dt for k in kinds if k.name.startswith("valid") for s, dt in records[k.name] if s == 200]
    valid_server = [ms for k in kinds if k.name.startswith("valid") for ms in server_ms[k.name]]
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": total,
        "rps": round(total / elapsed, 1),
        "statuses": dict(sorted(all_status.items())),
        "server_errors": server_errors,  # 5xx other than 503 / 504
        "transport_errors": sum(1 for s, _ in every if isinstance(s, str)),
        "unexpected": len(unexpected),
        "first_unexpected": unexpected[:10],
        "valid_ok": len(valid),
        **{f"valid_{k}": v for k, v in percentiles(valid).items()},
        **{f"valid_server_{k}": v for k, v in percentiles(valid_server).items()},  # time inside the server
        "client_crashes": crashed,
        "stuck_clients": sum(t.is_alive() for t in threads),
        "kinds": rows,
    }


# --- the server under test, in its own process -----------------------------------------------------------


def snapshot(root: str | Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root``, and ``{"dir/": (-1, 0)}`` for every
    folder (so a created folder shows, but not the mtime change of a folder whose files changed); folders named
    in ``skip`` are not entered."""
    root = Path(root)
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        out |= {str(Path(dirpath, d).relative_to(root)) + "/": (-1, 0) for d in dirnames}
        for name in filenames:
            p = Path(dirpath, name)
            try:
                st = p.lstat()
            except OSError:  # removed while walking
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Paths created, modified or removed between two :func:`snapshot` s (folders end in ``/``)."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def changes_outside(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], inside: str | Path) -> dict[str, list[str]]:
    """What changed between two snapshots of one folder outside its sub-folder ``inside`` (relative): ``files``
    (a write there is a failure) and ``dirs`` (folders created or removed: e.g. an empty cache folder a library
    makes on import).

    >>> changes_outside({"run/a": (1, 1)}, {"run/a": (2, 2), "x.txt": (1, 1), "t/": (-1, 0)}, "run")
    {'files': ['x.txt'], 'dirs': ['t/']}
    """
    prefix = str(Path(inside)).rstrip("/") + "/"
    out = [p for p in changed_files(before, after) if not (p + ("" if p.endswith("/") else "/")).startswith(prefix)]
    return {"files": [p for p in out if not p.endswith("/")], "dirs": [p for p in out if p.endswith("/")]}


class SoakServer:
    """``python -m optik serve model=… port=0`` as a child process on 127.0.0.1 whose working directory, ``TMPDIR``
    and ``HOME`` are the folders ``cwd``, ``tmp`` and ``home`` inside ``scratch``: a file the server writes anywhere
    (a relative path, a temp file, a cache) shows up in a :func:`snapshot` of ``scratch``. The key, if any, goes
    through ``OPTIK_API_KEY`` (never on the command line). ``url`` is read from the server's own announcement (no
    port race); ``log`` keeps the tail of its output.

    >>> with SoakServer("runs/classify/train", tmp, workers=2) as srv:   # doctest: +SKIP
    ...     httpx.get(srv.url + "/health").json()["status"]
    'ok'
    """

    def __init__(self, model: str | Path, scratch: str | Path, *, api_key: str | None = None, start_timeout: float = 180,
                 **keys: Any) -> None:  # fmt: skip
        self.model, self.scratch = str(Path(model).resolve()), Path(scratch)
        self.home, self.tmp, self.cwd = (self.scratch / d for d in ("home", "tmp", "cwd"))
        for d in (self.home, self.tmp, self.cwd):  # now: a snapshot taken before __enter__ already has them
            d.mkdir(parents=True, exist_ok=True)
        self.api_key, self.start_timeout, self.keys = api_key, start_timeout, keys
        self.url, self.log = "", deque(maxlen=400)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> SoakServer:
        import sys

        env = {k: v for k, v in os.environ.items() if k != "OPTIK_API_KEY"}
        env |= {"HOME": str(self.home), "TMPDIR": str(self.tmp), "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1",
                "COLUMNS": "200"}  # fmt: skip
        if self.api_key:
            env["OPTIK_API_KEY"] = self.api_key
        args = [f"{k}={v}" for k, v in {"host": "127.0.0.1", **self.keys, "port": 0}.items()]
        self.proc = subprocess.Popen([sys.executable, "-m", "optik", "serve", f"model={self.model}", *args], cwd=self.cwd,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        announced = threading.Event()

        def drain() -> None:  # keeps the pipe from filling up, finds the URL, keeps the tail for reports
            for line in self.proc.stdout:  # ends when the child exits
                self.log.append(line.rstrip())
                m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                if m and not self.url:
                    self.url = m.group(0)
                    announced.set()

        threading.Thread(target=drain, daemon=True, name="soak-server-log").start()
        deadline = time.monotonic() + self.start_timeout
        while not announced.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("optik serve did not start:\n" + "\n".join(list(self.log)[-30:]))
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:  # the URL is printed just before uvicorn binds: wait for /health
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("optik serve announced its URL but /health never answered")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()  # uvicorn's graceful shutdown
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RssSampler:
    """RSS of process ``pid`` every ``interval`` seconds (psutil) in a background thread, as ``(t, MB)``."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        import psutil

        self.proc, self.interval = psutil.Process(pid), interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-rss")

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((round(time.monotonic() - t0, 2), round(self.proc.memory_info().rss / 2**20, 1)))
            except Exception:  # noqa: BLE001 - the process ended
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self, warmup: float, window: float = 10.0) -> dict[str, Any]:
        """RSS after ``warmup`` seconds, judged on the medians of ``window``-second windows: ``start_mb`` / ``end_mb``
        (first and last window), ``drift_pct`` (largest deviation of a window from the first, in %: "flat within
        10 %" means ≤ 10) and ``growth_pct`` (last vs first). Single samples swing with the requests in flight
        (a strip's overlay, a 1 MB body): ``peak_mb`` / ``peak_pct`` report that transient working memory."""
        after = [(t, mb) for t, mb in self.samples if t >= warmup]
        if not after:
            return {"samples": len(self.samples)}
        windows: dict[int, list[float]] = {}
        for t, mb in after:
            windows.setdefault(int((t - after[0][0]) // window), []).append(mb)
        medians = [float(np.median(v)) for _, v in sorted(windows.items())]
        start, end = medians[0], medians[-1]
        return {"samples": len(self.samples), "warmup_s": warmup, "window_s": window, "first_mb": self.samples[0][1],
                "start_mb": round(start, 1), "end_mb": round(end, 1), "window_medians_mb": [round(m, 1) for m in medians],
                "min_mb": min(mb for _, mb in after), "peak_mb": max(mb for _, mb in after),
                "peak_pct": round(100 * (max(mb for _, mb in after) - start) / start, 1),
                "growth_pct": round(100 * (end - start) / start, 1),
                "drift_pct": round(100 * max(abs(m - start) for m in medians) / start, 1)}  # fmt: skip
