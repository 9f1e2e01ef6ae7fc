"""k-NN / linear-probe metrics against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from optik.metrics.knn import KNNMetric, knn_accuracy, knn_predict, linear_probe


def _data(seed: int = 0, n: int = 120, q: int = 40, d: int = 8, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 2
    y = torch.randint(0, c, (n + q,), generator=g)
    x = centres[y] + torch.randn(n + q, d, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def test_majority_vote_equals_sklearn_cosine_knn() -> None:
    bank, by, queries, _qy = _data()
    for k in (1, 5, 20):
        ours = knn_predict(queries, bank, by, k=k, num_classes=4, temperature=None).argmax(1).numpy()
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank.numpy(), by.numpy()).predict(queries.numpy())
        assert (ours == ref).all(), k


def test_weighted_vote_equals_numpy_computation() -> None:
    """DINO eval_knn: the k most similar bank rows vote exp(cos / T) for their class."""
    bank, by, queries, qy = _data(1)
    k, T, C = 7, 0.07, 4
    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    expected = np.zeros((len(q), C))
    for i, row in enumerate(q @ b.T):
        for j in np.argsort(-row)[:k]:
            expected[i, by[j]] += np.exp(row[j] / T)
    ours = knn_predict(queries, bank, by, k=k, num_classes=C, temperature=T, chunk=9).numpy()  # chunked queries too
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    acc = knn_accuracy(queries, qy, bank, by, k=k, num_classes=C, temperature=T)["knn_top1"]
    assert acc == pytest.approx(float((expected.argmax(1) == qy.numpy()).mean()))


def test_k_larger_than_bank_and_empty_bank() -> None:
    bank, by = torch.eye(3), torch.tensor([0, 1, 1])
    assert knn_predict(torch.eye(3), bank, by, k=20, num_classes=2, temperature=None).sum(1).tolist() == [3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="non-empty"):
        knn_predict(torch.eye(3), torch.zeros(0, 3), torch.zeros(0), k=2, num_classes=2)


def test_metric_over_batches_equals_one_call() -> None:
    bank, by, queries, qy = _data(2)
    m = KNNMetric(4, k=5, probe=True)
    m.set_bank(bank, by)
    for xs, ys in zip(queries.split(7), qy.split(7)):
        m.update(xs, ys)
    out = m.compute()
    assert out["knn_top1"] == pytest.approx(knn_accuracy(queries, qy, bank, by, k=5, num_classes=4)["knn_top1"])
    assert out["probe_top1"] == pytest.approx(linear_probe(bank.numpy(), by.numpy(), queries.numpy(), qy.numpy()))
    assert out["count"] == 40 and out["bank"] == 120


def test_linear_probe_equals_sklearn_and_single_class_is_nan() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    bank, by, queries, qy = _data(3)
    s = StandardScaler().fit(bank.numpy())
    ref = LogisticRegression(max_iter=1000, random_state=0).fit(s.transform(bank.numpy()), by.numpy()).score(s.transform(queries.numpy()), qy.numpy())
    assert linear_probe(bank.numpy(), by.numpy(), queries.numpy(), qy.numpy()) == pytest.approx(ref)
    assert np.isnan(linear_probe(bank.numpy(), np.zeros(len(by), int), queries.numpy(), qy.numpy()))
