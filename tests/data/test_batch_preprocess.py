"""BatchPreprocess: a task's per-image eval transform run on a whole batch gives exactly what the per-image
torchvision v2 ``Compose`` gives (bit for bit), for every size, filter, crop and memory layout predict feeds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from optik.data.preprocess import BatchPreprocess, compile_steps
from optik.data.transforms import classify_transforms

RNG = np.random.default_rng(0)

# (H, W) of source images: tiny, square at the target, up- and down-sampling, odd, beyond LimitAspect's 3:1
SIZES = [(1, 1), (8, 8), (32, 32), (37, 53), (53, 37), (64, 64), (5, 300), (300, 4), (96, 40), (2, 7)]


def hwc(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def per_image(tf, arrays: list[np.ndarray]) -> torch.Tensor:
    """The reference: what predict did before — a contiguous (3, H, W) copy through the Compose, stacked."""
    return torch.stack([tf(torch.from_numpy(a).permute(2, 0, 1).contiguous()) for a in arrays])


@pytest.mark.parametrize(
    "kw",
    [
        {},  # optik's own models: bilinear, whole square of the shorter side
        {"crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)},  # timm-like
        {"interpolation": "nearest"},  # not a native uint8 resize: goes through F.resize_image
        {"interpolation": "lanczos", "crop_pct": 0.95},
    ],
)
@pytest.mark.parametrize("imgsz", [32, 17])
def test_equals_the_per_image_compose_exactly(kw, imgsz):
    tf = classify_transforms(imgsz, train=False, **kw)
    pre = BatchPreprocess(tf)
    assert pre.batched
    arrays = [hwc(*s) for s in SIZES]
    ref = per_image(tf, arrays)
    views = [torch.from_numpy(a).permute(2, 0, 1) for a in arrays]  # channels-last, as predict passes them
    assert torch.equal(pre(views), ref)  # mixed sizes in one batch
    assert torch.equal(pre([v.contiguous() for v in views]), ref)  # contiguous inputs too
    for a, v in zip(arrays, views):  # one image at a time (batch=1)
        assert torch.equal(pre([v])[0], per_image(tf, [a])[0])
    same = [hwc(37, 53) for _ in range(5)]  # equal sizes: one resize call for the whole batch
    assert torch.equal(pre([torch.from_numpy(a).permute(2, 0, 1) for a in same]), per_image(tf, same))
    assert pre(views).is_contiguous()


def test_output_never_aliases_the_input_and_input_is_untouched():
    tf = classify_transforms(32, train=False)
    a = hwc(32, 32)  # already the target size: resize and crop are no-ops
    before = a.copy()
    out = BatchPreprocess(tf)([torch.from_numpy(a).permute(2, 0, 1)])
    assert np.array_equal(a, before) and out.dtype == torch.float32
    assert not np.shares_memory(out.numpy(), a)


def test_unknown_steps_fall_back_to_the_transform_per_image():
    grey = v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16), v2.Grayscale(1),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])])  # fmt: skip
    float_first = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Resize(16, antialias=True), v2.CenterCrop(16)])
    per_type = v2.Compose([v2.Resize(16, antialias=True), v2.ToDtype({torch.Tensor: torch.float32, "others": None}, scale=True)])  # fmt: skip
    for tf in (grey, float_first, per_type, lambda img: img.float()[:, :4, :4]):
        assert compile_steps(tf) is None
        pre = BatchPreprocess(tf)
        assert not pre.batched
        arrays = [hwc(20, 30), hwc(20, 30)]
        views = [torch.from_numpy(a).permute(2, 0, 1) for a in arrays]
        assert torch.equal(pre(views), per_image(tf, arrays))


def test_geometry_that_does_not_end_in_one_size_raises_like_stack():
    pre = BatchPreprocess(v2.Compose([v2.Resize(16, antialias=True), v2.ToDtype(torch.float32, scale=True)]))
    assert pre.batched
    with pytest.raises(RuntimeError):  # (16, 24) and (16, 16): as torch.stack of the per-image outputs would
        pre([torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 20, 20, dtype=torch.uint8)])


def test_normalize_errors_are_torchvision_s():
    pre = BatchPreprocess(v2.Compose([v2.Resize(8, antialias=True), v2.Normalize([0.5] * 3, [0.0, 1.0, 1.0])]))
    with pytest.raises(TypeError):  # uint8 into Normalize: torchvision's own error, not a silent result
        pre([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    pre = BatchPreprocess(v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.0, 1.0, 1.0])]))
    with pytest.raises(ValueError, match="std"):
        pre([torch.zeros(3, 8, 8, dtype=torch.uint8)])
