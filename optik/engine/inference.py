"""``val`` and ``predict`` modes: load trained weights, then evaluate or predict.

Weights files are self-describing (task, architecture, classes, normalisation, the data they were
trained on), so ``optik classify val model=runs/classify/train`` needs no other key.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from optik.config import PredictConfig, ValConfig, update_config
from optik.data.image import IMAGE_EXTENSIONS, as_image_array
from optik.data.preprocess import BatchPreprocess
from optik.engine.callbacks import console
from optik.engine.checkpoint import resolve_model_arg
from optik.device import float_outputs, resolve_amp
from optik.engine.evaluate import autocast, evaluate, model_device
from optik.engine.fastpath import optimize_loaded
from optik.engine.rundir import cleanup_on_error, make_run_dir, new_run_dir, remove_unused
from optik.engine.trainer import resolve_device
from optik.errors import ConfigError, ImageError
from optik.models.pretrained import builtin_meta, preprocessing_meta, pretrained_forms
from optik.results import Results
from optik.tasks.base import Task, get_task

log = logging.getLogger(__name__)


def load_trained(cfg: ValConfig | PredictConfig) -> tuple[Task, nn.Module, ValConfig | PredictConfig]:
    """Task + model (weights loaded, eval mode) for ``cfg.model``; fills data/imgsz defaults
    from the weights' metadata unless the user set them. An exported ``.onnx`` / ``.torchscript`` file gives
    its runtime wrapper (:func:`optik.deploy.runtime.load_exported`), which the task calls like the eager model."""
    if not cfg.model:
        raise ConfigError(f"missing key 'model' for {cfg.task} {cfg.mode} (e.g. model=runs/{cfg.task}/train)")
    _, weights, meta = resolve_model_arg(cfg.model)
    pretrained = getattr(cfg, "pretrained", None)
    if weights is not None and pretrained not in (None, False):
        raise ConfigError(f"key 'pretrained' applies to an architecture name (model=timm:<arch> pretrained=<file>); "
                          f"'{weights}' already holds its weights")  # fmt: skip
    if weights is None:
        # A model that comes trained: its own labels, weights and preprocessing (hf:, timm: + pretrained=).
        meta = builtin_meta(cfg.model, cfg.task, pretrained=pretrained)
        if meta is None:
            raise ConfigError(
                f"bad value for 'model': {cfg.model!r} ({cfg.mode} needs trained weights: a .safetensors file, "
                f"a run directory, or a pretrained {pretrained_forms()} model with its own labels)"
            )
    if meta.get("task", cfg.task) != cfg.task:
        raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{meta['task']}', not '{cfg.task}'")
    cfg = with_meta_defaults(cfg, meta)
    if "export" in meta:
        check_exported_use(cfg, weights, meta)
    task = get_task(cfg.task)(cfg, meta=meta)
    model = task.build_model().to(resolve_device(cfg.device)).eval()
    if weights is None:  # what its labels did not say about preprocessing, the pretrained model itself does
        for key, value in preprocessing_meta(model).items():
            task.meta.setdefault(key, value)
    return task, model, cfg


def check_exported_use(cfg: Any, weights: Any, meta: dict[str, Any]) -> None:
    """An exported file runs at its own input size and is inference only: a :class:`ConfigError` for another
    ``imgsz`` or for exporting it again."""
    size = int(meta["export"]["input"]["shape"][-1])
    if cfg.imgsz != size:
        raise ConfigError(f"bad value for 'imgsz': {cfg.imgsz} ('{weights}' was exported for {size}x{size} inputs; "
                          f"leave imgsz unset or re-export with imgsz={cfg.imgsz})")  # fmt: skip
    if cfg.mode == "export":
        raise ConfigError(f"bad value for 'model': '{weights}' is already exported; export from its .safetensors weights")


def with_meta_defaults(cfg: Any, meta: dict[str, Any]) -> Any:
    """``cfg`` with ``imgsz`` (and for val-like modes ``data``/``val_fraction``/``seed``) taken from the
    weights' metadata where the user did not set them."""
    defaults: dict[str, Any] = {}
    if "imgsz" not in cfg.model_fields_set and meta.get("imgsz"):
        defaults["imgsz"] = meta["imgsz"]
    if isinstance(cfg, ValConfig) and "data" not in cfg.model_fields_set and meta.get("data"):
        defaults.update(data=meta["data"], val_fraction=meta.get("val_fraction", cfg.val_fraction), seed=meta.get("seed", cfg.seed))
    return update_config(cfg, **defaults) if defaults else cfg


