"""The exact cosine index against scikit-learn's brute-force cosine neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from optik.embed.index import FeatureIndex, faiss_available
from optik.errors import ConfigError


def test_search_equals_sklearn_and_survives_save_load(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    feats, queries = torch.randn(50, 6, generator=g), torch.randn(9, 6, generator=g)
    idx = FeatureIndex(feats, [f"img{i}.png" for i in range(50)], {"model": "cnn"})
    scores, rows = idx.search(queries, k=4, batch=4)  # several query batches
    dist, ref = NearestNeighbors(n_neighbors=4, metric="cosine", algorithm="brute").fit(feats.numpy()).kneighbors(queries.numpy())
    assert (rows.numpy() == ref).all()
    np.testing.assert_allclose(scores.numpy(), 1 - dist, atol=1e-5)
    back = FeatureIndex.load(idx.save(tmp_path / "ix"))
    assert back.paths == idx.paths and back.meta["model"] == "cnn"
    s2, r2 = back.search(queries, k=4)
    assert torch.equal(r2, rows) and torch.allclose(s2, scores)
    assert back.search(queries, k=99)[1].shape == (9, 50)  # k capped at the index size


def test_bad_inputs_are_config_errors(tmp_path: Path) -> None:
    idx = FeatureIndex(torch.randn(3, 4), ["a", "b", "c"])
    with pytest.raises(ConfigError, match="4-d"):
        idx.search(torch.randn(2, 5))
    with pytest.raises(ConfigError, match="paths"):
        FeatureIndex(torch.randn(3, 4), ["a"])
    with pytest.raises(ConfigError, match="optik embed index"):
        FeatureIndex.load(tmp_path)
    if not faiss_available():
        with pytest.raises(ConfigError, match="faiss"):
            idx.search(torch.randn(2, 4), backend="faiss")


def test_faiss_backend_equals_the_torch_search_and_sklearn() -> None:
    """The FAISS path (``backend=faiss``; ``auto`` above 100k vectors) gives the same exact cosine top-k."""
    pytest.importorskip("faiss")
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(3)
    idx = FeatureIndex(torch.randn(200, 16, generator=g), [f"{i}.png" for i in range(200)])
    queries = torch.randn(7, 16, generator=g)
    s_t, r_t = idx.search(queries, k=5, backend="torch")
    s_f, r_f = idx.search(queries, k=5, backend="faiss")
    assert torch.equal(r_f, r_t)
    torch.testing.assert_close(s_f, s_t, rtol=1e-5, atol=1e-5)
    nn_ = NearestNeighbors(n_neighbors=5, metric="cosine").fit(idx.features.numpy())
    _, rows = nn_.kneighbors(torch.nn.functional.normalize(queries, dim=1).numpy())
    assert (r_f.numpy() == rows).all()
