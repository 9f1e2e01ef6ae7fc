"""Classification transform presets on torchvision.transforms.v2.

Input is a uint8 `tv_tensors.Image` (3, H, W) from `ClassificationDataset`; output is float32
(3, imgsz, imgsz), normalized. Batch-level MixUp/CutMix (`batch_mix`) runs after collation.

>>> tf = classify_transforms(32, train=True, augment="randaugment")
>>> tf(tv_tensors.Image(torch.zeros(3, 50, 40, dtype=torch.uint8))).shape
torch.Size([3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors  # noqa: F401  (used in the doctest; the input type)
from torchvision.transforms import v2

from optik.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment", "autoaugment", "augmix")

#: The train augmentation a data source may choose for itself (``DataSplits.augment_defaults``), at its
#: photo values: natural images (ImageFolder, CSV, Hugging Face data) look as natural mirrored, and a
#: 60-100 % random-resized crop still shows the object. Built-in sources override them: a mirrored digit
#: is another symbol or none, and a zooming crop cuts strokes or shapes off the small images.
PHOTO_AUGMENT: dict[str, Any] = {"hflip": 0.5, "scale": (0.6, 1.0)}


def augment_settings(given: Mapping[str, Any], data_defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values of the :data:`PHOTO_AUGMENT` keys a run uses: each one the user gave (not None) wins,
    then the data source's default, then the photo default.

    >>> augment_settings({"hflip": None, "scale": None}, {"hflip": 0.0, "scale": (1.0, 1.0)})
    {'hflip': 0.0, 'scale': (1.0, 1.0)}
    >>> augment_settings({"hflip": 0.5, "scale": None}, {"hflip": 0.0})
    {'hflip': 0.5, 'scale': (0.6, 1.0)}
    """
    data_defaults = data_defaults or {}
    unknown = set(data_defaults) - set(PHOTO_AUGMENT)
    if unknown:  # a source declaring a key nothing reads would silently change nothing
        raise ValueError(f"augment_defaults: unknown keys {sorted(unknown)}; expected some of {sorted(PHOTO_AUGMENT)}")
    out = {}
    for key, photo in PHOTO_AUGMENT.items():
        value = given.get(key)
        out[key] = value if value is not None else data_defaults.get(key, photo)
    return out


_POLICY_CLASSES = {
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
    "autoaugment": v2.AutoAugment,  # ImageNet policy
    "augmix": v2.AugMix,
}


def _policy(augment: str | None) -> v2.Transform | None:
    """The named automatic augmentation policy (torchvision defaults, on uint8), or None."""
    name = (augment or "none").lower()
    if name not in AUGMENT_POLICIES:
        raise ConfigError(
            f"augment={augment!r}: unknown policy; expected one of {', '.join(AUGMENT_POLICIES)}"
        )
    return None if name == "none" else _POLICY_CLASSES[name]()


def _check_prob(key: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{key}={p}: must be a probability in [0, 1]")
    return float(p)


class LimitAspect(torch.nn.Module):
    """Centre-crop the longer side to at most ``max_aspect`` × the shorter one. The eval pipeline keeps only
    the central square, but resizes first: a 1×8000 upload would become a 224×1,792,000 image (gigabytes)
    before the crop. Up to ``max_aspect``:1 the output is unchanged (the resize's filter never reaches
    that far from the square).

    >>> LimitAspect()(torch.zeros(3, 2, 100)).shape
    torch.Size([3, 2, 6])
    """

    def __init__(self, max_aspect: float = 3.0) -> None:
        super().__init__()
        self.max_aspect = max_aspect

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        limit = max(1, int(self.max_aspect * min(h, w)))
        if max(h, w) <= limit:
            return img
        return v2.functional.center_crop(img, [min(h, limit), min(w, limit)])


#: Interpolation names (timm's ``pretrained_cfg``, HF image processors) → torchvision modes that work on
#: tensors; Lanczos (PIL only) becomes bicubic, the nearest tensor filter.
_INTERPOLATION = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC, "lanczos": v2.InterpolationMode.BICUBIC}  # fmt: skip


def interpolation_mode(name: str | v2.InterpolationMode) -> v2.InterpolationMode:
    """``"bicubic"`` → ``InterpolationMode.BICUBIC``; an unknown name is a ConfigError listing the known ones.

    >>> interpolation_mode("bicubic").value
    'bicubic'
    """
    if isinstance(name, v2.InterpolationMode):
        return name
    mode = _INTERPOLATION.get(str(name).lower())
    if mode is None:
        raise ConfigError(f"interpolation={name!r}: expected one of {', '.join(_INTERPOLATION)}")
    return mode


