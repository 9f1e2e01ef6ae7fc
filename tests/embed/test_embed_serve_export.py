"""optik embed export / serve: features + L2-normalised embedding as ONNX (parity by cosine, ORT == eager,
``optik embed predict model=x.onnx``), from embed and classify runs; ``POST /embed`` equal to predict's features."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model
from optik.cli import main
from optik.config import build_config
from optik.weights import read_exported_meta

DATA = "synthetic:shapes?n=40&size=32&classes=3"


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 3 PNGs (36×30: not the model's size, not square)."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = Model("cnn", task="embed")
    m.train(data=DATA, method="simclr", epochs=1, imgsz=32, batch=16, project=str(tmp_path_factory.mktemp("emb")), plots=False)
    return Path(m.run_dir)


@pytest.fixture(scope="module")
def onnx_file(run: Path) -> Path:
    out = run / "weights" / "best.onnx"
    assert main(["embed", "export", f"model={run}", "parity=6"]) == 0  # next to the weights
    return out


def _features(model: str | Path, source: Path, **kw) -> tuple[list[str], torch.Tensor]:
    from optik.embed.run import predict

    out = predict(build_config("embed", "predict", {"model": str(model), "source": str(source), **kw}))
    return out["paths"], out["features"]


def test_export_parity_and_outputs(run: Path, onnx_file: Path, images: Path) -> None:
    from optik.deploy.runtime import load_exported

    meta = read_exported_meta(onnx_file)
    block = meta["export"]
    assert meta["task"] == "embed" and block["outputs"] == ["features", "embedding"]
    assert block["parity"]["passed"] and block["parity"]["agreement"]["kind"] == "cosine"
    assert block["parity"]["agreement"]["value"] == pytest.approx(1.0, abs=1e-5)
    # ORT on preprocessed images: features == the eager model's, embedding == features / ||features||
    from optik.embed.run import load_embedder
    from optik.engine.inference import eval_preprocess

    task, eager, _ = load_embedder(build_config("embed", "predict", {"model": str(run)}))
    x = eval_preprocess(task)([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in sorted(images.iterdir())])
    feats, emb = load_exported(onnx_file).run(x)
    with torch.no_grad():
        want = eager(x).flatten(1)
    torch.testing.assert_close(feats, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(want, dim=1), atol=1e-5, rtol=1e-4)


def test_predict_with_the_exported_file_equals_eager(run: Path, onnx_file: Path, images: Path) -> None:
    paths, eager = _features(run, images)
    paths2, exported = _features(onnx_file, images)
    assert paths == paths2 and exported.shape == eager.shape
    torch.testing.assert_close(exported, eager, atol=1e-4, rtol=1e-4)
    _, normed = _features(onnx_file, images, normalize=True)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(len(paths)))


def test_export_from_a_classify_run_and_torchscript(tiny_run: dict, tmp_path: Path, images: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = tiny_run["run_dir"]
    out = tmp_path / "backbone.torchscript"
    assert main(["embed", "export", f"model={run}", "format=torchscript", "parity=4", f"out={out}"]) == 0
    assert read_exported_meta(out)["task"] == "embed"
    _, eager = _features(run, images)
    _, exported = _features(out, images)
    torch.testing.assert_close(exported, eager, atol=1e-4, rtol=1e-4)
    assert main(["embed", "export", f"model={out}", f"out={tmp_path / 'again.onnx'}"]) == 2
    assert "already exported" in capsys.readouterr().err
    assert main(["embed", "predict", f"model={out}", f"source={images}", "imgsz=64"]) == 2
    assert "imgsz" in capsys.readouterr().err


def _client(model: str | Path, task: str | None = None, **kw):
    from fastapi.testclient import TestClient

    from optik.serve.app import create_app

    task = task or Model(str(model)).task
    return TestClient(create_app(build_config(task, "serve", {"model": str(model), **kw})))


def test_serve_embed_equals_predict_features(run: Path, onnx_file: Path, images: Path) -> None:
    paths, want = _features(run, images)
    png = (images / Path(paths[0]).name).read_bytes()
    with _client(run) as client, _client(onnx_file) as exported:
        assert client.get("/info").json()["embeds"]
        for c in (client, exported):
            r = c.post("/embed", files={"file": ("0.png", png)})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["dim"] == want.shape[1] and body["path"] == "0.png" and body["task"] == "embed" and "total" in body["timings"]
            torch.testing.assert_close(torch.tensor(body["embedding"]), want[0], atol=1e-4, rtol=1e-4)
        r = client.post("/embed", params={"normalize": "true"}, content=png, headers={"Content-Type": "image/png"})
        assert r.json()["normalized"] and torch.tensor(r.json()["embedding"]).norm() == pytest.approx(1.0, abs=1e-5)
        assert client.post("/predict", files={"file": ("0.png", png)}).status_code == 200  # /predict still answers
        assert client.post("/embed", content=b"not an image", headers={"Content-Type": "image/png"}).status_code == 422


def test_serve_a_fresh_backbone_through_the_embed_loader(images: Path) -> None:
    png = (images / "0.png").read_bytes()
    with _client("cnn", task="embed", imgsz=32) as client:  # a fresh architecture: random init, seed-fixed
        body = client.post("/embed", files={"file": ("0.png", png)}).json()
    _, want = _features("cnn", images, imgsz=32)
    torch.testing.assert_close(torch.tensor(body["embedding"]), want[0], atol=1e-4, rtol=1e-4)
