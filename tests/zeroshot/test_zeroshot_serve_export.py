"""optik zeroshot export / serve: the image tower with a baked label set as ONNX (parity, predict equal to eager,
other labels refused), /predict?labels= per request, /embed; a tiny hf: CLIP exported the same way."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_tiny import write_tiny_hf_clip
from PIL import Image

from optik import Model
from optik.cli import main
from optik.errors import ConfigError
from optik.weights import read_exported_meta

DATA = "synthetic:captions?n=64&val=8"
LABELS = ["red square", "blue star", "green cross", "yellow circle"]


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for colour in ((220, 30, 30), (30, 30, 220), (30, 200, 30)):
        img = np.full((44, 40, 3), 128, np.uint8)  # not square: the eval transform resizes and crops
        img[8:30, 10:32] = colour
        out.append(np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = Model("cnn", task="zeroshot")
    m.train(data=DATA, epochs=1, imgsz=32, batch=32, embed_dim=16, text_width=16, text_layers=1, text_heads=2,
            project=str(tmp_path_factory.mktemp("zs")), plots=False)  # fmt: skip
    return Path(m.run_dir)


@pytest.fixture(scope="module")
def onnx_file(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zs-export") / "zs.onnx"
    assert main(["zeroshot", "export", f"model={run}", f"labels=[{','.join(LABELS)}]", "parity=8", f"out={out}"]) == 0
    return out


def _probs(results: list) -> torch.Tensor:
    return torch.stack([r.probs.data.float() for r in results])


def test_export_bakes_the_label_set_and_passes_parity(run: Path, onnx_file: Path) -> None:
    meta = read_exported_meta(onnx_file)
    block = meta["export"]
    assert meta["task"] == "zeroshot" and meta["classes"] == LABELS
    assert block["outputs"] == ["logits", "embedding"] and block["postprocess"]["labels"] == LABELS
    assert block["postprocess"]["templates"] == meta["templates"] and meta["templates"]  # the training captions' forms
    assert block["parity"]["passed"] and block["parity"]["images"] == 8
    assert {r["name"] for r in block["parity"]["outputs"]} == {"logits", "embedding"}
    # The data's class names were not what was exported: the file's classes are the labels asked for.
    assert len(Model(str(run), task="zeroshot").predict(np.zeros((8, 8, 3), np.uint8))[0].names) == 25


def test_exported_predict_equals_eager_for_the_same_labels(run: Path, onnx_file: Path, images: list[np.ndarray]) -> None:
    eager = Model(str(run), task="zeroshot").predict(images, labels=LABELS)
    exported = Model(str(onnx_file)).predict(images)  # the baked labels are the default
    assert [list(r.names) for r in exported] == [LABELS] * len(images)
    torch.testing.assert_close(_probs(exported), _probs(eager), atol=1e-4, rtol=1e-4)
    # A subset, in another order: the same columns eager computes for those labels alone.
    subset = ["green cross", "red square"]
    e2 = Model(str(run), task="zeroshot").predict(images, labels=subset)
    x2 = Model(str(onnx_file)).predict(images, labels=subset)
    assert list(x2[0].names) == subset
    torch.testing.assert_close(_probs(x2), _probs(e2), atol=1e-4, rtol=1e-4)


def test_exported_file_refuses_other_labels_and_val(onnx_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="labels.*purple star"):
        Model(str(onnx_file)).predict(np.zeros((32, 32, 3), np.uint8), labels=["red square", "purple star"])
    assert main(["zeroshot", "val", f"model={onnx_file}", f"data={DATA}"]) == 2
    assert "text tower" in capsys.readouterr().err
    assert main(["zeroshot", "export", f"model={onnx_file}", "out=x.onnx"]) == 2
    assert "already exported" in capsys.readouterr().err


def _client(model: Path | str, task: str | None = None, **kw):
    from fastapi.testclient import TestClient

    from optik.config import build_config
    from optik.serve.app import create_app

    task = task or Model(str(model)).task  # what `optik serve model=…` does: the task from the weights' metadata
    return TestClient(create_app(build_config(task, "serve", {"model": str(model), **kw})))


def test_serve_labels_per_request_match_model_predict(run: Path, images: list[np.ndarray]) -> None:
    from optik.config import build_config
    from optik.engine.inference import eval_preprocess, load_trained

    with _client(run) as client:
        info = client.get("/info").json()
        assert info["task"] == "zeroshot" and info["embeds"] and "labels" in info["controls"]
        assert info["control_specs"]["labels"]["kind"] == "list" and len(info["defaults"]["labels"]) == 25
        for labels in (LABELS[:2], ["blue star", "red square", "purple circle"]):
            r = client.post("/predict", params={"labels": ",".join(labels), "topk": 5}, files={"file": ("a.png", _png(images[0]))})
            assert r.status_code == 200, r.text
            rows = r.json()["predictions"]
            (want,) = Model(str(run), task="zeroshot").predict(images[0], labels=labels)
            assert [row["name"] for row in rows] == [labels[i] for i in want.probs.top5]
            assert [row["confidence"] for row in rows] == pytest.approx([float(c) for c in want.probs.top5conf], abs=1e-5)
        r = client.post("/predict", files={"file": ("a.png", _png(images[0]))})  # no labels=: the trained classes
        assert r.status_code == 200 and len(r.json()["predictions"]) == 5
        for bad, needle in (("", "empty"), ("cat,,dog", "empty entry"), ("cat,cat", "repeated")):
            r = client.post("/predict", params={"labels": bad}, files={"file": ("a.png", _png(images[0]))})
            assert r.status_code == 422 and "labels" in r.json()["detail"] and needle in r.json()["detail"], r.text
        # /embed: the image tower's L2-normalised embedding, as the task computes it
        r = client.post("/embed", files={"file": ("a.png", _png(images[1]))})
        assert r.status_code == 200, r.text
        body = r.json()
        task, model, _ = load_trained(build_config("zeroshot", "predict", {"model": str(run)}))
        with torch.no_grad():
            want = model.encode_image(eval_preprocess(task)([torch.from_numpy(images[1]).permute(2, 0, 1)]))[0]
        assert body["dim"] == 16 == len(body["embedding"]) and body["task"] == "zeroshot"
        torch.testing.assert_close(torch.tensor(body["embedding"]), want, atol=1e-5, rtol=1e-5)


def test_serve_exported_file_labels_and_embed(run: Path, onnx_file: Path, images: list[np.ndarray]) -> None:
    png = _png(images[2])
    with _client(onnx_file) as client, _client(run) as eager:
        info = client.get("/info").json()
        assert info["format"] == "onnx" and info["classes"] == LABELS and info["control_specs"]["labels"]["choices"] == LABELS
        r = client.post("/predict", params={"labels": "green cross,red square"}, files={"file": ("c.png", png)})
        e = eager.post("/predict", params={"labels": "green cross,red square"}, files={"file": ("c.png", png)})
        assert r.status_code == e.status_code == 200
        assert [p["name"] for p in r.json()["predictions"]] == [p["name"] for p in e.json()["predictions"]]
        assert [p["confidence"] for p in r.json()["predictions"]] == pytest.approx([p["confidence"] for p in e.json()["predictions"]], abs=1e-4)
        r = client.post("/predict", params={"labels": "red square,purple star"}, files={"file": ("c.png", png)})
        assert r.status_code == 422 and "labels" in r.json()["detail"] and "purple star" in r.json()["detail"]
        x, y = client.post("/embed", files={"file": ("c.png", png)}).json(), eager.post("/embed", files={"file": ("c.png", png)}).json()
        torch.testing.assert_close(torch.tensor(x["embedding"]), torch.tensor(y["embedding"]), atol=1e-4, rtol=1e-4)


def test_hf_clip_export_parity_and_predict(tmp_path: Path, images: list[np.ndarray]) -> None:
    d = write_tiny_hf_clip(tmp_path / "clip")
    out = tmp_path / "clip.onnx"
    labels = ["cat", "dog", "bird"]
    Model(f"hf:{d}", task="zeroshot").export(labels=labels, data="synthetic:captions?n=8&val=4", parity=4, out=str(out))
    meta = read_exported_meta(out)
    assert meta["export"]["parity"]["passed"] and meta["classes"] == labels and meta["imgsz"] == 32
    eager = Model(f"hf:{d}", task="zeroshot").predict(images, labels=labels)
    exported = Model(str(out)).predict(images)
    torch.testing.assert_close(_probs(exported), _probs(eager), atol=1e-4, rtol=1e-4)
    # Served, the hf: model runs at its processor's size (32 px), and /predict?labels= equals Model.predict
    with _client(f"hf:{d}", task="zeroshot", labels="car,tree") as client:  # a model without classes needs default labels
        assert client.get("/info").json()["imgsz"] == 32
        r = client.post("/predict", params={"labels": "cat,dog,bird"}, files={"file": ("a.png", _png(images[0]))})
        assert r.status_code == 200, r.text
        got = {p["name"]: p["confidence"] for p in r.json()["predictions"]}
        assert got == pytest.approx(dict(zip(labels, eager[0].probs.data.tolist())), abs=1e-5)
