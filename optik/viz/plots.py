"""Run plots written as PNG: training curves, confusion matrix, prediction grid, bar charts.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through
``pyplot``: no global figure registry to leak or close, no GUI backend, safe from worker threads
(the server and the engine's plot callback).

>>> plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["cat", "dog"], "runs/cm.png")  # doctest: +SKIP
PosixPath('runs/cm.png')
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_bar", "plot_confusion_matrix", "plot_prediction_grid", "plot_training_curves"]

log = logging.getLogger(__name__)

_DPI = 100
_ANNOTATE_MAX_CLASSES = 20


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: independent of the pyplot backend
    # bbox "tight": constrained layout alone can clip long tick labels next to a fixed-aspect
    # image with a colourbar (100-class confusion matrix); the saved size is then approximate.
    fig.savefig(out, dpi=_DPI, bbox_inches="tight", pad_inches=0.1)
    return out


def _read_numeric_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Columns of a CSV as float arrays (empty or unparsable cells → NaN; all-text columns dropped)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0]:
        raise ValueError(f"{path}: empty CSV, expected a header row (epoch, train/loss, ...)")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"{path}: no data rows below the header")

    def as_float(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return math.nan

    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cells = [row[j].strip() if j < len(row) else "" for row in body]
        values = np.array([as_float(c) for c in cells], dtype=np.float64)
        if np.isnan(values).all() and any(c and c.lower() != "nan" for c in cells):
            continue  # a text column (e.g. a timestamp): nothing to plot
        columns[name] = values
    return header, columns


def _loss_group(name: str) -> str | None:
    """``train/loss`` and ``val/loss`` → ``loss``; ``train/box_loss`` → ``box_loss``; else None."""
    short = name.rsplit("/", 1)[-1]
    return short if "loss" in short else None


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Plot every numeric column of a run's ``metrics.csv`` against ``epoch``.

    Loss columns sharing a name after their ``split/`` prefix (``train/loss`` and ``val/loss``) go
    on one axis; every other numeric column (``val/top1``, ``lr``, …) gets its own. Points are
    marked so a 1-row CSV still shows; NaN cells are gaps; all-NaN columns are skipped. Without an
    ``epoch`` column the row number is the x axis.

    >>> plot_training_curves("runs/classify/train/metrics.csv", "plots/curves.png")  # doctest: +SKIP
    """
    path = Path(metrics_csv)
    _, columns = _read_numeric_csv(path)
    x = columns.pop("epoch", None)
    xlabel = "epoch"
    if x is None:
        x, xlabel = np.arange(1, len(next(iter(columns.values()), [])) + 1, dtype=np.float64), "row"

    groups: dict[str, list[str]] = {}
    for name, values in columns.items():
        if np.isnan(values).all():
            log.debug("%s: column %r has no values, not plotted", path, name)
            continue
        groups.setdefault(_loss_group(name) or name, []).append(name)
    if not groups:
        raise ValueError(f"{path}: no numeric columns to plot besides 'epoch'")

    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (title, names) in zip(axes, groups.items()):
        for name in names:
            ax.plot(x, columns[name], marker="o", markersize=3, linewidth=1.5, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
        if title == "lr" or title.endswith("/lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    return _save(fig, out_png)


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str] | None,
    out_png: str | Path,
    *,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Heat map of a (C, C) confusion matrix: rows true class, columns predicted.

    ``normalize=True`` colours each cell by its share of the row (per-class recall on the
    diagonal; empty rows stay 0). Cells are annotated with their counts when C <= 20. The figure
    grows with C (up to 24 in, 2400 px), so ~100 classes keep readable tick labels.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    c = cm.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}x{c} confusion matrix")

    counts = cm.astype(np.float64)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows != 0)
    else:
        shown = counts
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)

    side = float(np.clip(0.3 * c + 3, 6, 24))
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class" if normalize else "count")
    fontsize = float(np.clip(side * 72 / c * 0.45, 3, 10))
    ax.set_xticks(range(c), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(c), names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if c <= _ANNOTATE_MAX_CLASSES:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    colour = "white" if shown[i, j] > 0.5 * vmax else "black"
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=colour,
                            fontsize=min(10, fontsize + 1))  # fmt: skip
    return _save(fig, out_png)


def plot_prediction_grid(
    images: np.ndarray,
    true: Sequence[int],
    pred: Sequence[int],
    conf: Sequence[float],
    class_names: Sequence[str],
    out_png: str | Path,
    *,
    ncols: int = 8,
) -> Path:
    """Grid of images titled ``"true/pred 0.93"``: green when right, red when wrong.

    images: (N, 3, H, W) or (N, 1, H, W) uint8 array or tensor (floats are read as [0, 1]).
    true, pred: N class indices; conf: N confidences of ``pred``.
    """
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 3, H, W) or (N, 1, H, W), got shape {arr.shape}")
    n = arr.shape[0]
    if not (len(true) == len(pred) == len(conf) == n):
        raise ValueError(f"{n} images but {len(true)} true, {len(pred)} pred, {len(conf)} conf values")
    if n == 0:
        raise ValueError("plot_prediction_grid needs at least one image")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)

    def name(i: int) -> str:
        return str(class_names[i]) if 0 <= i < len(class_names) else str(i)

    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.8 * cols, 2.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= n:
            continue
        t, p = int(true[k]), int(pred[k])
        ax.imshow(arr[k], interpolation="nearest")
        ax.set_title(f"{name(t)}/{name(p)} {float(conf[k]):.2f}", fontsize=7, color="green" if t == p else "red")
    return _save(fig, out_png)


