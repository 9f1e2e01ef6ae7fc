"""``optik sam predict``: SAM on images/folders/videos, prompted or automatic.

>>> rs = sam_predict(source="dog.jpg", points=[[120, 80]])              # doctest: +SKIP
>>> rs = sam_predict({"source": "imgs/", "save": True})  # no prompts: automatic masks → runs/sam/predict/  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from optik.config import update_config
from optik.errors import ConfigError
from optik.sam.automatic import SamAutomaticMaskGenerator
from optik.sam.config import SamPredictConfig, amg_kwargs, build_sam_config, resolve_mode
from optik.sam.predictor import SamPredictor


def sam_predict(cfg: SamPredictConfig | dict[str, Any] | None = None, source: Any = None, *, stream: bool = False,
                **overrides: Any) -> list[Any] | Iterator[Any]:
    """Segment every image of ``source`` (default ``cfg.source``) and return one Results each (``stream=True``:
    a generator that writes as it goes and keeps nothing — what ``optik sam predict`` runs).

    With prompts: the same ``points``/``labels``/``boxes`` prompts on every image; without:
    SAM's automatic mask generator. With ``save=true`` writes overlays (``0000_<stem>.png``, videos
    as ``<stem>.mp4``) and ``predictions.jsonl`` into ``<project>/sam/<name or predict>N/``.
    """
    from optik.console import console
    from optik.engine.inference import collect_results, iter_sources, write_results

    if cfg is None or isinstance(cfg, dict):
        cfg = build_sam_config({**(cfg or {}), **overrides})
    elif not isinstance(cfg, SamPredictConfig):  # a plain PredictConfig (task=sam): add SAM's defaults
        cfg = build_sam_config({**cfg.model_dump(exclude_unset=True), **overrides})
    elif overrides:
        cfg = update_config(cfg, **overrides)
    source = cfg.source if source is None else source
    if source is None:
        raise ConfigError("missing key 'source' (an image file, folder, glob, video, or arrays)")
    mode = resolve_mode(cfg)  # before loading the model: config mistakes fail fast
    predictor = SamPredictor(cfg.model or "", device=cfg.device)
    generator = SamAutomaticMaskGenerator(predictor, **amg_kwargs(cfg)) if mode == "auto" else None

    def results() -> Iterator[Any]:
        for name, img in iter_sources(source):
            if generator is not None:
                r = generator.generate(img, path=name)
            else:
                predictor.set_image(img, path=name)
                r = predictor.predict(cfg.points, cfg.point_labels, cfg.boxes, multimask=cfg.multimask,
                                      mask_threshold=cfg.mask_threshold)
            if cfg.verbose:
                console.print(f"{name}: {r.verbose()} ({sum(v for k, v in r.speed.items() if k in ('inference', 'postprocess')):.0f} ms)")
            yield r

    if stream:
        return write_results(results(), cfg, "SAM predictions")
    return collect_results(results(), cfg, "SAM predictions")


def predict(cfg: SamPredictConfig) -> Iterator[Any]:
    """``optik sam predict`` (the catalog's runner): :func:`sam_predict` as a stream, so memory stays flat."""
    return sam_predict(cfg, stream=True)
