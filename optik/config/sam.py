"""``optik sam predict`` keys: point / box prompts, or the automatic mask generator's keys without them.

>>> cfg = SamPredictConfig(points=[[10, 20], [30, 5]], point_labels=[1, 0])
>>> cfg.points, cfg.point_labels, resolve_mode(cfg)
([[10.0, 20.0], [30.0, 5.0]], [1, 0], 'prompt')
>>> SamPredictConfig(points=[[1, 2]]).point_labels       # labels default to 1 (object)
[1]
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from optik.config.base import PredictConfig
from optik.config.parse import coordinate_rows, parse_cli_value

AMG_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
            "box_nms_thresh", "crop_n_layers", "crop_overlap_ratio", "crop_nms_thresh", "crop_n_points_downscale_factor",
            "min_mask_region_area")  # fmt: skip


class SamPredictConfig(PredictConfig):
    """Keys of ``optik sam predict``: prompts (``points``/``point_labels``/``boxes``) give masks for those objects;
    without prompts SAM's automatic mask generator segments everything (the ``points_per_side`` … keys).
    ``labels=``, the old spelling of ``point_labels=``, still works."""

    renamed: ClassVar[dict[str, str]] = {"labels": "point_labels"}

    task: str = "sam"
    mode: str = "predict"
    model: str | None = Field("hf:facebook/sam-vit-base", description="hf:<SAM hub id> or a local SamModel directory")
    points: list[list[float]] | None = Field(None, description="point prompts [[x, y], ...] in original pixels")
    point_labels: list[int] | None = Field(None, validate_default=True, description="per point: 1 = object, 0 = background")
    boxes: list[list[float]] | None = Field(None, description="box prompts [[x1, y1, x2, y2], ...] (one mask per box)")
    multimask: bool = Field(True, description="one object → SAM's 3 candidate masks ranked by predicted IoU")
    mask_threshold: float = Field(0.0, description="mask logit threshold")
    # automatic mask generator (no prompts), segment-anything's defaults
    points_per_side: int = Field(32, ge=1, le=256, description="AMG: point grid per side")
    points_per_batch: int = Field(64, ge=1, description="AMG: prompts decoded together")
    pred_iou_thresh: float = Field(0.88, ge=0, le=1, description="AMG: min predicted IoU (0 = off)")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="AMG: min stability score (0 = off)")
    stability_score_offset: float = Field(1.0, ge=0, description="AMG: logit offset of the stability score")
    box_nms_thresh: float = Field(0.7, gt=0, le=1, description="AMG: box NMS IoU within a crop")
    crop_n_layers: int = Field(0, ge=0, le=4, description="AMG: extra crop layers ((2^i)^2 crops in layer i)")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="AMG: crop overlap (fraction of short side)")
    crop_nms_thresh: float = Field(0.7, gt=0, le=1, description="AMG: box NMS IoU across crops")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="AMG: layer i uses points_per_side / factor^i")
    min_mask_region_area: int = Field(0, ge=0, description="AMG: fill holes / drop islands smaller than this (px)")

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, v: Any) -> Any:
        return coordinate_rows(v, 2, "[[x, y], ...] point coordinates")

    @field_validator("boxes", mode="before")
    @classmethod
    def _boxes(cls, v: Any) -> Any:
        rows = coordinate_rows(v, 4, "[[x1, y1, x2, y2], ...]")
        if rows and any(b[2] < b[0] or b[3] < b[1] for b in rows):
            raise ValueError("each box is x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        return rows

    @field_validator("point_labels", mode="before")
    @classmethod
    def _labels(cls, v: Any, info: ValidationInfo) -> Any:
        points = info.data.get("points")
        if isinstance(v, str):
            v = parse_cli_value(v)
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, (int, float)):
            v = [v]
        if v is None or (isinstance(v, list) and not v):
            return None if points is None else [1] * len(points)
        if points is None:
            raise ValueError("point_labels given without 'points'")
        if not isinstance(v, list) or any(x not in (0, 1) for x in v):
            raise ValueError("one label per point: 1 = object, 0 = background")
        if len(v) != len(points):
            raise ValueError(f"{len(v)} labels for {len(points)} point{'s' * (len(points) != 1)} (one label per point: 1 = object, 0 = background)")
        return [int(x) for x in v]


def resolve_mode(cfg: SamPredictConfig) -> str:
    """``"prompt"`` when points or boxes are given, else ``"auto"`` (automatic mask generation)."""
    return "prompt" if (cfg.points or cfg.boxes) else "auto"


def amg_kwargs(cfg: SamPredictConfig) -> dict[str, Any]:
    """The automatic-mask-generator keyword arguments of ``cfg``."""
    return {k: getattr(cfg, k) for k in AMG_KEYS} | {"mask_threshold": cfg.mask_threshold}
