"""POST /embed and list-valued controls (zero-shot ``labels``): 404 for tasks that do not embed, auth on /embed,
the query parameter's checks, and the page's labels text box (headless Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import HTTPException
from test_serve_page import browser, table_rows, wait_state  # noqa: F401  (the page fixtures)

from optik.serve.app import control_params, parse_text_list
from optik.tasks.base import Control, TextListControl


def test_embed_is_404_for_a_task_that_does_not_embed(tiny_run, make_client, shape_png):
    client = make_client(tiny_run["best"])
    assert client.get("/info").json()["embeds"] is False
    r = client.post("/embed", files={"file": ("s.png", shape_png)})
    assert r.status_code == 404 and "does not embed" in r.json()["detail"] and "classify" in r.json()["detail"]
    assert client.get("/embed").status_code == 405


def test_embed_needs_the_key_like_every_endpoint(make_client, shape_png):
    client = make_client("cnn", "embed", imgsz=32, api_key="s3cret-key")
    files = {"file": ("s.png", shape_png)}
    assert client.post("/embed", files=files).status_code == 401
    assert client.post("/embed", files=files, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.post("/embed", files=files, headers={"Authorization": "Bearer s3cret-key"})
    assert r.status_code == 200 and r.json()["dim"] == len(r.json()["embedding"]) > 0


def test_list_control_checks():
    c = TextListControl(None, "Labels", max_items=3, max_chars=5, choices=None)
    assert parse_text_list("labels", " a , b ", c) == ["a", "b"]
    for text, needle in [("", "empty value"), (" , ", "empty value"), ("a,,b", "empty entry"), ("a,a", "repeated"),
                         ("a,b,c,d", "at most 3"), ("abcdef", "longer than 5")]:  # fmt: skip
        with pytest.raises(HTTPException) as e:
            parse_text_list("labels", text, c)
        assert e.value.status_code == 422 and e.value.detail.startswith("bad query parameter labels") and needle in e.value.detail
    fixed = TextListControl(None, "Labels", choices=("cat", "dog"))
    assert parse_text_list("labels", "dog,cat", fixed) == ["dog", "cat"]
    with pytest.raises(HTTPException) as e:
        parse_text_list("labels", "cat,bird", fixed)
    assert "bird" in e.value.detail
    read = control_params({"topk": Control(5, 1, 10, 1, "Top-k", integer=True), "labels": c})
    assert read(topk=None, labels=None) == {"topk": None, "labels": None}  # unset: the served defaults


@pytest.fixture(scope="module")
def zs_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optik import Model

    m = Model("cnn", task="zeroshot")
    m.train(data="synthetic:captions?n=64&val=8", epochs=1, imgsz=32, batch=32, embed_dim=16, text_width=16, text_layers=1,
            text_heads=2, project=str(tmp_path_factory.mktemp("zs")), plots=False)  # fmt: skip
    return Path(m.run_dir)


def test_page_labels_text_box_changes_the_answer(zs_run, serve_config, shape_png, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    from optik.serve.app import ServerThread

    image = tmp_path / "shape.png"
    image.write_bytes(shape_png)
    with ServerThread(serve_config(zs_run, "zeroshot", labels="red circle,blue star")) as url:
        browser.get(url)
        assert wait_state(browser, "ready", "error") == "ready"
        box = browser.find_element("id", "labels")
        assert box.get_attribute("type") == "text" and box.get_attribute("value") == "red circle, blue star"
        browser.find_element("id", "file").send_keys(str(image))
        assert wait_state(browser, "done", "error") == "done"
        assert sorted(row[1] for row in table_rows(browser)) == ["blue star", "red circle"]
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("green cross, purple square, yellow triangle")
        browser.find_element("id", "predict").click()
        wait_state(browser, "busy", "done", "error")
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = sorted(row[1] for row in table_rows(browser) if len(row) > 1)
            if names == ["green cross", "purple square", "yellow triangle"]:
                break
            time.sleep(0.1)
        assert names == ["green cross", "purple square", "yellow triangle"]
        assert browser.find_element("id", "labels-value").text == "(3)"
