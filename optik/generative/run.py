"""``optik generate sample`` and ``optik generate eval`` (the runners the task catalog names).

``sample``: a trained optik model (weights / run dir) → ``samples.png`` (one row per class for a
conditional model), every image under ``images/``, a denoising-trajectory strip (DDPM) or a latent
interpolation grid (GAN / VAE). With ``prompt=`` (or a diffusers pipeline as ``model=``) it runs
Stable Diffusion instead: txt2img, img2img (``image=``), inpainting (``image=`` + ``mask=``),
ControlNet (``controlnet=``; Canny edges of ``image=``), LoRA (``lora=``).

``eval``: generates as many images as the real split has (same class mix), then FID / KID / IS /
precision / recall against it, and optionally CAS (``cas=true``).

Images come from :mod:`optik.generative.sampling` and files from :mod:`optik.generative.artifacts`, the
same functions the generate task's validation and plots use; this module imports the task, never the
other way round.

>>> from optik.config import build_config
>>> out = sample(build_config("generate", "sample", {"model": "runs/generate/train", "n": 40}))  # doctest: +SKIP
>>> out["grid"]                                                                                 # doctest: +SKIP
'runs/generate/sample/samples.png'
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optik.config.generate import GenerateEvalConfig, GenerateSampleConfig
from optik.console import console
from optik.errors import ConfigError
from optik.generative.artifacts import metric_lines, save_images, upscale, write_sample_artifacts
from optik.generative.sampling import class_grid_labels, generate_batches
from optik.generative.utils import save_grid, to_uint8
from optik.models.generative import unwrap

log = logging.getLogger(__name__)


# --- loading ----------------------------------------------------------------------------------
def load_generator(cfg: Any) -> tuple[Any, nn.Module, Any]:
    """(task, model in eval mode on cfg.device, cfg with data/imgsz defaults from the weights)."""
    from optik.device import resolve_device
    from optik.engine.inference import with_meta_defaults
    from optik.tasks.generate import GenerateTask
    from optik.weights import resolve_model_arg

    if not cfg.model:
        raise ConfigError(f"missing key 'model' for generate {cfg.mode} (e.g. model=runs/generate/train)")
    _, weights, meta = resolve_model_arg(cfg.model)
    if weights is None and not str(cfg.model).startswith("hf:"):
        raise ConfigError(f"bad value for 'model': {cfg.model!r} (generate {cfg.mode} needs trained weights: a .safetensors file or a run directory)")
    if meta and meta.get("task") != "generate":
        raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{meta.get('task')}', not 'generate'")
    cfg = with_meta_defaults(cfg, meta)
    task = GenerateTask(cfg, meta)
    model = task.build_model().to(resolve_device(cfg.device)).eval()
    return task, model, cfg


def _labels_for(cfg: GenerateSampleConfig, nc: int, classes: list[str]) -> tuple[Tensor | None, int]:
    if not nc:
        if cfg.labels:
            raise ConfigError("key 'labels': the model is unconditional (trained without class labels)")
        return None, cfg.nrow or min(8, cfg.n)
    if cfg.labels:
        bad = [c for c in cfg.labels if not 0 <= int(c) < nc]
        if bad:
            raise ConfigError(f"bad value for 'labels': {bad[0]} (the model has {nc} classes: 0..{nc - 1} = {', '.join(classes[:10])})")
        per = max(1, math.ceil(cfg.n / len(cfg.labels)))
        return torch.tensor(cfg.labels).repeat_interleave(per)[: cfg.n], cfg.nrow or per
    labels, per = class_grid_labels(cfg.n, nc)
    return labels, cfg.nrow or per


def is_pipeline_dir(model: str | None) -> bool:
    """A local text-to-image diffusers pipeline directory (``model_index.json`` with a text encoder), with
    or without ``hf:``. An unconditional ``DDPMPipeline`` dir is not one: it loads as an optik DDPM."""
    if not model:
        return False
    index = Path(str(model).removeprefix("hf:")) / "model_index.json"
    if not index.is_file():
        return False
    try:
        return "text_encoder" in json.loads(index.read_text())
    except (OSError, ValueError):
        return False


# --- sample -----------------------------------------------------------------------------------
def sample(cfg: GenerateSampleConfig) -> dict[str, Any]:
    """Generate ``cfg.n`` images; see the module docstring. Returns ``{"run_dir", "images" (uint8),
    "labels", "grid", "paths"}``."""
    from optik.engine.rundir import new_run_dir

    if cfg.prompt is not None or is_pipeline_dir(cfg.model):
        return sd_sample(cfg)
    for key in ("negative_prompt", "image", "mask", "controlnet", "lora"):
        if getattr(cfg, key):
            raise ConfigError(f"key '{key}' is for Stable Diffusion (model=hf:<pipeline> prompt=…), not an optik-trained {cfg.model}")
    task, model, cfg = load_generator(cfg)
    classes = task.meta.get("classes", [])
    labels, nrow = _labels_for(cfg, unwrap(model).num_classes, classes)
    run_dir = new_run_dir(cfg.project, "generate", cfg.name or "sample", cfg.exist_ok)
    sampling = {"steps": cfg.steps, "guidance_scale": cfg.guidance_scale, "sampler": cfg.sampler}
    t0 = time.time()
    batches = generate_batches(model, cfg.n, labels, batch=cfg.batch, seed=cfg.seed * 100003, progress=True, **sampling)
    images = torch.cat([to_uint8(x) for x in batches])
    seconds = time.time() - t0
    grid = run_dir / "samples.png"
    save_grid(images, grid, nrow=nrow, upscale=upscale(images.shape[-1]))
    paths = [grid]
    if cfg.save:
        save_images(images, run_dir / "images", labels, classes)
    paths += write_sample_artifacts(model, run_dir, seed=cfg.seed, samples=False, trajectory=cfg.trajectory,
                                    interpolate=cfg.interpolate, **sampling)  # fmt: skip
    console.print(f"{cfg.n} images in {seconds:.1f} s ({cfg.n / max(seconds, 1e-9):.1f} img/s) → [bold]{run_dir}[/bold]")
    return {"run_dir": str(run_dir), "images": images, "labels": labels, "grid": str(grid), "paths": [str(p) for p in paths],
            "seconds": seconds}  # fmt: skip


def sd_sample(cfg: GenerateSampleConfig) -> dict[str, Any]:
    """Stable Diffusion txt2img / img2img / inpaint / ControlNet through diffusers."""
    from optik.data.image import load_image
    from optik.engine.rundir import new_run_dir
    from optik.generative import sd

    if not cfg.prompt:
        raise ConfigError("missing key 'prompt' (Stable Diffusion: optik generate sample model=hf:<pipeline> prompt=\"a red car\")")
    if cfg.mask and not cfg.image:
        raise ConfigError("key 'mask' needs 'image' (inpainting repaints the white part of the mask in that image)")
    if cfg.controlnet and not cfg.image:
        raise ConfigError("key 'controlnet' needs 'image' (its Canny edge map is the control image)")
    kind = "inpaint" if cfg.mask else ("img2img" if cfg.image and not cfg.controlnet else "txt2img")
    image = load_image(cfg.image) if cfg.image else None
    mask = load_image(cfg.mask).convert("L") if cfg.mask else None
    control = sd.canny_image(image) if cfg.controlnet and image is not None else None
    set_ = cfg.model_fields_set
    from optik.device import resolve_device

    device = str(resolve_device(cfg.device))
    pipe = sd.load_pipeline(cfg.model, kind, scheduler=cfg.sampler if "sampler" in set_ else None, controlnet=cfg.controlnet,
                            lora=cfg.lora, lora_scale=cfg.lora_scale, device=device, dtype=cfg.dtype)  # fmt: skip
    size = cfg.imgsz if "imgsz" in set_ else None
    res = sd.run_pipeline(
        pipe, prompt=cfg.prompt, negative_prompt=cfg.negative_prompt, image=image if kind != "txt2img" else None, mask=mask,
        control_image=control, strength=cfg.strength, steps=cfg.steps if "steps" in set_ else 30,
        guidance_scale=cfg.guidance_scale if "guidance_scale" in set_ else 7.5, seed=cfg.seed, batch=cfg.n, height=size, width=size,
    )  # fmt: skip
    run_dir = new_run_dir(cfg.project, "generate", cfg.name or kind, cfg.exist_ok)
    paths = []
    for i, img in enumerate(res.images):
        paths.append(run_dir / f"{kind}_{i:03d}.png")
        img.save(paths[-1])
    arr = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in res.images])).permute(0, 3, 1, 2)
    grid = run_dir / "samples.png"
    save_grid(arr, grid, nrow=min(4, len(arr)))
    info = {"kind": kind, "prompt": cfg.prompt, "negative_prompt": cfg.negative_prompt, "steps": res.steps, "seed": res.seed,
            "seconds": res.seconds, "seconds_per_step": res.seconds_per_step, "model": cfg.model, "controlnet": cfg.controlnet,
            "lora": cfg.lora}  # fmt: skip
    (run_dir / "generation.json").write_text(json.dumps(info, indent=2))
    console.print(f"{kind}: {len(res.images)} image(s), {res.steps} steps, {res.seconds_per_step:.3f} s/step → [bold]{run_dir}[/bold]")
    return {"run_dir": str(run_dir), "images": arr, "labels": None, "grid": str(grid), "paths": [str(p) for p in paths], **info}


# --- eval -------------------------------------------------------------------------------------
def evaluate(cfg: GenerateEvalConfig) -> dict[str, Any]:
    """FID / KID / IS / precision / recall (and CAS with ``cas=true``) of generated vs real images."""
    from optik.engine.inference import eval_split, finite_or_null
    from optik.engine.rundir import new_run_dir
    from optik.metrics.generative import GenerativeMetrics

    task, model, cfg = load_generator(cfg)
    data, real_ds = eval_split(task, cfg, "compare generated images with")
    n = cfg.n or len(real_ds)
    nc = unwrap(model).num_classes
    classes = task.meta.get("classes", [])
    pairs = [real_ds[i] for i in range(len(real_ds))]  # decoded and transformed once
    real_x = torch.stack([x for x, _ in pairs])
    real_y = torch.as_tensor([int(y) for _, y in pairs])
    fake_y = real_y.repeat(math.ceil(n / len(real_y)))[:n]  # the real class mix
    metric = GenerativeMetrics(task.feature_extractor(), kid_subset_size=cfg.kid_subset_size)

    def generate(labels: Tensor, seed0: int) -> Tensor:
        return torch.cat(list(generate_batches(model, len(labels), labels, batch=cfg.batch, seed=seed0, steps=cfg.steps,
                                               guidance_scale=cfg.guidance_scale, sampler=cfg.sampler)))  # fmt: skip

    t0 = time.time()
    fake_x = generate(fake_y, cfg.seed * 100003)
    seconds = time.time() - t0
    for start in range(0, max(n, len(real_x)), cfg.batch):
        f, r = fake_x[start : start + cfg.batch], real_x[start : start + cfg.batch]
        metric.update(f if len(f) else None, r if len(r) else None)
    metrics = {k: v for k, v in metric.compute().items()}
    metrics["images_per_second"] = n / max(seconds, 1e-9)
    run_dir = new_run_dir(cfg.project, "generate", cfg.name or "eval", cfg.exist_ok)
    if cfg.cas:
        if not nc:
            raise ConfigError("key 'cas': the Classification Accuracy Score needs a class-conditional model (cgan, cvae, ddpm)")
        from optik.generative.cas import classification_accuracy_score

        def hwc3(x: Tensor) -> np.ndarray:
            u = to_uint8(x)
            return (u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u).permute(0, 2, 3, 1).numpy()

        # CAS (Ravuri & Vinyals 2019): a generated training set as large as the real one, with its class mix,
        # so the score compares with a classifier trained on the real training split.
        cas_y = torch.as_tensor([int(c) for c in data.train.targets]) if data.train is not None else fake_y
        cas_x = generate(cas_y, cfg.seed * 100003 + 7919)
        cas = classification_accuracy_score(hwc3(cas_x), cas_y.tolist(), hwc3(real_x), real_y.tolist(), classes,
                                            epochs=cfg.cas_epochs, imgsz=cfg.imgsz, project=str(run_dir / "cas"), seed=cfg.seed, hflip=0.0)  # fmt: skip
        metrics.update({k: v for k, v in cas.items() if k.startswith("CAS")})
        metrics["CAS_train_images"] = len(cas_y)
    labels, nrow = class_grid_labels(min(80, n), min(nc, 10))
    save_grid(fake_x[:80] if labels is None else fake_x[_first_of_each(fake_y, labels)], run_dir / "samples.png", nrow=nrow,
              upscale=upscale(fake_x.shape[-1]))  # fmt: skip
    clean = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
    (run_dir / "metrics.json").write_text(json.dumps(finite_or_null(clean), indent=2, default=str))
    lines = [f"# optik generate eval — {cfg.model}", "", f"{n} generated vs {len(real_x)} real ({cfg.split}) images of {cfg.data}.", ""]
    (run_dir / "report.md").write_text("\n".join(lines + metric_lines(clean, cfg.features)))
    shown = " · ".join(f"{k} {clean[k]:.4g}" for k in ("FID", "KID", "IS", "precision", "recall", "CAS") if k in clean)
    console.print(f"{shown} · {clean['images_per_second']:.1f} img/s → [bold]{run_dir}[/bold]")
    return {"run_dir": str(run_dir), **clean}


def _first_of_each(have: Tensor, want: Tensor) -> list[int]:
    """Indices into ``have`` giving the label sequence ``want`` (as far as ``have`` allows)."""
    pools: dict[int, list[int]] = {}
    for i, c in enumerate(have.tolist()):
        pools.setdefault(c, []).append(i)
    out = []
    for c in want.tolist():
        if pools.get(c):
            out.append(pools[c].pop(0))
    return out
