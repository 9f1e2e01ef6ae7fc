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
