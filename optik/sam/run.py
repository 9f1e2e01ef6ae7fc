"""``optik sam predict``: SAM on images/folders/videos, prompted or automatic.

>>> rs = sam_predict(source="dog.jpg", points=[[120, 80]])              # doctest: +SKIP
>>> rs = sam_predict({"source": "imgs/", "save": True})  # no prompts: automatic masks → runs/sam/predict/  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optik.config import update_config
from optik.errors import ConfigError
from optik.sam.automatic import SamAutomaticMaskGenerator
from optik.sam.config import SamPredictConfig, amg_kwargs, build_sam_config, resolve_mode
from optik.sam.predictor import SamPredictor


def sam_predict(cfg: SamPredictConfig | dict[str, Any] | None = None, source: Any = None, **overrides: Any) -> list[Any]:
    """Segment every image of ``source`` (default ``cfg.source``) and return one Results each.

    With prompts: the same ``points``/``labels``/``boxes`` prompts on every image; without:
    SAM's automatic mask generator. With ``save=true`` writes overlays (``0000_<stem>.png``, videos
    as ``<stem>.mp4``) and ``predictions.jsonl`` into ``<project>/sam/<name or predict>N/``.
    """
    from optik.engine.callbacks import console
    from optik.engine.inference import FRAME_SEP, VideoSink, iter_sources
    from optik.engine.rundir import new_run_dir

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
    run_dir = new_run_dir(cfg.project, "sam", cfg.name or "predict", cfg.exist_ok) if cfg.save else None
    jsonl = open(run_dir / "predictions.jsonl", "w") if run_dir else None
    videos = VideoSink(run_dir) if run_dir else None
    results = []
    try:
        for i, (name, img) in enumerate(iter_sources(source)):
            if generator is not None:
                r = generator.generate(img, path=name)
            else:
                predictor.set_image(img, path=name)
                r = predictor.predict(cfg.points, cfg.labels, cfg.boxes, multimask=cfg.multimask,
                                      mask_threshold=cfg.mask_threshold)
            if cfg.verbose:
                console.print(f"{name}: {r.verbose()} ({sum(v for k, v in r.speed.items() if k in ('inference', 'postprocess')):.0f} ms)")
            if run_dir is not None:
                if FRAME_SEP in name:
                    videos.write(name, r.plot())
                else:
                    stem = Path(name).stem if Path(name).suffix else name
                    r.save(run_dir / f"{i:04d}_{stem}.png")
                jsonl.write(r.to_json() + "\n")
            if FRAME_SEP in name:
                r.release_image()  # long videos stay in constant memory
            results.append(r)
    finally:
        if jsonl:
            jsonl.close()
        if videos is not None:
            videos.close()
    if run_dir is not None:
        console.print(f"{len(results)} SAM predictions saved to [bold]{run_dir}[/bold]")
    return results