def plot_bar(values: dict[str, float], out_png: str | Path, *, title: str, xlabel: str = "") -> Path:
    """Horizontal bar chart of ``{label: value}`` in the given order (e.g. per-class F1).

    Bars are horizontal so long class names stay readable; the figure grows with the number of
    bars, and values are printed at the bar ends for up to 40 bars. ``xlabel`` names the value axis.
    """
    if not values:
        raise ValueError(f"plot_bar({title!r}): no values to plot")
    labels = [str(k) for k in values]
    vals = np.array([float(v) for v in values.values()], dtype=np.float64)
    n = len(labels)
    fig = Figure(figsize=(7, float(np.clip(0.25 * n + 1.2, 2.5, 30))), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    ax.barh(y, np.nan_to_num(vals), color="#2C99A8")
    ax.set_yticks(y, labels, fontsize=8 if n <= 60 else 6)
    ax.invert_yaxis()  # first key on top, like a table
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if n <= 40:
        for yi, v in zip(y, vals):
            ax.text(v if np.isfinite(v) else 0, yi, f" {v:.3g}", va="center", fontsize=7)
    return _save(fig, out_png)


# --- detection --------------------------------------------------------------------------------
_LEGEND_MAX_CLASSES = 10


def _per_class_lines(ax, x: np.ndarray, curves: np.ndarray, names: Sequence[str], scores: np.ndarray, fmt: str) -> None:
    """One thin line per class with data; the legend names only the ``_LEGEND_MAX_CLASSES`` best."""
    shown = [k for k in np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable") if np.isfinite(curves[k]).any()]
    for rank, k in enumerate(shown):
        label = f"{names[k]} {fmt.format(scores[k])}" if rank < _LEGEND_MAX_CLASSES else None
        ax.plot(x, curves[k], linewidth=1.0, alpha=0.6 if label else 0.25, color=None if label else "grey", label=label)


def plot_pr_curves(result: dict, class_names: Sequence[str] | None, out_png: str | Path) -> Path:
    """Precision-recall curves at IoU 0.50: one per class and their mean (bold).

    ``result`` is ``coco_eval`` / ``DetectionMetrics.compute()`` output: its ``pr_curve``
    (``recall`` (101,), ``precision`` (C, 101)) or else the COCO ``precision`` array (T, R, K, A, M)
    at IoU 0.50, area all, largest max_dets. These are COCO's interpolated (envelope) precisions at
    101 recall points, so AP50 is the mean of each curve. Classes without ground truth are left
    out; the legend lists the 10 classes with the highest AP50 and the mean.
    """
    if "pr_curve" in result:
        recall, prec = np.asarray(result["pr_curve"]["recall"]), np.asarray(result["pr_curve"]["precision"], dtype=np.float64)
    else:
        p = np.asarray(result["precision"], dtype=np.float64)[0, :, :, 0, -1].T  # (K, R)
        recall, prec = np.linspace(0.0, 1.0, p.shape[1]), np.where(p > -1, p, np.nan)
    k = prec.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for PR curves of {k} classes")
    ap50 = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in prec])
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    _per_class_lines(ax, recall, prec, names, ap50, "{:.3f}")
    if np.isfinite(prec).any():
        mean = np.nanmean(prec[np.isfinite(prec).all(1)], axis=0)
        ax.plot(recall, mean, linewidth=3, color="#1f3b73", label=f"all classes {float(np.mean(mean)):.3f} AP50")
    _unit_axes(ax, "recall", "precision", "Precision-recall (IoU 0.50)")
    return _save(fig, out_png)


def _unit_axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Shared styling of the [0, 1] × [0, 1] curve plots (PR, F1-confidence)."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")


def plot_detection_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str] | None, out_png: str | Path, normalize: bool = True
) -> Path:
    """Heat map of a detection confusion matrix (C+1, C+1) whose last row/column is background.

    Rows are true classes (background row: false positives), columns predicted (background column:
    missed ground truth), as ``DetectionMetrics.compute()["confusion_matrix"]``.
    """
    cm = np.asarray(cm)
    c = cm.shape[0] - 1
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {cm.shape[0]}x{cm.shape[0]} detection confusion matrix "
                         "(C classes + background)")  # fmt: skip
    return plot_confusion_matrix(cm, [*names, "background"], out_png, normalize=normalize,
                                 title="Detection confusion matrix")  # fmt: skip


def plot_f1_confidence(result: dict, class_names: Sequence[str] | None, out_png: str | Path) -> Path:
    """F1 against the confidence threshold: one line per class, the mean bold, best point marked.

    ``result`` is ``DetectionMetrics.compute()`` output (``f1_curve``: ``conf`` (G,), ``f1`` (C, G);
    ``f1_conf``, ``f1``).
    """
    conf, f1 = np.asarray(result["f1_curve"]["conf"]), np.asarray(result["f1_curve"]["f1"], dtype=np.float64)
    k = f1.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for F1 curves of {k} classes")
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    _per_class_lines(ax, conf, f1, names, np.array([np.nanmax(r) if np.isfinite(r).any() else np.nan for r in f1]),
                     "{:.2f}")  # fmt: skip
    if np.isfinite(f1).any():
        ax.plot(conf, np.nanmean(f1[np.isfinite(f1).all(1)], axis=0), linewidth=3, color="#1f3b73", label="all classes")
        if "f1_conf" in result:
            ax.plot([result["f1_conf"]], [result["f1"]], "o", color="#c0392b",
                    label=f"best {result['f1']:.3f} at {result['f1_conf']:.3f}")  # fmt: skip
    _unit_axes(ax, "confidence threshold", "F1 (IoU 0.50)", "F1 vs confidence")
    return _save(fig, out_png)


__all__ += ["plot_detection_confusion_matrix", "plot_f1_confidence", "plot_pr_curves"]
