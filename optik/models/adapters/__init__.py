"""Library-backed models behind :func:`optik.models.create`: ``timm:``, ``hf:`` (transformers) and ``tv:``
(torchvision) names. Importing this package registers the prefixes as ``"module:function"`` strings, so
the library behind an adapter (transformers above all) is imported only when a model of its prefix is built.

>>> from optik.models import create
>>> model = create("timm:resnet18", num_classes=5)                  # doctest: +SKIP
"""

from __future__ import annotations

from optik.models.registry import register_adapter

register_adapter("timm", "classify", "optik.models.adapters.timm:create_timm")
register_adapter("hf", "classify", "optik.models.adapters.hf:create_hf")
register_adapter("tv", "detect", "optik.models.adapters.tv_detection:create_tv_detector")
register_adapter("hf", "detect", "optik.models.adapters.hf_detection:create_hf_detector")
register_adapter("tv", "semantic", "optik.models.adapters.tv_segmentation:create_tv_segmenter")
register_adapter("tv", "instance", "optik.models.adapters.tv_instance:create_tv_instance")
register_adapter("hf", "semantic", "optik.models.adapters.hf_segmentation:create_hf_semantic")
register_adapter("hf", "instance", "optik.models.adapters.hf_segmentation:create_hf_instance")
register_adapter("hf", "panoptic", "optik.models.adapters.hf_segmentation:create_hf_panoptic")
