"""Runners of ``optik embed val | predict | index | search`` (the catalog names them).

They load the representation with :func:`load_embedder` rather than the engine's ``load_trained``, which
accepts only weights of its own task: embed evaluates classify runs (their backbones), ``timm:`` and ``hf:``
models too.

>>> from optik.config import build_config
>>> m = validate(build_config("embed", "val", {"model": "runs/embed/train"}))        # doctest: +SKIP
>>> m["knn_top1"], m["probe_top1"]                                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from optik.config import update_config
from optik.engine.callbacks import console
from optik.engine.rundir import cleanup_on_error, new_run_dir
from optik.errors import ConfigError
from optik.tasks.embed import EmbedTask


def load_embedder(cfg: Any) -> tuple[EmbedTask, nn.Module, Any]:
    """Task + feature model (eval mode, on ``cfg.device``) for ``cfg.model``; ``imgsz`` (and for val, ``data``)
    default to what an embed or classify run recorded."""
    from optik.device import resolve_device
    from optik.engine.inference import with_meta_defaults
    from optik.weights import resolve_model_arg

    if not cfg.model:
        raise ConfigError(f"missing key 'model' for embed {cfg.mode} (an embed or classify run, timm:<name>, hf:<dir>)")
    _, weights, meta = resolve_model_arg(cfg.model)
    cfg = with_meta_defaults(cfg, meta if weights is not None else {})
    if weights is not None and "export" in meta:
        return _load_exported(cfg, weights, meta)
    task = EmbedTask(cfg, meta={k: meta[k] for k in ("classes", "crop_pct", "interpolation") if k in meta} if weights else {})
    with torch.random.fork_rng(devices=[]):  # an untrained model (random init as a baseline) is the same every run
        torch.manual_seed(cfg.seed)
        model = task.build_model().to(resolve_device(cfg.device)).eval()
    return task, model, cfg


def _load_exported(cfg: Any, weights: Path, meta: dict[str, Any]) -> tuple[EmbedTask, nn.Module, Any]:
    """An exported embed file (``optik embed export``) behind the eager model's call: ``model(x)`` = its first
    output, the pooled features; preprocessing from its metadata."""
    from optik.deploy.runtime import load_exported
    from optik.device import resolve_device
    from optik.engine.inference import check_exported_use

    if meta.get("task") != "embed":
        raise ConfigError(f"bad value for 'model': '{weights}' was exported for task '{meta.get('task')}' (embed reads files from optik embed export)")
    check_exported_use(cfg, weights, meta)
    task = EmbedTask(cfg, meta={k: meta[k] for k in ("classes", "crop_pct", "interpolation", "mean", "std", "model", "method", "embed_dim")
                                if meta.get(k) is not None})  # fmt: skip
    model = load_exported(weights, device=resolve_device(cfg.device), meta=meta)
    model.feature_dim = int(meta.get("embed_dim") or meta["export"].get("postprocess", {}).get("dim") or 0)
    task._model = model  # build_model() hands it out (k-NN bank, plots, predict)
    return task, model, cfg


def validate(cfg: Any) -> dict[str, Any]:
    """k-NN (and linear-probe) accuracy of the representation on ``cfg.split`` against the training split;
    ``metrics.json``, ``report.md`` and ``plots/embedding_map.png`` in a new run dir."""
    from optik.device import model_device
    from optik.engine.evaluate import evaluate
    from optik.engine.inference import eval_split, finite_or_null

    task, model, cfg = load_embedder(cfg)
    data, split = eval_split(task, cfg)
    loader = DataLoader(split, batch_size=cfg.batch, num_workers=cfg.workers)
    t0 = time.time()
    metrics = evaluate(task, model, loader, model_device(model), cfg.amp)
    metrics["seconds"] = time.time() - t0
    with cleanup_on_error():
        run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "val", cfg.exist_ok)
        (run_dir / "metrics.json").write_text(json.dumps(finite_or_null(metrics), indent=2))
        if cfg.plots:
            task.plots(run_dir, metrics, model, split)
        lines = [f"# embed val of `{cfg.model}`", "", f"- data: {data.description} ({cfg.split} split, {len(split)} images)", ""]
        (run_dir / "report.md").write_text("\n".join(lines + task.report_lines(metrics)) + "\n")
    metrics["run_dir"] = str(run_dir)
    console.print("\n".join(task.report_lines(metrics)))
    console.print(f"Results saved to [bold]{run_dir}[/bold]")
    return metrics


@torch.no_grad()
def extract(task: EmbedTask, model: nn.Module, source: Any, batch: int = 32, keep_images: bool = False,
            patches: list[torch.Tensor] | None = None) -> tuple[list[str], torch.Tensor, list[np.ndarray]]:  # fmt: skip
    """Pooled features of every image of ``source`` (file, folder, glob, arrays; unreadable files in a folder
    skipped and counted): ``(paths, (N, D) features, images if keep_images)``. A ``patches`` list receives each
    batch's ``(B, h·w, D)`` patch features (:func:`optik.embed.patches.patch_features`) and, last, the grid."""
    from optik.device import model_device
    from optik.embed.patches import patch_features
    from optik.engine.inference import batched, eval_preprocess, iter_image_arrays

    device = model_device(model)
    preprocess = eval_preprocess(task)
    paths, feats, images = [], [], []
    grid = None
    for group in batched(iter_image_arrays(source), batch):
        x = preprocess([torch.from_numpy(img).permute(2, 0, 1) for _, img in group]).to(device)
        feats.append(model(x).float().flatten(1).cpu())
        if patches is not None:
            if not hasattr(model, "encoder"):
                raise ConfigError(f"key 'patches': {type(model).__name__} (an exported file?) gives pooled features only; "
                                  "use the .safetensors weights")  # fmt: skip
            tokens, grid = patch_features(model.encoder, x)
            patches.append(tokens.float().cpu())
        paths += [name for name, _ in group]
        if keep_images:
            images += [img for _, img in group]
    if patches is not None:
        patches.append(torch.tensor(grid or (0, 0)))
    dim = int(getattr(model, "feature_dim", 0))
    return paths, torch.cat(feats) if feats else torch.zeros(0, dim), images


