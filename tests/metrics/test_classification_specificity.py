"""Per-class TP / FP (type I) / FN (type II) / TN, specificity and FPR == scikit-learn, 0/0 included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import multilabel_confusion_matrix, recall_score

from optik.metrics.classification import ClassificationMetrics, format_per_class_table, one_vs_rest


def sk_reference(y: np.ndarray, yp: np.ndarray, c: int) -> dict[str, np.ndarray]:
    """Counts from ``multilabel_confusion_matrix``; specificity as the recall of "not c"
    (``recall_score(zero_division=0)``); FPR as fp / (fp + tn), 0 where no negatives exist."""
    mcm = multilabel_confusion_matrix(y, yp, labels=np.arange(c))  # (C, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp, fn, tp = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 1, 1]
    spec = np.array([recall_score(y != k, yp != k, zero_division=0) for k in range(c)])
    neg = fp + tn
    fpr = np.where(neg > 0, fp / np.maximum(neg, 1), 0.0)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "specificity": spec, "fpr": fpr}


@st.composite
def cases(draw):
    """Targets and predictions over C classes, restricted to subsets so classes go missing from one or both."""
    c = draw(st.integers(1, 9))
    n = draw(st.integers(1, 50))  # sklearn refuses empty inputs; the empty metric is tested below
    g = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    t_classes = g.choice(c, size=draw(st.integers(1, c)), replace=False)
    p_classes = g.choice(c, size=draw(st.integers(1, c)), replace=False)
    return c, g.choice(t_classes, size=n), g.choice(p_classes, size=n)


def run_metric(c: int, y: np.ndarray, yp: np.ndarray) -> dict:
    m = ClassificationMetrics(c, topk=(1,))
    logits = torch.zeros(len(y), c)
    logits[torch.arange(len(y)), torch.from_numpy(yp).long()] = 1.0
    m.update(logits, torch.from_numpy(y).long())
    return m.compute()


@pytest.mark.filterwarnings("ignore:A single label was found")  # recall_score on a one-class binarisation
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_sklearn(case):
    c, y, yp = case
    r = run_metric(c, y, yp)
    ref = sk_reference(y, yp, c)
    pc = r["per_class"]
    for key in ("tp", "fp", "fn", "tn"):
        np.testing.assert_array_equal(pc[key], ref[key], err_msg=key)
    np.testing.assert_allclose(pc["specificity"], ref["specificity"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(pc["fpr"], ref["fpr"], atol=1e-12, rtol=0)
    assert r["specificity_macro"] == pytest.approx(ref["specificity"].mean(), abs=1e-12)
    assert r["fpr_macro"] == pytest.approx(ref["fpr"].mean(), abs=1e-12)
    # The counts are the confusion matrix seen one class at a time.
    cm = sk_confusion_matrix(y, yp, labels=np.arange(c))
    assert np.all(np.asarray(pc["tp"]) + pc["fp"] + pc["fn"] + pc["tn"] == cm.sum())


def test_binary_counts_equal_sklearns_ravel():
    g = np.random.default_rng(3)
    y, yp = g.integers(0, 2, 40), g.integers(0, 2, 40)
    tn, fp, fn, tp = sk_confusion_matrix(y, yp, labels=[0, 1]).ravel()
    pc = run_metric(2, y, yp)["per_class"]
    assert (pc["tp"][1], pc["fp"][1], pc["fn"][1], pc["tn"][1]) == (tp, fp, fn, tn)
    assert pc["specificity"][1] == pytest.approx(tn / (tn + fp))
    assert pc["fpr"][1] == pytest.approx(fp / (fp + tn))
    # one-vs-rest of class 0 is the same matrix with the roles swapped: its FP are class 1's FN
    assert (pc["tp"][0], pc["fp"][0], pc["fn"][0], pc["tn"][0]) == (tn, fn, fp, tp)


def test_zero_division_cases():
    # class 2 absent from targets and predictions: no false positives among 4 negatives -> specificity 1, FPR 0
    r = one_vs_rest(np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]))
    assert r["specificity"][2] == 1.0 and r["fpr"][2] == 0.0 and r["tn"][2] == 4
    # every sample is class 0: it has no negatives, so both rates are 0/0 -> 0 (as recall_score(zero_division=0))
    y = np.zeros(5, int)
    yp = np.array([0, 0, 1, 0, 1])
    r = one_vs_rest(sk_confusion_matrix(y, yp, labels=[0, 1]))
    assert r["specificity"][0] == recall_score(y != 0, yp != 0, zero_division=0) == 0.0 and r["fpr"][0] == 0.0
    assert r["specificity"][1] == pytest.approx(3 / 5) and r["fpr"][1] == pytest.approx(2 / 5)
    # nothing seen at all
    empty = ClassificationMetrics(3).compute()
    assert empty["specificity_macro"] == 0.0 and empty["fpr_macro"] == 0.0 and empty["per_class"]["tn"] == [0, 0, 0]


def test_bad_matrix_is_a_clear_error():
    with pytest.raises(ValueError, match="square"):
        one_vs_rest(np.zeros((2, 3)))


def test_table_shows_rates_and_error_counts():
    g = np.random.default_rng(0)
    y, yp = g.integers(0, 4, 30), g.integers(0, 4, 30)
    r = run_metric(4, y, yp)
    lines = format_per_class_table(r).splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support", "specif.", "FPR", "TP", "FP(I)", "FN(II)", "TN"]
    ref = sk_reference(y, yp, 4)
    for k in range(4):
        cells = next(line for line in lines if line.startswith(f"{k} ")).split()
        assert [float(x) for x in cells[5:7]] == pytest.approx([ref["specificity"][k], ref["fpr"][k]], abs=5e-4)
        assert [int(x) for x in cells[7:]] == [ref[key][k] for key in ("tp", "fp", "fn", "tn")]
    macro = next(line for line in lines if line.startswith("macro avg")).split()
    assert float(macro[6]) == pytest.approx(ref["specificity"].mean(), abs=5e-4)
    # a result without the new keys (an older metrics.json) still prints the classic table
    old = {k: v for k, v in r.items() if k not in ("specificity_macro", "fpr_macro")}
    old["per_class"] = {k: r["per_class"][k] for k in ("precision", "recall", "f1", "support", "names")}
    assert format_per_class_table(old).splitlines()[0].split() == ["class", "precision", "recall", "f1", "support"]


def test_val_writes_them_to_metrics_json_and_report(tiny_run, tmp_path):
    from optik.config import build_config
    from optik.engine.inference import validate

    out = validate(build_config("classify", "val", {"model": tiny_run["run_dir"], "project": str(tmp_path), "plots": False}))
    run = Path(out["run_dir"])
    saved = json.loads((run / "metrics.json").read_text())
    cm = np.asarray(saved["confusion_matrix"])
    ref = one_vs_rest(cm)
    for key in ("tp", "fp", "fn", "tn"):
        assert saved["per_class"][key] == ref[key].tolist()
    assert saved["specificity_macro"] == pytest.approx(ref["specificity_macro"])
    report = (run / "report.md").read_text()
    assert "macro specificity / false-positive rate" in report and "FP(I)" in report and "FN(II)" in report
