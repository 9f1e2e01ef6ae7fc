"""``optik sam predict`` configuration: the keys are :class:`optik.config.sam.SamPredictConfig`; this
module is the SAM package's door to them.

>>> build_sam_config({"points": "[[10, 20], [30, 5]]", "point_labels": "[1, 0]"}).point_labels
[1, 0]
"""

from __future__ import annotations

from typing import Any

from optik.config import build_config
from optik.config.sam import AMG_KEYS, SamPredictConfig, amg_kwargs, resolve_mode


def build_sam_config(overrides: dict[str, Any] | None = None) -> SamPredictConfig:
    """CLI strings / YAML (``cfg=``) / kwargs → :class:`SamPredictConfig` (``build_config("sam", "predict", …)``).

    >>> build_sam_config({"points_per_side": "8"}).points_per_side
    8
    """
    return build_config("sam", "predict", overrides)  # type: ignore[return-value]


__all__ = ["AMG_KEYS", "SamPredictConfig", "amg_kwargs", "build_sam_config", "resolve_mode"]
