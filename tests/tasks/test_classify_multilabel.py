"""Multi-label classification end to end: `optik classify train data=synthetic:shapes-multi` learns
above chance, stores per-class thresholds, val reproduces its metrics, predict returns label sets that
agree with val (scikit-learn), ONNX keeps sigmoid semantics; losses and key refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score

from optik import Model
from optik.cli import main
from optik.config import build_config
from optik.data.sources import load_classification_data
from optik.errors import ConfigError
from optik.results import Results
from optik.tasks.classify import ClassifyTask, asymmetric_loss, multilabel_loss
from optik.weights import resolve_model_arg

DATA = "synthetic:shapes-multi?n=320&size=32&classes=3&difficulty=0.2&seed=0"
TINY = "synthetic:shapes-multi?n=24&size=16&classes=3"


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-epoch cnn run through the CLI (≈10 s on a free core): 256 train / 64 val images, 3 classes."""
    project = tmp_path_factory.mktemp("ml")
    rc = main(["classify", "train", f"data={DATA}", "model=cnn", "epochs=10", "imgsz=32", "batch=32", "lr=0.01",
               f"project={project}", "name=ml"])  # fmt: skip
    assert rc == 0
    return project / "classify" / "ml"


def test_train_learns_above_chance_and_stores_thresholds(ml_run):
    rows = list(csv.DictReader((ml_run / "metrics.csv").read_text().splitlines()))
    assert {"val/mAP", "val/mAP_micro", "val/f1_macro", "val/hamming_loss", "val/subset_accuracy"} <= set(rows[0])
    val = load_classification_data(DATA).val
    chance = float(val.label_matrix().mean())  # a random ranking's expected AP ≈ the positive rate
    best = max(float(r["val/mAP"]) for r in rows)
    assert best > chance + 0.15, (best, chance)
    _, _, meta = resolve_model_arg(str(ml_run / "weights" / "best.safetensors"))
    assert meta["multilabel"] is True and meta["classes"] == ["circle", "square", "triangle"]
    t = meta["thresholds"]
    assert len(t) == 3 and all(0 < x < 1 for x in t)
    report = (ml_run / "report.md").read_text()
    assert "**mAP**" in report and "threshold" in report and "top-1" not in report
    for png in ("per_class_ap.png", "val_predictions.png", "training_curves.png"):
        assert (ml_run / "plots" / png).is_file(), png


def test_val_reproduces_map_and_predict_label_sets_agree_with_it(ml_run, tmp_path):
    m = Model(str(ml_run))
    metrics = m.val(project=str(tmp_path))  # data, split and imgsz from the weights
    rows = list(csv.DictReader((ml_run / "metrics.csv").read_text().splitlines()))
    best_row = max(rows, key=lambda r: float(r["val/mAP"]))
    assert metrics["mAP"] == pytest.approx(float(best_row["val/mAP"]), abs=1e-12)
    _, _, meta = resolve_model_arg(str(ml_run / "weights" / "best.safetensors"))
    assert metrics["thresholds"] == pytest.approx(meta["thresholds"])  # val decides with the stored thresholds

    val = load_classification_data(DATA).val
    results = m.predict([val.load(i).permute(1, 2, 0).numpy() for i in range(len(val))])
    y = val.label_matrix().astype(int)
    pred = np.zeros_like(y)
    scores = np.stack([r.probs.data.numpy() for r in results])
    for i, r in enumerate(results):
        assert r.probs.multilabel and r.probs.labels == sorted(r.probs.labels, key=lambda k: -float(r.probs.data[k]))
        pred[i, r.probs.labels] = 1
    # predict's label sets and scores give val's numbers (scikit-learn on predict's output)
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert metrics["mAP"] == pytest.approx(average_precision_score(y, scores, average="macro"), abs=1e-6)
    assert metrics["f1_macro"] == pytest.approx(metrics["f1_macro_tuned"], abs=1e-12)  # the thresholds were tuned here
    js = json.loads(results[0].to_json())
    assert js["labels"] == [m.names[k] for k in results[0].probs.labels]
    assert {row["name"] for row in js["predictions"] if row["positive"]} == set(js["labels"])
    assert results[0].verbose() == (", ".join(f"{m.names[k]} {float(results[0].probs.data[k]):.2f}"
                                              for k in results[0].probs.labels) or "no labels")  # fmt: skip


