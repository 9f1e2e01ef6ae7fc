"""Library-backed models behind :func:`optik.models.create`: ``timm:``, ``hf:`` (transformers) and ``tv:``
(torchvision) names. Importing this package registers the prefixes as ``"module:function"`` strings, so
the library behind an adapter (transformers above all) is imported only when a model of its prefix is built.

>>> from optik.models import create
>>> model = create("timm:resnet18", num_classes=5)                  # doctest: +SKIP
"""

from __future__ import annotations

from optik.models.registry import register_adapter

register_adapter("timm", "classify", "optik.models.adapters.timm:create_timm",
                 "timm:<any timm name> (e.g. timm:convnext_atto)")
register_adapter("hf", "classify", "optik.models.adapters.hf:create_hf", "hf:<image classifier id or dir>")
register_adapter("tv", "detect", "optik.models.adapters.tv_detection:create_tv_detector",
                 "tv:fasterrcnn, tv:retinanet, tv:fcos, tv:ssdlite (torchvision)")
register_adapter("hf", "detect", "optik.models.adapters.hf_detection:create_hf_detector", "hf:<DETR-family id or dir>")
register_adapter("tv", "semantic", "optik.models.adapters.tv_segmentation:create_tv_segmenter",
                 "tv:deeplabv3_mobilenet_v3_large, tv:lraspp_…, tv:fcn_resnet50 (torchvision)")
register_adapter("tv", "instance", "optik.models.adapters.tv_instance:create_tv_instance", "tv:maskrcnn (torchvision)")
register_adapter("hf", "semantic", "optik.models.adapters.hf_segmentation:create_hf_semantic",
                 "hf:<SegFormer/Mask2Former/OneFormer id or dir>")
register_adapter("hf", "instance", "optik.models.adapters.hf_segmentation:create_hf_instance",
                 "hf:<Mask2Former/OneFormer id or dir>")
register_adapter("hf", "panoptic", "optik.models.adapters.hf_segmentation:create_hf_panoptic",
                 "hf:<Mask2Former/OneFormer id or dir>")
