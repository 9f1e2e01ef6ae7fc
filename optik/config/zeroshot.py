"""``optik zeroshot`` keys: the tiny CLIP's text tower and held-out pairs (train), and the zero-shot label set and
prompt templates (val, predict).

>>> ZeroshotPredictConfig(labels="cat, dog").labels
['cat', 'dog']
>>> ZeroshotTrainConfig(holdout="green:triangle,blue:circle").holdout
'green:triangle,blue:circle'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from optik.config.base import CommonConfig, ExportConfig, PredictConfig, TrainConfig, ValConfig
from optik.config.parse import text_list
from optik.config.serve import ServeConfig


class ZeroshotTemplates(BaseModel):
    """The prompt templates of the zero-shot classifier (val, predict)."""

    templates: list[str] | None = Field(None, description="prompt templates with {} for the class name, ensembled "
                                        "(default: the training caption forms; hf: CLIP's photo templates)")  # fmt: skip
    wise_alpha: float | None = Field(None, ge=0.0, le=1.0, description="a model fine-tuned with objective=finetune: the "
                                     "WiSE-FT α to use (default: the training's wise_alpha)")  # fmt: skip

    @field_validator("templates", mode="before")
    @classmethod
    def _templates(cls, v: Any) -> Any:
        return text_list(v)


class ZeroshotTexts(ZeroshotTemplates):
    """The zero-shot label set and its prompt templates (predict)."""

    labels: list[str] | None = Field(None, description="class names to choose among, e.g. labels=[cat,dog] (default: the classes "
                                     "the model was trained on)")  # fmt: skip

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        return text_list(v)


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
    objective: Literal["clip", "finetune", "devise"] = Field(
        "clip", description="clip: a tiny CLIP from scratch | finetune: fine-tune model=<CLIP> as a classifier on data= "
        "(WiSE-FT) | devise: an image tower regressed onto text_model=<CLIP>'s label embeddings (generalised zero-shot)")  # fmt: skip
    head: Literal["zeroshot", "linear"] = Field("zeroshot", description="finetune: the head's init — the class names' "
                                                "text embeddings × logit scale (zeroshot), or random (linear)")  # fmt: skip
    wise: list[float] | None = Field(None, description="finetune: the WiSE-FT α grid scored at every validation "
                                     "(default [0,0.25,0.5,0.75,1]; 0 = zero-shot, 1 = fine-tuned)")  # fmt: skip
    wise_alpha: float = Field(0.5, ge=0.0, le=1.0, description="finetune: the α the weights are used at "
                              "(θ = (1−α)·θ_zeroshot + α·θ_finetuned)")  # fmt: skip
    shift_data: str | None = Field(None, description="finetune: a distribution-shifted classification source with the "
                                   "same classes, also scored per α (e.g. synthetic:shapes?difficulty=0.9)")  # fmt: skip
    text_model: str | None = Field(None, description="devise: the CLIP whose text tower embeds the labels "
                                   "(zeroshot weights file / run dir, or hf:<CLIP dir>)")  # fmt: skip
    unseen: list[str] | None = Field(None, description="devise: classes held out of training, e.g. unseen=[star,cross] "
                                     "(synthetic:captions: the holdout pairs)")  # fmt: skip
    margin: float = Field(0.1, gt=0.0, description="devise: the hinge rank loss's margin")

    @field_validator("templates", "unseen", mode="before")
    @classmethod
    def _templates(cls, v: Any) -> Any:
        return text_list(v)

    @field_validator("wise", mode="before")
    @classmethod
    def _wise(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [x for x in v.strip().strip("[]").split(",") if x.strip()]
        if v is not None:
            try:
                v = [float(x) for x in v]
            except (TypeError, ValueError):
                raise ValueError("expected a list of numbers in [0, 1], e.g. wise=[0,0.5,1]") from None
            if not v or any(not 0.0 <= x <= 1.0 for x in v):
                raise ValueError(f"expected numbers in [0, 1] (0 = zero-shot, 1 = fine-tuned), got {v}")
        return v

    @field_validator("holdout", mode="before")
    @classmethod
    def _holdout(cls, v: Any) -> Any:
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v


class ZeroshotValConfig(ZeroshotTemplates, ValConfig):
    """``optik zeroshot val``: zero-shot top-1 over the data's classes (synthetic:captions: the held-out pairs'
    scenes among every colour-shape pair) and image↔text recall@1/5/10 on the split's captions."""


class ZeroshotPredictConfig(ZeroshotTexts, PredictConfig):
    """``optik zeroshot predict source=… labels=[cat,dog]``: per image, a probability per label."""


class ZeroshotExportConfig(ZeroshotTexts, ExportConfig):
    """``optik zeroshot export labels=[cat,dog]``: the image tower with the label set's prompt-ensembled class
    embeddings and logit scale baked in → ``logits`` over the labels and the image ``embedding``."""


class ZeroshotServeConfig(ZeroshotTexts, ServeConfig):
    """``optik zeroshot serve``: ``labels=`` / ``templates=`` are the server's defaults; a request may pass its own
    ``/predict?labels=cat,dog``."""


class ZeroshotScoreConfig(ZeroshotTemplates, CommonConfig):
    """``optik zeroshot score``: CLIPScore of every image in ``source=`` against its text — ``text=`` (one for all),
    ``captions=`` (a .jsonl / .csv of path → text), a Stable Diffusion run's prompt, or class-conditional samples'
    class names (see :mod:`optik.zeroshot.score`)."""

    mode: str = "score"
    source: Any = Field(None, description="image file, folder, glob, or a optik generate run directory")
    text: str | None = Field(None, description="one text every image is scored against, e.g. the prompt it was generated from")
    captions: str | None = Field(None, description="a .jsonl ({path, text} lines: optik vl caption's predictions.jsonl) or "
                                 ".csv (path, text columns) giving each image its text")  # fmt: skip
    w: float = Field(2.5, gt=0, description="CLIPScore weight: 100·w·max(cos, 0); 2.5 as in Hessel et al., 1 as torchmetrics")
