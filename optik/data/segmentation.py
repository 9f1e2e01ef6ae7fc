"""Segmentation data in one import: the dataset and its compact annotations
(`segmentation_dataset.py`), its collate (`collate.py`) and `load_segmentation_data`, the
`data=` resolver (`sources.py`).

Nothing in `optik.data` imports this module: the readers import the dataset module, so the
resolver can import the readers without a cycle.

>>> data = load_segmentation_data("synthetic:shapes-pan?n=4&size=32", val_fraction=0)
>>> data.kind, data.classes[-2:]
('panoptic', ['sky', 'ground'])
"""

from __future__ import annotations

from optik.data.collate import segmentation_collate
from optik.data.segmentation_dataset import (
    IGNORE_INDEX,
    KINDS,
    RLEMasks,
    SegmentationDataset,
    SegmentMap,
    SemanticMap,
    SemanticMask,
    apply_transform,
    mask_boxes,
)
from optik.data.sources import load_segmentation_data
from optik.data.splits import DataSplits

SegmentationData = DataSplits  # what load_segmentation_data returns (the former name)

__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "RLEMasks",
    "SegmentMap",
    "SegmentationData",
    "SegmentationDataset",
    "SemanticMap",
    "SemanticMask",
    "apply_transform",
    "load_segmentation_data",
    "mask_boxes",
    "segmentation_collate",
]
