"""``optik sam predict`` configuration helpers. The keys themselves are
:class:`optik.config.SamPredictConfig`: prompts (``points``/``labels``/``boxes``) ask for those objects;
without prompts SAM's automatic mask generator segments everything.

>>> cfg = build_sam_config({"points": "[[10, 20], [30, 5]]", "labels": "[1, 0]"})
>>> cfg.points, cfg.labels, resolve_mode(cfg)
([[10.0, 20.0], [30.0, 5.0]], [1, 0], 'prompt')
>>> build_sam_config({"points": [[1, 2]]}).labels       # labels default to 1 (object)
[1]
"""

from __future__ import annotations

from typing import Any

from optik.config import SamPredictConfig, build_config

AMG_KEYS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
            "box_nms_thresh", "crop_n_layers", "crop_overlap_ratio", "crop_nms_thresh", "crop_n_points_downscale_factor",
            "min_mask_region_area")  # fmt: skip


def build_sam_config(overrides: dict[str, Any] | None = None) -> SamPredictConfig:
    """CLI strings / YAML (``cfg=``) / kwargs → :class:`SamPredictConfig` (``build_config("sam", "predict", …)``).

    >>> build_sam_config({"points_per_side": "8"}).points_per_side
    8
    """
    return build_config("sam", "predict", overrides)  # type: ignore[return-value]


def resolve_mode(cfg: SamPredictConfig) -> str:
    """``"prompt"`` when points or boxes are given, else ``"auto"`` (automatic mask generation)."""
    return "prompt" if (cfg.points or cfg.boxes) else "auto"


def amg_kwargs(cfg: SamPredictConfig) -> dict[str, Any]:
    """The automatic-mask-generator keyword arguments of ``cfg``."""
    return {k: getattr(cfg, k) for k in AMG_KEYS} | {"mask_threshold": cfg.mask_threshold}


__all__ = ["AMG_KEYS", "SamPredictConfig", "amg_kwargs", "build_sam_config", "resolve_mode"]
