"""Pictures of a representation: the 2-D map of features coloured by class, and a search results grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def project_2d(feats: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, D)`` → ``(N, 2)`` with scikit-learn's PCA or t-SNE (perplexity capped below N)."""
    feats = np.asarray(feats, np.float64)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(30.0, max(1.0, (len(feats) - 1) / 3)), init="pca", random_state=seed).fit_transform(feats)
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(feats)


def embedding_map(feats: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path, method: str = "pca", seed: int = 0) -> Path:
    """Scatter of the 2-D projection of ``feats`` coloured by class; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = project_2d(feats, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(int(c) % cmap.N), label=names[int(c)] if int(c) < len(names) else str(c))
    ax.set_title(f"{method.upper()} of the features ({len(labels)} images)")
    if len(names) <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def search_grid(queries: Sequence[np.ndarray], hits: Sequence[Sequence[tuple[np.ndarray, float]]], path: Path, tile: int = 96) -> Path:
    """One row per query: the query image, then its neighbours with their cosine scores written on them."""
    from PIL import Image, ImageDraw

    k = max((len(h) for h in hits), default=0)
    canvas = Image.new("RGB", ((k + 1) * tile + 8, len(queries) * tile), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (q, row) in enumerate(zip(queries, hits)):
        canvas.paste(Image.fromarray(q).convert("RGB").resize((tile, tile)), (0, r * tile))
        for c, (img, score) in enumerate(row):
            x = (c + 1) * tile + 8
            canvas.paste(Image.fromarray(img).convert("RGB").resize((tile, tile)), (x, r * tile))
            draw.rectangle([x, r * tile, x + 44, r * tile + 12], fill="black")
            draw.text((x + 2, r * tile), f"{score:.3f}", fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
