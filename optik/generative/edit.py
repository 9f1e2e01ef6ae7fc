"""``optik edit``: click (or box) an object, describe what should be there instead.

SAM turns the click / box into a mask (its best-ranked candidate) → the mask is dilated (object
edges, shadows) → Stable Diffusion inpaints the dilated region at the pipeline's working size →
the result is scaled back and composited through a *feathered* copy of the mask, so every pixel
outside the mask keeps its original value exactly and the seam is soft. Writes ``edited.png``
(or ``edited_<k>.png`` for ``n`` variants), ``mask.png`` and ``panel.png`` (before | mask | after).

>>> from optik.config import build_config
>>> edit(build_config("edit", "edit", {"image": "dog.jpg", "point": "210,140",
...      "prompt": "a corgi wearing sunglasses"}))                           # doctest: +SKIP
{'out': 'runs/edit/edit/edited.png', 'panel': 'runs/edit/edit/panel.png', ...}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from optik.config.generate import EditConfig
from optik.console import console
from optik.errors import ConfigError


def sam_mask(image: np.ndarray, sam: Any, point: list[float] | None, box: list[float] | None, device: str = "cpu") -> np.ndarray:
    """SAM's best mask (bool H×W) for one object given by a click and/or a box."""
    from optik.sam import SamPredictor

    predictor = sam if isinstance(sam, SamPredictor) else SamPredictor(sam, device=device)
    predictor.set_image(image)
    result = predictor.predict(points=[point] if point else None, labels=[1] if point else None,
                               boxes=[box] if box else None, multimask=True)  # fmt: skip
    return result.masks.data[0].cpu().numpy().astype(bool)


def grow_and_feather(mask: np.ndarray, dilate: int, feather: int) -> tuple[np.ndarray, np.ndarray]:
    """(hard mask dilated by ``dilate`` px as uint8 0/255, soft alpha in [0, 1] blurred over ``feather`` px).

    The alpha is 1 on the whole *un-dilated* object so the edit always covers it; it fades out
    across the dilation band.
    """
    m = mask.astype(np.uint8) * 255
    if dilate > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        m = cv2.dilate(m, k)
    alpha = m.astype(np.float32) / 255.0
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather / 2.0)
        alpha = np.maximum(alpha, mask.astype(np.float32))
    return m, np.clip(alpha, 0.0, 1.0)


def working_size(w: int, h: int, side: int) -> tuple[int, int]:
    """Longer side = ``side``, both multiples of 8 (the SD VAE's stride)."""
    s = side / max(w, h)
    return max(8, int(round(w * s / 8)) * 8), max(8, int(round(h * s / 8)) * 8)


