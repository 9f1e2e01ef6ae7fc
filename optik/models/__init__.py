"""Models: one registry for native architectures, timm and Hugging Face transformers.

>>> from optik.models import create, freeze_backbone, model_data_config
>>> model = create("resnet", num_classes=5, in_chans=1)             # doctest: +SKIP
>>> model = create("timm:convnext_atto", num_classes=5)             # doctest: +SKIP
>>> model = create("hf:path/to/saved_vit", num_classes=5)           # doctest: +SKIP
"""

from __future__ import annotations

from optik.models.registry import create, list_models, register_adapter, register_model
from optik.models.transfer import (
    freeze_backbone,
    load_weights,
    model_data_config,
    read_state_dict,
    split_head,
    unfreeze,
)

__all__ = [
    "create",
    "freeze_backbone",
    "list_models",
    "load_weights",
    "model_data_config",
    "read_state_dict",
    "register_adapter",
    "register_model",
    "split_head",
    "unfreeze",
]
