"""REST API of ``optik serve``: every endpoint, every error status, all three tasks, same answers as
``Model.predict``."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from optik import Model
from optik.errors import ConfigError, ModelError


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def expected(weights, data: bytes, **kw) -> dict:
    """What the in-process API predicts for the same image."""
    r = Model(weights).predict(pixels(data), **kw)[0]
    return json.loads(r.to_json())


def test_health_info_and_page(tiny_run, make_client):
    c = make_client(tiny_run["best"])
    h = c.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["pending"] == 0
    info = c.get("/info").json()
    meta = Model(tiny_run["best"]).meta
    assert info["task"] == "classify" and info["model"] == "cnn" and info["format"] == "pytorch"
    assert info["classes"] == meta["classes"] and info["imgsz"] == 32 and info["controls"] == ["topk"]
    assert info["limits"]["max_upload_mb"] == 10.0 and len(info["colors"]) == len(info["classes"])
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<input type="file"' in page.text and "/static/app.js" in page.text
    for asset, ctype in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        r = c.get(f"/static/{asset}")
        assert r.status_code == 200 and ctype in r.headers["content-type"], asset
    assert "cdn" not in page.text.lower() and "http" not in c.get("/static/app.js").text.replace("http.", "")
    assert c.get("/static/nope.js").status_code == 404


def test_predict_multipart_equals_model_predict(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    r = c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    want = expected(tiny_run["best"], shape_png)
    assert body["predictions"] == want["predictions"] and body["shape"] == [40, 48] and body["path"] == "shape.png"
    assert len(body["predictions"]) == 3 and body["task"] == "classify" and body["summary"].startswith(want["predictions"][0]["name"])
    t = body["timings"]
    assert {"decode", "preprocess", "inference", "postprocess", "total", "queue"} <= set(t)
    assert t["total"] >= t["inference"] > 0 and "overlay" not in body
    # query parameters reach the task: top-k
    r2 = c.post("/predict?topk=2&overlay=true", files={"file": ("shape.png", shape_png, "image/png")}).json()
    assert r2["predictions"] == want["predictions"][:2]
    assert r2["overlay"].startswith("data:image/png;base64,")
    overlay = pixels(base64.b64decode(r2["overlay"].split(",", 1)[1]))
    assert overlay.shape[2] == 3 and overlay.shape[0] >= 40


def test_predict_json_base64_and_raw_body(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    want = expected(tiny_run["best"], shape_png)["predictions"]
    b64 = base64.b64encode(shape_png).decode()
    r = c.post("/predict", json={"image": b64, "name": "cam1.png"})
    assert r.status_code == 200 and r.json()["predictions"] == want and r.json()["path"] == "cam1.png"
    r = c.post("/predict", json={"image": "data:image/png;base64," + b64})  # a browser's data: URL
    assert r.status_code == 200 and r.json()["predictions"] == want
    r = c.post("/predict?name=raw.png", content=shape_png, headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["predictions"] == want and r.json()["path"] == "raw.png"


def test_predict_image_returns_the_overlay_png(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    r = c.post("/predict/image", files={"file": ("shape.png", shape_png, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and float(r.headers["x-optik-time-ms"]) > 0
    want = Model(tiny_run["best"]).predict(pixels(shape_png))[0].plot()
    assert np.array_equal(pixels(r.content), want)  # lossless: exactly Results.plot()


def test_413_upload_too_large(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"], max_upload_mb=0.0005)  # 524 bytes
    assert len(shape_png) > 524
    r = c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")})
    assert r.status_code == 413 and "max_upload_mb=0.0005" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(shape_png), 100):
            yield shape_png[i : i + 100]

    r = c.post("/predict/image", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "content-length" not in {k.lower() for k in r.request.headers}


def test_415_wrong_content_type(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    r = c.post("/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "'text/plain'" in r.json()["detail"] and "multipart field 'file'" in r.json()["detail"]
    r = c.post("/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    r = c.post("/predict/image", content=shape_png, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


def test_422_names_the_problem(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    r = c.post("/predict", files={"file": ("cat.png", b"definitely not a png", "image/png")})
    assert r.status_code == 422 and r.json()["detail"] == "cat.png: not an image (PIL cannot identify the format)"
    r = c.post("/predict", files={"file": ("cut.png", shape_png[: len(shape_png) // 2], "image/png")})
    assert r.status_code == 422 and r.json()["detail"].startswith("cut.png: cannot decode image")
    r = c.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = c.post("/predict", files={"image": ("x.png", shape_png, "image/png")})
    assert r.status_code == 422 and "field 'file'" in r.json()["detail"] and "image" in r.json()["detail"]
    r = c.post("/predict", json={"img": "abc"})
    assert r.status_code == 422 and '"image"' in r.json()["detail"]
    r = c.post("/predict", json={"image": "%%%not base64"})
    assert r.status_code == 422 and "base64" in r.json()["detail"]
    r = c.post("/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    for query, key in (("topk=0", "topk"), ("topk=abc", "topk"), ("topk=1001", "topk")):  # the classifier's control
        r = c.post(f"/predict?{query}", files={"file": ("shape.png", shape_png, "image/png")})
        assert r.status_code == 422 and r.json()["detail"].startswith(f"bad query parameter {key}:"), query
    # A parameter the model does not read (conf: no control of a classifier) is ignored, like any other.
    assert c.post("/predict?conf=1.5", files={"file": ("shape.png", shape_png, "image/png")}).status_code == 200
    # A decompression bomb is refused from its header, before any pixel is decoded.
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")
    r = c.post("/predict", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    assert r.status_code == 422 and "decompression bomb" in r.json()["detail"]


def test_504_timeout_and_the_worker_is_released(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"], timeout=0.2)
    predictor = c.app.state.predictor
    slow_done = threading.Event()
    real = predictor.predict

    def slow(*a, **kw):
        time.sleep(0.6)
        try:
            return real(*a, **kw)
        finally:
            slow_done.set()

    predictor.predict = slow
    t0 = time.perf_counter()
    r = c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")})
    assert r.status_code == 504 and "timeout=0.2" in r.json()["detail"]
    assert time.perf_counter() - t0 < 0.55  # answered at the timeout, not when the job ended
    assert c.get("/health").json()["pending"] == 1  # the overrunning job still holds its worker
    assert slow_done.wait(5)
    time.sleep(0.05)
    assert c.get("/health").json()["pending"] == 0
    predictor.predict = real
    assert c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")}).status_code == 200


def test_503_when_workers_and_queue_are_full(tiny_run, shape_png, serve_config):
    import httpx

    from optik.serve.app import ServerThread

    srv = ServerThread(serve_config(tiny_run["best"], workers=1, max_queue=1))
    gate = threading.Event()
    real = srv.app.state.predictor.predict

    def blocked(*a, **kw):
        gate.wait(10)
        return real(*a, **kw)

    srv.app.state.predictor.predict = blocked
    with srv as url:
        codes: list[int] = []

        def post() -> None:
            codes.append(httpx.post(f"{url}/predict", files={"file": ("s.png", shape_png, "image/png")}, timeout=20).status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]  # one running, one queued
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["pending"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.post(f"{url}/predict", files={"file": ("s.png", shape_png, "image/png")})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "max_queue=1" in r.json()["detail"]
        gate.set()
        for t in threads:
            t.join(20)
        assert codes == [200, 200]
        assert httpx.post(f"{url}/predict", files={"file": ("s.png", shape_png, "image/png")}).status_code == 200


def test_detect_model(det_weights, make_client, scene_png):
    c = make_client(det_weights, "detect")
    info = c.get("/info").json()
    assert info["task"] == "detect" and info["model"] == "house_s" and info["controls"] == ["conf", "iou"]
    assert info["defaults"] == {"conf": 0.25, "iou": 0.7} and info["imgsz"] == 64 and info["subtask"] is None
    assert info["control_specs"]["iou"]["min_exclusive"] and info["empty"] == "nothing found above the threshold"
    for query, key in (("conf=1.5", "conf"), ("iou=abc", "iou"), ("iou=0", "iou")):  # the detector's controls, range-checked
        r = c.post(f"/predict?{query}", files={"file": ("scene.png", scene_png, "image/png")})
        assert r.status_code == 422 and r.json()["detail"].startswith(f"bad query parameter {key}:"), query
    counts = []
    for conf in (0.01, 0.3):
        body = c.post(f"/predict?conf={conf}&iou=0.5", files={"file": ("scene.png", scene_png, "image/png")}).json()
        assert body["predictions"] == expected(det_weights, scene_png, conf=conf, iou=0.5)["predictions"]
        assert all(p["confidence"] >= conf and set(p["box"]) == {"x1", "y1", "x2", "y2"} for p in body["predictions"])
        counts.append(len(body["predictions"]))
    assert counts[0] > counts[1]  # the threshold is applied per request
    png = c.post("/predict/image?conf=0.01", files={"file": ("scene.png", scene_png, "image/png")})
    assert png.status_code == 200 and pixels(png.content).ndim == 3


def test_segment_model(seg_weights, make_client, scene_png):
    c = make_client(seg_weights, "segment")
    info = c.get("/info").json()
    assert info["task"] == "segment" and info["subtask"] == "semantic" and info["controls"] == [] and info["defaults"] == {}
    assert info["colors"][0] is None and info["colors"][1].startswith("#")  # "background" is drawn untinted
    body = c.post("/predict", files={"file": ("scene.png", scene_png, "image/png")}).json()
    assert body["predictions"] == expected(seg_weights, scene_png)["predictions"]
    assert sum(p["pixels"] for p in body["predictions"]) == 64 * 64 and all("rle" in p for p in body["predictions"])


def test_exported_onnx_model_serves_through_the_public_path(tiny_run, make_client, shape_png, tmp_path):
    pytest.importorskip("optik.deploy.export", reason="ONNX export (helper A's optik/deploy/export.py) not present")
    path = Model(tiny_run["best"]).export(format="onnx", out=str(tmp_path / "cnn.onnx"), parity=4)
    c = make_client(path)
    info = c.get("/info").json()
    assert info["format"] == "onnx" and info["task"] == "classify" and info["classes"] == Model(tiny_run["best"]).names
    got = c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")}).json()["predictions"]
    want = expected(tiny_run["best"], shape_png)["predictions"]
    assert [p["class"] for p in got] == [p["class"] for p in want]
    assert np.allclose([p["confidence"] for p in got], [p["confidence"] for p in want], atol=1e-4)


def test_bad_model_and_busy_port_are_one_line_errors(tiny_run, tmp_path, serve_config):
    import socket

    from optik.serve.app import bind, create_app

    with pytest.raises((ConfigError, ModelError), match="nope.safetensors"):
        create_app(serve_config(tmp_path / "nope.safetensors"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"'port'.*127.0.0.1:{port}.*port=0"):
            bind("127.0.0.1", port)


def test_cli_serve_prints_the_url(tiny_run, monkeypatch, capsys):
    import optik.serve.app as app_mod
    from optik.cli import main

    seen = {}

    class FakeServer:
        def run(self, sockets):
            seen["port"] = sockets[0].getsockname()[1]
            sockets[0].close()

    monkeypatch.setattr(app_mod, "_uvicorn_server", lambda app, cfg: FakeServer())
    assert main(["serve", f"model={tiny_run['best']}", "port=0", "workers=2"]) == 0
    out = capsys.readouterr().err.replace("\n", "")
    assert f"http://127.0.0.1:{seen['port']}" in out and "classify" in out


def test_controls_come_from_the_task(tiny_run, make_client, shape_png):
    """/info carries the task's controls with their ranges and defaults; the serve config's value is the default."""
    c = make_client(tiny_run["best"], topk=2)
    info = c.get("/info").json()
    spec = info["control_specs"]["topk"]
    assert info["controls"] == ["topk"] and info["defaults"] == {"topk": 2}
    assert (spec["min"], spec["max"], spec["integer"], spec["slider_max"]) == (1, 1000, True, 3)  # slider: the 3 classes
    assert info["subtask"] is None and info["empty"] == "no classes"
    r = c.post("/predict", files={"file": ("shape.png", shape_png, "image/png")}).json()
    assert len(r["predictions"]) == 2  # the served default, no query parameter


def test_a_new_task_control_needs_no_server_change(det_weights, make_client, scene_png, monkeypatch):
    """A control a task adds (here max_det, a detect predict key) is a validated query parameter at once."""
    from optik.tasks.base import Control
    from optik.tasks.detect import DetectTask

    base = DetectTask.predict_controls
    extra = Control(300, 1, 1000, 1, "Max detections", integer=True)
    monkeypatch.setattr(DetectTask, "predict_controls", lambda self: {**base(self), "max_det": extra})
    c = make_client(det_weights, "detect")
    info = c.get("/info").json()
    assert info["controls"] == ["conf", "iou", "max_det"] and info["defaults"]["max_det"] == 300
    many = c.post("/predict?conf=0.01", files={"file": ("scene.png", scene_png, "image/png")}).json()["predictions"]
    one = c.post("/predict?conf=0.01&max_det=1", files={"file": ("scene.png", scene_png, "image/png")}).json()["predictions"]
    assert len(many) > 1 and one == many[:1]
    r = c.post("/predict?max_det=0", files={"file": ("scene.png", scene_png, "image/png")})
    assert r.status_code == 422 and r.json()["detail"].startswith("bad query parameter max_det:")
