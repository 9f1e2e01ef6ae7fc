"""objective=devise: the hinge rank loss and the GZSL metric by hand / against scikit-learn, a run end to end, bad keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from optik import Model
from optik.cli import main
from optik.weights import load_state_dict, read_meta
from optik.zeroshot.devise import GZSLMetric, devise_loss, gzsl_from_scores
from optik.zeroshot.objective import load_clip
from optik.zeroshot.prompts import class_embeddings

CAPTIONS = "synthetic:captions?n=128&val=20"


def test_devise_loss_by_hand() -> None:
    scores = torch.tensor([[0.50, 0.45, 0.10, 0.90],   # label 0: wrong seen labels 1, 2 → max(0, .1−.5+.45) + max(0, .1−.5+.1)
                           [0.20, 0.30, 0.35, 0.00]])  # label 2: wrong seen 0, 1 → max(0, .1−.35+.2) + max(0, .1−.35+.3)
    seen = torch.tensor([True, True, True, False])     # label 3 is unseen: never a negative in training
    want = ((0.05 + 0.0) + (0.0 + 0.05)) / 2
    assert float(devise_loss(scores, torch.tensor([0, 2]), seen)) == pytest.approx(want)
    assert float(devise_loss(scores, torch.tensor([0, 2]), seen, margin=0.3)) == pytest.approx(((0.25 + 0.0) + (0.15 + 0.25)) / 2)
    scores.requires_grad_(True)
    devise_loss(scores, torch.tensor([0, 2]), seen).backward()
    assert scores.grad[:, 3].abs().sum() == 0  # the unseen label's score gets no gradient


def test_gzsl_metric_by_hand() -> None:
    # classes 0, 1 seen; 2, 3 unseen. Predictions (argmax over all 4) and restricted to {2, 3}:
    scores = torch.tensor([[.9, .1, .0, .0],   # y0 → 0 ✓
                           [.1, .9, .0, .0],   # y0 → 1 ✗
                           [.0, .9, .1, .0],   # y1 → 1 ✓
                           [.9, .0, .5, .1],   # y2 → 0 ✗ (ZSL: 2 ✓)
                           [.0, .0, .1, .9],   # y3 → 3 ✓ (ZSL ✓)
                           [.0, .0, .9, .1]])  # y3 → 2 ✗ (ZSL ✗)
    labels = torch.tensor([0, 0, 1, 2, 3, 3])
    m = GZSLMetric([True, True, False, False])
    m.update({"scores": scores[:3]}, {"label": labels[:3]})
    m.update({"scores": scores[3:]}, {"label": labels[3:]})
    out = m.compute()
    s, u = (0.5 + 1.0) / 2, (0.0 + 0.5) / 2  # per-class means: seen {0: 1/2, 1: 1}, unseen {2: 0, 3: 1/2}
    assert out["S"] == pytest.approx(s) and out["U"] == pytest.approx(u) and out["H"] == pytest.approx(2 * s * u / (s + u))
    assert out["zsl"] == pytest.approx((1.0 + 0.5) / 2) and out["top1"] == pytest.approx(3 / 6)
    assert (out["seen_images"], out["unseen_images"]) == (3, 3)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_gzsl_equals_sklearn_balanced_accuracy() -> None:
    rng = np.random.default_rng(0)
    seen = np.array([True] * 6 + [False] * 4)
    labels = rng.integers(0, 10, 300)
    scores = rng.normal(size=(300, 10)) + 1.5 * np.eye(10)[labels]
    out = gzsl_from_scores(torch.from_numpy(scores), torch.from_numpy(labels), seen)
    pred = scores.argmax(1)
    on_seen = seen[labels]
    assert out["S"] == pytest.approx(balanced_accuracy_score(labels[on_seen], pred[on_seen]))
    assert out["U"] == pytest.approx(balanced_accuracy_score(labels[~on_seen], pred[~on_seen]))
    unseen = np.flatnonzero(~seen)
    zsl_pred = unseen[scores[~on_seen][:, unseen].argmax(1)]
    assert out["zsl"] == pytest.approx(balanced_accuracy_score(labels[~on_seen], zsl_pred))
    with pytest.raises(ValueError, match="seen and unseen"):
        GZSLMetric([True, True])


@pytest.fixture(scope="module")
def devise_run(clip_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    m = Model("cnn", task="zeroshot")
    metrics = m.train(objective="devise", text_model=str(clip_run), data=CAPTIONS, epochs=1, imgsz=32, batch=16,
                      project=str(tmp_path_factory.mktemp("dv")), plots=False)  # fmt: skip
    return Path(m.run_dir), metrics


def test_devise_on_held_out_pairs(devise_run: tuple[Path, dict], clip_run: Path, tmp_path: Path) -> None:
    run, metrics = devise_run
    meta = read_meta(run / "weights" / "best.safetensors")
    assert meta["objective"] == "devise" and meta["unseen"] == ["green triangle", "blue circle"] and len(meta["classes"]) == 25
    for key in ("S", "U", "H", "zsl"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["seen_images"] > 0 and metrics["unseen_images"] > 0 and metrics["chance_zsl"] == 0.5
    # The stored label embeddings are the CLIP text tower's prompt-ensembled class embeddings; seen = not held out.
    state = load_state_dict(run / "weights" / "best.safetensors")
    clip, cmeta = load_clip(str(clip_run))
    want = class_embeddings(clip, meta["classes"], cmeta["templates"])
    assert torch.allclose(state["label_embeddings"], want, atol=1e-6)
    assert [c for c, s in zip(meta["classes"], state["seen"].tolist()) if not s] == meta["unseen"]
    again = Model(str(run), task="zeroshot").val(project=str(tmp_path))
    assert again["H"] == pytest.approx(metrics["H"]) and again["U"] == pytest.approx(metrics["U"])
    img = np.full((32, 32, 3), 120, np.uint8)
    (r,) = Model(str(run), task="zeroshot").predict(img)
    assert len(r.names) == 25 and float(r.probs.data.sum()) == pytest.approx(1.0, abs=1e-5)


def test_training_never_sees_an_unseen_class(clip_run: Path) -> None:
    from optik.config import build_config
    from optik.tasks.zeroshot import ZeroshotTask

    cfg = build_config("zeroshot", "train", {"objective": "devise", "text_model": str(clip_run), "model": "cnn",
                                             "data": "synthetic:shapes?n=40&size=32&classes=3", "unseen": ["triangle"]})  # fmt: skip
    data = ZeroshotTask(cfg).datasets()
    train_labels = {data.train[i][1]["label"] for i in range(len(data.train))}
    val_labels = {data.val[i][1]["label"] for i in range(len(data.val))}
    assert train_labels == {0, 1} and 2 in val_labels and len(data.train) + len(data.val) == 40


def test_bad_keys_are_config_errors(clip_run: Path, devise_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shapes = "data=synthetic:shapes?n=20&size=32&classes=3"
    cases = [
        (["objective=devise", f"text_model={clip_run}", shapes, "unseen=[hexagon]"], "unseen"),
        (["objective=devise", f"text_model={clip_run}", shapes], "unseen"),
        (["objective=devise", shapes, "unseen=[triangle]"], "text_model"),
        (["objective=devise", f"text_model={devise_run[0]}", shapes, "unseen=[triangle]"], "text_model"),
        (["objective=devise", f"text_model={clip_run}", f"data={CAPTIONS}", "unseen=[red star]"], "unseen"),
        (["objective=devise", f"text_model={clip_run}", "data=digits", "unseen=[3]"], "text_model"),  # "3": not a word it knows
        ([f"data={CAPTIONS}", "unseen=[a]"], "'unseen' applies to objective=devise"),
    ]
    for argv, needle in cases:
        assert main(["zeroshot", "train", *argv, f"project={tmp_path}", "epochs=1", "imgsz=32"]) == 2, argv
        assert needle in capsys.readouterr().err.replace("\n", " "), argv
