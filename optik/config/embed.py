"""``optik embed`` keys: self-supervised training (SimCLR / MoCo / DINO), representation evaluation (k-NN,
linear probe), feature extraction, index and search.

>>> EmbedTrainConfig(data="digits", method="dino").teacher_temp
0.04
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from optik.config.base import PredictConfig, TrainConfig, ValConfig


def _scale(v: tuple[float, float] | None) -> tuple[float, float] | None:
    if v is not None and not 0 < v[0] <= v[1] <= 1:
        raise ValueError("expected two numbers 0 < min <= max <= 1, e.g. [0.2, 1.0]")
    return v


class EmbedTrainConfig(TrainConfig):
    """``optik embed train``: a self-supervised method on any classification data (labels only evaluate)."""

    method: Literal["simclr", "moco", "dino", "mae"] = Field("simclr", description="simclr | moco | dino | mae (ViT backbones)")
    proj_dim: int = Field(128, ge=2, description="projection size (simclr/moco) or number of DINO prototypes")
    hidden: int = Field(512, ge=2, description="hidden width of the projector / DINO head")
    temperature: float = Field(0.2, gt=0, description="NT-Xent / InfoNCE temperature (SimCLR 0.1-0.5, MoCo v2 0.2)")
    # Not `momentum`: that is the engine's SGD / RMSprop key.
    teacher_momentum: float = Field(0.99, ge=0, lt=1, description="MoCo key-encoder momentum; DINO's starting teacher momentum (cosine to 1)")
    queue: int = Field(1024, ge=1, description="MoCo queue length (capped at the number of training images)")
    teacher_temp: float = Field(0.04, gt=0, description="DINO teacher temperature (sharpening)")
    student_temp: float = Field(0.1, gt=0, description="DINO student temperature")
    center_momentum: float = Field(0.9, ge=0, lt=1, description="DINO centre EMA momentum")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="MAE: fraction of the patches masked")
    norm_pix: bool = Field(True, description="MAE: reconstruct per-patch standardised pixels (the paper's norm_pix_loss)")
    decoder_dim: int = Field(128, ge=8, description="MAE decoder width (the paper: 512 at 224 px)")
    decoder_depth: int = Field(2, ge=1, description="MAE decoder blocks (the paper: 8)")
    backbone_args: dict[str, Any] | None = Field(None, description="extra arguments of a fresh backbone, e.g. a small ViT: "
                                                 "{patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3}")  # fmt: skip
    crop_scale: tuple[float, float] | None = Field(None, description="random-resized-crop area range (default: simclr/moco/mae 0.2-1, dino 0.4-1)")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability of the views")
    jitter: float = Field(1.0, ge=0, description="colour-jitter strength (1 = the papers' 0.4/0.4/0.4/0.1)")
    local_crops: int | None = Field(None, ge=0, description="DINO multi-crop: small local crops per image (unset: 6; 0 = the two global crops only)")
    local_size: int | None = Field(None, ge=8, description="DINO local crop side in px (default imgsz·96/224)")
    local_scale: tuple[float, float] = Field((0.05, 0.4), description="DINO local crop area range (the paper's 0.05-0.4)")
    knn_k: int = Field(20, ge=1, description="k of the k-NN evaluation")
    knn_t: float = Field(0.07, gt=0, description="temperature of the k-NN vote (DINO eval_knn)")
    knn_bank: int = Field(5000, ge=1, description="training images in the k-NN bank (evenly spaced when more)")
    probe: bool = Field(False, description="also fit a linear probe at every validation")
    weight_decay: float = Field(1e-4, ge=0)

    @field_validator("crop_scale", "local_scale")
    @classmethod
    def _crop(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return _scale(v)

    @field_validator("local_crops")
    @classmethod
    def _local(cls, v: int | None, info: ValidationInfo) -> int | None:
        # Unset stays None (the task reads it as 6 for DINO, 0 otherwise), so changing only method= stays valid.
        method = info.data.get("method")
        if v and method != "dino":
            raise ValueError(f"local crops are DINO's multi-crop; method={method} takes two views (set local_crops=0 or method=dino)")
        return v


class EmbedValConfig(ValConfig):
    """``optik embed val``: k-NN and linear-probe accuracy of any representation — an embed run, a classify run
    (its backbone), ``timm:<name>`` (``pretrained=<file>``), ``hf:<dir>`` — on classification data."""

    knn_k: int = Field(20, ge=1, description="k of the k-NN evaluation")
    knn_t: float | None = Field(0.07, gt=0, description="temperature of the weighted vote; unset (knn_t=) = majority vote")
    knn_bank: int = Field(50000, ge=1, description="training images in the k-NN bank (evenly spaced when more)")
    probe: bool = Field(True, description="fit a logistic-regression probe on the training features")
    map: Literal["pca", "tsne"] | None = Field("pca", description="2-D map of the val features in plots/ (pca | tsne | none)")

    @field_validator("knn_t", mode="before")
    @classmethod
    def _t(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v


class EmbedPredictConfig(PredictConfig):
    """``optik embed predict``: pooled features of images → ``features.safetensors`` + ``index.json``."""

    save: bool = Field(False, description="write features.safetensors, index.json and predictions.jsonl (the CLI: save=true)")
    normalize: bool = Field(False, description="L2-normalise the stored features")
    patches: bool = Field(False, description="also the patch features: (N, h·w, D) 'patches' in features.safetensors, "
                          "the grid in index.json (timm models, native CNNs)")  # fmt: skip


class EmbedIndexConfig(PredictConfig):
    """``optik embed index``: a cosine top-k index of images (``source=``) or of a predict run (``features=``)."""

    mode: str = "index"
    save: bool = True
    features: str | None = Field(None, description="a predict run dir (or its features.safetensors) instead of source=")


class EmbedSearchConfig(PredictConfig):
    """``optik embed search``: image → image queries against an index: top-k paths and scores, a grid PNG."""

    mode: str = "search"
    save: bool = True
    index: str | None = Field(None, description="an index run dir (from optik embed index)")
    k: int = Field(5, ge=1, description="neighbours per query")
    backend: Literal["auto", "torch", "faiss"] = Field("auto", description="exact search: torch matmul, or faiss when installed")
