"""Explanations for classifiers: Grad-CAM, Grad-CAM++ and gradient saliency (``gradcam``), and the
``optik classify explain`` mode that maps heatmaps back onto the original images (``run``).

>>> from optik.explain import explain, grad_cam, find_target_layer   # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Explanation": "optik.explain.run",
    "explain": "optik.explain.run",
    "heatmap_to_original": "optik.explain.run",
    "explain_batch": "optik.explain.gradcam",
    "find_target_layer": "optik.explain.gradcam",
    "grad_cam": "optik.explain.gradcam",
    "saliency": "optik.explain.gradcam",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:  # lazy: importing the package does not import torch/cv2/matplotlib
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'optik.explain' has no attribute {name!r}")
