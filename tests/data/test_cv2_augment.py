"""The OpenCV kernels behind the detection / segmentation augmentation (``RandomAffine``,
``RandomPhotometricDistort`` in ``optik.data.detect_transforms``) against torchvision's own transforms,
drawn with the same seed: the same parameters, the same pixels up to OpenCV's fixed-point rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from optik.data.detect_transforms import RandomAffine, RandomPhotometricDistort, adjust_hue_uint8, affine_matrix_cv2
from optik.data.segmentation_dataset import SemanticMask
from optik.data.synthetic import shapes_segmentation

FILL = {tv_tensors.Image: 114, SemanticMask: 255, "others": 0}


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, np.ndarray]:
    x, maps, *_ = shapes_segmentation(n=12, size=72, classes=3, difficulty=0.5, seed=3)
    return x, maps


def _inputs(img: np.ndarray, sem: np.ndarray, h: int | None = None) -> tuple:
    h = h or img.shape[0]
    image = tv_tensors.Image(torch.from_numpy(img[:h]).permute(2, 0, 1).contiguous())
    semantic = SemanticMask(torch.from_numpy(sem[:h]))
    inst = tv_tensors.Mask(torch.from_numpy(np.stack([sem[:h] == k for k in (1, 2, 3)] + [sem[:h] > 0] * 3)))  # 6 > 4 planes
    boxes = tv_tensors.BoundingBoxes([[3.0, 4, 30, 40], [10, 10, 60, h - 2]], format="XYXY", canvas_size=(h, img.shape[1]))
    return image, semantic, inst, boxes


def _interior(params: dict, h: int, w: int) -> np.ndarray:
    """Output pixels whose bilinear sample has all four neighbours inside the input (away from the fill:
    there torchvision blends the fill twice, ``(zero-padded sample - fill) · mask + fill``, OpenCV once)."""
    m = affine_matrix_cv2(params, h, w)
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)


@pytest.mark.parametrize(("degrees", "shear", "h"), [(0.0, None, 72), (15.0, None, 72), (10.0, (-8, 8, -8, 8), 72), (0.0, None, 51)])
def test_random_affine_matches_torchvision(scenes, degrees, shear, h) -> None:
    x, maps = scenes
    kw = dict(degrees=degrees, translate=(0.1, 0.1), scale=(0.5, 1.5), shear=shear, interpolation=v2.InterpolationMode.BILINEAR, fill=FILL)
    ours, ref = RandomAffine(**kw), v2.RandomAffine(**kw)
    mask_px = diff_px = 0
    for i in range(len(x)):
        inputs = _inputs(x[i], maps[i], h)
        torch.manual_seed(i)
        params = ours.make_params(list(inputs))
        torch.manual_seed(i)
        a = ours(*inputs)
        torch.manual_seed(i)
        b = ref(*inputs)
        assert [type(t) for t in a] == [type(t) for t in b] and [t.dtype for t in a] == [t.dtype for t in b]
        torch.testing.assert_close(a[3], b[3])  # boxes: torchvision's own kernel
        inside = torch.from_numpy(_interior(params, h, x.shape[2]))
        d = (a[0].int() - b[0].int()).abs()
        assert int(d[:, inside].max()) <= 1, f"scene {i}: {int(d[:, inside].max())} grey levels off inside the image"
        diff_px += int((d[:, ~inside] > 1).sum())
        # Masks (nearest, per-type fill): identical but where a sample falls within 1/32 px of a pixel edge.
        mask_px += int((a[1] != b[1]).sum()) + int((a[2] != b[2]).sum())
    total = len(x) * h * x.shape[2]
    assert mask_px <= 1e-3 * total * 7, mask_px
    assert diff_px <= 0.05 * total * 3  # the one-pixel ring along the zoom-out border


def test_random_affine_identity_and_fallbacks(scenes) -> None:
    x, maps = scenes
    image, semantic, inst, boxes = _inputs(x[0], maps[0])
    ident = RandomAffine(0.0, scale=(1.0, 1.0), fill=FILL)
    out = ident(image, semantic, inst)
    assert torch.equal(out[0], image) and torch.equal(out[1], semantic) and torch.equal(out[2], inst)
    # float images and a custom centre go to torchvision's kernel: the same output as torchvision.
    fimg = F.to_dtype(image, torch.float32, scale=True)
    for kw in ({}, {"center": [10.0, 20.0]}):
        torch.manual_seed(0)
        a = RandomAffine(20.0, (0.1, 0.1), (0.7, 1.3), fill=FILL, **kw)(fimg if not kw else image)
        torch.manual_seed(0)
        b = v2.RandomAffine(20.0, (0.1, 0.1), (0.7, 1.3), fill=FILL, **kw)(fimg if not kw else image)
        torch.testing.assert_close(a, b)


def test_affine_matrix_is_torchvisions_inverse_map() -> None:
    """A pure translation by (tx, ty) samples input pixel p - t; scale s about the centre samples
    c + (p - c) / s (c = ((W - 1) / 2, (H - 1) / 2), torchvision's grid_sample(align_corners=False))."""
    m = affine_matrix_cv2({"angle": 0.0, "translate": (4, -2), "scale": 1.0, "shear": (0.0, 0.0)}, 20, 30)
    np.testing.assert_allclose(m, [[1, 0, -4], [0, 1, 2]], atol=1e-12)
    m = affine_matrix_cv2({"angle": 0.0, "translate": (0, 0), "scale": 2.0, "shear": (0.0, 0.0)}, 21, 31)
    np.testing.assert_allclose(m @ [15, 10, 1], [15, 10], atol=1e-12)  # the centre stays
    np.testing.assert_allclose(m @ [17, 10, 1], [16, 10], atol=1e-12)


def test_adjust_hue_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    img[:, :5] = img[:1, :5]  # grey pixels (no saturation: hue undefined)
    img[:, 5:10] = np.array([255, 0, 0], np.uint8)[:, None, None]  # pure red (hue 0, wraps for negative shifts)
    t = torch.from_numpy(img)
    for hue in (-0.5, -0.05, 0.0, 0.013, 0.05, 0.3, 0.5):
        d = (adjust_hue_uint8(t, hue).int() - F.adjust_hue(t, hue).int()).abs()
        assert int(d.max()) <= 1, (hue, int(d.max()))


def test_photometric_distort_matches_torchvision(scenes) -> None:
    x, _ = scenes
    ours, ref = RandomPhotometricDistort(p=0.5), v2.RandomPhotometricDistort(p=0.5)
    hue_used = 0
    for i in range(40):
        image = tv_tensors.Image(torch.from_numpy(x[i % len(x)]).permute(2, 0, 1).contiguous())
        torch.manual_seed(i)
        hue_used += ours.make_params([image])["hue_factor"] is not None
        torch.manual_seed(i)
        a = ours(image)
        torch.manual_seed(i)
        b = ref(image)
        assert type(a) is tv_tensors.Image and a.dtype == torch.uint8
        # the hue step differs by at most 1 grey level; a contrast step after it may stretch that to 2
        assert int((a.int() - b.int()).abs().max()) <= 2
    assert 10 < hue_used < 30  # the seeds exercised both paths


def test_masks_and_class_map_move_together():
    """Regression (found by tests/fuzz/test_properties.py): OpenCV's nearest warp of a 2-plane mask stack and of a
    1-plane class map picked different source pixels at the same point (scale 1.3337 on a 4×7 image), so an
    instance pixel landed on void in the class map. Every mask plane is now warped on its own, and an int64 class
    map takes the same warp."""
    from optik.data.detect_transforms import RandomAffine
    from optik.data.segmentation_dataset import SemanticMask

    params = {"angle": 0.0, "translate": (0, 0), "scale": 1.3336503505706787, "shear": (0.0, 0.0)}
    t = RandomAffine(0.0, (0.1, 0.1), (0.3, 2.0), fill={SemanticMask: 255, tv_tensors.Mask: 0})
    masks = torch.zeros(2, 4, 7, dtype=torch.uint8)
    masks[0, 0, 5], masks[1, 0, 0] = 1, 1
    sem = torch.full((4, 7), 255, dtype=torch.uint8)
    sem[0, 5], sem[0, 0] = 0, 2
    m = t.transform(tv_tensors.Mask(masks), params)
    for s in (t.transform(SemanticMask(sem), params), t.transform(SemanticMask(sem.long()), params)):
        for plane, cls in zip(m, (0, 2)):
            assert bool((s[plane.bool()] == cls).all())
        assert torch.equal(s.long(), t.transform(SemanticMask(sem), params).long())
