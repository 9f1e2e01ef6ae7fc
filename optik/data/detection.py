"""Detection data in one import: the dataset (`detection_dataset.py`), its collate
(`collate.py`) and `load_detection_data`, the `data=` resolver (`sources.py`).

Nothing in `optik.data` imports this module: the readers import the dataset module, so the
resolver can import the readers without a cycle.

>>> data = load_detection_data("synthetic:shapes-det?n=20&size=64")
>>> data.classes
['circle', 'square', 'triangle', 'star']
"""

from __future__ import annotations

from optik.data.collate import detection_collate
from optik.data.detection_dataset import DetectionDataset
from optik.data.sources import load_detection_data
from optik.data.splits import DataSplits

DetectionData = DataSplits  # what load_detection_data returns (the former name)

__all__ = ["DetectionData", "DetectionDataset", "detection_collate", "load_detection_data"]
