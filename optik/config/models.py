"""``optik models`` keys: ``convert`` maps a foreign weights file onto an optik architecture.

>>> ModelsConvertConfig(src="lite0.pth", model="timm:tf_efficientnet_lite0").classes
'auto'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from optik.config.base import CommonConfig


class ModelsConvertConfig(CommonConfig):
    """``optik models convert``: rename a state dict (``.pth`` / ``.bin`` / ``.safetensors``) onto ``model``'s
    parameter names and write a self-describing optik ``.safetensors`` file."""

    task: str = "models"
    mode: str = "convert"
    src: str | None = Field(None, description="the weights file to convert (.pth / .pt / .bin / .safetensors)")
    model: str | None = Field(None, description="the architecture to map it onto, e.g. timm:tf_efficientnet_lite0")
    out: str | None = Field(None, description="the .safetensors file to write (default: <src stem>.safetensors here)")
    num_classes: int | None = Field(None, ge=1, description="head outputs (default: rows of the source's last 2-D tensor)")
    classes: Literal["auto", "imagenet-1k", "none"] = Field(
        "auto", description="class names stored with the weights: auto (a 1000-output head: ImageNet-1k) | imagenet-1k | none"
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _none_word(cls, v: Any) -> Any:
        return "none" if v is None else v  # the CLI reads `classes=none` as None
