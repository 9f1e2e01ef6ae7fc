"""``optik generate sample`` and ``optik generate eval``, and the sample artifacts training writes.

``sample``: a trained optik model (weights / run dir) → ``samples.png`` (one row per class for a
conditional model), every image under ``images/``, a denoising-trajectory strip (DDPM) or a latent
interpolation grid (GAN / VAE). With ``prompt=`` (or a diffusers pipeline as ``model=``) it runs
Stable Diffusion instead: txt2img, img2img (``image=``), inpainting (``image=`` + ``mask=``),
ControlNet (``controlnet=``; Canny edges of ``image=``), LoRA (``lora=``).

``eval``: generates as many images as the real split has (same class mix), then FID / KID / IS /
precision / recall against it, and optionally CAS (``cas=true``).

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
from optik.generative.utils import save_grid, to_uint8

log = logging.getLogger(__name__)


# --- artifacts shared by training (plots) and sample mode -------------------------------------
def _upscale(img_size: int) -> int:
    return max(1, 64 // max(1, img_size))


def class_grid_labels(n: int, num_classes: int) -> tuple[Tensor | None, int]:
    """Labels for a grid with one row per class (``n`` images), and the row length."""
    if not num_classes:
        return None, min(8, n)
    per = max(1, math.ceil(n / num_classes))
    return torch.arange(num_classes).repeat_interleave(per)[:n], per


def write_sample_artifacts(
    model: nn.Module, out_dir: Path, *, seed: int = 0, real: Tensor | None = None, real_labels: Tensor | None = None,
    steps: int = 25, scheduler: str = "ddim", guidance_scale: float = 2.0, samples: bool = True,
) -> list[Path]:
    """``samples.png`` (one row of 8 per class, or 8×8; skipped with ``samples=False``), ``trajectory.png``
    (DDPM) or ``interpolation.png`` (GAN/VAE), and ``reconstructions.png`` for a VAE given ``real`` images."""
    from optik.tasks.generate import generate_images, model_kind, num_classes_of

    out_dir.mkdir(parents=True, exist_ok=True)
    kind, nc = model_kind(model), num_classes_of(model)
    inner = getattr(model, "module", model)
    size = int(inner.config_dict().get("img_size", 32))
    up = _upscale(size)
    opts = {"steps": steps, "scheduler": scheduler, "guidance_scale": guidance_scale}
    paths = []
    if samples:
        labels, nrow = class_grid_labels(min(nc, 10) * 8 if nc else 64, min(nc, 10))
        images, _ = generate_images(model, len(labels) if labels is not None else 64, labels, seed=seed, **opts)
        paths.append(out_dir / "samples.png")
        save_grid(images, paths[-1], nrow=nrow, upscale=up)
    if kind == "ddpm":  # one image per class (or 8): the predicted clean image along the denoising steps
        k = min(nc, 8) if nc else 8
        _, traj = generate_images(model, k, torch.arange(k) if nc else None, seed=seed, trajectory=8, **opts)
        if traj:
            strip = torch.stack(traj, 1).flatten(0, 1)  # rows = images, columns = steps
            paths.append(out_dir / "trajectory.png")
            save_grid(strip, paths[-1], nrow=len(traj), upscale=up)
    else:
        paths.append(out_dir / "interpolation.png")
        save_grid(latent_interpolation(model, seed=seed), paths[-1], nrow=8, upscale=up)
        if kind == "vae" and real is not None:
            from optik.generative.vae import reconstructions

            dev = next(model.parameters()).device
            rl = real_labels.to(dev) if nc and real_labels is not None else None
            paths.append(out_dir / "reconstructions.png")
            save_grid(reconstructions(inner, real.to(dev), labels=rl), paths[-1], nrow=2, upscale=up)
    return paths


@torch.no_grad()
def latent_interpolation(model: nn.Module, rows: int = 6, steps: int = 8, seed: int = 0) -> Tensor:
    """GAN / VAE: rows of images decoded along straight lines between random latents (class of row i: i)."""
    inner = getattr(model, "module", model)
    cfg = inner.config_dict()
    dim = int(cfg.get("nz") or cfg.get("latent_dim"))
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed + 1)
    a, b = torch.randn(rows, dim, generator=g), torch.randn(rows, dim, generator=g)
    t = torch.linspace(0, 1, steps)[None, :, None]
    z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(rows * steps, dim).to(dev)
    nc = int(cfg.get("num_classes") or 0)
    labels = (torch.arange(rows) % nc).repeat_interleave(steps).to(dev) if nc else None
    was = model.training
    model.eval()
    try:
        return inner.sample(len(z), labels=labels, z=z)
    finally:
        model.train(was)


def metric_lines(metrics: dict[str, Any], features: str = "auto") -> list[str]:
    """Report lines for generative metrics."""
    keys = [k for k in ("FID", "KID", "IS", "precision", "recall", "CAS") if k in metrics]
    if not keys:
        return []
    lines = ["## Generative metrics", "", "| metric | value |", "|---|---|"]
    for k in keys:
        v = float(metrics[k])
        std = metrics.get(f"{k}_std")
        lines.append(f"| {k} | {v:.4g}{f' ± {float(std):.2g}' if std is not None else ''} |")
    what = ("an optik classifier trained on this dataset (dataset-specific FID: compare runs on this data, "
            "not with published Inception FIDs)") if features == "auto" else f"`{features}`"  # fmt: skip
    lines += ["", f"Features: {what}. Lower FID/KID is better; IS, precision, recall, CAS higher.", ""]
    return lines


# --- loading ----------------------------------------------------------------------------------
def load_generator(cfg: Any) -> tuple[Any, nn.Module, Any]:
    """(task, model in eval mode on cfg.device, cfg with data/imgsz defaults from the weights)."""
    from optik.weights import resolve_model_arg
    from optik.engine.inference import with_meta_defaults
    from optik.device import resolve_device
    from optik.tasks.generate import GenerateTask

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
    from optik.tasks.generate import generate_images, model_kind, num_classes_of

    classes = task.meta.get("classes", [])
    nc = num_classes_of(model)
    labels, nrow = _labels_for(cfg, nc, classes)
    run_dir = new_run_dir(cfg.project, "generate", cfg.name or "sample", cfg.exist_ok)
    t0 = time.time()
    chunks = []
    for k, start in enumerate(range(0, cfg.n, cfg.batch)):
        m = min(cfg.batch, cfg.n - start)
        lab = labels[start : start + m] if labels is not None else None
        x, _ = generate_images(model, m, lab, seed=cfg.seed * 100003 + k, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                               scheduler=cfg.sampler, progress=model_kind(model) == "ddpm")  # fmt: skip
        chunks.append(to_uint8(x))
    images = torch.cat(chunks)
    seconds = time.time() - t0
    up = _upscale(images.shape[-1])
    grid = run_dir / "samples.png"
    save_grid(images, grid, nrow=nrow, upscale=up)
    paths = [grid]
    if cfg.save:
        from PIL import Image

        (run_dir / "images").mkdir(exist_ok=True)
        for i, img in enumerate(images):
            name = f"{i:05d}" + (f"_{classes[int(labels[i])]}" if labels is not None and classes else "")
            arr = img.permute(1, 2, 0).numpy()
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(run_dir / "images" / f"{name}.png")
    kind = model_kind(model)
    if (kind == "ddpm" and cfg.trajectory) or (kind != "ddpm" and cfg.interpolate):
        paths += write_sample_artifacts(model, run_dir, seed=cfg.seed, steps=cfg.steps, scheduler=cfg.sampler,
                                        guidance_scale=cfg.guidance_scale, samples=False)  # fmt: skip
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
    from optik.engine.rundir import new_run_dir
    from optik.metrics.generative import GenerativeMetrics
    from optik.tasks.generate import generate_images, num_classes_of

    task, model, cfg = load_generator(cfg)
    if cfg.data is None:
        raise ConfigError("missing key 'data' (the real images to compare with; default: the data the model was trained on)")
    data = task.datasets()
    real_ds = data.val if cfg.split == "val" else data.train
    if real_ds is None or len(real_ds) == 0:
        raise ConfigError(f"data: no {cfg.split} images in {cfg.data!r} to compare with")
    n = cfg.n or len(real_ds)
    nc = num_classes_of(model)
    classes = task.meta.get("classes", [])
    pairs = [real_ds[i] for i in range(len(real_ds))]  # decoded and transformed once
    real_x = torch.stack([x for x, _ in pairs])
    real_y = torch.as_tensor([int(y) for _, y in pairs])
    fake_y = real_y.repeat(math.ceil(n / len(real_y)))[:n]  # the real class mix
    metric = GenerativeMetrics(task.feature_extractor(), kid_subset_size=cfg.kid_subset_size)
    def generate(labels: Tensor, seed0: int) -> Tensor:
        chunks = []
        for k, start in enumerate(range(0, len(labels), cfg.batch)):
            lab = labels[start : start + cfg.batch]
            x, _ = generate_images(model, len(lab), lab if nc else None, seed=seed0 + k, steps=cfg.steps,
                                   guidance_scale=cfg.guidance_scale, scheduler=cfg.sampler)  # fmt: skip
            chunks.append(x.cpu())
        return torch.cat(chunks)

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
        from optik.metrics.generative import classification_accuracy_score

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
              upscale=_upscale(fake_x.shape[-1]))  # fmt: skip
    clean = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
    (run_dir / "metrics.json").write_text(json.dumps(clean, indent=2, default=str))
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
