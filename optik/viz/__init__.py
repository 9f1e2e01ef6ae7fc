"""Visualisation: ``draw`` (OpenCV overlays on RGB arrays) and ``plots`` (matplotlib PNGs).

Names are resolved lazily so ``import optik.viz`` loads neither cv2 nor matplotlib until used.

>>> from optik.viz import plot_confusion_matrix, draw_text_block     # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_WHERE = {
    "color_for": "optik.viz.draw",
    "draw_text_block": "optik.viz.draw",
    "plot_bar": "optik.viz.plots",
    "plot_confusion_matrix": "optik.viz.plots",
    "plot_prediction_grid": "optik.viz.plots",
    "plot_training_curves": "optik.viz.plots",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'optik.viz' has no attribute {name!r}")
