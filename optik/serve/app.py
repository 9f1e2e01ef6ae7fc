"""``optik serve``: a FastAPI app (REST API + web page) around one trained or exported model.

    optik serve model=runs/detect/train port=8000            # then open http://127.0.0.1:8000
    curl -F file=@street.jpg 'http://127.0.0.1:8000/predict?conf=0.4'
    curl -F file=@street.jpg http://127.0.0.1:8000/predict/image -o overlay.png

Endpoints: ``GET /`` (the page in ``static/``), ``GET /health``, ``GET /info``, ``POST /predict``
(JSON: ``Results.to_json`` content + timings), ``POST /predict/image`` (PNG overlay) and, for models whose task
embeds images (embed, zeroshot), ``POST /embed`` (JSON: the vector; 404 for other tasks). An image
comes as multipart field ``file``, as JSON ``{"image": "<base64>"}`` or as a raw ``image/*`` body. The
query parameters a model reads are its task's controls (:meth:`~optik.tasks.base.Task.predict_controls`:
``conf``/``iou`` for detection, ``topk`` for classification, ``labels=cat,dog`` for zero-shot…), validated against
their ranges (a list: non-empty, no repeats, an exported file's fixed label set).

Limits, each a clear status code with a one-line ``detail``: body over ``max_upload_mb`` → 413, body
not received within ``upload_timeout`` seconds (a stalled or trickling client) → 408, a body that is
not an image upload → 415, bytes that do not decode → 422 (naming the problem), bad query values →
422 (naming the parameter), all ``workers`` busy and ``max_queue`` waiting → 503, not done within
``timeout`` seconds once the upload is read (queue wait + decode + inference + drawing) → 504. A raw
body may name itself with ``?name=photo.jpg`` (used in messages and ``path``).
Decoding, inference and drawing run on a bounded thread pool, never on the event loop, so
``/health`` answers while the model works.

Authentication (``api_key=`` or the environment variable ``OPTIK_API_KEY``): every request except
``GET /health`` and the page's own files (``GET /``, ``/static/…``) needs ``Authorization: Bearer <key>``,
checked before a byte of the body is read; a missing or wrong key → 401 with ``WWW-Authenticate: Bearer``.
The page asks for the key and keeps it in the tab's ``sessionStorage`` (never in the URL).

>>> from fastapi.testclient import TestClient
>>> app = create_app(build_config("classify", "serve", {"model": "runs/classify/train"}))  # doctest: +SKIP
>>> TestClient(app).post("/predict", files={"file": open("cat.png", "rb")}).json()["predictions"][0]  # doctest: +SKIP
{'class': 0, 'name': 'cat', 'confidence': 0.93}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import inspect
import json
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

from optik.config.serve import ServeConfig
from optik.errors import ConfigError, ImageError
from optik.serve.predictor import Predictor, decode_image
from optik.tasks.base import Control, TextListControl

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
RAW_TYPES = ("application/octet-stream",)  # plus any image/*
# The page loads nothing from elsewhere; the overlay arrives as a data: URL, the picked file as blob:.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff",
}

__all__ = ["BearerAuth", "BoundedPool", "ServerThread", "create_app", "serve"]


class BoundedPool:
    """``workers`` threads plus at most ``max_queue`` waiting jobs; :meth:`submit` returns None when
    full (the caller answers 503 at once instead of letting a backlog grow without bound).

    >>> pool = BoundedPool(workers=1, max_queue=0)
    >>> pool.submit(lambda: 1).result()
    1
    """

    def __init__(self, workers: int, max_queue: int) -> None:
        self.workers, self.max_queue = workers, max_queue
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="optik-serve")
        self._pending = 0
        self._lock = threading.Lock()  # submit() runs on the event loop, _release() on worker threads

    @property
    def pending(self) -> int:
        """Jobs running or waiting."""
        return self._pending

    def submit(self, fn: Callable[[], Any]) -> Future | None:
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                return None
            self._pending += 1
        try:
            fut = self.executor.submit(fn)
        except RuntimeError:  # shutting down
            self._release(None)
            return None
        # Released when the job really ends (or is cancelled while still queued), not when its request
        # times out: a job that overran its 504 still occupies a worker and must still count.
        fut.add_done_callback(self._release)
        return fut

    def _release(self, _: Any) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <key>`` except ``GET``/``HEAD`` of
    ``open_paths`` (exact) and ``open_prefixes``. It answers before the app runs, so a request without the key
    never has its body read, its query validated or a worker taken. Keys are compared as SHA-256 digests
    with :func:`hmac.compare_digest` (constant time, and the key's length does not leak either).

    >>> auth = BearerAuth(None, "s3cret")
    >>> [auth.authorized({"headers": h}) for h in ([(b"authorization", b"Bearer s3cret")], [(b"authorization", b"Bearer x")], [])]
    [True, False, None]
    """

    def __init__(self, app: Any, key: str, open_paths: tuple[str, ...] = ("/", "/health"),
                 open_prefixes: tuple[str, ...] = ("/static/",)) -> None:  # fmt: skip
        self.app, self.open_paths, self.open_prefixes = app, open_paths, open_prefixes
        self._digest = hashlib.sha256(key.encode()).digest()

    def authorized(self, scope: dict[str, Any]) -> bool | None:
        """True: the right key; False: a wrong one; None: no bearer token at all."""
        value = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        scheme, _, token = (value or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return None
        return hmac.compare_digest(hashlib.sha256(token.strip()).digest(), self._digest)

    def is_open(self, scope: dict[str, Any]) -> bool:
        path = scope["path"]
        return scope["method"] in ("GET", "HEAD") and (path in self.open_paths or path.startswith(self.open_prefixes))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.is_open(scope):
            return await self.app(scope, receive, send)
        ok = self.authorized(scope)
        if ok:
            return await self.app(scope, receive, send)
        if ok is None:
            detail, challenge = "missing API key: send the header 'Authorization: Bearer <key>'", 'Bearer realm="optik"'
        else:
            detail, challenge = "wrong API key", 'Bearer realm="optik", error="invalid_token"'
        # The body (if any) stays unread: close the connection rather than read an unauthenticated upload.
        headers = {"WWW-Authenticate": challenge, "Connection": "close"}
        await JSONResponse({"detail": detail}, status_code=401, headers=headers)(scope, receive, send)


def check_api_key(key: str | None) -> str | None:
    """The served key (None: no authentication); a ConfigError that never shows the key when it cannot be
    sent in an HTTP header (it must be printable ASCII without spaces).

    >>> check_api_key("s3cret"), check_api_key(None)
    ('s3cret', None)
    """
    if key is None:
        return None
    if not key or not all(33 <= ord(ch) <= 126 for ch in key):
        raise ConfigError("bad value for 'api_key': use printable ASCII characters without spaces (the value is not shown), "
                          "e.g. api_key=$(openssl rand -hex 24) or the environment variable OPTIK_API_KEY")  # fmt: skip
    return key


def control_params(controls: dict[str, Control | TextListControl]) -> Callable[..., dict[str, Any]]:
    """A FastAPI dependency reading the served task's controls from the query string: one optional, range-checked
    parameter per control (a bad value → 422 naming it); parameters the model does not read are ignored. A
    :class:`~optik.tasks.base.TextListControl` is one comma-separated parameter (``?labels=cat,dog``) read as a list.

    >>> read = control_params({"topk": Control(5, 1, 1000, 1, "Top-k", integer=True), "labels": TextListControl(None, "Labels")})
    >>> list(inspect.signature(read).parameters), read(topk=3, labels=" cat, dog ")
    (['topk', 'labels'], {'topk': 3, 'labels': ['cat', 'dog']})
    """
    params = []
    for name, c in controls.items():
        description = c.label + (f": {c.hint}" if c.hint else "")
        if isinstance(c, TextListControl):
            query = Query(None, description=description + " (comma-separated)", max_length=c.max_items * (c.max_chars + 2))
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=query, annotation=str | None))
            continue
        bounds = {"gt" if c.min_exclusive else "ge": c.min, "le": c.max}
        query = Query(None, description=description, **bounds)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=query,
                                        annotation=(int if c.integer else float) | None))  # fmt: skip
    lists = {n: c for n, c in controls.items() if isinstance(c, TextListControl)}

    def read(**values: Any) -> dict[str, Any]:
        for name, c in lists.items():
            if values.get(name) is not None:
                values[name] = parse_text_list(name, values[name], c)
        return values

    read.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return read


