"""Evaluation metrics: one accumulating ``Metric`` per task (update / compute / reset / sync)."""

from __future__ import annotations

from optik.metrics.base import Metric
from optik.metrics.classification import (
    ClassificationMetrics,
    confusion_matrix,
    format_per_class_table,
    precision_recall_f1,
)

__all__ = [
    "ClassificationMetrics",
    "Metric",
    "confusion_matrix",
    "format_per_class_table",
    "precision_recall_f1",
]