def eval_split(task: Task, cfg: ValConfig, purpose: str = "validate on") -> tuple[Any, Any]:
    """The task's data and the split ``cfg.split`` names; a :class:`ConfigError` when there is no data
    (the weights did not record it and ``data=`` is unset) or the split is empty."""
    if cfg.data is None:
        raise ConfigError(f"missing key 'data' (the images to {purpose}; the weights do not record the data they were trained on)")
    data = task.datasets()
    split = data.val if cfg.split == "val" else data.train
    if split is None or len(split) == 0:
        raise ConfigError(f"data: {cfg.data!r} has no '{cfg.split}' split to {purpose}")
    return data, split


def validate(cfg: ValConfig) -> dict[str, Any]:
    """Evaluate trained weights on a split; writes metrics.json, plots and a report to a run dir."""
    task, model, cfg = load_trained(cfg)
    data, split = eval_split(task, cfg)
    model = optimize_loaded(task, model)  # BN folded, fused packed convs (engine/fastpath.py); outputs checked equal
    if cfg.split == "train":
        split = split.with_transform(task.transforms(train=False))
    device = model_device(model)
    loader = DataLoader(split, batch_size=cfg.batch, num_workers=cfg.workers, collate_fn=task.collate)
    t0 = time.time()
    metrics = evaluate(task, model, loader, device, cfg.amp)
    metrics["seconds"] = time.time() - t0
    with cleanup_on_error():  # a failure before metrics.json is written leaves no empty run dir
        run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "val", cfg.exist_ok)
        # Large arrays (COCO's precision array, PR curves) stay in memory; the JSON keeps what people read.
        small = {k: v for k, v in metrics.items() if not (isinstance(v, np.ndarray) and v.size > 10_000)}
        (run_dir / "metrics.json").write_text(json.dumps(finite_or_null(small), indent=2, default=_jsonable))
        task.write_val_artifacts(run_dir)
        if cfg.plots:
            task.plots(run_dir, metrics, model, split)
        lines = [f"# {cfg.task} val of `{cfg.model}`", "", f"- data: {data.description} ({cfg.split} split, {len(split)} images)", ""]
        (run_dir / "report.md").write_text("\n".join(lines + task.report_lines(metrics)) + "\n")
    metrics["run_dir"] = str(run_dir)
    console.print("\n".join(task.report_lines(metrics)) or str(metrics))
    console.print(f"Results saved to [bold]{run_dir}[/bold]")
    return metrics


