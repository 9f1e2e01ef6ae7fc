"""``optik detect`` keys: thresholds shared by every mode, letterbox/mosaic augmentation for training.

>>> DetectPredictConfig(conf=0.5).max_det
300
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from optik.config.base import (
    BenchmarkConfig, ExportConfig, LearningRate, LetterboxSize, PredictConfig, TrainConfig, ValConfig,
)  # fmt: skip
from optik.config.parse import text_list
from optik.config.serve import ServeConfig


class DetectOptions(LetterboxSize):
    """Keys shared by every detection mode (mixed into the detect configs below)."""

    conf: float | None = Field(None, ge=0, le=1, description="score threshold (default: 0.001 val, 0.25 predict)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="detections kept per image")
    agnostic_nms: bool = Field(False, description="NMS across classes")
    strict: bool = Field(False, description="boxes outside the image: error (true) or clip (false)")


class DetectPrompts(BaseModel):
    """The text queries of an open-vocabulary detector (val, predict, label)."""

    prompts: list[str] | None = Field(None, description="open-vocabulary detectors (hf: OWL-ViT / OWLv2): the text queries, "
                                      "one per class, e.g. prompts=[a cat,a remote] (val: one per data class, in order; "
                                      "default: the class names)")  # fmt: skip

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts(cls, v: Any) -> Any:
        return text_list(v)  # the same list grammar as zeroshot's labels=


class DetectTrainConfig(DetectOptions, TrainConfig):
    batch: int = Field(16, ge=1, description="batch size (per process under torchrun)")
    lr: LearningRate = Field(None, description="peak learning rate, or auto (an LR range test picks it); unset: the optimizer's default (adamw 1e-3, sgd 0.01)")
    weight_decay: float = Field(0.0005, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    mosaic: float = Field(0.5, ge=0, le=1, description="probability of a 4-image mosaic (house detector)")
    close_mosaic: int = Field(2, ge=0, description="turn mosaic off for the last N epochs")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="random rescale range")
    iou_crop: bool = Field(False, description="SSD-style random IoU crop")
    photometric: bool = True
    clip_grad: float | None = Field(10.0, gt=0, description="max gradient norm")
    backbone: str | None = Field(None, description="house detector backbone: native (default) or timm:<name>")


class DetectValConfig(DetectPrompts, DetectOptions, ValConfig):
    batch: int = Field(16, ge=1)
    save_json: bool = Field(True, description="write COCO-format predictions.json")


class DetectPredictConfig(DetectPrompts, DetectOptions, PredictConfig):
    batch: int = Field(8, ge=1)


class DetectExportConfig(DetectOptions, ExportConfig):
    """``optik detect export``: the detect thresholds and input size with the export keys."""


class DetectBenchmarkConfig(DetectOptions, BenchmarkConfig):
    """``optik detect benchmark``: the detect thresholds and input size with the benchmark keys."""


class DetectLabelConfig(DetectPredictConfig):
    """``optik detect label``: predict ``source=`` and write the detections as a COCO dataset JSON (auto-labelling;
    with an open-vocabulary detector, ``prompts=`` name the categories)."""

    out: str | None = Field(None, description="the COCO JSON to write (default: <source folder>/annotations.json)")
    conf: float | None = Field(0.3, ge=0, le=1, description="keep detections scoring above this")


class DetectServeConfig(DetectPrompts, ServeConfig):
    """``optik detect serve`` / ``optik serve`` of a detector: the serve keys, plus ``prompts=`` — an open-vocabulary
    detector's default text queries (a request may send its own: ``/predict?prompts=a cat,a dog``)."""
