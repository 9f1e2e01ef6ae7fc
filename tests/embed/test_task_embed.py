"""optik embed end to end: SSL training through the engine, exact resume, val of any representation, predict,
index and search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from optik.config import build_config
from optik.engine.trainer import Trainer
from optik.errors import ConfigError
from optik.weights import load_state_dict

SHAPES = "synthetic:shapes?n=60&size=32&classes=3&seed=0"
FAST = {"data": SHAPES, "model": "cnn", "imgsz": 32, "batch": 16, "plots": False, "proj_dim": 16, "hidden": 32, "amp": False}


def _train(tmp_path: Path, **kw) -> dict:
    return Trainer(build_config("embed", "train", {**FAST, "project": str(tmp_path), **kw})).fit()


@pytest.mark.parametrize("method", ["simclr", "moco", "dino"])
def test_each_method_trains_and_is_measured_by_knn(tmp_path: Path, method: str) -> None:
    out = _train(tmp_path, method=method, epochs=1)
    assert 0.0 <= out["metrics"]["knn_top1"] <= 1.0 and out["metrics"]["count"] > 0
    keys = set(load_state_dict(out["best"]))
    expected = {"simclr": "projector.0.weight", "moco": "queue", "dino": "center"}[method]
    assert expected in keys  # the method's state travels with the weights
    if method == "moco":  # capped at the 48 training images: no stale duplicate keys as negatives
        assert load_state_dict(out["best"])["queue"].shape == (48, 16)



@pytest.mark.parametrize("method", ["moco", "dino"])
def test_resume_is_exact(tmp_path: Path, method: str, interrupt_after) -> None:
    """Queue, key encoder / teacher, centre and step counter live in the model: an interrupted run resumed
    equals the straight run bit for bit."""
    kw = {"method": method, "epochs": 2, "queue": 24}
    straight = _train(tmp_path / "a", **kw)
    interrupt_after(build_config("embed", "train", {**FAST, "project": str(tmp_path / "b"), "name": "r", **kw}), 1)
    resumed = Trainer(build_config("embed", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    a, b = load_state_dict(straight["last"]), load_state_dict(resumed["last"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_val_of_a_classify_run_equals_sklearn_knn_on_its_backbone(tmp_path: Path, tiny_run: dict) -> None:
    """Majority-vote k-NN (knn_t unset) of a classify run's backbone equals scikit-learn's cosine k-NN on the same
    features; the map and the linear probe are written."""
    from optik.embed.run import load_embedder, validate

    cfg = build_config("embed", "val", {"model": tiny_run["run_dir"], "knn_t": "", "knn_k": 5, "project": str(tmp_path)})
    metrics = validate(cfg)
    assert (Path(metrics["run_dir"]) / "plots" / "embedding_map.png").is_file()
    assert 0 <= metrics["probe_top1"] <= 1
    task, model, cfg = load_embedder(cfg)
    data = task.datasets()

    def feats(split):
        xs, ys = zip(*(split[i] for i in range(len(split))))
        with torch.no_grad():
            return model(torch.stack(xs)).numpy(), np.asarray(ys)

    bx, by = feats(task._bank)
    vx, vy = feats(data.val)
    ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(bx, by).score(vx, vy)
    assert metrics["knn_top1"] == pytest.approx(ref)


def test_hf_vision_encoder_from_a_local_dir(tmp_path: Path) -> None:
    """A tiny random ViT saved locally (never downloaded): its CLS features are evaluated."""
    from transformers import AutoModelForImageClassification, ViTConfig

    from optik.embed.run import validate

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    AutoModelForImageClassification.from_config(cfg).save_pretrained(tmp_path / "vit")
    m = validate(build_config("embed", "val", {"model": f"hf:{tmp_path / 'vit'}", "data": SHAPES, "imgsz": 32, "project": str(tmp_path),
                                              "plots": False}))  # fmt: skip
    assert 0 <= m["knn_top1"] <= 1 and m["count"] == 12


def test_timm_with_real_pretrained_weights_gives_timms_pre_logits(tmp_path: Path, lite0_weights: Path) -> None:
    import timm

    from optik.embed.build import build_embedder
    from optik.weights import load_state_dict as load

    model, _ = build_embedder("timm:tf_efficientnet_lite0", img_size=64, pretrained=str(lite0_weights))
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ref.load_state_dict(load(lite0_weights))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref.eval().forward_head(ref.forward_features(x), pre_logits=True), atol=1e-5)


def test_predict_index_search(tmp_path: Path, image_dir: Path, tiny_run: dict) -> None:
    """Each indexed image finds itself first at cosine 1; files are written."""
    from optik.embed.run import index, predict, search

    common = {"model": tiny_run["run_dir"], "project": str(tmp_path)}
    p = predict(build_config("embed", "predict", {**common, "source": str(image_dir), "save": True}))
    run = Path(p["run_dir"])
    assert len(p["paths"]) == len(json.loads((run / "index.json").read_text())["paths"]) == p["features"].shape[0]
    assert len((run / "predictions.jsonl").read_text().splitlines()) == len(p["paths"])
    idx = index(build_config("embed", "index", {"features": str(run), "project": str(tmp_path)}))
    s = search(build_config("embed", "search", {"index": idx["run_dir"], "source": str(image_dir), "k": 2, "project": str(tmp_path)}))
    for r in s["results"]:
        assert r["hits"][0]["path"] == r["query"] and r["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (Path(s["run_dir"]) / "search.png").is_file()


def test_clear_errors(tmp_path: Path, tiny_run: dict) -> None:
    from optik.embed.run import search, validate

    with pytest.raises(ConfigError, match="index"):
        search(build_config("embed", "search", {"source": tiny_run["run_dir"], "project": str(tmp_path)}))
    with pytest.raises(ConfigError, match="multi-label"):
        validate(build_config("embed", "val", {"model": "cnn", "data": "synthetic:shapes-multi?n=20&size=32", "imgsz": 32,
                                               "project": str(tmp_path)}))  # fmt: skip
    with pytest.raises(ConfigError, match="method"):
        build_config("embed", "train", {"method": "byol"})
