"""ClassificationMetrics must equal scikit-learn (labels=range(C), zero_division=0) on random data."""

from __future__ import annotations

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
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from optik.errors import ConfigError
from optik.metrics import (
    ClassificationMetrics,
    Metric,
    confusion_matrix,
    format_per_class_table,
    precision_recall_f1,
)

TOPK = (1, 2, 3, 5, 12)


@st.composite
def batches(draw):
    """Tie-free logits (a random permutation per row, scaled) and targets that may miss classes."""
    c = draw(st.integers(2, 12))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    g = np.random.default_rng(seed)
    # Distinct values per row: ties would make torch's and sklearn's tie rules differ.
    logits = np.stack([g.permutation(c) for _ in range(n)]).astype(np.float64) * g.uniform(0.1, 3.0)
    # Restrict targets (and, via biased logits, predictions) to a subset so classes go missing.
    present = g.choice(c, size=draw(st.integers(1, c)), replace=False)
    targets = g.choice(present, size=n)
    if draw(st.booleans()):  # bias predictions toward a few classes -> some never predicted
        logits[:, present] += 10 * c
    return c, torch.from_numpy(logits), torch.from_numpy(targets).long()


def _sk_topk(targets: np.ndarray, logits: np.ndarray, k: int, c: int) -> float:
    if c == 2:  # sklearn's binary path wants 1-d scores; top-2 of 2 classes is trivially 1
        return accuracy_score(targets, logits.argmax(1)) if k == 1 else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # k >= C: "meaningless" but defined
        return top_k_accuracy_score(targets, logits, k=k, labels=np.arange(c))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_matches_sklearn(batch):
    c, logits, targets = batch
    m = ClassificationMetrics(c, topk=TOPK)
    m.update(logits, targets)
    r = m.compute()
    y, s = targets.numpy(), logits.numpy()
    yp = s.argmax(1)
    labels = np.arange(c)

    assert r["count"] == len(y)
    assert r["top1"] == pytest.approx(accuracy_score(y, yp), abs=1e-12)
    for k in TOPK:
        if k > c:
            assert f"top{k}" not in r
        else:
            assert r[f"top{k}"] == pytest.approx(_sk_topk(y, s, k, c), abs=1e-12)
    np.testing.assert_array_equal(r["confusion_matrix"], sk_confusion_matrix(y, yp, labels=labels))

    p, rc, f, sup = precision_recall_fscore_support(y, yp, labels=labels, zero_division=0)
    pc = r["per_class"]
    np.testing.assert_allclose(pc["precision"], p, atol=1e-12, rtol=0)
    np.testing.assert_allclose(pc["recall"], rc, atol=1e-12, rtol=0)
    np.testing.assert_allclose(pc["f1"], f, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(pc["support"], sup)
    assert pc["names"] == [str(i) for i in range(c)]
    for avg in ("macro", "weighted"):
        p, rc, f, _ = precision_recall_fscore_support(y, yp, labels=labels, average=avg, zero_division=0)
        assert r[f"precision_{avg}"] == pytest.approx(p, abs=1e-12)
        assert r[f"recall_{avg}"] == pytest.approx(rc, abs=1e-12)
        assert r[f"f1_{avg}"] == pytest.approx(f, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(batches(), st.lists(st.integers(0, 60), min_size=1, max_size=4))
def test_chunked_updates_equal_one_update(batch, cuts):
    c, logits, targets = batch
    whole = ClassificationMetrics(c, topk=TOPK)
    whole.update(logits, targets)
    chunked = ClassificationMetrics(c, topk=TOPK)
    bounds = [0, *sorted(min(x, len(targets)) for x in cuts), len(targets)]
    for a, b in zip(bounds[:-1], bounds[1:]):  # includes empty chunks
        chunked.update(logits[a:b], targets[a:b])
    _assert_same(whole.compute(), chunked.compute())


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "confusion_matrix":
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


@settings(max_examples=50, deadline=None)
@given(batches())
def test_soft_and_onehot_targets_reduce_by_argmax(batch):
    c, logits, targets = batch
    hard = ClassificationMetrics(c)
    hard.update(logits, targets)
    onehot = ClassificationMetrics(c)
    onehot.update(logits, torch.nn.functional.one_hot(targets, c).float())
    # Label smoothing keeps the argmax: the smoothed target is still the true class.
    smooth = ClassificationMetrics(c)
    smooth.update(logits, torch.nn.functional.one_hot(targets, c).float() * 0.8 + 0.2 / c)
    _assert_same(hard.compute(), onehot.compute())
    _assert_same(hard.compute(), smooth.compute())


def test_probabilities_give_same_result_as_logits():
    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(1))
    a, b = ClassificationMetrics(7), ClassificationMetrics(7)
    a.update(logits, targets)
    b.update(logits.softmax(1), targets)
    _assert_same(a.compute(), b.compute())


def test_ties_break_toward_lower_index_and_top1_matches_confusion_matrix():
    m = ClassificationMetrics(4, topk=(1, 2))
    logits = torch.tensor([[1.0, 5.0, 5.0, 5.0]] * 3)
    m.update(logits, torch.tensor([1, 2, 3]))
    r = m.compute()
    assert r["top1"] == pytest.approx(1 / 3)  # argmax of a tie is the first maximum: class 1
    assert r["top2"] == pytest.approx(2 / 3)  # top-2 is {1, 2}
    assert r["confusion_matrix"][:, 1].sum() == 3
    assert r["top1"] == np.trace(r["confusion_matrix"]) / r["count"]


def test_reset_and_empty_state():
    m = ClassificationMetrics(3, topk=(1, 2))
    empty = m.compute()
    assert empty["count"] == 0 and empty["top1"] == 0.0 and empty["f1_weighted"] == 0.0
    m.update(torch.eye(3), torch.tensor([0, 1, 1]))
    assert m.compute()["count"] == 3
    m.reset()
    _assert_same(m.compute(), empty)
    assert m.fitness_key == "top1" and isinstance(m, Metric)


def test_topk_larger_than_classes_is_skipped_and_top1_always_present():
    r = ClassificationMetrics(3, topk=(5,)).compute()
    assert "top1" in r and "top5" not in r


def test_class_names_and_table():
    m = ClassificationMetrics(3, class_names=["cat", "dog", "bird"])
    m.update(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0]]), torch.tensor([0, 1, 1]))
    r = m.compute()
    assert r["per_class"]["names"] == ["cat", "dog", "bird"]
    table = format_per_class_table(r)
    lines = table.splitlines()
    dog = next(line for line in lines if line.startswith("dog"))
    assert dog.split()[1:5] == ["1.000", "0.500", "0.667", "2"]  # precision, recall, f1, support (then specificity, FPR, counts)
    assert any(line.startswith("macro avg") for line in lines)
    assert any(line.startswith("accuracy") and "0.667" in line for line in lines)