def parse_text_list(name: str, text: str, control: TextListControl) -> list[str]:
    """``"cat, dog"`` → ``["cat", "dog"]``, checked against ``control``; HTTP 422 naming ``name`` when it is empty,
    repeats an entry, is too long or (``control.choices``) names something else.

    >>> parse_text_list("labels", "a,b", TextListControl(None, "Labels", choices=("a", "b", "c")))
    ['a', 'b']
    """
    items = [t.strip() for t in text.split(",")]
    bad = None
    if not any(items):
        bad = "expected a comma-separated list of texts, e.g. cat,dog (got an empty value)"
    elif not all(items):
        bad = f"empty entry in {text!r} (expected texts separated by single commas)"
    elif len(set(items)) != len(items):
        bad = f"repeated entries in {items}"
    elif len(items) > control.max_items:
        bad = f"{len(items)} entries (at most {control.max_items})"
    elif max(map(len, items)) > control.max_chars:
        bad = f"an entry longer than {control.max_chars} characters"
    elif control.choices is not None and not set(items) <= set(control.choices):
        unknown = [t for t in items if t not in control.choices]
        bad = f"{unknown} not among the model's fixed choices ({', '.join(control.choices)})"
    if bad:
        raise HTTPException(422, f"bad query parameter {name}: {bad}")
    return items