def test_onnx_export_keeps_sigmoid_label_sets(ml_run, tmp_path):
    pytest.importorskip("onnxruntime")
    m = Model(str(ml_run / "weights" / "best.safetensors"))
    onnx = m.export(format="onnx", out=str(tmp_path / "ml.onnx"), parity=8)
    _, _, emeta = resolve_model_arg(str(onnx))
    post = emeta["export"]["postprocess"]
    assert post["type"] == "sigmoid" and post["thresholds"] == pytest.approx(emeta["thresholds"])
    assert emeta["export"]["parity"]["agreement"]["kind"] == "labels" and emeta["export"]["parity"]["passed"]
    val = load_classification_data(DATA).val
    images = [val.load(i).permute(1, 2, 0).numpy() for i in range(6)]
    eager, exported = m.predict(images), Model(str(onnx)).predict(images)
    for a, b in zip(eager, exported):
        assert b.probs.multilabel and a.probs.labels == b.probs.labels
        torch.testing.assert_close(a.probs.data, b.probs.data, atol=1e-5, rtol=0)
        assert not torch.allclose(b.probs.data.sum(), torch.tensor(1.0))  # independent sigmoids, not a softmax


def test_fitness_key_and_kind_mismatch(ml_run, tmp_path):
    task = ClassifyTask(build_config("classify", "val", {"model": str(ml_run), "data": "synthetic:shapes?n=12&size=16&classes=3"}),
                        meta=resolve_model_arg(str(ml_run / "weights" / "best.safetensors"))[2])  # fmt: skip
    assert task.fitness_key == "mAP"
    with pytest.raises(ConfigError, match="single-label but the model was trained multi-label"):
        task.datasets()
    single = ClassifyTask(build_config("classify", "train", {"data": "synthetic:shapes?n=12&size=16&classes=3", "imgsz": 16}))
    single.datasets()
    assert single.fitness_key == "top1" and "multilabel" not in single.checkpoint_meta()


def _task(**keys) -> ClassifyTask:
    task = ClassifyTask(build_config("classify", "train", {"data": TINY, "imgsz": 16, **keys}))
    task.datasets()
    return task


@pytest.mark.parametrize(
    ("keys", "match"),
    [({"loss": "ce"}, "ce .*needs one label per image.*multi-label"),
     ({"label_smoothing": 0.1}, "'label_smoothing' applies to single-label"),
     ({"sampler": "weighted"}, "'sampler': weighted balances one label per image"),
     ({"class_weights": True, "loss": "asl"}, "'class_weights' is BCE's pos_weight"),
     ({"teacher": "runs/x"}, "'teacher' distils softmax outputs"),
     ({"asl_gamma_neg": 2.0}, "'asl_gamma_neg' needs loss=asl"),
     ({"loss": "asl", "focal_gamma": 1.0}, "'focal_gamma' needs loss=focal")],
)  # fmt: skip
def test_keys_that_do_not_fit_multilabel_data_are_refused(keys, match):
    with pytest.raises(ConfigError, match=match):
        _task(**keys)


@pytest.mark.parametrize("loss", ["bce", "asl", "focal"])
def test_multilabel_losses_are_refused_on_single_label_data(loss):
    with pytest.raises(ConfigError, match=f"'loss': {loss} is a multi-label loss.*one label per image"):
        ClassifyTask(build_config("classify", "train", {"data": "synthetic:shapes?n=12&size=16", "loss": loss})).datasets()


