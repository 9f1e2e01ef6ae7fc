"""``optik zeroshot score``: CLIPScore (Hessel et al. 2021) of images against their texts with any zero-shot model —
generated images against their prompts or classes, or captions (``optik vl caption``) against their images
(CLIPScore is a reference-free caption metric).

Where each image's text comes from, first match wins:

1. ``captions=<file>``: ``.jsonl`` lines ``{"path": …, "text": …}`` (``optik vl caption save=true`` writes them;
   ``caption`` / ``prompt`` / ``answer`` keys work too) or a ``.csv`` with ``path`` (or ``file`` / ``image``) and
   ``text`` (or ``caption`` / ``prompt``) columns; matched by path, else by file name;
2. ``text=``: one text for every image;
3. a Stable Diffusion run directory (``optik generate sample prompt=…``): its ``generation.json`` prompt;
4. class-conditional samples saved by ``optik generate sample save=true`` (``images/00042_<class>.png``): the class
   name with the model's prompt templates ensembled (the zero-shot class embedding); these runs also report the
   **CLIP accuracy**: the share of images the model classifies as their intended class among all classes present.

    optik zeroshot score model=hf:path/to/clip source=runs/generate/txt2img
    optik zeroshot score model=runs/zeroshot/train source=runs/generate/sample/images
    optik zeroshot score model=hf:path/to/clip source=photos/ captions=runs/vl/predict/predictions.jsonl

Writes ``runs/zeroshot/score*/scores.csv`` (per image: path, text, cosine, CLIPScore) and ``score.json``.

>>> from optik.config import build_config
>>> score(build_config("zeroshot", "score", {"model": "runs/zeroshot/train", "source": "samples/", "text": "a red circle"}))["CLIPScore"]  # doctest: +SKIP
71.3
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from optik.console import console
from optik.errors import ConfigError, DatasetError

_TEXT_KEYS = ("text", "caption", "prompt", "answer")
_PATH_KEYS = ("path", "file", "image", "file_name")
_SAMPLE_NAME = re.compile(r"^\d+_(.+)$")  # optik generate sample save=true: 00042_<class>.png


def read_captions(path: str | Path) -> dict[str, str]:
    """``{path or file name: text}`` from a ``.jsonl`` or ``.csv`` captions file; a :class:`DatasetError` naming the
    file and line when a row has no path or no text."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"bad value for 'captions': {p} not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    if p.suffix.lower() == ".jsonl":
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{p}:{n}: malformed JSON ({e.msg})") from None
    elif p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(f), 2)]
    else:
        raise ConfigError(f"bad value for 'captions': {p} (a .jsonl or .csv file)")
    out: dict[str, str] = {}
    for n, row in rows:
        key = next((str(row[k]) for k in _PATH_KEYS if row.get(k)), None)
        text = next((str(row[k]) for k in _TEXT_KEYS if row.get(k)), None)
        if key is None or text is None:
            raise DatasetError(f"{p}:{n}: a row needs a path ({'/'.join(_PATH_KEYS)}) and a text ({'/'.join(_TEXT_KEYS)})")
        out[key] = text
    return out


def _sd_prompt(source: Any) -> str | None:
    if isinstance(source, (str, Path)) and (Path(source) / "generation.json").is_file():
        return json.loads((Path(source) / "generation.json").read_text()).get("prompt") or None
    return None


def _grid(path: str) -> bool:
    return Path(path).name == "samples.png"  # generate's grid of every sample, not one sample


@torch.no_grad()
def score(cfg: Any) -> dict[str, Any]:
    """CLIPScore of every image in ``cfg.source`` with its text (see the module docstring); returns the mean, its
    standard deviation, per-image rows and, for class-conditional samples, the CLIP accuracy."""
    from optik.config import build_config
    from optik.engine.inference import iter_sources, load_trained
    from optik.engine.rundir import new_run_dir
    from optik.metrics.retrieval import clip_score
    from optik.zeroshot.prompts import class_embeddings

    captions = read_captions(cfg.captions) if cfg.captions else None
    prompt = cfg.text or _sd_prompt(cfg.source)
    keys = {k: getattr(cfg, k) for k in ("model", "device", "imgsz", "templates") if k in cfg.model_fields_set}
    task, model, _ = load_trained(build_config("zeroshot", "val", keys))
    transform = task.transforms(False)
    device = next(model.parameters()).device

    paths, texts, classes, feats = [], [], [], []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            feats.append(model.encode_image(torch.stack(batch).to(device)).float().cpu())
            batch.clear()

    for name, image in iter_sources(cfg.source):
        if _grid(name):
            continue
        text, cls = None, None
        if captions is not None:
            text = captions.get(name) or captions.get(Path(name).name)
            if text is None:
                raise ConfigError(f"captions: no text for image {name} in {cfg.captions} (rows are matched by path, then file name)")
        elif prompt is not None:
            text = prompt
        else:
            m = _SAMPLE_NAME.match(Path(name).stem)
            if m is None:
                raise ConfigError(f"no text for image {name}: give text=\"…\" (one for all), captions=<.jsonl|.csv>, a Stable "
                                  "Diffusion run dir, or class-conditional samples (images/00042_<class>.png)")  # fmt: skip
            cls = m.group(1).replace("_", " ")
        paths.append(name)
        texts.append(text)
        classes.append(cls)
        batch.append(transform(image))
        if len(batch) == cfg.batch:
            flush()
    flush()
    if not paths:
        raise ConfigError(f"bad value for 'source': no images to score in {cfg.source!r}")
    image_emb = F.normalize(torch.cat(feats), dim=-1)

    metrics: dict[str, Any] = {}
    if classes[0] is not None:  # class-conditional samples: the prompt-ensembled class embeddings
        names = sorted(set(classes))
        weights = class_embeddings(model, names, task.templates()).float().cpu()
        target = torch.tensor([names.index(c) for c in classes])
        text_emb = weights[target]
        metrics["clip_accuracy"] = float(((image_emb @ weights.T).argmax(1) == target).float().mean())
        metrics["classes"] = names
        texts = [f"<class> {c}" for c in classes]
    else:
        unique = sorted(set(texts))
        emb = F.normalize(model.encode_text(unique).float().cpu(), dim=-1)
        text_emb = emb[[unique.index(t) for t in texts]]
    scores = clip_score(image_emb, text_emb, w=cfg.w)
    cos = (image_emb * text_emb).sum(-1)
    metrics.update(CLIPScore=float(scores.mean()), CLIPScore_std=float(scores.std()) if len(scores) > 1 else 0.0,
                   cosine=float(cos.mean()), n=len(paths), w=cfg.w, model=str(cfg.model))  # fmt: skip

    run_dir = new_run_dir(cfg.project, "zeroshot", cfg.name or "score", cfg.exist_ok)
    with (run_dir / "scores.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "text", "cosine", "clip_score"])
        for p, t, c, s in zip(paths, texts, cos.tolist(), scores.tolist()):
            w.writerow([p, t, f"{c:.6f}", f"{s:.4f}"])
    (run_dir / "score.json").write_text(json.dumps(metrics, indent=2))
    extra = f", CLIP accuracy {metrics['clip_accuracy']:.3f}" if "clip_accuracy" in metrics else ""
    console.print(f"CLIPScore {metrics['CLIPScore']:.2f} ± {metrics['CLIPScore_std']:.2f} over {len(paths)} images{extra} "
                  f"→ [bold]{run_dir}[/bold]")  # fmt: skip
    return {**metrics, "run_dir": str(run_dir), "scores": scores, "paths": paths, "texts": texts}


__all__ = ["read_captions", "score"]
