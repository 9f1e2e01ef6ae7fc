"""Models: one registry for native architectures, timm, Hugging Face and torchvision models.

Importing this package registers every model: the native zoo (classify), the house detector (detect),
the segmentation models (semantic / instance / panoptic), the generative models (generate) and the
library adapters (``timm:``, ``hf:``, ``tv:``; their libraries load on first use).

>>> from optik.models import create, freeze_backbone, model_data_config
>>> model = create("resnet", num_classes=5, in_chans=1)             # doctest: +SKIP
>>> model = create("timm:convnext_atto", num_classes=5)             # doctest: +SKIP
>>> model = create("hf:path/to/saved_vit", num_classes=5)           # doctest: +SKIP
"""

from __future__ import annotations

from optik.models.registry import adapter_hints, create, list_models, model_tasks, register_adapter, register_model
from optik.models.transfer import (
    freeze_backbone,
    load_weights,
    model_data_config,
    read_state_dict,
    split_head,
    unfreeze,
)

from optik.models.convert import ConversionReport, convert_checkpoint, convert_state_dict

# isort: split
# Registration on import (timm's way): each package's builders add themselves to the registry (imported
# after it, so a model module may use `from optik.models import create`).
from optik.models import adapters, detect, generative, segment, zoo  # noqa: F401

__all__ = [
    "ConversionReport",
    "adapter_hints",
    "convert_checkpoint",
    "convert_state_dict",
    "create",
    "freeze_backbone",
    "list_models",
    "load_weights",
    "model_tasks",
    "model_data_config",
    "read_state_dict",
    "register_adapter",
    "register_model",
    "split_head",
    "unfreeze",
]
