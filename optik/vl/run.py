"""``optik vl caption`` / ``optik vl vqa``: a transformers BLIP model over images, folders, globs or arrays.

Each image gives one :class:`~optik.results.Results` — ``.text`` (caption) or ``.question`` + ``.answer`` (vqa) —
and with ``save=true`` the run writes ``predictions.jsonl`` (one ``to_json()`` line per image) and an overlay per
image into ``<project>/vl/<name or predict>N/``, like every predict mode.

>>> rs = caption_images(model="hf:path/to/blip", source="imgs/", prompt="a photo of")           # doctest: +SKIP
>>> rs = answer_questions(model="hf:path/to/blip-vqa", source="img.png", question="how many shapes?")  # doctest: +SKIP
>>> rs[0].answer                                                                                 # doctest: +SKIP
'2'
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from optik.config import build_config
from optik.config.vl import VlGenerateConfig
from optik.results import Results


def _config(mode: str, cfg: VlGenerateConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> VlGenerateConfig:
    if cfg is None or isinstance(cfg, dict):
        return build_config("vl", mode, {**(cfg or {}), **overrides})  # type: ignore[return-value]
    return build_config("vl", mode, {**cfg.model_dump(exclude_unset=True), **overrides}) if overrides else cfg  # type: ignore[return-value]


def stream_results(cfg: VlGenerateConfig) -> Iterator[Results]:
    """Results of ``cfg.source``, ``cfg.batch`` images generated together; config mistakes (no source, no question,
    a model of the other mode) raise before the first image is read."""
    from optik.console import console
    from optik.device import resolve_device
    from optik.engine.inference import check_source, iter_image_arrays
    from optik.tasks.vl import VlTask

    check_source(cfg.source)
    task = VlTask(cfg)
    task.check()
    images = iter_image_arrays(cfg.source)
    first = next(images, None)  # a missing file fails here, before the model loads
    if first is None:
        return
    model = task.build_model().to(resolve_device(cfg.device))
    batch: list[tuple[str, Any]] = [first]

    def flush() -> Iterator[Results]:
        t0 = time.perf_counter()
        texts = task.forward(model, [img for _, img in batch])
        ms = 1000 * (time.perf_counter() - t0) / len(batch)
        results = task.postprocess(texts, [{"orig_img": img, "path": name} for name, img in batch])
        batch.clear()
        for r in results:
            r.speed = {"inference": ms}
            if cfg.verbose:
                console.print(f"{r.path}: {r.verbose()} ({ms:.0f} ms)")
            yield r

    if len(batch) == cfg.batch:
        yield from flush()
    for item in images:
        batch.append(item)
        if len(batch) == cfg.batch:
            yield from flush()
    if batch:
        yield from flush()


def _run(mode: str, cfg: Any, source: Any, stream: bool, overrides: dict[str, Any]) -> list[Results] | Iterator[Results]:
    from optik.engine.inference import check_source, collect_results, write_results
    from optik.tasks.vl import VlTask

    if source is not None:
        overrides = {**overrides, "source": source}
    cfg = _config(mode, cfg, overrides)
    check_source(cfg.source)  # config mistakes raise now, also for stream=True
    VlTask(cfg).check()
    results = stream_results(cfg)
    what = "captions" if mode == "caption" else "answers"
    if stream:
        return write_results(results, cfg, what)
    return collect_results(results, cfg, what)


def caption_images(cfg: Any = None, source: Any = None, *, stream: bool = False, **overrides: Any) -> list[Results] | Iterator[Results]:
    """Caption every image of ``source`` (keys as on the CLI: ``model``, ``prompt``, ``max_new_tokens``, ``num_beams``,
    ``batch``, ``save``…); a list of Results with ``.text``, or with ``stream=True`` a generator."""
    return _run("caption", cfg, source, stream, overrides)


def answer_questions(cfg: Any = None, source: Any = None, *, stream: bool = False, **overrides: Any) -> list[Results] | Iterator[Results]:
    """Answer ``question`` about every image of ``source``; a list of Results with ``.question`` and ``.answer``."""
    return _run("vqa", cfg, source, stream, overrides)


def answer_document_questions(cfg: Any = None, source: Any = None, *, stream: bool = False, **overrides: Any) -> list[Results] | Iterator[Results]:
    """Answer ``question`` about every document image of ``source`` with a Donut model; Results with ``.answer``."""
    return _run("docqa", cfg, source, stream, overrides)


def caption(cfg: VlGenerateConfig) -> Iterator[Results]:
    """``optik vl caption`` (the catalog's runner): a stream, so memory stays flat on a large folder."""
    return caption_images(cfg, stream=True)  # type: ignore[return-value]


def vqa(cfg: VlGenerateConfig) -> Iterator[Results]:
    """``optik vl vqa`` (the catalog's runner)."""
    return answer_questions(cfg, stream=True)  # type: ignore[return-value]


def docqa(cfg: VlGenerateConfig) -> Iterator[Results]:
    """``optik vl docqa`` (the catalog's runner)."""
    return answer_document_questions(cfg, stream=True)  # type: ignore[return-value]
