"""Augmentation presets of the self-supervised papers (torchvision ``transforms.v2``), scaled to small images.

Each preset turns one uint8 image into a list of augmented float views (normalised):

* ``simclr`` (Chen et al. 2020, appendix A): random resized crop, flip, colour jitter (0.4, 0.4, 0.4, 0.1) with
  p 0.8, grayscale p 0.2; Gaussian blur p 0.5 only from 64 px up (SimCLR's CIFAR setting drops it at 32 px).
* ``moco`` (MoCo v2 = the SimCLR recipe with blur): the same views.
* ``mae`` (He et al. 2021): one view, random resized crop and flip only (MAE needs no colour augmentation).
* ``dino`` (Caron et al. 2021): two global crops, blur p 1.0 on the first and 0.1 on the second, solarisation
  p 0.2 on the second.

``crop_scale`` is the area range of the random resized crop (the papers: 0.08-1 at 224 px; 0.2-1 suits 32 px
images, whose objects fill the frame).

>>> import torch
>>> views = ssl_views("simclr", 32, mean=(0.5,) * 3, std=(0.5,) * 3)
>>> [v.shape for v in views(torch.zeros(3, 40, 40, dtype=torch.uint8))]
[torch.Size([3, 32, 32]), torch.Size([3, 32, 32])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def ssl_views(method: str, size: int, *, mean: Sequence[float], std: Sequence[float], crop_scale: tuple[float, float] | None = None,
              hflip: float = 0.5, jitter: float = 1.0) -> MultiView:  # fmt: skip
    """The two-view augmentation of ``method`` at ``size`` px (see the module docstring); ``jitter`` scales the
    colour-jitter strength (0 = off, for grayscale data it only changes brightness/contrast)."""
    blur = 0.5 if size >= 64 else 0.0
    if method == "mae":
        return MultiView([_view(size, crop_scale or (0.2, 1.0), mean, std, hflip=hflip, blur=0.0, solarize=0.0, jitter=0.0)])
    if method == "dino":
        scale = crop_scale or (0.4, 1.0)  # DINO's global_crops_scale
        first = _view(size, scale, mean, std, hflip=hflip, blur=1.0 if size >= 64 else 0.0, solarize=0.0, jitter=jitter)
        second = _view(size, scale, mean, std, hflip=hflip, blur=0.1 if size >= 64 else 0.0, solarize=0.2, jitter=jitter)
        return MultiView([first, second])
    scale = crop_scale or (0.2, 1.0)
    one = _view(size, scale, mean, std, hflip=hflip, blur=blur, solarize=0.0, jitter=jitter)
    return MultiView([one, one])
