"""An exact cosine top-k index over stored features.

Features are L2-normalised once, so cosine similarity is a dot product: queries are scored against the whole
matrix in batches (``torch`` matmul + ``topk``). With ``backend="faiss"`` (or ``"auto"`` when the ``faiss``
package is installed) the same exact search runs in ``faiss.IndexFlatIP``. An index is a folder:
``index.safetensors`` (the normalised ``(N, D)`` float32 matrix) + ``index.json`` (the paths, in row order, and
the model that made them).

>>> import torch
>>> idx = FeatureIndex(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), ["a", "b", "c"])
>>> scores, rows = idx.search(torch.tensor([[0.0, 1.0]]), k=2)
>>> [idx.paths[i] for i in rows[0].tolist()], round(float(scores[0, 0]), 4)
(['b', 'c'], 1.0)
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from optik.errors import ConfigError

INDEX_FILE, INDEX_JSON = "index.safetensors", "index.json"


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class FeatureIndex:
    """Exact cosine top-k search over ``features`` (rows named by ``paths``)."""

    def __init__(self, features: Tensor, paths: Sequence[str], meta: dict[str, Any] | None = None) -> None:
        if features.ndim != 2 or len(features) != len(paths):
            raise ConfigError(f"index: {tuple(features.shape)} features for {len(paths)} paths (expected (N, D) and N paths)")
        self.features = F.normalize(features.float(), dim=1).contiguous()
        self._faiss_index: Any = None  # faiss.IndexFlatIP over the features, built at the first faiss search
        self.paths = list(paths)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, queries: Tensor, k: int = 5, *, batch: int = 4096, backend: str = "auto") -> tuple[Tensor, Tensor]:
        """``(Q, D)`` queries → ``(scores, rows)``, each ``(Q, min(k, N))``, best first (cosine similarity)."""
        if queries.ndim != 2 or queries.shape[1] != self.features.shape[1]:
            raise ConfigError(f"search: queries of shape {tuple(queries.shape)} for an index of {self.features.shape[1]}-d features")
        k = min(k, len(self))
        q = F.normalize(queries.float(), dim=1)
        if backend == "faiss" or (backend == "auto" and faiss_available() and len(self) > 100_000):
            return self._faiss(q, k)
        scores, rows = [], []
        for chunk in q.split(batch):
            s, i = (chunk @ self.features.T).topk(k, dim=1)
            scores.append(s)
            rows.append(i)
        if not scores:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        return torch.cat(scores), torch.cat(rows)

    def _faiss(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if not faiss_available():
            raise ConfigError("bad value for 'backend': faiss is not installed (pip install faiss-cpu), use backend=torch")
        import faiss

        if self._faiss_index is None:  # built once per index (adding 100k vectors costs a copy)
            self._faiss_index = faiss.IndexFlatIP(self.features.shape[1])
            self._faiss_index.add(self.features.numpy())
        s, i = self._faiss_index.search(q.numpy(), k)
        return torch.from_numpy(s), torch.from_numpy(i).long()

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"features": self.features}, str(folder / INDEX_FILE))
        (folder / INDEX_JSON).write_text(json.dumps({**self.meta, "paths": self.paths, "dim": int(self.features.shape[1]),
                                                     "metric": "cosine"}, indent=1))  # fmt: skip
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureIndex:
        """The index saved in ``folder`` (an ``optik embed index`` run dir)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file() or not (folder / INDEX_JSON).is_file():
            raise ConfigError(f"bad value for 'index': '{folder}' holds no {INDEX_FILE} + {INDEX_JSON} (make one with optik embed index)")
        info = json.loads((folder / INDEX_JSON).read_text())
        paths = info.pop("paths")
        return cls(load_file(str(folder / INDEX_FILE))["features"], paths, info)