def _model_meta(task: EmbedTask, cfg: Any) -> dict[str, Any]:
    return {"model": str(cfg.model), "imgsz": cfg.imgsz, "backbone": task.meta.get("model"), "method": task.meta.get("method")}


def predict(cfg: Any) -> dict[str, Any]:
    """Features of ``source`` → ``features.safetensors`` (``features``: (N, D) float32), ``index.json`` (paths in row
    order, the model) and ``predictions.jsonl`` (one line per image: path, row, feature norm). Returns
    ``{"paths", "features", "run_dir"}``."""
    from optik.engine.inference import check_source

    check_source(cfg.source)
    task, model, cfg = load_embedder(cfg)
    dense: list[torch.Tensor] | None = [] if cfg.patches else None
    paths, feats, _ = extract(task, model, cfg.source, cfg.batch, patches=dense)
    if cfg.normalize:
        feats = torch.nn.functional.normalize(feats, dim=1)
    out: dict[str, Any] = {"paths": paths, "features": feats}
    tensors = {"features": feats.contiguous()}
    grid: list[int] | None = None
    if dense is not None:
        grid = [int(v) for v in dense.pop()]
        tokens = torch.cat(dense) if dense else torch.zeros(0, 0, 0)
        tokens = torch.nn.functional.normalize(tokens, dim=-1) if cfg.normalize else tokens
        out.update(patches=tokens, grid=tuple(grid))
        tensors["patches"] = tokens.contiguous()
    if cfg.save:
        from safetensors.torch import save_file

        with cleanup_on_error():
            run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "predict", cfg.exist_ok)
            save_file(tensors, str(run_dir / "features.safetensors"))
            (run_dir / "index.json").write_text(json.dumps({**_model_meta(task, cfg), "paths": paths, "dim": int(feats.shape[1]),
                                                            "normalized": cfg.normalize, **({"patch_grid": grid} if grid else {})},
                                                           indent=1))  # fmt: skip
            with open(run_dir / "predictions.jsonl", "w") as f:
                f.writelines(json.dumps({"path": p, "row": i, "norm": round(float(v.norm()), 6)}) + "\n" for i, (p, v) in enumerate(zip(paths, feats)))
        out["run_dir"] = str(run_dir)
        console.print(f"{len(paths)} feature vectors ({feats.shape[1]}-d) saved to [bold]{run_dir}[/bold]")
    else:
        console.print(f"{len(paths)} feature vectors ({feats.shape[1]}-d); save=true writes them (features.safetensors + index.json)")
    return out