def create_app(cfg: ServeConfig) -> FastAPI:
    """The FastAPI app for ``cfg.model`` (loaded now, once: a bad model fails here, not on the first request)."""
    if not cfg.model:
        raise ConfigError("missing key 'model' for serve (e.g. model=runs/classify/train or model=best.onnx)")
    api_key = check_api_key(cfg.api_key)
    if cfg.threads:  # before the model loads: ONNX Runtime sessions read it at creation
        import torch

        torch.set_num_threads(cfg.threads)
    predictor = Predictor(cfg)
    # One throw-away prediction now: lazy imports (OpenCV), allocator and kernel warm-up cost the start-up,
    # not the first user's latency, and a model that cannot run fails before the URL is announced.
    import torch

    size = predictor.cfg.imgsz
    encode_png(predictor.predict(torch.full((3, size, size), 114, dtype=torch.uint8), "warmup").plot())
    pool = BoundedPool(cfg.workers, cfg.max_queue)
    limit = int(cfg.max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown()

    settings = Depends(control_params(predictor.controls))  # the model's query parameters, from its task
    limits = {"max_upload_mb": cfg.max_upload_mb, "timeout": cfg.timeout, "workers": cfg.workers, "max_queue": cfg.max_queue}
    model_info = {**predictor.info(), "limits": limits}  # fixed for the server's life
    app = FastAPI(title="optik serve", version=model_info["optik"], lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.predictor, app.state.pool, app.state.cfg = predictor, pool, cfg
    if api_key is not None:
        app.add_middleware(BearerAuth, key=api_key)

    @app.exception_handler(RequestValidationError)
    async def _bad_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line naming the parameter, like the CLI's ConfigErrors.
        parts = [f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "bad query parameter " + "; ".join(parts)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness + load: jobs running or waiting, and the bound above which requests get 503."""
        return {"status": "ok", "pending": pool.pending, "capacity": pool.workers + pool.max_queue, "auth": api_key is not None}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Task, classes, input size, model, format, the query parameters it reads and the server's limits."""
        return model_info

    async def run_job(request: Request, params: dict[str, Any], render: Callable[[Any], Any],
                      infer: Callable[..., Any] | None = None) -> tuple[Any, dict[str, float]]:  # fmt: skip
        """Read the upload (bounded), then decode → ``infer`` (default: predict) → ``render`` on the pool, under ``timeout``."""
        infer = infer or predictor.predict
        t0 = time.perf_counter()
        data, name = await read_upload(request, limit, cfg.max_upload_mb, cfg.upload_timeout)
        submitted = time.perf_counter()
        times: dict[str, float] = {"upload": 1e3 * (submitted - t0)}

        def job() -> Any:
            start = time.perf_counter()
            times["queue"] = 1e3 * (start - submitted)
            image = decode_image(data, name)
            t1 = time.perf_counter()
            result = infer(image, name, **params)
            t2 = time.perf_counter()
            out = render(result)
            times.update(decode=1e3 * (t1 - start), **result.speed, predict=1e3 * (t2 - t1))
            times["render"] = 1e3 * (time.perf_counter() - t2)
            return out

        fut = pool.submit(job)
        if fut is None:
            raise HTTPException(503, f"server busy: {pool.pending} requests running or queued (workers={cfg.workers}, "
                                     f"max_queue={cfg.max_queue}); retry shortly", headers={"Retry-After": "1"})  # fmt: skip
        try:
            out = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=cfg.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise HTTPException(504, f"prediction did not finish within timeout={cfg.timeout:g} s") from None
        except (ImageError, ConfigError) as e:  # ConfigError: a request setting the model cannot take (the config was checked at start)
            raise HTTPException(422, str(e)) from None
        except Exception as e:
            log.exception("prediction failed")
            raise HTTPException(500, f"prediction failed: {type(e).__name__}: {e}") from None
        times["total"] = 1e3 * (time.perf_counter() - t0)
        return out, {k: round(v, 3) for k, v in times.items()}

    @app.post("/predict")
    async def predict(
        request: Request,
        params: dict[str, Any] = settings,
        overlay: bool = Query(False, description="also return the drawn overlay as a PNG data: URL"),
    ) -> JSONResponse:
        """Predictions as JSON: ``path``, ``shape``, ``predictions`` (``Results.to_json``), ``summary``, ``timings`` (ms)."""

        def render(r: Any) -> dict[str, Any]:
            payload = json.loads(r.to_json())
            payload |= {"task": model_info["task"], "summary": r.verbose()}
            if overlay:
                payload["overlay"] = "data:image/png;base64," + base64.b64encode(encode_png(r.plot())).decode()
            return payload

        payload, times = await run_job(request, params, render)
        return JSONResponse({**payload, "timings": times})

    @app.post("/predict/image", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def predict_image(request: Request, params: dict[str, Any] = settings) -> Response:
        """The image with its predictions drawn, as PNG (``X-Optik-Time-Ms``: server time)."""
        png, times = await run_job(request, params, lambda r: encode_png(r.plot()))
        return Response(png, media_type="image/png", headers={"X-Optik-Time-Ms": f"{times['total']:.1f}"})

    @app.post("/embed")
    async def embed(
        request: Request,
        normalize: bool = Query(False, description="L2-normalise the vector (zero-shot models' embeddings already are)"),
    ) -> JSONResponse:
        """The image's embedding as JSON: ``embedding`` (floats), ``dim``, ``model``, ``normalized``, ``path``, ``timings``
        (ms) — for models whose task embeds images (embed: the pooled feature ``optik embed predict`` writes; zeroshot:
        the image tower's embedding). Other tasks: 404."""
        if not predictor.embeds:  # before the upload is read
            raise HTTPException(404, f"POST /embed: this server's model ({model_info['task']} task) does not embed images; "
                                     "serve an embed or zeroshot model for embeddings, or use POST /predict")  # fmt: skip

        def render(e: Any) -> dict[str, Any]:
            vec = e.vector
            return {"embedding": vec.tolist(), "dim": int(vec.numel()), "model": model_info["model"], "task": model_info["task"],
                    "normalized": bool(normalize or e.normalized), "path": e.path}  # fmt: skip

        payload, times = await run_job(request, {"normalize": normalize}, render, infer=predictor.embed)
        return JSONResponse({**payload, "timings": times})

    return app


def encode_png(rgb: Any) -> bytes:
    """(H, W, 3) uint8 RGB → PNG bytes (OpenCV: several times faster than PIL at equal size)."""
    import cv2

    ok, buf = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _unsupported(what: str) -> HTTPException:
    return HTTPException(415, f"unsupported media type {what}: send an image as multipart field 'file', "
                              'as JSON {"image": "<base64>"}, or as a raw image/* body')  # fmt: skip


async def read_upload(request: Request, limit: int, limit_mb: float, seconds: float = 30.0) -> tuple[bytes, str]:
    """The request's image bytes and a name for messages. Checks the media type before reading, the
    size while reading (a lying or missing Content-Length cannot get past ``limit``) and the time: a
    body not complete within ``seconds`` → 408, so a stalled or trickling client cannot hold its
    connection and a growing buffer forever."""
    media = _media_type(request)
    if media not in ("multipart/form-data", "application/json", *RAW_TYPES) and not media.startswith("image/"):
        raise _unsupported(f"'{media}'" if media else "(no Content-Type)")
    # An early answer leaves the rest of the body unread: the connection cannot serve another request.
    close = {"Connection": "close"}
    too_big = HTTPException(413, f"upload larger than max_upload_mb={limit_mb:g} MB ({limit:,} bytes)", headers=close)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big  # refuse before reading a byte
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_big
    except TimeoutError:
        raise HTTPException(408, f"upload not complete within upload_timeout={seconds:g} s "
                                 f"({len(body):,} bytes received)", headers=close) from None  # fmt: skip
    body = bytes(body)
    if media == "multipart/form-data":
        return await _from_multipart(request, body)
    if media == "application/json":
        return _from_json(body)
    return body, request.query_params.get("name", "upload")


async def _from_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    async def replay() -> dict[str, Any]:  # the body was already read (size-checked) above
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except HTTPException as e:
        raise HTTPException(400, f"malformed multipart body: {e.detail}") from None
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            fields = ", ".join(sorted(form.keys())) or "none"
            raise HTTPException(422, f"multipart field 'file' with an image is missing (fields sent: {fields}); "
                                     "e.g. curl -F file=@image.jpg …")  # fmt: skip
        ctype = (part.content_type or "").split(";")[0].strip().lower()
        if ctype and ctype not in RAW_TYPES and not ctype.startswith("image/"):
            raise _unsupported(f"'{ctype}' for '{part.filename}'")
        return await part.read(), Path(part.filename or "upload").name
    finally:
        await form.close()


def _from_json(body: bytes) -> tuple[bytes, str]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(422, f"request body is not valid JSON ({e})") from None
    except RecursionError:  # [[[[…]]]] nested deeper than the interpreter's stack (was a 500)
        raise HTTPException(422, "request body is not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
        raise HTTPException(422, 'JSON body needs a key "image" with the base64-encoded image')
    text = doc["image"]
    if text.startswith("data:"):  # a data: URL as browsers produce it
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, '"image" is not valid base64') from None
    return data, str(doc.get("name") or "image")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a ConfigError naming the key."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and without it
    # a keep-alive client waits ~40 ms per request (Nagle vs delayed ACK on the headers+body writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"bad value for 'port': cannot listen on {host}:{port} ({e.strerror}); port=0 picks a free one") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: FastAPI, cfg: ServeConfig) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level="info" if cfg.verbose else "warning", access_log=cfg.verbose,
                            timeout_graceful_shutdown=5)  # fmt: skip
    return uvicorn.Server(config)


def serve(cfg: ServeConfig) -> None:
    """Serve ``cfg.model`` with uvicorn until Ctrl-C (blocking); prints the URL first.

    >>> serve(build_config("classify", "serve", {"model": "runs/classify/train", "port": 8000}))  # doctest: +SKIP
    """
    from optik.console import console

    app = create_app(cfg)
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    info = app.state.predictor.info()
    n = len(info["classes"])
    console.print(f"optik serve: {info['task']} model {info['model']} from {cfg.model} ({info['format']}, {n} classes)")
    console.print(f"  page + API on [bold]http://{shown}:{port}[/bold]  (POST /predict, /predict/image; Ctrl-C stops)",
                  soft_wrap=True)  # fmt: skip
    if cfg.api_key:
        console.print("  API key required: Authorization: Bearer <key> (the page asks for it)")
    elif host not in ("127.0.0.1", "::1", "localhost"):
        console.print(f"  [yellow]warning:[/yellow] listening on {host} without a key: anyone who can reach port {port} can use "
                      "the model; set OPTIK_API_KEY (or api_key=)", soft_wrap=True)  # fmt: skip
    _uvicorn_server(app, cfg).run(sockets=[sock])


class ServerThread:
    """The server in a background thread on a free port (tests, benchmarks, notebooks).

    >>> with ServerThread(build_config("classify", "serve", {"model": "runs/classify/train"})) as url:  # doctest: +SKIP
    ...     httpx.get(f"{url}/health").json()["status"]
    'ok'
    """

    def __init__(self, cfg: ServeConfig, app: FastAPI | None = None) -> None:
        self.cfg = cfg.model_copy(update={"port": 0}) if cfg.port else cfg
        self.app = app or create_app(self.cfg)
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        sock = bind(self.cfg.host, 0)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self._server = _uvicorn_server(self.app, self.cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="optik-serve-http")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("optik serve: the background server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