def composite(original: np.ndarray, generated: Image.Image, alpha: np.ndarray) -> np.ndarray:
    """``original`` (H×W×3 uint8) with ``generated`` (any size, resized) blended in through ``alpha``."""
    h, w = original.shape[:2]
    gen = np.asarray(generated.convert("RGB").resize((w, h), Image.LANCZOS), dtype=np.float32)
    a = alpha[..., None]
    out = original.astype(np.float32) * (1 - a) + gen * a
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def panel(before: np.ndarray, mask: np.ndarray, after: list[np.ndarray], height: int = 256) -> np.ndarray:
    """before | mask overlaid in red | after(s), each scaled to ``height`` px."""
    overlay = before.astype(np.float32).copy()
    on = mask > 0
    overlay[on] = 0.5 * overlay[on] + 0.5 * np.array([255, 40, 40], np.float32)
    tiles = [before, overlay.astype(np.uint8), *after]
    h, w = before.shape[:2]
    size = (max(1, round(w * height / h)), height)
    gap = np.full((height, 4, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for t in tiles:
        row += [np.asarray(Image.fromarray(t).resize(size, Image.LANCZOS)), gap]
    return np.concatenate(row[:-1], 1)


def edit(cfg: EditConfig, *, sam: Any = None, pipe: Any = None) -> dict[str, Any]:
    """Run the edit described by ``cfg``; ``sam`` / ``pipe`` may be ready objects (reused across calls).

    Returns ``{"out", "mask", "panel", "run_dir", "images" (list of H×W×3 uint8), "seconds_per_step"}``.
    """
    from optik.data.image import load_image
    from optik.engine.rundir import new_run_dir
    from optik.generative import sd

    if not cfg.image:
        raise ConfigError("missing key 'image' (optik edit image=photo.jpg point=x,y prompt=\"…\")")
    if not cfg.prompt:
        raise ConfigError("missing key 'prompt' (what to paint into the selected region)")
    if not (cfg.point or cfg.box or cfg.mask):
        raise ConfigError("missing key 'point' (x,y click on the object), 'box' (x1,y1,x2,y2) or 'mask' (a mask image)")
    image = np.asarray(load_image(cfg.image))  # ImageError names the file
    h, w = image.shape[:2]
    for key, xy in (("point", cfg.point), ("box", cfg.box)):
        if xy and any(not (0 <= v <= (w if i % 2 == 0 else h)) for i, v in enumerate(xy)):
            raise ConfigError(f"bad value for '{key}': {xy} is outside the {w}x{h} image '{cfg.image}'")
    t0 = time.perf_counter()
    if cfg.mask:
        m = np.asarray(load_image(cfg.mask))
        if m.shape[:2] != (h, w):
            raise ConfigError(f"bad value for 'mask': '{cfg.mask}' is {m.shape[1]}x{m.shape[0]}, the image is {w}x{h}")
        obj = m.mean(-1) > 127
    else:
        obj = sam_mask(image, sam if sam is not None else cfg.sam, cfg.point, cfg.box, cfg.device)
    if not obj.any():
        raise ConfigError(f"the mask is empty: nothing selected at {cfg.point or cfg.box} in '{cfg.image}'")
    hard, alpha = grow_and_feather(obj, cfg.dilate, cfg.feather)
    t_mask = time.perf_counter() - t0
    if pipe is None:
        from optik.device import resolve_device

        pipe = sd.load_pipeline(cfg.model, "inpaint", scheduler=cfg.sampler, device=str(resolve_device(cfg.device)))
    ww, wh = working_size(w, h, cfg.imgsz)
    res = sd.run_pipeline(
        pipe, prompt=cfg.prompt, negative_prompt=cfg.negative_prompt, image=Image.fromarray(image).resize((ww, wh), Image.LANCZOS),
        mask=Image.fromarray(hard).resize((ww, wh), Image.NEAREST), strength=cfg.strength, steps=cfg.steps,
        guidance_scale=cfg.guidance_scale, seed=cfg.seed, batch=cfg.n, height=wh, width=ww,
    )  # fmt: skip
    results = [composite(image, g, alpha) for g in res.images]
    run_dir = new_run_dir(cfg.project, "edit", cfg.name or "edit", cfg.exist_ok)
    outs = [Path(cfg.out) if cfg.out and cfg.n == 1 else run_dir / ("edited.png" if cfg.n == 1 else f"edited_{k}.png") for k in range(cfg.n)]
    for p, r in zip(outs, results):
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(r).save(p)
    Image.fromarray(hard).save(run_dir / "mask.png")
    Image.fromarray(panel(image, hard, results)).save(run_dir / "panel.png")
    console.print(f"edit: mask {obj.mean():.1%} of the image ({t_mask:.1f} s), inpainting {res.steps} steps at {ww}x{wh} "
                  f"({res.seconds_per_step:.2f} s/step) → [bold]{run_dir}[/bold]")  # fmt: skip
    return {"out": str(outs[0]), "outs": [str(p) for p in outs], "mask": str(run_dir / "mask.png"), "panel": str(run_dir / "panel.png"),
            "run_dir": str(run_dir), "images": results, "object_mask": obj, "seconds_per_step": res.seconds_per_step}  # fmt: skip
