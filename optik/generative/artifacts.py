"""Files that show a generative model: sample grids, denoising trajectories, latent interpolations,
reconstructions, single images, and the report's metric table. Training (``plots``) and
``generate sample`` / ``eval`` write the same artifacts through these functions.

>>> paths = write_sample_artifacts(model, run_dir / "plots", seed=0, steps=20)        # doctest: +SKIP
>>> [p.name for p in paths]                                                           # doctest: +SKIP
['samples.png', 'trajectory.png']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from optik.device import model_device
from optik.generative.sampling import class_grid_labels, generate_images, latent_interpolation
from optik.generative.utils import save_grid
from optik.models.generative import unwrap


def upscale(img_size: int) -> int:
    """Nearest-neighbour factor that makes tiny images readable in a grid (~64 px tiles)."""
    return max(1, 64 // max(1, img_size))


def write_sample_artifacts(
    model: nn.Module, out_dir: Path, *, seed: int = 0, real: Tensor | None = None, real_labels: Tensor | None = None,
    samples: bool = True, trajectory: bool = True, interpolate: bool = True, **sampling: Any,
) -> list[Path]:  # fmt: skip
    """What the model can show, as PNGs in ``out_dir``: ``samples.png`` (one row of 8 per class, or 8×8;
    ``samples=False`` skips it), ``trajectory.png`` (models that sample in steps), ``interpolation.png``
    (models with a latent space) and, given ``real`` images, ``reconstructions.png`` (autoencoders).
    ``sampling``: the model's sampling options (``steps``, ``guidance_scale``, ``sampler``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inner = unwrap(model)
    nc = inner.num_classes
    up = upscale(int(inner.config_dict().get("img_size", 32)))
    paths = []
    if samples:
        labels, nrow = class_grid_labels(min(nc, 10) * 8 if nc else 64, min(nc, 10))
        images = generate_images(model, len(labels) if labels is not None else 64, labels, seed=seed, **sampling)
        paths.append(out_dir / "samples.png")
        save_grid(images, paths[-1], nrow=nrow, upscale=up)
    if trajectory:  # one image per class (or 8): the predicted clean image along the sampling steps
        k = min(nc, 8) if nc else 8
        traj = inner.trajectory(k, torch.arange(k) if nc else None, seed=seed, snapshots=8, **sampling)
        if traj:
            strip = torch.stack(traj, 1).flatten(0, 1)  # rows = images, columns = steps
            paths.append(out_dir / "trajectory.png")
            save_grid(strip, paths[-1], nrow=len(traj), upscale=up)
    grid = latent_interpolation(model, seed=seed) if interpolate else None
    if grid is not None:
        paths.append(out_dir / "interpolation.png")
        save_grid(grid, paths[-1], nrow=8, upscale=up)
    if real is not None:
        dev = model_device(inner)
        rl = real_labels.to(dev) if nc and real_labels is not None else None
        pairs = inner.reconstruct(real.to(dev), rl)
        if pairs is not None:
            paths.append(out_dir / "reconstructions.png")
            save_grid(pairs, paths[-1], nrow=2, upscale=up)
    return paths


def save_images(images: Tensor, out_dir: Path, labels: Tensor | None = None, classes: list[str] | None = None) -> None:
    """uint8 ``(N, C, H, W)`` → ``out_dir/00000[_<class>].png`` (grey images as one-channel PNGs)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        name = f"{i:05d}" + (f"_{classes[int(labels[i])]}" if labels is not None and classes else "")
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out_dir / f"{name}.png")


def metric_lines(metrics: dict[str, Any], features: str = "auto") -> list[str]:
    """Report lines (markdown) for generative metrics."""
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


__all__ = ["metric_lines", "save_images", "upscale", "write_sample_artifacts"]
