"""Transform presets and batch mixing."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from optik.data.transforms import (
    AUGMENT_POLICIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    batch_mix,
    classify_transforms,
    denormalize,
)
from optik.errors import ConfigError


def image(h: int = 40, w: int = 30, seed: int = 0) -> tv_tensors.Image:
    g = torch.Generator().manual_seed(seed)
    return tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))


def normalized_range() -> tuple[float, float]:
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    return lo - 1e-4, hi + 1e-4


@pytest.mark.parametrize("augment", AUGMENT_POLICIES)
def test_train_output_shape_dtype_range(augment):
    torch.manual_seed(0)
    tf = classify_transforms(24, train=True, augment=augment, color_jitter=0.3, vflip=0.5)
    lo, hi = normalized_range()
    for seed in range(3):
        out = tf(image(seed=seed))
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
        assert lo <= out.min() and out.max() <= hi


def test_train_is_random_val_is_deterministic():
    img = image(50, 70)
    train = classify_transforms(32, train=True, augment="randaugment")
    torch.manual_seed(0)
    a, b = train(img), train(img)
    assert not torch.equal(a, b)
    val = classify_transforms(32, train=False)
    v1, v2 = val(img), val(img)
    assert torch.equal(v1, v2) and v1.shape == (3, 32, 32) and v1.dtype == torch.float32


def test_val_normalizes_a_constant_image_exactly():
    grey = tv_tensors.Image(torch.full((3, 20, 40), 128, dtype=torch.uint8))
    out = classify_transforms(16, train=False)(grey)
    expected = torch.tensor([(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-4)


def test_erasing_zeroes_a_patch():
    torch.manual_seed(0)
    grey = tv_tensors.Image(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    out = classify_transforms(32, train=True, erasing=1.0, hflip=0.0)(grey)
    assert (out == 0).any()  # RandomErasing(value=0) after Normalize; white never normalizes to 0


def test_unknown_policy_lists_allowed():
    with pytest.raises(ConfigError, match="randaugment.*augmix"):
        classify_transforms(32, train=True, augment="cutout")
    with pytest.raises(ConfigError, match="augment"):
        classify_transforms(32, train=False, augment="nope")


@pytest.mark.parametrize(
    "kwargs, key",
    [({"hflip": 1.5}, "hflip"), ({"scale": (0.9, 0.2)}, "scale"), ({"erasing": -0.1}, "erasing")],
)
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        classify_transforms(32, train=True, **kwargs)


def test_imgsz_must_be_positive_int():
    with pytest.raises(ConfigError, match="imgsz"):
        classify_transforms(0, train=False)


@pytest.mark.parametrize("mixup, cutmix", [(0.2, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_batch_mix_soft_targets(mixup, cutmix):
    torch.manual_seed(0)
    mix = batch_mix(5, mixup=mixup, cutmix=cutmix)
    x = torch.randn(8, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    xm, ym = mix(x, y)
    assert xm.shape == x.shape and ym.shape == (8, 5) and ym.dtype.is_floating_point
    assert torch.allclose(ym.sum(dim=1), torch.ones(8))
    assert (ym >= 0).all()
    assert (ym.max(dim=1).values < 1).any()  # something was actually mixed


def test_batch_mix_off():
    assert batch_mix(10) is None
    with pytest.raises(ConfigError, match="mixup"):
        batch_mix(10, mixup=-1)


def test_denormalize_round_trip():
    img = image(12, 12)
    val = classify_transforms(12, train=False)
    x = val(img)
    back = denormalize(x[None])
    assert back.dtype == torch.uint8 and back.shape == (1, 3, 12, 12)
    assert (back[0].int() - img.int()).abs().max() <= 1
    assert denormalize(x).shape == (3, 12, 12)