def finite_or_null(v: Any) -> Any:
    """``v`` with NaN / ±inf floats (nested in dicts and lists, numpy scalars too) as None, so metrics.json is
    strict JSON (``json.dumps`` writes a bare ``NaN`` that other parsers reject).

    >>> finite_or_null({"AP": float("nan"), "per_class": [0.5, float("inf")]})
    {'AP': None, 'per_class': [0.5, None]}
    """
    if isinstance(v, np.ndarray):
        return finite_or_null(v.tolist())
    if isinstance(v, dict):
        return {k: finite_or_null(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_or_null(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return str(v)


VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
FRAME_SEP = "#frame"  # result names for video frames: "clip.mp4#frame000012"


def iter_video(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Frames of a video file as (name, uint8 (3,H,W) RGB), read one at a time with OpenCV."""
    for name, frame in iter_video_frames(path):
        yield name, torch.from_numpy(frame).permute(2, 0, 1).contiguous()


def iter_video_frames(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a video file as (name, uint8 (H,W,3) RGB array), read one at a time with OpenCV."""
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageError(f"{path}: cannot open video (OpenCV could not decode it)")
    try:
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield f"{path}{FRAME_SEP}{n:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # a fresh array
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise ImageError(f"{path}: video has no readable frames")


class VideoSink:
    """Writes annotated frames of each source video to ``<run_dir>/<stem>.mp4`` (mp4v codec)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.writers = run_dir, {}

    def write(self, name: str, frame: np.ndarray, fps: float = 25.0) -> None:
        import cv2

        video = name.split(FRAME_SEP)[0]
        if video not in self.writers:
            cap = cv2.VideoCapture(video)
            fps = cap.get(cv2.CAP_PROP_FPS) or fps
            cap.release()
            out = self.run_dir / f"{Path(video).stem}.mp4"
            h, w = frame.shape[:2]
            self.writers[video] = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        self.writers[video].write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        for w in self.writers.values():
            w.release()


def check_source(source: Any) -> None:
    """A :class:`ConfigError` for a missing or empty source (``""`` would otherwise be the current
    directory, predicted recursively)."""
    if source is None:
        raise ConfigError("missing key 'source' (an image file, folder, glob, or arrays)")
    items = source if isinstance(source, (list, tuple)) else [source]
    for item in items:
        if isinstance(item, str) and not item.strip():
            raise ConfigError(f"bad value for 'source': {item!r} is empty (expected an image file, folder or glob; '.' for this folder)")


def iter_sources(source: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Expand ``source`` → (name, uint8 (3,H,W) image). Accepts a file, a folder, a glob, a video
    file (frame by frame), a list, numpy arrays, PIL images or tensors. A folder and a glob give the
    same files: images and videos (a folder recursively). Unreadable files inside a folder/glob are
    skipped with a warning (and counted); an explicitly named bad file raises :class:`ImageError`."""
    for name, image in iter_image_arrays(source):
        yield name, torch.from_numpy(image).permute(2, 0, 1).contiguous()


def iter_image_arrays(source: Any) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_sources` with each image as a fresh (H, W, 3) uint8 array (:func:`~optik.data.image.as_image_array`),
    the layout decoders give: predict keeps it as ``Results.orig_img`` and preprocesses a channels-last view
    of it, with no transposing copy."""
    check_source(source)
    items = source if isinstance(source, (list, tuple)) else [source]
    skipped = 0
    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            s = str(item)
            if os.path.isfile(s):  # the common case first: one stat per named file
                files, from_many = [s], False
            elif any(ch in s for ch in "*?[") and not Path(s).exists():
                files, from_many = sorted(f for f in glob.glob(s, recursive=True) if Path(f).is_file()), True
            elif Path(s).is_dir():
                files, from_many = sorted(str(p) for p in Path(s).rglob("*") if p.suffix.lower() in media and p.is_file()), True
            else:
                raise ConfigError(f"bad value for 'source': '{s}' not found (expected an image file, folder or glob)")
            if from_many and not files:
                raise ConfigError(f"bad value for 'source': no images in '{s}'")
            for f in files:
                if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                    try:
                        yield from iter_video_frames(f)
                    except ImageError as e:
                        if not from_many:
                            raise
                        skipped += 1
                        log.warning("skipping unreadable video: %s", e)
                    continue
                try:
                    img = as_image_array(f)
                except ImageError as e:
                    if not from_many:
                        raise
                    skipped += 1
                    log.warning("skipping unreadable image: %s", e)
                    continue
                yield f, img
        else:
            yield f"image{i}", as_image_array(item)
    if skipped:
        log.warning("skipped %d unreadable file(s)", skipped)


def batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``n`` (the last may be shorter)."""
    batch: list[Any] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def eval_preprocess(task: Task) -> BatchPreprocess:
    """``task.transforms(train=False)`` as a :class:`~optik.data.preprocess.BatchPreprocess`, built once per
    task and input size (``task.cfg.imgsz``) and kept on the task: a loaded model's preprocessing is fixed by
    its metadata (mean/std, crop, filter), so a served model or a ``Model`` builds it at its first call only."""
    key = getattr(task.cfg, "imgsz", None)
    cached = task.__dict__.get("_eval_preprocess")
    if cached is None or cached[0] != key:
        cached = task.__dict__["_eval_preprocess"] = (key, BatchPreprocess(task.transforms(train=False)))
    return cached[1]


def predict_stream(task: Task, model: nn.Module, source: Any, cfg: PredictConfig) -> Iterator[Results]:
    """Yield one :class:`Results` per image, batch by batch (constant memory on long folders)."""
    device = model_device(model)
    amp = resolve_amp(cfg.amp, device, model)  # amp=auto decided once for the stream (exported files: their own)
    preprocess = eval_preprocess(task)
    for batch in batched(iter_image_arrays(source), cfg.batch):
        # Under no_grad per batch, not as a decorator: a decorated generator re-enters it at every yield.
        yield from _predict_batch(task, model, batch, preprocess, device, amp)


@torch.no_grad()
def _predict_batch(task: Task, model: nn.Module, batch: list[tuple[str, np.ndarray]], preprocess: BatchPreprocess,
                   device: torch.device, amp: Any) -> list[Results]:  # fmt: skip
    t0 = time.perf_counter()
    # channels-last (3, H, W) views of the HWC arrays: no copy before the (batched) resize
    x = preprocess([torch.from_numpy(img).permute(2, 0, 1) for _, img in batch]).to(device)
    t1 = time.perf_counter()
    with autocast(device, amp):
        out = float_outputs(task.forward(model, x))  # postprocessing and NumPy see fp32
    t2 = time.perf_counter()
    results = task.postprocess(out, [{"path": name, "orig_img": img} for name, img in batch])
    t3 = time.perf_counter()
    n = len(batch)
    speed = {"preprocess": 1e3 * (t1 - t0) / n, "inference": 1e3 * (t2 - t1) / n, "postprocess": 1e3 * (t3 - t2) / n}
    for r in results:
        r.speed = dict(speed)
    return results


def predict(cfg: PredictConfig, source: Any = None) -> Iterator[Results]:
    """Predict mode, streaming: a generator of one :class:`Results` per image / video frame. Nothing
    happens until the first ``next()`` (then the model loads); with ``save=true`` each result is written
    (see :func:`write_results`) before it is yielded, so memory stays flat on any source size. The CLI
    consumes it as it goes; ``list(predict(cfg))`` gives the list.

    >>> for r in predict(build_config("classify", "predict", {"model": "runs/classify/train", "source": "clip.mp4"})):  # doctest: +SKIP
    ...     print(r.path, r.probs.top1)
    """
    source = cfg.source if source is None else source
    check_source(source)  # before loading anything or creating a run dir
    task, model, cfg = load_trained(cfg)
    model = optimize_loaded(task, model)  # the eager fast path (engine/fastpath.py)
    stream = predict_stream(task, model, source, cfg)
    yield from write_results(stream, cfg) if cfg.save else stream


def write_results(stream: Iterable[Results], cfg: PredictConfig, what: str = "predictions") -> Iterator[Results]:
    """Pass ``stream`` through; with ``cfg.save`` write each result as it arrives into a new
    ``runs/<task>/<name or predict>N/`` (created at the first ``next()``): its overlay
    (``0000_<stem>.png``; video frames into ``<stem>.mp4``), a ``predictions.jsonl`` line and, with
    ``save_txt``, a ``labels/<stem>.txt``. A video frame drops its pixels once written (the video holds
    them); still images keep theirs (``.plot()`` works). Nothing is kept here. When the stream ends — or
    the generator is closed early — files are closed, ``stream`` is closed and ``N {what} saved to …``
    is printed."""
    if not cfg.save:
        yield from stream
        return
    run_dir, created = make_run_dir(cfg.project, cfg.task, cfg.name or "predict", cfg.exist_ok)
    save_txt = getattr(cfg, "save_txt", False)
    n, failed = 0, False
    jsonl = open(run_dir / "predictions.jsonl", "w", buffering=1)  # line-buffered: each line lands as it is written
    videos = VideoSink(run_dir)
    try:
        for r in stream:
            stem = Path(r.path).stem if Path(r.path).suffix else r.path
            frame = FRAME_SEP in r.path
            if frame:
                videos.write(r.path, r.plot())
            else:
                r.save(run_dir / f"{n:04d}_{stem}.png")
            jsonl.write(r.to_json() + "\n")
            if save_txt:
                r.save_txt(run_dir / "labels" / f"{stem.replace(FRAME_SEP, '_')}.txt")
            if frame:
                r.release_image()  # the video keeps the pixels; the result keeps the predictions
            n += 1
            yield r
    except BaseException as e:  # GeneratorExit = closed early by the consumer: what was written is complete
        failed = not isinstance(e, GeneratorExit)
        raise
    finally:
        jsonl.close()
        videos.close()
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if failed and created:
            remove_unused(run_dir)  # died before its first result: no empty run dir (the next run is not predict2)
        if not failed and not sys.is_finalizing():  # not for a generator collected at interpreter exit
            console.print(f"{n} {what} saved to [bold]{run_dir}[/bold]")


def collect_results(stream: Iterable[Results], cfg: PredictConfig, what: str = "predictions") -> list[Results]:
    """:func:`write_results` drained into a list (for runners that return lists: ``optik sam predict``).
    Video frames drop their pixels (also without ``save``), so a long video keeps only predictions."""
    results = []
    for r in write_results(stream, cfg, what):
        if FRAME_SEP in r.path:
            r.release_image()
        results.append(r)
    return results
