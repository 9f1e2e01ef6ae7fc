"""``mask2former`` and ``oneformer`` — universal segmenters (one architecture for semantic, instance and
panoptic segmentation) as small, randomly initialised native models, registered for the three sub-tasks.

* Mask2Former: Cheng et al. 2022, "Masked-attention Mask Transformer for Universal Image Segmentation".
* OneFormer: Jain et al. 2023, "OneFormer: One Transformer to Rule Universal Image Segmentation"
  (task-conditioned queries; trained here without its text-contrastive loss).

Both are transformers models (``Mask2FormerForUniversalSegmentation`` / ``OneFormerForUniversalSegmentation``)
built from a SMALL config — a 4-stage ResNet backbone (widths 16–128), 32-wide pixel and transformer decoders,
one deformable encoder layer, two masked-attention decoder layers, 16 queries — so that training at
64–128 px is feasible on a CPU. They are :class:`~optik.models.adapters.hf_segmentation.HFUniversalSegmenter`
(Segmenter protocol, post-processing per sub-task); ``config_dict()`` stores the full transformers config,
so a weights file rebuilds them offline. Any config field can be overridden by keyword
(``hidden_dim=64, num_queries=25, decoder_layers=3`` …); ``widths``/``depths`` size the backbone.
For hub checkpoints use ``hf:<id or dir>``.

>>> model = create("mask2former", task="panoptic", num_classes=4, isthing=[True, True, False, False])  # doctest: +SKIP
>>> model.forward_loss(images, targets)["loss"].backward()                                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import nn

from optik.errors import ModelError
from optik.models.registry import register_model

_BACKBONE = {"widths": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}
_DECODER = {"hidden_dim": 32, "num_attention_heads": 2, "dim_feedforward": 64, "encoder_feedforward_dim": 64,
            "encoder_layers": 1, "decoder_layers": 2, "num_queries": 16, "train_num_points": 1024}  # fmt: skip
# Per architecture: its names for the pixel-decoder widths, and what it needs besides.
_ARCH = {
    "mask2former": {"feature_size": 32, "mask_feature_size": 32},
    "oneformer": {"conv_dim": 32, "mask_dim": 32, "query_dec_layers": 1, "task_seq_len": 16,
                  "text_encoder_context_length": 16, "dropout": 0.0, "is_training": False},  # fmt: skip
}


def tiny_config(arch: str, num_classes: int, *, widths: tuple[int, ...] = _BACKBONE["widths"],
                depths: tuple[int, ...] = _BACKBONE["depths"], **overrides: Any) -> Any:  # fmt: skip
    """A small random transformers config for ``arch`` (``"mask2former"``/``"oneformer"``).

    >>> tiny_config("mask2former", 3, num_queries=8).num_queries
    8
    """
    from transformers import AutoConfig, ResNetConfig

    if len(widths) != 4 or len(depths) != 4:
        raise ModelError(f"{arch}: widths and depths need 4 stages, got {widths}, {depths}")
    backbone = ResNetConfig(
        num_channels=3, embedding_size=widths[0], hidden_sizes=list(widths), depths=list(depths), layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    values = {**_DECODER, **_ARCH[arch], **overrides}
    quiet = logging.getLogger(f"transformers.models.{arch}.configuration_{arch}")
    level, _ = quiet.level, quiet.setLevel(logging.ERROR)  # "resnet is not a supported backbone": it works
    try:
        config = AutoConfig.for_model(arch, backbone_config=backbone, use_pretrained_backbone=False, **values)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{arch}: bad config override: {e}") from e
    finally:
        quiet.setLevel(level)
    config.num_labels = num_classes
    return config


def _native_class() -> type:
    from optik.models.adapters.hf_segmentation import HFUniversalSegmenter

    class NativeUniversalSegmenter(HFUniversalSegmenter):
        """A native ``mask2former``/``oneformer``: ``config_dict()`` gives the builder kwargs (``hf_config``)."""

        def config_dict(self) -> dict[str, Any]:
            return {"hf_config": super().config_dict()}

    return NativeUniversalSegmenter


_NATIVE_CLS: type | None = None


def _build(
    arch: str,
    subtask: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | None = None,
    isthing: list[bool] | None = None,
    hf_config: dict[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    global _NATIVE_CLS
    from optik.models.adapters.hf import _data_config, load_hf_model
    from optik.models.adapters.hf_segmentation import _AutoSegmentation, _prepare, task_token_ids

    overrides.pop("subtask", None)  # the registry key already fixes it
    if in_chans != 3:
        raise ModelError(f"{arch} takes RGB input (in_chans=3), got in_chans={in_chans}")
    if num_classes < 1:
        raise ModelError(f"{arch} needs num_classes >= 1, got {num_classes}")
    if overrides.pop("backbone", None) is not None:
        raise ModelError(f"{arch}: size the ResNet backbone with widths=/depths=, or use hf:<checkpoint>")
    if hf_config is not None:
        if overrides:
            raise ModelError(f"{arch}: hf_config fixes the architecture; drop {sorted(overrides)}")
        model, data_cfg = load_hf_model(
            arch, _AutoSegmentation, num_classes=num_classes, class_names=None, hf_config=hf_config,
            pretrained=False, prepare=_prepare, what="segmentation model",
        )
    else:
        config = tiny_config(arch, num_classes, **overrides)
        model = _AutoSegmentation.from_config(config)
        data_cfg = _data_config(None, config)
        if arch == "oneformer":
            data_cfg["task_inputs"] = task_token_ids(None, config.task_seq_len)
    if img_size is not None:
        data_cfg["input_size"] = (3, int(img_size), int(img_size))
    _NATIVE_CLS = _NATIVE_CLS or _native_class()
    wrapper = _NATIVE_CLS(model.float(), data_cfg, subtask, isthing=isthing if subtask != "semantic" else None)
    return wrapper.train()


def _register(arch: str, subtask: str) -> Callable[..., nn.Module]:
    def builder(**kwargs: Any) -> nn.Module:
        return _build(arch, subtask, **kwargs)

    builder.__name__ = f"{arch}_{subtask}"
    builder.__doc__ = f"``{arch}`` for task={subtask}: a small random {arch} (see optik.models.segment.universal)."
    return register_model(arch, task=subtask)(builder)


for _arch in ("mask2former", "oneformer"):
    for _subtask in ("semantic", "instance", "panoptic"):
        _register(_arch, _subtask)

__all__ = ["tiny_config"]