def test_cli_refusal_is_one_line(tmp_path, capsys):
    assert main(["classify", "train", "data=synthetic:shapes?n=12&size=16", "loss=asl", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optik: error:") and "multi-label loss" in err and len(err.splitlines()) == 1


def test_task_losses_use_the_configured_parameters():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g) * 3, (torch.rand(8, 3, generator=g) < 0.5).float()
    assert _task().loss(x, y)["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(x, y).item())
    asl = _task(loss="asl", asl_gamma_neg=2.0, asl_gamma_pos=1.0, asl_clip=0.1)
    assert asl.loss(x, y)["loss"] == pytest.approx(asymmetric_loss(x, y, gamma_neg=2, gamma_pos=1, clip=0.1).item())
    from torchvision.ops import sigmoid_focal_loss

    focal = _task(loss="focal", focal_gamma=1.5, focal_alpha=-1)
    assert focal.loss(x, y)["loss"] == pytest.approx(sigmoid_focal_loss(x, y, alpha=-1, gamma=1.5, reduction="mean").item())
    weighted = _task(class_weights=True)  # BCE pos_weight = negatives / positives per class
    labels = load_classification_data(TINY).train.label_matrix()
    pos = labels.sum(0)
    expected = torch.tensor((len(labels) - pos) / pos, dtype=torch.float32)
    torch.testing.assert_close(weighted._pos_weight, expected)
    assert weighted.loss(x, y)["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(x, y, pos_weight=expected).item())


def _asl_reference(x: torch.Tensor, y: torch.Tensor, gn: float, gp: float, m: float) -> torch.Tensor:
    """The paper's equations in probability space, term by term (float64)."""
    p = torch.sigmoid(x.double())
    pm = (p - m).clamp(min=0)
    pos = (1 - p) ** gp * torch.log(p)
    neg = pm**gn * torch.log(1 - pm)
    return -(y * pos + (1 - y) * neg).mean()


@pytest.mark.parametrize(("gn", "gp", "m"), [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (0.5, 0.5, 0.0)])
def test_asymmetric_loss_matches_the_paper_and_has_finite_gradients(gn, gp, m):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, generator=g, dtype=torch.float64) * 2, (torch.rand(16, 5, generator=g) < 0.3).double()
    assert asymmetric_loss(x, y, gamma_neg=gn, gamma_pos=gp, clip=m).item() == pytest.approx(_asl_reference(x, y, gn, gp, m).item(), rel=1e-10)
    assert torch.autograd.gradcheck(lambda t: asymmetric_loss(t, y, gamma_neg=gn, gamma_pos=gp, clip=m), (x.clone().requires_grad_(),))
    extreme = torch.tensor([[60.0, -60.0, 0.0, 30.0]], requires_grad=True)  # saturated sigmoids
    asymmetric_loss(extreme, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), gamma_neg=gn, gamma_pos=gp, clip=m).backward()
    assert torch.isfinite(extreme.grad).all()


def test_asl_without_focusing_or_clip_is_bce_and_bad_kind_is_refused():
    x, y = torch.randn(6, 4), (torch.rand(6, 4) < 0.5).float()
    torch.testing.assert_close(asymmetric_loss(x, y, gamma_neg=0, gamma_pos=0, clip=0), F.binary_cross_entropy_with_logits(x, y))
    with pytest.raises(ConfigError, match="multi-label losses"):
        multilabel_loss(x, y, "ce")


def test_mixup_and_cutmix_mix_multi_hot_targets():
    """torchvision's MixUp / CutMix take (B, C) multi-hot targets: each batch is mixed with itself rolled
    by one, targets by the same share lam as the pixels (MixUp: a blend; CutMix: the pasted box's area)."""
    task = _task(mixup=0.4, cutmix=0.4)
    mix = task.batch_transform()
    data = task.datasets().train
    x = torch.stack([data[i][0] for i in range(12)])
    y = torch.stack([data[i][1] for i in range(12)])
    xr, yr = x.roll(1, 0), y.roll(1, 0)
    i, c = [int(v) for v in torch.nonzero(y != yr)[0]]  # an entry the mixing can move
    torch.manual_seed(0)
    kinds = set()
    for _ in range(10):
        xm, ym = mix(x.clone(), y.clone())
        lam = float((ym[i, c] - yr[i, c]) / (y[i, c] - yr[i, c]))
        torch.testing.assert_close(ym, lam * y + (1 - lam) * yr, atol=1e-5, rtol=0)  # one share for every label
        if torch.allclose(xm, lam * x + (1 - lam) * xr, atol=1e-5):
            kinds.add("mixup")
        else:  # CutMix: a box of the rolled batch pasted, covering 1 - lam of the image
            pasted = ((xm == xr) & (x != xr)).all(1).float().mean()
            assert abs(float(pasted) - (1 - lam)) < 0.02
            kinds.add("cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_results_without_thresholds_are_single_label_and_unchanged():
    r = Results(np.zeros((4, 4, 3), np.uint8), path="a", names=["a", "b", "c"], probs=torch.tensor([0.1, 0.7, 0.2]))
    js = json.loads(r.to_json())
    assert list(js) == ["path", "shape", "predictions"] and not r.probs.multilabel
    assert [set(row) for row in js["predictions"]] == [{"class", "name", "confidence"}] * 3
    assert r.verbose() == "b 0.70, c 0.20, a 0.10" and r.probs.labels == [1]
    ml = Results(np.zeros((4, 4, 3), np.uint8), path="a", names=["a", "b", "c"], probs=torch.tensor([0.1, 0.7, 0.2]),
                 thresholds=0.9, topk=1)  # fmt: skip
    assert ml.probs.labels == [] and ml.verbose() == "no labels" and json.loads(ml.to_json())["labels"] == []
    assert [row["name"] for row in ml.summary()] == ["b"]  # the top-k still listed, not positive
    assert ml.plot().dtype == np.uint8
    with pytest.raises(ValueError, match="2 thresholds for 3 classes"):
        Results(np.zeros((4, 4, 3), np.uint8), path="a", names=["a", "b", "c"], probs=torch.ones(3), thresholds=[0.5, 0.5])
