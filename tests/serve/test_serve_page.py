"""The web page in a real headless Chromium (selenium) against uvicorn on 127.0.0.1, and a load test."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,860"]  # fmt: skip


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("Chromium not installed: apt-get install chromium chromium-driver (Debian)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_state(driver, *states: str, timeout: float = 30) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element("tag name", "body").get_attribute("data-state") in states)
    return driver.find_element("tag name", "body").get_attribute("data-state")


def table_rows(driver) -> list[list[str]]:
    # One script call reads the whole table: element-by-element reads raced the page re-rendering its rows
    # (StaleElementReferenceException on a loaded machine).
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results-body tr'))"
        ".map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))"
    )


def test_page_upload_shows_the_api_answer(tiny_run, serve_config, shape_png, browser, tmp_path):
    import json

    from optik.serve.app import ServerThread

    image = tmp_path / "shape.png"
    image.write_bytes(shape_png)
    with ServerThread(serve_config(tiny_run["best"])) as url:
        browser.get(url)
        assert wait_state(browser, "ready", "error") == "ready"
        assert browser.find_element("id", "info-model").text == "cnn"
        assert browser.find_element("id", "info-task").text == "classify"
        assert not browser.find_element("id", "conf").is_enabled() and browser.find_element("id", "topk").is_enabled()

        browser.find_element("id", "file").send_keys(str(image))  # the page predicts on selection
        assert wait_state(browser, "done", "error") == "done", browser.find_element("id", "error").text
        topk = browser.find_element("id", "topk").get_attribute("value")
        api = httpx.post(f"{url}/predict", params={"topk": topk}, files={"file": ("shape.png", shape_png, "image/png")}).json()
        rows = table_rows(browser)
        assert len(rows) == len(api["predictions"]) == 3
        for i, (row, p) in enumerate(zip(rows, api["predictions"])):
            rank, name, conf = row
            assert (int(rank), name) == (i + 1, p["name"])
            assert abs(float(conf) - p["confidence"]) <= 5e-4 + 1e-9  # shown with 3 decimals
        shown = json.loads(browser.find_element("id", "raw-json").get_attribute("textContent"))
        keys = ("path", "shape", "predictions", "summary")
        assert {k: shown[k] for k in keys} == {k: api[k] for k in keys}
        assert browser.find_element("id", "summary").text == api["summary"]
        assert browser.execute_script("return document.getElementById('overlay').naturalWidth") >= 40

        shot = tmp_path / "serve_page.png"
        assert browser.save_screenshot(str(shot))
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

        # A slider change re-predicts with the new value.
        browser.execute_script("const t = document.getElementById('topk'); t.value = 1; t.dispatchEvent(new Event('input'));")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 20).until(lambda d: len(table_rows(d)) == 1 and wait_state(d, "done", "error") == "done")
        assert table_rows(browser)[0][1] == api["predictions"][0]["name"]

        # A file that is not an image: the server's 422 message, readable, on the page.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"this is not a png")
        browser.find_element("id", "file").send_keys(str(bad))
        assert wait_state(browser, "error") == "error"
        err = browser.find_element("id", "error").text
        assert "Prediction failed" in err and "422" in err and "notes.png: not an image" in err
        assert not browser.find_element("id", "results-table").is_displayed()  # no stale result beside the error


def test_load_8_concurrent_clients(tiny_run, serve_config, shape_png, record_property):
    from optik.serve.app import ServerThread
    from optik.serve.loadtest import run_load

    with ServerThread(serve_config(tiny_run["best"], workers=2)) as url:
        stats = run_load(url, shape_png, clients=8, seconds=5.0)
        assert httpx.get(f"{url}/health").json()["pending"] == 0
    print(f"\nload: {stats}")
    for k in ("requests", "rps", "p50_ms", "p95_ms", "errors"):
        record_property(k, stats[k])
    assert stats["errors"] == 0, stats
    assert stats["requests"] >= 8 and stats["p50_ms"] <= stats["p95_ms"]


def test_page_sliders_follow_the_tasks_controls(det_weights, serve_config, browser, monkeypatch):
    """The detector's page: its controls' ranges and defaults from /info, top-k off, and a slider for a control
    the page's HTML never named (built from the task's label and hint)."""
    from optik.serve.app import ServerThread
    from optik.tasks.base import Control
    from optik.tasks.detect import DetectTask

    base = DetectTask.predict_controls
    extra = Control(300, 1, 1000, 1, "Max detections", "Detections kept per image.", integer=True, slider_max=50)
    monkeypatch.setattr(DetectTask, "predict_controls", lambda self: {**base(self), "max_det": extra})
    with ServerThread(serve_config(det_weights, "detect", conf=0.4)) as url:
        browser.get(url)
        assert wait_state(browser, "ready", "error") == "ready"
        attr = lambda i, a: browser.find_element("id", i).get_attribute(a)
        assert browser.find_element("id", "conf").is_enabled() and not browser.find_element("id", "topk").is_enabled()
        assert attr("conf", "value") == "0.4" and browser.find_element("id", "conf-value").text == "0.40"
        assert (attr("iou", "min"), attr("iou", "max"), attr("iou", "step")) == ("0.05", "1", "0.05")
        assert browser.find_element("id", "max_det").is_enabled() and attr("max_det", "max") == "50"
        assert browser.find_element("id", "max_det-value").text == "50"  # the default 300, clamped by the slider
        box = browser.find_element("css selector", '.control[data-control="max_det"]')
        assert "Max detections" in box.text and "Detections kept per image." in box.text
