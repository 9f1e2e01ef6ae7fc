"""``optik serve api_key=…``: every endpoint but ``GET /health`` and the page's own files needs
``Authorization: Bearer <key>`` (401 + ``WWW-Authenticate: Bearer`` otherwise), the key may come from
``OPTIK_API_KEY``, is never echoed, and the page asks for it and keeps it in ``sessionStorage``."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

KEY = "t0p-s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch):
    monkeypatch.delenv("OPTIK_API_KEY", raising=False)


def post_png(c, path: str, data: bytes, **kw):
    return c.post(path, files={"file": ("shape.png", data, "image/png")}, **kw)


def test_key_from_config_or_environment_never_shown(tiny_run, serve_config, monkeypatch):
    from optik.config.serve import API_KEY_ENV

    assert serve_config(tiny_run["best"]).api_key is None
    cfg = serve_config(tiny_run["best"], api_key=KEY)
    assert cfg.api_key == KEY and KEY not in repr(cfg) and KEY not in str(cfg)
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert serve_config(tiny_run["best"]).api_key == "from-env"  # unset key → the environment
    assert serve_config(tiny_run["best"], api_key=KEY).api_key == KEY  # a given key wins
    monkeypatch.setenv(API_KEY_ENV, "")
    assert serve_config(tiny_run["best"]).api_key is None  # an empty variable is no key


def test_a_key_that_cannot_be_sent_is_a_config_error_without_the_key(tiny_run, serve_config):
    from optik.errors import ConfigError
    from optik.serve.app import create_app

    for bad in ("two words", "tab\there", "clé-non-ascii", ""):
        with pytest.raises(ConfigError, match="api_key") as e:
            create_app(serve_config(tiny_run["best"], api_key=bad))
        assert not bad or bad not in str(e.value)


def test_every_endpoint_but_health_and_the_page_needs_the_key(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"], api_key=KEY)
    # open: liveness and the page's own files (the page then asks for the key)
    h = c.get("/health")
    assert h.status_code == 200 and h.json()["auth"] is True
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
    assert c.head("/health").status_code != 401  # (405: the route is GET only, but auth let it through)
    # closed without a key: the API, the schema, unknown paths, other methods on open paths
    for method, path in (("GET", "/info"), ("POST", "/predict"), ("POST", "/predict/image"), ("GET", "/openapi.json"),
                         ("GET", "/nope"), ("POST", "/health")):  # fmt: skip
        r = c.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == 'Bearer realm="optik"', path
        assert "Authorization: Bearer" in r.json()["detail"]
    # the open /static/ prefix reaches only the page's files: a traversal to the API finds nothing
    assert c.get("/static/%2e%2e/info").status_code == 404 and c.get("/static/../info").status_code == 401
    # wrong keys, wrong schemes, empty tokens
    for header in (f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer wrong", f"Basic {KEY}", "Bearer ", KEY, f"Token {KEY}"):
        r = c.get("/info", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["www-authenticate"].startswith("Bearer"), header
        assert KEY not in r.text
    assert 'error="invalid_token"' in c.get("/info", headers={"Authorization": "Bearer wrong"}).headers["www-authenticate"]
    # the right key, scheme case-insensitive (RFC 7235)
    assert c.get("/info", headers=AUTH).status_code == 200
    assert c.get("/info", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    r = post_png(c, "/predict", shape_png, headers=AUTH)
    assert r.status_code == 200 and r.json()["predictions"]
    assert post_png(c, "/predict/image", shape_png, headers=AUTH).headers["content-type"] == "image/png"
    assert post_png(c, "/predict", shape_png).status_code == 401


def test_without_a_key_nothing_changes(tiny_run, make_client, shape_png):
    c = make_client(tiny_run["best"])
    assert c.get("/health").json()["auth"] is False
    assert c.get("/info").status_code == 200 and post_png(c, "/predict", shape_png).status_code == 200


def test_the_key_is_checked_first_and_in_constant_time(tiny_run, make_client, shape_png, monkeypatch):
    """401 comes before 413 / 415 / 422 and before any work: the body is not read, no worker is taken."""
    import hmac

    import optik.serve.app as app_mod

    c = make_client(tiny_run["best"], api_key=KEY, max_upload_mb=0.0005)
    predictor = c.app.state.predictor
    monkeypatch.setattr(predictor, "predict", lambda *a, **kw: pytest.fail("predicted without a key"))
    assert post_png(c, "/predict", shape_png).status_code == 401  # over max_upload_mb: would be 413
    assert c.post("/predict", content=b"hi", headers={"content-type": "text/plain"}).status_code == 401  # 415
    assert post_png(c, "/predict?topk=0", b"x").status_code == 401  # 422
    assert c.get("/health").json()["pending"] == 0
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(app_mod.hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    c.get("/info", headers={"Authorization": "Bearer a"})
    c.get("/info", headers={"Authorization": "Bearer " + "b" * 500})
    assert calls == [(32, 32), (32, 32)]  # digests: equal lengths whatever the key's length


def test_401_arrives_before_the_body_is_sent(tiny_run, serve_config):
    """A real server: an unauthenticated 50 MB upload is answered from its headers alone."""
    from optik.serve.app import ServerThread

    with ServerThread(serve_config(tiny_run["best"], api_key=KEY)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 52428800\r\n\r\n")
            t0 = time.monotonic()
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 401") and time.monotonic() - t0 < 5
            assert b"www-authenticate: Bearer" in head.lower().replace(b"bearer", b"Bearer")
            assert b"connection: close" in head.lower()


def test_cli_says_whether_a_key_is_needed(tiny_run, monkeypatch, capsys):
    """A key from the environment is announced (never printed); no key on every interface is a warning."""
    import optik.serve.app as app_mod
    from optik.cli import main

    class FakeServer:
        def run(self, sockets):
            sockets[0].close()

    monkeypatch.setattr(app_mod, "_uvicorn_server", lambda app, cfg: FakeServer())
    monkeypatch.setenv("OPTIK_API_KEY", KEY)
    assert main(["serve", f"model={tiny_run['best']}", "port=0"]) == 0
    out = capsys.readouterr().err.replace("\n", "")
    assert "API key required" in out and KEY not in out and "warning" not in out
    monkeypatch.delenv("OPTIK_API_KEY")
    assert main(["serve", f"model={tiny_run['best']}", "port=0", "host=0.0.0.0"]) == 0
    out = capsys.readouterr().err.replace("\n", "")
    assert "without a key" in out and "OPTIK_API_KEY" in out


def test_load_generator_sends_the_key(tiny_run, serve_config, shape_png):
    from optik.serve.app import ServerThread
    from optik.serve.loadtest import run_load

    with ServerThread(serve_config(tiny_run["best"], api_key=KEY)) as url:
        assert run_load(url, shape_png, clients=2, seconds=0.5)["statuses"].keys() == {"401"}
        stats = run_load(url, shape_png, clients=2, seconds=0.5, headers=AUTH)
        assert stats["errors"] == 0 and stats["requests"] > 0


# --- the page --------------------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("Chromium not installed: apt-get install chromium chromium-driver (Debian)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,860", f"--user-data-dir={tmp_path / 'chrome-profile'}"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_state(driver, *states: str, timeout: float = 30) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element("tag name", "body").get_attribute("data-state") in states)
    return driver.find_element("tag name", "body").get_attribute("data-state")


def test_page_asks_for_the_key_and_keeps_it_in_the_tab(tiny_run, serve_config, shape_png, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    from optik.serve.app import ServerThread

    image = tmp_path / "shape.png"
    image.write_bytes(shape_png)
    with ServerThread(serve_config(tiny_run["best"], api_key=KEY)) as url:
        browser.get(url)
        assert wait_state(browser, "locked", "ready", "error") == "locked"
        form = browser.find_element("id", "auth")
        assert form.is_displayed() and "needs an API key" in browser.find_element("id", "auth-text").text
        browser.find_element("id", "api-key").send_keys("wrong")
        browser.find_element("id", "auth-submit").click()
        WebDriverWait(browser, 20).until(lambda d: "not accepted" in d.find_element("id", "auth-text").text)
        assert browser.execute_script("return sessionStorage.getItem('optik-api-key')") is None  # a refused key is dropped
        browser.find_element("id", "api-key").send_keys(KEY)
        browser.find_element("id", "auth-submit").click()
        assert wait_state(browser, "ready", "error") == "ready"
        assert not form.is_displayed() and browser.find_element("id", "info-model").text == "cnn"
        assert browser.execute_script("return sessionStorage.getItem('optik-api-key')") == KEY
        assert KEY not in browser.current_url
        browser.find_element("id", "file").send_keys(str(image))
        assert wait_state(browser, "done", "error") == "done", browser.find_element("id", "error").text
        assert browser.find_elements("css selector", "#results-body tr")
        browser.refresh()  # same tab: the key is still there, no prompt
        assert wait_state(browser, "ready", "locked", "error") == "ready"
