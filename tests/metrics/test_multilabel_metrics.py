"""MultiLabelMetrics must equal scikit-learn on multi-hot data (average precision, F1, Hamming loss,
subset accuracy), edge cases included; its thresholds must maximise F1 and agree with predict."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

from optik.errors import ConfigError
from optik.metrics.base import Metric
from optik.metrics.multilabel import (
    MultiLabelMetrics,
    average_precision,
    best_f1_thresholds,
    format_multilabel_table,
)
from optik.results import Results


@st.composite
def multilabel_batches(draw):
    """Random (N, C) logits — coarsely rounded sometimes, so scores tie — and multi-hot targets whose
    columns may be all negative (a class with no positive) and rows all negative (an unlabelled image)."""
    c = draw(st.integers(2, 8))
    n = draw(st.integers(1, 50))
    g = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    logits = g.normal(0, 2, (n, c)).astype(np.float32)
    if draw(st.booleans()):
        logits = np.round(logits * 2) / 2  # ties within a class
    rate = draw(st.floats(0.0, 1.0))
    y = (g.random((n, c)) < rate).astype(np.int64)
    if draw(st.booleans()):
        y[:, g.integers(c)] = 0  # a class with no positive image
    if draw(st.booleans()):
        y[g.integers(n)] = 0  # an image with no label
    return torch.from_numpy(logits), torch.from_numpy(y)


def _sk(fn, *args, **kw):
    with warnings.catch_warnings():  # "No positive class found in y_true": sklearn gives AP 0, as we do
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kw)


def _decisions(logits: torch.Tensor, thresholds) -> np.ndarray:
    """What predict decides: float32 sigmoid scores >= float32 thresholds (Results.probs.labels)."""
    return (torch.sigmoid(logits.float()) >= torch.as_tensor(thresholds, dtype=torch.float32)).numpy().astype(np.int64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multilabel_batches())
def test_matches_sklearn(batch):
    logits, targets = batch
    n, c = targets.shape
    m = MultiLabelMetrics(c)
    m.update(logits, targets)
    r = m.compute()
    y, s = targets.numpy(), logits.numpy()
    yp = _decisions(logits, 0.5)

    assert r["count"] == n
    np.testing.assert_allclose(r["per_class"]["ap"], _sk(average_precision_score, y, s, average=None), atol=1e-12, rtol=0)
    assert r["mAP"] == pytest.approx(_sk(average_precision_score, y, s, average="macro"), abs=1e-12)
    micro = _sk(average_precision_score, y.ravel(), s.ravel()) if y.any() else 0.0  # sklearn: 0 with a warning
    assert r["mAP_micro"] == pytest.approx(micro, abs=1e-12)
    for avg in ("macro", "micro"):
        p, rc, f, _ = _sk(precision_recall_fscore_support, y, yp, average=avg, zero_division=0)
        assert r[f"precision_{avg}"] == pytest.approx(p, abs=1e-12)
        assert r[f"recall_{avg}"] == pytest.approx(rc, abs=1e-12)
        assert r[f"f1_{avg}"] == pytest.approx(f, abs=1e-12)
        assert r[f"f1_{avg}"] == pytest.approx(_sk(f1_score, y, yp, average=avg, zero_division=0), abs=1e-12)
    p, rc, f, sup = _sk(precision_recall_fscore_support, y, yp, average=None, zero_division=0)
    pc = r["per_class"]
    np.testing.assert_allclose(pc["precision"], p, atol=1e-12, rtol=0)
    np.testing.assert_allclose(pc["recall"], rc, atol=1e-12, rtol=0)
    np.testing.assert_allclose(pc["f1"], f, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(pc["support"], sup)
    assert r["hamming_loss"] == pytest.approx(hamming_loss(y, yp), abs=1e-12)
    assert r["subset_accuracy"] == pytest.approx(accuracy_score(y, yp), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(multilabel_batches(), st.lists(st.integers(0, 50), min_size=1, max_size=4))
def test_chunked_updates_equal_one_update(batch, cuts):
    logits, targets = batch
    c = targets.shape[1]
    whole, chunked = MultiLabelMetrics(c), MultiLabelMetrics(c)
    whole.update(logits, targets)
    bounds = [0, *sorted(min(x, len(targets)) for x in cuts), len(targets)]
    for a, b in itertools.pairwise(bounds):  # includes empty chunks
        chunked.update(logits[a:b], targets[a:b].float())  # float multi-hot = int multi-hot
    assert whole.compute() == chunked.compute()


@settings(max_examples=150, deadline=None)
@given(multilabel_batches())
def test_tuned_thresholds_maximise_f1_and_predict_reproduces_it(batch):
    """No cut beats the tuned threshold's F1 on these images (brute force over every decision rule),
    and deciding with it as predict does (float32 scores >= threshold) gives exactly that F1 (sklearn)."""
    logits, targets = batch
    y = targets.numpy().astype(bool)
    probs = torch.sigmoid(logits).numpy()
    t, f1 = best_f1_thresholds(y, probs, default=0.5)
    decided = _decisions(logits, t)
    got = _sk(f1_score, y, decided, average=None, zero_division=0)
    for k in range(y.shape[1]):
        if not y[:, k].any():
            assert t[k] == np.float32(0.5) and f1[k] == 0.0  # no positive: the default stays
            continue
        assert got[k] == pytest.approx(f1[k], abs=1e-12)
        cuts = np.unique(np.r_[probs[:, k], np.float32(2.0)])  # every possible decision rule
        pred = probs[:, k][None, :] >= cuts[:, None]
        tp = (pred & y[:, k]).sum(1)
        best = (2 * tp / (pred.sum(1) + y[:, k].sum())).max()
        assert f1[k] == pytest.approx(best, abs=1e-12)


def test_threshold_is_between_kept_and_dropped_scores():
    y = np.array([[1], [1], [0], [0]])
    p = np.array([[0.9], [0.7], [0.4], [0.1]], np.float32)
    t, f1 = best_f1_thresholds(y, p)
    assert f1[0] == 1.0 and t[0] == np.float32(0.55)  # midway between 0.7 (kept) and 0.4 (dropped)
    t, _ = best_f1_thresholds(np.array([[1], [1]]), np.array([[0.8], [0.6]], np.float32))
    assert t[0] == np.float32(0.3)  # everything kept: midway to 0


def test_edge_cases_class_without_positives_and_unlabelled_images():
    logits = torch.tensor([[3.0, -2.0, 0.1], [-1.0, -3.0, -0.2], [2.0, 1.0, 0.3], [-2.0, -1.0, -4.0]])
    targets = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]])  # class 1: no positive
    m = MultiLabelMetrics(3, class_names=["a", "b", "c"])
    m.update(logits, targets)
    r = m.compute()
    y = targets.numpy()
    assert r["per_class"]["ap"][1] == 0.0  # sklearn: "No positive class found", AP 0, still in the macro mean
    assert r["mAP"] == pytest.approx(_sk(average_precision_score, y, logits.numpy(), average="macro"), abs=1e-12)
    assert r["mAP"] == pytest.approx((1.0 + 0.0 + r["per_class"]["ap"][2]) / 3)
    assert r["per_class"]["support"] == [2, 0, 1] and r["tuned_thresholds"][1] == 0.5


def test_all_negative_data_and_empty_metric():
    m = MultiLabelMetrics(4)
    empty = m.compute()
    assert empty["count"] == 0 and empty["mAP"] == 0.0 and empty["hamming_loss"] == 0.0 and empty["subset_accuracy"] == 0.0
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) - 5
    m.update(logits, torch.zeros(6, 4))
    r = m.compute()
    assert r["mAP"] == 0.0 and r["mAP_micro"] == 0.0  # as sklearn (with its warnings)
    assert r["subset_accuracy"] == pytest.approx(accuracy_score(np.zeros((6, 4)), _decisions(logits, 0.5)))
    m.reset()
    assert m.compute() == empty
    assert m.fitness_key == "mAP" and isinstance(m, Metric)


def test_ap_ranks_logits_so_saturated_scores_do_not_tie():
    """float32 sigmoid maps logits 20 and 30 both to 1.0; AP on logits keeps their order."""
    logits = torch.tensor([[30.0], [20.0]])
    assert torch.sigmoid(logits)[0] == torch.sigmoid(logits)[1]
    m = MultiLabelMetrics(1)
    m.update(logits, torch.tensor([[1], [0]]))
    assert m.compute()["mAP"] == 1.0 == average_precision(np.array([1, 0]), logits.numpy())


def test_thresholds_decide_like_predict():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(40, 3, generator=g), (torch.rand(40, 3, generator=g) < 0.4).long()
    thresholds = [0.3, 0.5, 0.8]
    m = MultiLabelMetrics(3, thresholds=thresholds)
    m.update(logits, targets)
    r = m.compute()
    names = ["a", "b", "c"]
    img = np.zeros((4, 4, 3), np.uint8)
    predicted = np.zeros((40, 3), np.int64)
    for i, p in enumerate(torch.sigmoid(logits)):
        predicted[i, Results(img, path="x", names=names, probs=p, thresholds=thresholds).probs.labels] = 1
    assert r["f1_macro"] == pytest.approx(f1_score(targets.numpy(), predicted, average="macro", zero_division=0), abs=1e-12)
    assert r["hamming_loss"] == pytest.approx(hamming_loss(targets.numpy(), predicted), abs=1e-12)
    assert r["per_class"]["threshold"] == pytest.approx(thresholds)


def test_table_and_invalid_inputs():
    m = MultiLabelMetrics(2, class_names=["cat", "dog"])
    m.update(torch.tensor([[2.0, -2.0], [-2.0, 2.0]]), torch.tensor([[1, 0], [1, 1]]))
    lines = format_multilabel_table(m.compute()).splitlines()
    assert lines[0].split() == ["class", "AP", "precision", "recall", "f1", "support", "threshold"]
    cat = next(line for line in lines if line.startswith("cat"))
    assert cat.split()[1:] == ["1.000", "1.000", "0.500", "0.667", "2", "0.500"]
    assert any(line.startswith("macro avg") for line in lines) and any(line.startswith("micro avg") for line in lines)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="multi-hot"):
        m.update(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="thresholds"):
        MultiLabelMetrics(2, thresholds=[0.5, 1.5])
    with pytest.raises(ConfigError, match="class_names"):
        MultiLabelMetrics(3, class_names=["a"])


def _sync_worker(rank: int, world: int, port: int, logits: torch.Tensor, targets: torch.Tensor, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        m = MultiLabelMetrics(4)
        m.update(logits[rank::world], targets[rank::world])  # each rank sees a disjoint shard
        m.sync()
        m.sync()  # idempotent: must not gather twice
        r = m.compute()
        out[rank] = (r["mAP"], r["mAP_micro"], r["f1_macro"], r["count"])
        with pytest.raises(RuntimeError, match="reset"):
            m.update(logits[:1], targets[:1])
    finally:
        dist.destroy_process_group()


def test_sync_over_two_gloo_processes_equals_single_process(free_port):
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(41, 4, generator=g), (torch.rand(41, 4, generator=g) < 0.3).long()
    ref = MultiLabelMetrics(4)
    ref.update(logits, targets)
    r = ref.compute()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_sync_worker, args=(2, free_port, logits, targets, out), nprocs=2, join=True)
        for rank in (0, 1):  # AP is order-free: gathered shards give the whole-set numbers
            assert out[rank][:3] == pytest.approx((r["mAP"], r["mAP_micro"], r["f1_macro"]), abs=1e-12)
            assert out[rank][3] == 41
