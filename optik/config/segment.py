"""``optik segment`` keys: the flavour (``task=semantic|instance|panoptic``, stored as ``subtask``),
thresholds, and the semantic loss.

>>> SegmentTrainConfig(subtask="instance").conf is None
True
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from optik.config.base import (
    BenchmarkConfig, ExportConfig, LearningRate, LetterboxSize, PredictConfig, TrainConfig, ValConfig,
)  # fmt: skip


SUBTASKS = ("semantic", "instance", "panoptic")


class SegmentOptions(LetterboxSize):
    """Keys shared by every segmentation mode. Users type ``task=semantic|instance|panoptic``;
    :func:`build_config` maps it to ``subtask`` (``task`` itself names the optik task, "segment").
    Listed first in the bases below so its ``task_key`` wins over :class:`CommonConfig`'s."""

    task_key: ClassVar[str | None] = "subtask"

    subtask: Literal["semantic", "instance", "panoptic"] = Field("semantic", description="semantic | instance | panoptic (CLI: task=…)")
    conf: float | None = Field(None, ge=0, le=1, description="instance/panoptic score threshold (default: 0.001 val, 0.25 predict; panoptic 0.5)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold (instance)")
    max_det: int = Field(100, ge=1, description="instances kept per image")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="probability above which a mask pixel is on")
    strict: bool = Field(False, description="annotation problems: error (true) or clip/skip with a log line (false)")


class SegmentTrainConfig(SegmentOptions, TrainConfig):
    batch: int = Field(8, ge=1, description="batch size (per process under torchrun)")
    lr: LearningRate = Field(None, description="peak learning rate, or auto (an LR range test picks it); unset: the optimizer's default (adamw 1e-3, sgd 0.01)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.5, ge=0)
    loss: Literal["ce", "dice", "focal", "ce+dice", "focal+dice"] = Field("ce+dice", description="semantic loss")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="random rescale range")
    photometric: bool = True
    hflip: float = Field(0.5, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="semantic cross-entropy label smoothing")
    class_weights: bool = Field(False, description="semantic: inverse-frequency ('balanced') pixel weights in the loss")
    clip_grad: float | None = Field(10.0, gt=0, description="max gradient norm")
    backbone: str | None = Field(None, description="fpn / unet_timm: timm:<name> (default: the architecture of an optik pretrained= "
                                 "file, e.g. from optik models convert); tv:maskrcnn: resnet18 | resnet50 | mobilenet_v3_large")


class SegmentValConfig(SegmentOptions, ValConfig):
    batch: int = Field(8, ge=1)
    save_json: bool = Field(True, description="instance: write COCO-format (RLE) predictions.json")


class SegmentPredictConfig(SegmentOptions, PredictConfig):
    batch: int = Field(8, ge=1)


class SegmentExportConfig(SegmentOptions, ExportConfig):
    """``optik segment export``: the segment thresholds and input size with the export keys."""


class SegmentBenchmarkConfig(SegmentOptions, BenchmarkConfig):
    """``optik segment benchmark``: the segment thresholds and input size with the benchmark keys."""
