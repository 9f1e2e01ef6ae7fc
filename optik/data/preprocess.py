"""A task's per-image eval transform, run on a whole batch of images at once (the predict / serve hot path).

``task.transforms(train=False)`` is written per image (a torchvision v2 ``Compose``). Called image by image it
costs far more than the model on small inputs: every step goes through v2's dispatcher (pytree flattening,
kernel lookup, type checks), ~120 µs an image for classify's five steps, against ~60 µs for a 32 px CNN's
forward in ONNX Runtime. :class:`BatchPreprocess` reads the ``Compose`` once and calls what its steps end in
directly — ``interpolate`` with the size ``resize_image`` computes, ``center_crop_image``, ``to_dtype_image``,
``normalize_image``'s ``sub``/``div_`` with its mean/std tensors made once:

- geometric steps (resize, crop) once per group of same-sized images — one call for a batch of equal-sized
  images (interpolation works per plane, so a batch gives each image's pixels bit for bit);
- element-wise steps (to float, normalise) once on the stacked uint8 batch.

Same kernels, same arguments: the output equals the per-image ``Compose`` bit for bit (tested). A transform it
does not know (detect's letterbox, a custom callable, a step after the element-wise ones) makes it fall back
to calling the transform per image, as before.

>>> from optik.data.transforms import classify_transforms
>>> pre = BatchPreprocess(classify_transforms(32, train=False))
>>> imgs = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8) for _ in range(4)]
>>> pre.batched, torch.equal(pre(imgs), torch.stack([pre.transform(i) for i in imgs]))
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from optik.data.transforms import LimitAspect

try:  # torchvision's own helpers, so the direct resize computes exactly what resize_image does
    from torchvision.transforms.v2.functional._geometry import _compute_resized_output_size as _output_size
    from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu as _native_uint8_cpu
except ImportError:  # a torchvision that moved them: always go through F.resize_image
    _output_size = _native_uint8_cpu = None  # type: ignore[assignment]

Step = Callable[[Tensor], Tensor]


def _geometric(t: Any) -> Step | None:
    """The kernel call of a shape-changing step (works on (N, C, H, W) batches too), or None."""
    kind = type(t)
    if kind is LimitAspect:
        return t.forward
    if kind is v2.Resize:
        return _Resize(t)
    if kind is v2.CenterCrop:
        return functools.partial(_center_crop, size=tuple(t.size))
    return None


class _Resize:
    """``F.resize_image`` as ``v2.Resize`` calls it. Where torchvision resizes uint8 natively (bilinear/bicubic on
    a CPU with AVX2/AVX512 or ARM) it calls ``interpolate`` with the output size it computes — here the size is
    computed once per input size and ``interpolate`` called directly: the same kernel with the same arguments
    (resize_image's own checks and memory-format juggling cost as much as the kernel on a small image)."""

    def __init__(self, t: v2.Resize) -> None:
        self.size, self.interpolation, self.max_size, self.antialias = t.size, t.interpolation, t.max_size, t.antialias
        mode = self.interpolation
        self.direct = (
            _output_size is not None
            and mode in (v2.InterpolationMode.BILINEAR, v2.InterpolationMode.BICUBIC)
            and _native_uint8_cpu(mode)
        )
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        if not (self.direct and x.dtype == torch.uint8 and x.device.type == "cpu" and x.ndim == 4 and x.numel()):
            return F.resize_image(x, self.size, self.interpolation, self.max_size, self.antialias)
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        out = self._sizes.get(hw)
        if out is None:
            out = self._sizes[hw] = tuple(_output_size(hw, size=self.size, max_size=self.max_size))  # type: ignore[misc]
        if out == hw:
            return x  # resize_image returns the image itself too
        return torch.nn.functional.interpolate(x, size=list(out), mode=self.interpolation.value, align_corners=False,
                                               antialias=bool(self.antialias))  # fmt: skip


def _center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    # Already that size (the resize before it made it so): nothing to crop, skip the kernel's slicing.
    return x if tuple(x.shape[-2:]) == size else F.center_crop_image(x, list(size))


class _Normalize:
    """``F.normalize_image`` with its mean/std tensors made once per dtype and device instead of per call
    (the same ``sub`` then ``div_``: the same values)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool) -> None:
        self.mean, self.std, self.inplace = list(mean), list(std), inplace
        self._stats: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        stats = self._stats.get((x.dtype, x.device))
        if stats is None:
            if not x.is_floating_point() or not all(self.std):
                return F.normalize_image(x, self.mean, self.std, self.inplace)  # its own error for these
            stats = tuple(torch.as_tensor(v, dtype=x.dtype, device=x.device).view(-1, 1, 1) for v in (self.mean, self.std))
            self._stats[(x.dtype, x.device)] = stats  # type: ignore[assignment]
        mean, std = stats
        return (x.sub_(mean) if self.inplace else x.sub(mean)).div_(std)


def _pointwise(t: Any) -> Step | None:
    """The kernel call of an element-wise step, or None."""
    kind = type(t)
    if kind is v2.ToDtype and isinstance(t.dtype, torch.dtype):  # a per-type dict: leave it to v2
        return functools.partial(F.to_dtype_image, dtype=t.dtype, scale=t.scale)
    if kind is v2.Normalize:
        return _Normalize(t.mean, t.std, t.inplace)
    return None


def compile_steps(transform: Any) -> tuple[list[Step], list[Step]] | None:
    """``(geometric, pointwise)`` kernel calls for a v2 ``Compose`` of known steps, all shape-changing ones
    first; None for anything else."""
    if type(transform) is not v2.Compose:
        return None
    geometric: list[Step] = []
    pointwise: list[Step] = []
    for t in transform.transforms:
        g = None if pointwise else _geometric(t)  # a resize after the float conversion: not this pattern
        p = None if g is not None else _pointwise(t)
        if g is None and p is None:
            return None
        (geometric if g is not None else pointwise).append(g or p)  # type: ignore[arg-type]
    return geometric, pointwise


class BatchPreprocess:
    """``transform`` (a per-image eval transform: uint8 ``(3, H, W)`` → float ``(3, S, S)``) applied to a
    list of images, returning the ``(B, 3, S, S)`` batch ``torch.stack([transform(i) for i in images])`` gives.

    ``batched`` tells whether the fast path applies (see the module docstring); the images may be
    channels-last views (``torch.from_numpy(hwc).permute(2, 0, 1)``): no copy is made before the resize.

    >>> from optik.data.transforms import classify_transforms
    >>> BatchPreprocess(classify_transforms(8, train=False))([torch.zeros(3, 5, 7, dtype=torch.uint8)]).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(self, transform: Callable[[Tensor], Tensor]) -> None:
        self.transform = transform
        steps = compile_steps(transform)
        self.batched = steps is not None
        self.geometric, self.pointwise = steps if steps is not None else ([], [])

    def _geometry(self, x: Tensor) -> Tensor:
        for step in self.geometric:
            x = step(x)
        return x

    def __call__(self, images: Sequence[Tensor]) -> Tensor:
        if not self.batched:  # per image, contiguous as the transform has always seen them
            return torch.stack([self.transform(img.contiguous()) for img in images])
        shape = images[0].shape
        if all(img.shape == shape for img in images):
            x = self._geometry(images[0][None] if len(images) == 1 else torch.stack(images)).contiguous()
        else:  # mixed sizes: one call per size, results put back in input order
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, img in enumerate(images):
                groups.setdefault(tuple(img.shape), []).append(i)
            x = None
            for idx in groups.values():
                out = self._geometry(torch.stack([images[i] for i in idx]))
                if x is None:
                    x = torch.empty((len(images), *out.shape[1:]), dtype=out.dtype, device=out.device)
                x[idx] = out  # a different output size per group raises here, as torch.stack would have
        for step in self.pointwise:
            x = step(x)
        return x


__all__ = ["BatchPreprocess", "compile_steps"]
