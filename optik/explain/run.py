"""``optik classify explain``: where does a trained classifier look? Grad-CAM / Grad-CAM++ / gradient
saliency heatmaps for every image of ``source``, mapped back onto the *original* image.

The model sees ``Resize(shorter side → imgsz) → CenterCrop(imgsz)`` of each image
(:func:`optik.data.transforms.classify_transforms`, eval preset); :func:`heatmap_to_original`
undoes exactly those steps, so the heatmap lines up with the original pixels and is 0 where the
model saw nothing (the cropped-off margins of a non-square image).

>>> from optik import Model                                               # doctest: +SKIP
>>> ex = Model("runs/classify/train").explain("cat.jpg", method="gradcam++")   # doctest: +SKIP
>>> ex[0].target_name, ex[0].heatmap.shape, ex[0].overlay.dtype           # doctest: +SKIP
('cat', (480, 640), dtype('uint8'))
>>> ex[0].save("cat_cam.png")                                             # doctest: +SKIP

CLI: ``optik classify explain model=runs/classify/train source=images/ method=gradcam target=cat``
writes ``runs/classify/explain*/0000_<stem>.png`` (image | heatmap | overlay) and
``explanations.jsonl``.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import nn

from optik.config.classify import ExplainConfig
from optik.errors import ConfigError
from optik.explain.gradcam import explain_batch, find_target_layer, get_layer
from optik.viz.heatmap import heatmap_panel, overlay_heatmap

log = logging.getLogger(__name__)

__all__ = ["Explanation", "explain", "heatmap_to_original", "resolve_target"]


@dataclass
class Explanation:
    """One image's explanation.

    Attributes:
        path: the source name (file path, ``video#frameN`` or ``imageI`` for arrays).
        target, target_name: the explained class (index, name).
        score: the model's softmax probability of ``target``.
        heatmap: (H, W) float32 in [0, 1] at the original image size.
        overlay: (H, W, 3) uint8 RGB, the coloured heatmap blended over the image.
        method: ``gradcam`` | ``gradcam++`` | ``saliency``; layer: the module explained
            (``"input"`` for saliency).
        image: the original (H, W, 3) uint8 image (for :meth:`save`'s panel).
    """

    path: str
    target: int
    target_name: str
    score: float
    heatmap: np.ndarray = field(repr=False)
    overlay: np.ndarray = field(repr=False)
    method: str
    layer: str
    image: np.ndarray | None = field(default=None, repr=False)

    def panel(self) -> np.ndarray:
        """``image | heatmap | overlay`` as one (h, w, 3) uint8 RGB array, titled with the class."""
        image = self.image if self.image is not None else np.zeros_like(self.overlay)
        title = [f"{self.target_name} {self.score:.2f}", f"{self.method} @ {self.layer}"]
        return heatmap_panel(image, self.heatmap, self.overlay, title=title)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`panel` as a PNG (parent folders created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(p), cv2.cvtColor(self.panel(), cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {p}")
        return p

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no pixels): path, target, score, method, layer and the peak (x, y)."""
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return {
            "path": self.path, "target": self.target, "target_name": self.target_name, "score": round(self.score, 6),
            "method": self.method, "layer": self.layer, "peak_xy": [int(x), int(y)], "shape": list(self.heatmap.shape),
        }  # fmt: skip


# --- geometry -----------------------------------------------------------------------------------
_NEUTRAL = ("ToDtype", "Normalize", "ToImage", "ToPureTensor", "ConvertImageDtype", "Identity", "Lambda")


def _geometry_steps(transform: Callable) -> list[tuple[str, Any]] | None:
    """The eval transform's geometric steps as ``[("resize", (size, max_size)), ("crop", (h, w))]``;
    None when it holds a step whose geometry we do not know."""
    steps: list[tuple[str, Any]] = []
    for t in getattr(transform, "transforms", [transform]):
        kind = type(t).__name__
        if kind == "Resize":
            steps.append(("resize", (list(t.size) if not isinstance(t.size, int) else [t.size], t.max_size)))
        elif kind == "CenterCrop":
            size = t.size if not isinstance(t.size, int) else (t.size, t.size)
            steps.append(("crop", (int(size[0]), int(size[-1]))))
        elif kind == "LimitAspect":  # a centre crop whose size depends on the input (see optik.data.transforms)
            steps.append(("aspect", float(t.max_aspect)))
        elif kind not in _NEUTRAL:
            return None
    return steps


def _resized_hw(hw: tuple[int, int], size: list[int], max_size: int | None) -> tuple[int, int]:
    """torchvision's ``Resize`` output size: one number = the shorter side (aspect kept, long side
    truncated), two = (h, w)."""
    h, w = hw
    if len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(size[0]), int(size[0] * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def _crop_anchor(hw: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left of torchvision's ``CenterCrop`` in the input (negative: the crop was zero-padded)."""

    def one(n: int, c: int) -> int:
        return -((c - n) // 2) if c > n else int(round((n - c) / 2.0))

    return one(hw[0], crop[0]), one(hw[1], crop[1])


def _resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if m.shape == tuple(hw):
        return m
    shrink = hw[0] * hw[1] < m.shape[0] * m.shape[1]
    return cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def heatmap_to_original(heat: np.ndarray, orig_hw: tuple[int, int], transform: Callable) -> np.ndarray:
    """Map a heatmap at the model's input (the output of ``transform``) back onto the original
    ``orig_hw`` image: undo each ``CenterCrop`` (outside the crop: 0, the model never saw it) and
    each ``Resize``, last step first. A transform with steps of unknown geometry falls back to a
    plain resize. Returns (H, W) float32 in [0, 1] with its peak at 1 (unless all 0).

    >>> tf = classify_transforms(32, train=False)                   # doctest: +SKIP
    >>> heatmap_to_original(np.ones((32, 32), np.float32), (40, 80), tf)[:, :12].max()   # doctest: +SKIP
    0.0
    """
    heat = np.asarray(heat, np.float32)
    steps = _geometry_steps(transform)
    if steps is None:
        log.warning("explain: unknown geometry in %s; heatmap resized to the image as a whole", transform)
        out = _resize_map(heat, orig_hw)
    else:
        sizes = [tuple(int(v) for v in orig_hw)]  # input size of each step, forward
        for i, (kind, arg) in enumerate(steps):
            if kind == "aspect":  # now that the input size is known, it is a plain centre crop
                h, w = sizes[-1]
                limit = max(1, int(arg * min(h, w)))
                kind, arg = steps[i] = ("crop", (min(h, limit), min(w, limit)))
            sizes.append(_resized_hw(sizes[-1], *arg) if kind == "resize" else arg)
        out = heat
        for (kind, arg), hw in zip(reversed(steps), reversed(sizes[:-1])):
            if kind == "resize":
                out = _resize_map(out, hw)
            else:
                top, left = _crop_anchor(hw, arg)
                canvas = np.zeros(hw, np.float32)
                y0, x0 = max(top, 0), max(left, 0)
                y1, x1 = min(top + arg[0], hw[0]), min(left + arg[1], hw[1])
                canvas[y0:y1, x0:x1] = out[y0 - top : y1 - top, x0 - left : x1 - left]
                out = canvas
    out = np.clip(out, 0.0, None)
    peak = float(out.max()) if out.size else 0.0
    return (out / peak if peak > 0 else out).astype(np.float32)


# --- the mode -----------------------------------------------------------------------------------
def resolve_target(target: int | str | None, classes: list[str]) -> int | None:
    """``target=`` → class index (None: each image's predicted class). Accepts an index, a class
    name, or an index written as text (CLI values arrive as strings); else :class:`ConfigError`.

    >>> resolve_target("square", ["circle", "square"]), resolve_target("0", ["circle", "square"])
    (1, 0)
    """
    if target is None:
        return None
    if isinstance(target, str):
        if target in classes:
            return classes.index(target)
        if not target.strip().lstrip("-").isdigit():
            close = difflib.get_close_matches(target, classes, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"classes: {', '.join(classes[:20])}"
            raise ConfigError(f"bad value for 'target': {target!r} is not a class of this model; {hint}")
        target = int(target.strip())
    if isinstance(target, bool) or not 0 <= int(target) < len(classes):
        raise ConfigError(f"bad value for 'target': {target!r} (class index 0..{len(classes) - 1} or a class name)")
    return int(target)


def _reject_exported(model_arg: str | None) -> None:
    """Exported files (ONNX / TorchScript) have no autograd graph to hook: fail before loading."""
    if not model_arg:
        return
    exported = Path(str(model_arg)).suffix.lower() in (".onnx", ".torchscript")
    try:  # the runtime module's own test, once it exists (helper A's optik.deploy.runtime)
        from optik.deploy.runtime import is_exported

        exported = exported or bool(is_exported(model_arg))
    except Exception:  # noqa: BLE001  (not there yet, or it rejects a non-file name)
        pass
    if exported:
        raise ConfigError(
            f"bad value for 'model': '{model_arg}' is an exported model; explain needs gradients, which only the "
            "eager model has — pass the trained weights (.safetensors) or the run directory instead"
        )


def _check_eager(model: nn.Module, model_arg: str | None) -> None:
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())
    if scripted or not any(True for _ in model.parameters()):
        raise ConfigError(
            f"bad value for 'model': '{model_arg}' loads as {type(model).__name__}, not an eager PyTorch model; "
            "explain needs gradients — pass the trained weights (.safetensors) or the run directory"
        )


def _stem(name: str) -> str:
    from optik.engine.inference import FRAME_SEP

    if FRAME_SEP in name:
        video, frame = name.split(FRAME_SEP, 1)
        return f"{Path(video).stem}_frame{frame}"
    return Path(name).stem or "image"


def explain(cfg: ExplainConfig, source: Any = None) -> list[Explanation]:
    """Explain every image of ``source`` (default ``cfg.source``) with ``cfg.method`` for class
    ``cfg.target`` (default: the predicted one) at ``cfg.layer`` (default: automatic). With
    ``cfg.save``: ``runs/classify/explain*/NNNN_<stem>.png`` panels and ``explanations.jsonl``."""
    from optik.console import console
    from optik.device import model_device
    from optik.engine.inference import batched, iter_sources, load_trained
    from optik.engine.rundir import new_run_dir

    _reject_exported(cfg.model)
    task, model, cfg = load_trained(cfg)
    _check_eager(model, cfg.model)
    model.eval()
    classes = list(task.meta["classes"])
    target = resolve_target(cfg.target, classes)
    layer: str | None = None
    if cfg.method == "saliency":
        if cfg.layer:
            log.warning("explain: layer=%s is ignored by method=saliency (gradients at the input)", cfg.layer)
    elif cfg.layer:
        get_layer(model, cfg.layer)  # unknown name → ConfigError before any image is read
        layer = cfg.layer
    else:
        layer = find_target_layer(model, cfg.imgsz)[0]
    transform = task.transforms(train=False)
    device = model_device(model)
    src = cfg.source if source is None else source

    run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "explain", cfg.exist_ok) if cfg.save else None
    jsonl = open(run_dir / "explanations.jsonl", "w") if run_dir else None
    out: list[Explanation] = []
    try:
        for batch in batched(iter_sources(src), cfg.batch):
            x = torch.stack([transform(img) for _, img in batch]).to(device)
            heat, logits, used = explain_batch(model, x, cfg.method, target, layer)
            probs = logits.float().softmax(1).cpu()
            idx = logits.argmax(1).cpu() if target is None else torch.full((len(batch),), target)
            heat = heat.cpu().numpy()
            for j, (name, img) in enumerate(batch):
                image = img.permute(1, 2, 0).numpy()
                hm = heatmap_to_original(heat[j], image.shape[:2], transform)
                t = int(idx[j])
                ex = Explanation(
                    path=name, target=t, target_name=classes[t], score=float(probs[j, t]), heatmap=hm,
                    overlay=overlay_heatmap(image, hm, cfg.alpha), method=cfg.method, layer=used, image=image,
                )  # fmt: skip
                if run_dir is not None:
                    file = ex.save(run_dir / f"{len(out):04d}_{_stem(name)}.png")
                    jsonl.write(json.dumps({**ex.to_dict(), "file": file.name}) + "\n")
                out.append(ex)
    finally:
        if jsonl:
            jsonl.close()
    if run_dir is not None:
        console.print(f"{len(out)} explanations ({cfg.method}) saved to [bold]{run_dir}[/bold]")
    return out
