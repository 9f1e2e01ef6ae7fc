"""Native detectors. Importing this package registers ``house``, ``house_s`` and ``house_m`` for
``task="detect"`` (see :mod:`optik.models.detect.house`).

>>> from optik.models import create
>>> model = create("house", task="detect", num_classes=3, img_size=128)    # doctest: +SKIP
"""

from optik.models.detect.assigner import TaskAlignedAssigner, pad_targets
from optik.models.detect.house import VARIANTS, HouseDetector, postprocess
from optik.models.detect.loss import DetectionLoss

__all__ = ["VARIANTS", "DetectionLoss", "HouseDetector", "TaskAlignedAssigner", "pad_targets", "postprocess"]
