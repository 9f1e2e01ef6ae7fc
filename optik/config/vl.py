"""``optik vl`` keys: image captioning (``caption``) and visual question answering (``vqa``) with a transformers
vision-language model (BLIP) from a local folder or the hub cache.

>>> VlCaptionConfig(model="hf:blip", prompt="a photo of").max_new_tokens
30
>>> VlVqaConfig(model="hf:blip-vqa", question="  how many shapes? ").question
'how many shapes?'
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from optik.config.base import PredictConfig

MODEL_HELP = "hf:<dir|hub id> of a transformers vision-language model saved with its processor (save_pretrained)"


class VlGenerateConfig(PredictConfig):
    """Keys shared by every ``vl`` mode: the model and the text decoding settings (greedy unless ``num_beams`` > 1)."""

    task: str = "vl"
    model: str | None = Field(None, description=MODEL_HELP)
    max_new_tokens: int = Field(30, ge=1, le=1024, description="most tokens generated per image")
    num_beams: int = Field(1, ge=1, le=64, description="beam search width (1 = greedy decoding, deterministic)")
    batch: int = Field(8, ge=1, description="images generated together")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v


class VlCaptionConfig(VlGenerateConfig):
    """``optik vl caption model=hf:<BLIP dir> source=imgs/ [prompt="a photo of"]``: one caption per image
    (``Results.text``); a prompt is the caption's start, which the model continues."""

    mode: str = "caption"
    prompt: str | None = Field(None, description="conditional captioning: the text the caption starts with")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        return (str(v).strip() or None) if v is not None else None


class VlQuestionConfig(VlGenerateConfig):
    """A question asked about every image (vqa, docqa)."""

    question: str | None = Field(None, description="the question asked about every image (required)")

    @field_validator("question", mode="before")
    @classmethod
    def _question(cls, v: Any) -> Any:
        return (str(v).strip() or None) if v is not None else None


class VlVqaConfig(VlQuestionConfig):
    """``optik vl vqa model=hf:<BLIP-VQA dir> source=img.png question="how many shapes?"``: the answer per image
    (``Results.answer``, the question in ``Results.question``)."""

    mode: str = "vqa"


class VlDocqaConfig(VlQuestionConfig):
    """``optik vl docqa model=hf:<Donut dir> source=invoice.png question="what is the total?"``: document question
    answering without OCR (Donut); ``Results.answer`` ("" when the model gives none)."""

    mode: str = "docqa"
