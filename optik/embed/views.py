"""Augmentation presets of the self-supervised papers (torchvision ``transforms.v2``), scaled to small images.

Each preset turns one uint8 image into a list of augmented float views (normalised):

* ``simclr`` (Chen et al. 2020, appendix A): random resized crop, flip, colour jitter (0.4, 0.4, 0.4, 0.1) with
  p 0.8, grayscale p 0.2; Gaussian blur p 0.5 only from 64 px up (SimCLR's CIFAR setting drops it at 32 px).
* ``moco`` (MoCo v2 = the SimCLR recipe with blur): the same views.
* ``mae`` (He et al. 2021): one view, random resized crop and flip only (MAE needs no colour augmentation).
* ``dino`` (Caron et al. 2021): two global crops, blur p 1.0 on the first and 0.1 on the second, solarisation
  p 0.2 on the second; then ``local_crops`` small crops (multi-crop: area 0.05-0.4 at ``local_size`` px, by
  default ``size``·96/224 as the paper's 96 px crops of 224 px images; flip, jitter, blur p 0.5 from 64 px).
  The global crops come first: the teacher sees only those, the student all of them.

``crop_scale`` is the area range of the random resized crop (the papers: 0.08-1 at 224 px; 0.2-1 suits 32 px
images, whose objects fill the frame).

>>> import torch
>>> views = ssl_views("simclr", 32, mean=(0.5,) * 3, std=(0.5,) * 3)
>>> [v.shape for v in views(torch.zeros(3, 40, 40, dtype=torch.uint8))]
[torch.Size([3, 32, 32]), torch.Size([3, 32, 32])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2


def _blur(size: int, p: float) -> v2.Transform:
    k = max(3, int(0.1 * size) // 2 * 2 + 1)  # 10% of the image, odd (the papers' kernel rule)
    return v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=p)


def _view(size: int, scale: tuple[float, float], mean: Sequence[float], std: Sequence[float], *, hflip: float, blur: float,
          solarize: float, jitter: float) -> v2.Compose:  # fmt: skip
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if jitter > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(0.4 * jitter, 0.4 * jitter, 0.4 * jitter, 0.1 * jitter)], p=0.8))
        steps.append(v2.RandomGrayscale(0.2))
    if blur > 0:
        steps.append(_blur(size, blur))
    if solarize > 0:
        steps.append(v2.RandomSolarize(128, p=solarize))  # on uint8 pixels, as the paper's PIL solarize
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class MultiView:
    """Applies each transform to the same image: ``image → [view_1, …, view_n]``."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Tensor) -> list[Tensor]:
        return [t(img) for t in self.transforms]

    def __repr__(self) -> str:
        return f"MultiView({len(self.transforms)} views)"


def local_crop_size(size: int) -> int:
    """DINO's local crop side for global crops of ``size`` px: the paper's 96/224 ratio (at least 8 px).

    >>> local_crop_size(224), local_crop_size(32)
    (96, 14)
    """
    return max(8, round(size * 96 / 224))


DINO_LOCAL_CROPS = 6  # the paper's ViT-S/16 recipe uses 10; 6 keeps the CPU cost of a small run moderate


def local_crops(cfg: Any) -> int:
    """The number of DINO local crops an ``EmbedTrainConfig`` asks for: ``local_crops``, unset = 6 for DINO, 0
    for the other methods."""
    n = getattr(cfg, "local_crops", None)
    return (DINO_LOCAL_CROPS if cfg.method == "dino" else 0) if n is None else int(n)


def local_crop_side(cfg: Any) -> int | None:
    """The local crop side of ``cfg`` in px (``local_size``, unset = :func:`local_crop_size` of ``imgsz``); None
    without local crops."""
    if not local_crops(cfg):
        return None
    return int(cfg.local_size or local_crop_size(cfg.imgsz))


def ssl_views(method: str, size: int, *, mean: Sequence[float], std: Sequence[float], crop_scale: tuple[float, float] | None = None,
              hflip: float = 0.5, jitter: float = 1.0, local_crops: int = 0, local_size: int | None = None,
              local_scale: tuple[float, float] = (0.05, 0.4)) -> MultiView:  # fmt: skip
    """The augmentation of ``method`` at ``size`` px (see the module docstring): two views (MAE: one), plus
    ``local_crops`` DINO local crops of ``local_size`` px (default :func:`local_crop_size`) and area
    ``local_scale``; ``jitter`` scales the colour-jitter strength (0 = off, for grayscale data it only changes
    brightness/contrast).

    >>> views = ssl_views("dino", 32, mean=(0.5,) * 3, std=(0.5,) * 3, local_crops=2)
    >>> [tuple(v.shape[-2:]) for v in views(torch.zeros(3, 40, 40, dtype=torch.uint8))]
    [(32, 32), (32, 32), (14, 14), (14, 14)]
    """
    if local_crops < 0:
        raise ValueError(f"local_crops must be >= 0, got {local_crops}")
    blur = 0.5 if size >= 64 else 0.0
    if method == "mae":
        if local_crops:
            raise ValueError("local crops are DINO's multi-crop; method='mae' takes one view")
        return MultiView([_view(size, crop_scale or (0.2, 1.0), mean, std, hflip=hflip, blur=0.0, solarize=0.0, jitter=0.0)])
    if method == "dino":
        scale = crop_scale or (0.4, 1.0)  # DINO's global_crops_scale
        first = _view(size, scale, mean, std, hflip=hflip, blur=1.0 if size >= 64 else 0.0, solarize=0.0, jitter=jitter)
        second = _view(size, scale, mean, std, hflip=hflip, blur=0.1 if size >= 64 else 0.0, solarize=0.2, jitter=jitter)
        local = []
        if local_crops:
            ls = local_size or local_crop_size(size)
            # One transform object is enough: each call draws new random parameters (DINO's local_transfo).
            local = [_view(ls, local_scale, mean, std, hflip=hflip, blur=0.5 if ls >= 64 else 0.0, solarize=0.0, jitter=jitter)] * local_crops
        return MultiView([first, second, *local])
    if local_crops:
        raise ValueError(f"local crops are DINO's multi-crop; method={method!r} takes two views")
    scale = crop_scale or (0.2, 1.0)
    one = _view(size, scale, mean, std, hflip=hflip, blur=blur, solarize=0.0, jitter=jitter)
    return MultiView([one, one])