def classify_transforms(
    imgsz: int,
    *,
    train: bool,
    augment: str = "none",
    hflip: float = 0.5,
    vflip: float = 0.0,
    scale: tuple[float, float] = (0.6, 1.0),
    color_jitter: float = 0.0,
    erasing: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """Train or eval pipeline: uint8 (3, H, W) -> float32 normalized (3, imgsz, imgsz).

    train: RandomResizedCrop(imgsz, scale) -> flips -> ColorJitter(brightness, contrast,
        saturation = color_jitter, hue = color_jitter / 4) -> `augment` policy -> float -> Normalize
        -> RandomErasing(p=erasing). Steps with probability/strength 0 are left out.
    eval: LimitAspect(3) -> Resize(floor(imgsz / crop_pct), interpolation) (shorter side) -> CenterCrop(imgsz)
        -> float -> Normalize. ``crop_pct`` and ``interpolation`` are what a pretrained model's weights were
        evaluated with (timm's ``pretrained_cfg``, e.g. 0.875 and ``"bicubic"``: resize to 256, crop 224, as
        timm's ``create_transform``); the defaults (1.0, bilinear) keep the whole square of the shorter side.
    `augment` is one of AUGMENT_POLICIES; anything else raises ConfigError.
    """
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 1:
        raise ConfigError(f"imgsz={imgsz!r}: must be a positive integer")
    policy = _policy(augment)  # validate even for eval, so a typo fails early
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if not train:
        if not 0.0 < float(crop_pct) <= 1.0:
            raise ConfigError(f"crop_pct={crop_pct!r}: must be in (0, 1] (the share of the resized image the centre crop keeps)")
        resize = v2.Resize(math.floor(imgsz / float(crop_pct)), interpolation=interpolation_mode(interpolation), antialias=True)
        return v2.Compose([LimitAspect(), resize, v2.CenterCrop(imgsz), *to_float])
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"scale={tuple(scale)}: need 0 < min <= max <= 1")
    if color_jitter < 0:
        raise ConfigError(f"color_jitter={color_jitter}: must be >= 0")
    steps: list[Callable] = [v2.RandomResizedCrop(imgsz, scale=(lo, hi), antialias=True)]
    if _check_prob("hflip", hflip) > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if _check_prob("vflip", vflip) > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    if color_jitter > 0:
        cj = float(color_jitter)
        steps.append(
            v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=min(cj / 4, 0.5))
        )
    if policy is not None:
        steps.append(policy)
    steps += to_float
    if _check_prob("erasing", erasing) > 0:
        steps.append(v2.RandomErasing(p=erasing))
    return v2.Compose(steps)


def batch_mix(
    num_classes: int, mixup: float = 0.0, cutmix: float = 0.0
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None:
    """Batch-level MixUp / CutMix (one of the two at random when both are on), or None when
    both alphas are 0.

    Call on a collated batch: `images, soft = mix(images (B, 3, H, W) float, labels (B,) int64)`;
    `soft` is (B, num_classes) float, rows summing to 1 (use a soft-target cross-entropy).
    """
    if mixup < 0 or cutmix < 0:
        raise ConfigError(f"mixup={mixup}, cutmix={cutmix}: alphas must be >= 0")
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes}: must be >= 1")
    mixes: list[v2.Transform] = []
    if mixup > 0:
        mixes.append(v2.MixUp(alpha=float(mixup), num_classes=num_classes))
    if cutmix > 0:
        mixes.append(v2.CutMix(alpha=float(cutmix), num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def denormalize(
    x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Undo Normalize for plotting: float (B, 3, H, W) or (3, H, W) -> uint8, same shape."""
    if x.ndim not in (3, 4) or x.shape[-3] != len(mean):
        raise ValueError(
            f"expected (B, {len(mean)}, H, W) or ({len(mean)}, H, W), got {tuple(x.shape)}"
        )
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return (x.float() * s + m).mul(255.0).round().clamp(0, 255).to(torch.uint8)


__all__ = [
    "AUGMENT_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PHOTO_AUGMENT",
    "augment_settings",
    "batch_mix",
    "classify_transforms",
    "denormalize",
    "interpolation_mode",
]
