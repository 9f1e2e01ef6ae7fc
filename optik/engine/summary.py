"""``optik <task> summary``: build ``model=`` the way the task builds it (a zoo name, ``timm:<name>``, trained
weights or a run dir) and print :func:`optik.models.summary.summarize`'s table; ``save=true`` also writes
``summary.json`` and ``summary.txt`` to ``<project>/<task>/summary*/``.

>>> from optik.config import build_config
>>> out = summary(build_config("classify", "summary", {"model": "cnn", "imgsz": 32}))   # doctest: +SKIP
>>> out["params"], out["receptive_field"]                                               # doctest: +SKIP
(88696, [22, 22])
"""

from __future__ import annotations

import json
from typing import Any

from optik.console import console
from optik.device import resolve_device
from optik.engine.inference import with_meta_defaults
from optik.engine.rundir import new_run_dir
from optik.errors import ConfigError
from optik.models.summary import summarize
from optik.tasks.base import get_task
from optik.weights import resolve_model_arg

__all__ = ["summary"]


def summary(cfg: Any) -> dict[str, Any]:
    """Summarise ``cfg.model`` at ``cfg.imgsz``; returns :meth:`ModelSummary.as_dict` plus ``model``, ``imgsz``
    and (``save=true``) ``run_dir``."""
    if not cfg.model:
        raise ConfigError(f"missing key 'model' for {cfg.task} summary (e.g. model=cnn, model=timm:resnet18, model=runs/{cfg.task}/train)")
    _, weights, meta = resolve_model_arg(cfg.model)
    if weights is not None:
        if "export" in meta:
            raise ConfigError(f"bad value for 'model': '{weights}' is an exported model; summarise its .safetensors weights")
        if "in_chans" in cfg.model_fields_set or "num_classes" in cfg.model_fields_set:
            key = "in_chans" if "in_chans" in cfg.model_fields_set else "num_classes"
            raise ConfigError(f"'{key}' applies to a model built by name; '{weights}' keeps the architecture it was trained with")
        cfg = with_meta_defaults(cfg, meta)  # imgsz: what it was trained at, unless given
    else:
        meta = {"classes": [str(i) for i in range(cfg.num_classes)]}
    task = get_task(cfg.task)(cfg, meta=meta)
    # A channel count other than the model's own is a build argument (e.g. grey timm models); otherwise
    # the task's own build_model, so the summary shows exactly the model that task trains.
    model = task.create_model(cfg.model, in_chans=cfg.in_chans) if cfg.in_chans and weights is None else task.build_model()
    model = model.to(resolve_device(cfg.device))
    try:
        s = summarize(model, cfg.imgsz, in_chans=cfg.in_chans, depth=cfg.depth)
    except ValueError as e:
        raise ConfigError(f"bad value for 'imgsz' ({cfg.imgsz}) or 'model' ({cfg.model}): {e}") from None
    s.title = f"{cfg.model} at {cfg.imgsz}×{cfg.imgsz}"
    console.print(s.table())
    result: dict[str, Any] = {"model": str(cfg.model), "imgsz": cfg.imgsz, **s.as_dict()}
    if cfg.save:
        run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "summary", cfg.exist_ok)
        (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
        (run_dir / "summary.txt").write_text(s.to_text())
        result["run_dir"] = str(run_dir)
        console.print(f"Results saved to [bold]{run_dir}[/bold]")
    return result
