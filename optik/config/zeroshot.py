"""``optik zeroshot`` keys: the tiny CLIP's text tower and held-out pairs (train), and the zero-shot label set and
prompt templates (val, predict).

>>> ZeroshotPredictConfig(labels="cat, dog").labels
['cat', 'dog']
>>> ZeroshotTrainConfig(holdout="green:triangle,blue:circle").holdout
'green:triangle,blue:circle'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from optik.config.base import PredictConfig, TrainConfig, ValConfig


def _text_list(v: Any) -> Any:
    """``cat,dog`` / ``[cat, dog]`` / a list → a list of stripped, non-empty strings; None stays None."""
    if v is None:
        return None
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        v = text.split(",")
    if not isinstance(v, (list, tuple)):
        raise ValueError("expected a comma-separated list of texts")
    out = [str(x).strip().strip("'\"") for x in v]
    out = [x for x in out if x]
    if not out:
        raise ValueError("expected at least one text")
    if len(set(out)) != len(out):
        raise ValueError(f"repeated entries in {out}")
    return out


class ZeroshotTemplates(BaseModel):
    """The prompt templates of the zero-shot classifier (val, predict)."""

    templates: list[str] | None = Field(None, description="prompt templates with {} for the class name, ensembled "
                                        "(default: the training caption forms; hf: CLIP's photo templates)")  # fmt: skip

    @field_validator("templates", mode="before")
    @classmethod
    def _templates(cls, v: Any) -> Any:
        return _text_list(v)


class ZeroshotTexts(ZeroshotTemplates):
    """The zero-shot label set and its prompt templates (predict)."""

    labels: list[str] | None = Field(None, description="class names to choose among, e.g. labels=[cat,dog] (default: the classes "
                                     "the model was trained on)")  # fmt: skip

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        return _text_list(v)


class ZeroshotTrainConfig(TrainConfig):
    """``optik zeroshot train``: a tiny CLIP from scratch; ``model=`` names its image tower (native zoo or timm:)."""

    model: str | None = Field("resnet", description="image tower: native name | timm:<name> | a zeroshot weights file / run dir")
    imgsz: int = Field(64, ge=16, le=1024, description="square input size in pixels")
    batch: int = Field(128, ge=2, description="batch size: the contrastive loss sees batch-1 negatives per pair")
    weight_decay: float = Field(0.1, ge=0)
    embed_dim: int = Field(128, ge=8, le=4096, description="shared embedding size")
    text_width: int = Field(128, ge=8, le=4096, description="text Transformer width")
    text_layers: int = Field(2, ge=1, le=48)
    text_heads: int = Field(4, ge=1, le=64)
    context_length: int = Field(16, ge=4, le=512, description="text tokens (start and end included)")
    holdout: str | None = Field(None, description="synthetic:captions: colour:shape pairs never trained on, e.g. "
                                "green:triangle,blue:circle (default: one per colour and shape)")  # fmt: skip
    templates: list[str] | None = Field(None, description="class-name captions for a classification data source; "
                                        "also the zero-shot prompts of validation")  # fmt: skip

    @field_validator("templates", mode="before")
    @classmethod
    def _templates(cls, v: Any) -> Any:
        return _text_list(v)

    @field_validator("holdout", mode="before")
    @classmethod
    def _holdout(cls, v: Any) -> Any:
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


class ZeroshotValConfig(ZeroshotTemplates, ValConfig):
    """``optik zeroshot val``: zero-shot top-1 over the data's classes (synthetic:captions: the held-out pairs'
    scenes among every colour-shape pair) and image↔text recall@1/5/10 on the split's captions."""


class ZeroshotPredictConfig(ZeroshotTexts, PredictConfig):
    """``optik zeroshot predict source=… labels=[cat,dog]``: per image, a probability per label."""
