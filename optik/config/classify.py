"""``optik classify`` keys: augmentation presets, class imbalance and distillation (train), Grad-CAM
(explain) and pruning (prune).

>>> ClassifyTrainConfig(data="digits", mixup=0.2).mixup
0.2
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from optik.config.base import CommonConfig, PredictConfig, TrainConfig


class ClassifyTrainConfig(TrainConfig):
    """``optik classify train``: the engine's keys plus classification augmentation, imbalance and distillation."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # augmentation (classification presets on torchvision.transforms.v2)
    augment: Literal["none", "randaugment", "trivialaugment", "autoaugment", "augmix"] = "none"
    # hflip / scale: None = the data's default (optik.data.transforms.augment_settings: digits and synthetic
    # shapes keep whole, unflipped images; photos get flips and a 0.6-1.0 crop); the run's config.yaml holds the value used
    hflip: float | None = Field(None, ge=0, le=1, description="horizontal flip probability (default: the data's, 0.5 for photos)")
    vflip: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] | None = Field(None, description="random-resized-crop area range (default: the data's, [0.6, 1.0] for photos)")
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
    # loss; multi-label data (a set of labels per image) trains per-class sigmoids
    loss: Literal["auto", "ce", "bce", "asl", "focal"] = Field(
        "auto", description="auto: cross-entropy (one label per image) or BCE (multi-label); bce / asl / focal: multi-label only"
    )
    asl_gamma_neg: float = Field(4.0, ge=0, description="ASL focusing on negatives (Ridnik et al. 2021: 4)")
    asl_gamma_pos: float = Field(0.0, ge=0, description="ASL focusing on positives (paper: 0)")
    asl_clip: float = Field(0.05, ge=0, lt=1, description="ASL probability margin m shifted off negatives (paper: 0.05)")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss gamma (Lin et al. 2017: 2)")
    focal_alpha: float = Field(0.25, le=1, description="focal loss weight of positives in [0, 1] (0.25); < 0: none")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1] <= 1:
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


class SummaryConfig(CommonConfig):
    """``optik classify summary``: per-layer output shapes, parameters, MACs and (plain conv stacks) the
    receptive field of ``model`` (a zoo name, ``timm:<name>``, or trained weights / a run dir) at ``imgsz``."""

    mode: str = "summary"
    in_chans: int | None = Field(None, ge=1, description="input channels of a model built by name (default: the model's, 3)")
    num_classes: int = Field(1000, ge=1, description="classifier outputs of a model built by name (trained weights keep theirs)")
    depth: int | None = Field(None, ge=1, description="one row per module at this nesting depth (default: every leaf layer)")
    save: bool = Field(False, description="write summary.json and summary.txt to a run dir")