def test_invalid_inputs_raise_clear_errors():
    m = ClassificationMetrics(3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        m.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="rows"):
        m.update(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ConfigError, match="class_names"):
        ClassificationMetrics(3, class_names=["a"])


def test_confusion_matrix_and_prf_functions():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    r = precision_recall_f1(cm)
    np.testing.assert_allclose(r["precision"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(r["recall"], [0.5, 0.5, 0.0])  # class 2 has no support: 0, not NaN
    np.testing.assert_array_equal(r["support"], [2, 2, 0])
    with pytest.raises(ValueError, match="square"):
        precision_recall_f1(np.zeros((2, 3)))


def test_sync_is_noop_without_process_group():
    assert not dist.is_initialized()
    m = ClassificationMetrics(3)
    m.update(torch.eye(3), torch.tensor([0, 1, 2]))
    before = m.compute()
    m.sync()
    _assert_same(before, m.compute())


def _sync_worker(rank: int, world: int, port: int, logits: torch.Tensor, targets: torch.Tensor, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        m = ClassificationMetrics(5, topk=(1, 3))
        m.update(logits[rank::world], targets[rank::world])  # each rank sees a disjoint shard
        m.sync()
        m.sync()  # idempotent: must not double-count
        r = m.compute()
        out[rank] = (r["top1"], r["top3"], r["count"], r["f1_macro"], r["confusion_matrix"].tolist())
        with pytest.raises(RuntimeError, match="reset"):
            m.update(logits[:1], targets[:1])
    finally:
        dist.destroy_process_group()


def test_sync_over_two_gloo_processes_equals_single_process(free_port):
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(41, 5, generator=g), torch.randint(0, 5, (41,), generator=g)
    ref = ClassificationMetrics(5, topk=(1, 3))
    ref.update(logits, targets)
    r = ref.compute()
    expected = (r["top1"], r["top3"], r["count"], r["f1_macro"], r["confusion_matrix"].tolist())
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_sync_worker, args=(2, free_port, logits, targets, out), nprocs=2, join=True)
        assert out[0] == expected and out[1] == expected
