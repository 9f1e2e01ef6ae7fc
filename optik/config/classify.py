"""``optik classify`` keys: augmentation presets, class imbalance and distillation (train), Grad-CAM
(explain) and pruning (prune).

>>> ClassifyTrainConfig(data="digits", mixup=0.2).mixup
0.2
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from optik.config.base import PredictConfig, TrainConfig


class ClassifyTrainConfig(TrainConfig):
    """``optik classify train``: the engine's keys plus classification augmentation, imbalance and distillation."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # augmentation (classification presets on torchvision.transforms.v2)
    augment: Literal["none", "randaugment", "trivialaugment", "autoaugment", "augmix"] = "none"
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] = (0.6, 1.0)
    color_jitter: float = Field(0.0, ge=0)
    erasing: float = Field(0.0, ge=0, le=1)
    mixup: float = Field(0.0, ge=0, description="MixUp alpha (0 = off)")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off)")
    # class imbalance
    class_weights: bool = Field(False, description="inverse-frequency ('balanced') weights in the loss")
    sampler: Literal["none", "weighted"] = Field("none", description="weighted = class-balanced sampling")
    # knowledge distillation (classification; Hinton et al. 2015)
    teacher: str | None = Field(None, description="distil from this trained model (weights file / run dir / .onnx)")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-target KL term (1 - alpha: hard CE)")
    distill_T: float = Field(4.0, gt=0, description="softmax temperature of the soft targets")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("expected two numbers 0 < min <= max <= 1, e.g. [0.6, 1.0]")
        return v


class ExplainConfig(PredictConfig):
    """``optik classify explain``: class-activation heatmaps (Grad-CAM, Grad-CAM++, gradient saliency)."""

    mode: str = "explain"
    method: Literal["gradcam", "gradcam++", "saliency"] = "gradcam"
    layer: str | None = Field(None, description="target layer name (default: chosen automatically for CNNs and ViTs)")
    target: int | str | None = Field(None, description="class index or name to explain (default: the predicted class)")
    alpha: float = Field(0.5, ge=0, le=1, description="heatmap opacity in the overlay")
    save: bool = True


class PruneConfig(ClassifyTrainConfig):
    """``optik classify prune``: magnitude pruning (unstructured or whole channels), a short fine-tune
    that keeps the zeros, and a sparsity-vs-accuracy table."""

    mode: str = "prune"
    method: Literal["unstructured", "structured"] = "unstructured"
    amount: list[float] = Field([0.3, 0.5, 0.7], description="fractions of weights (or channels) to remove, one row each")
    epochs: int = Field(1, ge=0, description="fine-tune epochs after pruning (0 = none)")
    lr: float | None = Field(1e-4, gt=0, description="fine-tune learning rate")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            v = []  # amount= (the CLI's empty value)
        v = [v] if isinstance(v, (int, float, str)) and not (isinstance(v, str) and "," in v) else v
        try:
            v = [float(x) for x in (v.split(",") if isinstance(v, str) else v)]
        except (TypeError, ValueError):
            raise ValueError(f"{v!r} is not a list of fractions, e.g. amount=[0.3,0.5]") from None
        if not v:  # nothing to prune: the sparsity table would have no row (was an IndexError)
            raise ValueError("give at least one fraction to prune, e.g. amount=[0.3,0.5]")
        if any(not 0 < x < 1 for x in v):
            raise ValueError("each amount is a fraction 0 < a < 1, e.g. amount=[0.3,0.5]")
        return v
