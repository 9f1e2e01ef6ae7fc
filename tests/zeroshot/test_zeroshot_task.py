"""optik zeroshot through the catalog: train a tiny CLIP, predict from its weights file alone, val; hf: CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model
from optik.cli import main
from optik.weights import read_meta as read_metadata
from hf_tiny import write_tiny_hf_clip

DATA = "synthetic:captions?n=96&val=24"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("zs")
    m = Model("cnn", task="zeroshot")
    m.train(data=DATA, epochs=1, imgsz=32, batch=32, embed_dim=16, text_width=16, text_layers=1, text_heads=2,
            holdout="green:triangle,blue:circle", project=str(project), plots=False)  # fmt: skip
    return Path(m.run_dir)


def test_weights_describe_themselves(run: Path) -> None:
    meta = read_metadata(run / "weights" / "best.safetensors")
    assert meta["task"] == "zeroshot" and meta["holdout"] == ["green:triangle", "blue:circle"]
    assert len(meta["classes"]) == 25 and "green triangle" in meta["classes"]
    vocab = meta["model_config"]["vocab"]
    assert {"green", "triangle", "above", "left"} <= set(vocab)
    assert (run / "metrics.csv").read_text().count("\n") == 2


def test_predict_from_the_weights_file_alone(run: Path, tmp_path: Path) -> None:
    img = np.full((40, 40, 3), 128, np.uint8)
    img[10:30, 10:30] = (220, 30, 30)
    results = Model(str(run / "weights" / "best.safetensors"), task="zeroshot").predict(img, labels=["red square", "blue star", "green cross"])
    (r,) = results
    assert list(r.names) == ["red square", "blue star", "green cross"]
    assert r.probs.data.shape == (3,) and float(r.probs.data.sum()) == pytest.approx(1.0, abs=1e-5)
    # Without labels= the trained classes are the label set.
    (r,) = Model(str(run), task="zeroshot").predict(img)
    assert r.probs.data.shape == (25,)


def test_val_reports_zero_shot_and_retrieval(run: Path, tmp_path: Path) -> None:
    metrics = Model(str(run), task="zeroshot").val(project=str(tmp_path))
    assert metrics["chance"] == pytest.approx(1 / 25) and metrics["chance_within_heldout"] == pytest.approx(1 / 2)
    for key in ("top1", "top5", "i2t_R@1", "i2t_R@5", "t2i_R@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["i2t_R@10"] >= metrics["i2t_R@5"] >= metrics["i2t_R@1"]
    report = (Path(metrics["run_dir"]) / "report.md").read_text()
    assert "zero-shot top-1" in report and "retrieval on" in report


def test_train_on_a_classification_source(tmp_path: Path) -> None:
    m = Model("cnn", task="zeroshot")
    out = m.train(data="synthetic:shapes?n=40&size=32&classes=3", epochs=1, imgsz=32, batch=16, embed_dim=16, text_width=16,
                  text_layers=1, text_heads=2, templates=["a {}", "a picture of a {}"], project=str(tmp_path), plots=False)  # fmt: skip
    assert out["chance"] == pytest.approx(1 / 3)
    meta = read_metadata(Path(m.run_dir) / "weights" / "last.safetensors")
    assert meta["templates"] == ["a {}", "a picture of a {}"] and meta["classes"] == ["circle", "square", "triangle"]


def test_bad_keys_are_one_line_errors(run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["zeroshot", "train", f"data={DATA}", "holdout=pink:circle", f"project={tmp_path}"], "holdout"),
        (["zeroshot", "train", "data=synthetic:captions?n=abc", f"project={tmp_path}"], "n='abc'"),
        (["zeroshot", "predict", f"model={run}", "source=nope.png"], "source"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        assert needle in capsys.readouterr().err.replace("\n", " ")


def test_hf_clip_predict_and_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_tiny_hf_clip(tmp_path / "clip")
    img = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    (r,) = Model(f"hf:{d}", task="zeroshot").predict(img, labels=["cat", "dog"], templates=["{}"])
    # Reference: the CLIPModel's own softmax over logits_per_image for the same preprocessed pixels.
    from transformers import CLIPModel, CLIPTokenizer

    from optik.engine.inference import load_trained
    from optik.config import build_config

    task, _, _ = load_trained(build_config("zeroshot", "predict", {"model": f"hf:{d}", "labels": ["cat", "dog"]}))
    x = task.transforms(False)(torch.from_numpy(img).permute(2, 0, 1)).unsqueeze(0)
    ref, tok = CLIPModel.from_pretrained(d).eval(), CLIPTokenizer.from_pretrained(d)
    with torch.no_grad():
        want = ref(pixel_values=x, **tok(["cat", "dog"], padding=True, return_tensors="pt")).logits_per_image.softmax(-1)[0]
    assert torch.allclose(r.probs.data, want, atol=1e-4)
    metrics = Model(f"hf:{d}", task="zeroshot").val(data="synthetic:captions?val=10", project=str(tmp_path))
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["captions"] >= 1
    assert main(["zeroshot", "predict", f"model=hf:{d}", f"source={d}"]) == 2
    assert "labels" in capsys.readouterr().err
    assert main(["zeroshot", "train", f"model=hf:{d}", "data=digits", f"project={tmp_path}"]) == 2
    assert "not implemented" in capsys.readouterr().err