def index(cfg: Any) -> dict[str, Any]:
    """A cosine index (:class:`~optik.embed.index.FeatureIndex`) of ``source`` images, or of a predict run's
    ``features=``; saved as ``index.safetensors`` + ``index.json`` in a new run dir."""
    from optik.embed.index import FeatureIndex

    if cfg.features:
        from safetensors.torch import load_file

        folder = Path(cfg.features)
        folder = folder.parent if folder.suffix == ".safetensors" else folder
        if not (folder / "features.safetensors").is_file() or not (folder / "index.json").is_file():
            raise ConfigError(f"bad value for 'features': '{cfg.features}' is not an optik embed predict run (features.safetensors + index.json)")
        info = json.loads((folder / "index.json").read_text())
        idx = FeatureIndex(load_file(str(folder / "features.safetensors"))["features"], info.pop("paths"),
                           {k: info[k] for k in ("model", "imgsz", "backbone", "method") if k in info})  # fmt: skip
    else:
        from optik.engine.inference import check_source

        check_source(cfg.source)
        task, model, cfg = load_embedder(cfg)
        paths, feats, _ = extract(task, model, cfg.source, cfg.batch)
        idx = FeatureIndex(feats, paths, _model_meta(task, cfg))
    with cleanup_on_error():
        run_dir = idx.save(new_run_dir(cfg.project, cfg.task, cfg.name or "index", cfg.exist_ok))
    console.print(f"index of {len(idx)} images ({idx.features.shape[1]}-d, cosine) saved to [bold]{run_dir}[/bold]")
    return {"run_dir": str(run_dir), "size": len(idx)}


def search(cfg: Any) -> dict[str, Any]:
    """Image → image search: each ``source`` image's ``k`` nearest index entries (cosine). Writes
    ``results.json`` (per query: paths and scores) and ``search.png`` (query, then its neighbours)."""
    from optik.data.image import as_image_array
    from optik.embed.index import FeatureIndex
    from optik.embed.plots import search_grid
    from optik.engine.inference import check_source

    if not cfg.index:
        raise ConfigError("missing key 'index' (a folder from optik embed index)")
    check_source(cfg.source)
    idx = FeatureIndex.load(cfg.index)
    if not cfg.model:  # the index's own model, at its input size
        cfg = update_config(cfg, model=idx.meta.get("model"), **({"imgsz": idx.meta["imgsz"]} if "imgsz" not in cfg.model_fields_set and idx.meta.get("imgsz") else {}))
    task, model, cfg = load_embedder(cfg)
    paths, feats, images = extract(task, model, cfg.source, cfg.batch, keep_images=True)
    scores, rows = idx.search(feats, cfg.k, backend=cfg.backend)
    results = [{"query": p, "hits": [{"path": idx.paths[int(r)], "score": round(float(s), 6)} for s, r in zip(ss, rr)]}
               for p, ss, rr in zip(paths, scores, rows)]  # fmt: skip
    out: dict[str, Any] = {"results": results}
    if cfg.save:
        with cleanup_on_error():
            run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "search", cfg.exist_ok)
            (run_dir / "results.json").write_text(json.dumps(results, indent=1))
            shown = min(len(paths), 16)
            hits = [[(_thumb(as_image_array, h["path"]), h["score"]) for h in r["hits"]] for r in results[:shown]]
            search_grid(images[:shown], hits, run_dir / "search.png")
        out["run_dir"] = str(run_dir)
        console.print(f"{len(paths)} queries, top-{min(cfg.k, len(idx))} each, saved to [bold]{run_dir}[/bold]")
    for r in results[:8]:
        console.print(f"{r['query']}: " + ", ".join(f"{Path(h['path']).name} {h['score']:.3f}" for h in r["hits"]))
    return out


def _thumb(read: Any, path: str) -> np.ndarray:
    """The indexed image at ``path``, or a grey tile when it is gone (an index outlives its files)."""
    from optik.errors import OptikError

    try:
        return read(path)
    except (OptikError, OSError):
        return np.full((32, 32, 3), 128, np.uint8)
