"""Evaluation metrics: one accumulating ``Metric`` per task (update / compute / reset / sync)."""

from __future__ import annotations

from optik.metrics.base import Metric
from optik.metrics.classification import (
    ClassificationMetrics,
    confusion_matrix,
    format_per_class_table,
    precision_recall_f1,
)
from optik.metrics.detection import (
    DetectionMetrics,
    coco_eval,
    detection_confusion_matrix,
    format_ap_table,
    predictions_to_coco,
)
from optik.metrics.segmentation import (
    InstanceMetrics,
    PanopticMetrics,
    SemanticMetrics,
    format_iou_table,
    format_pq_table,
    panoptic_quality,
)

__all__ = [
    "ClassificationMetrics",
    "DetectionMetrics",
    "InstanceMetrics",
    "Metric",
    "PanopticMetrics",
    "SemanticMetrics",
    "coco_eval",
    "confusion_matrix",
    "detection_confusion_matrix",
    "format_ap_table",
    "format_iou_table",
    "format_per_class_table",
    "format_pq_table",
    "panoptic_quality",
    "precision_recall_f1",
    "predictions_to_coco",
]
