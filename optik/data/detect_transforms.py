"""Box-aware detection transforms on torchvision.transforms.v2.

Input is what `DetectionDataset` yields: a uint8 `tv_tensors.Image` (3, H, W) and a target
dict whose "boxes" is a `tv_tensors.BoundingBoxes` (XYXY). Output is a float32 image in [0, 1]
of (3, imgsz, imgsz), letterboxed (aspect kept, top-left, padded right/bottom with 114), with
the boxes, labels and iscrowd moved and filtered together.

>>> tf = detect_transforms(64, train=False)
>>> img = tv_tensors.Image(torch.zeros(3, 64, 128, dtype=torch.uint8))
>>> boxes = tv_tensors.BoundingBoxes([[10.0, 10, 20, 30]], format="XYXY", canvas_size=(64, 128))
>>> out, t = tf(img, {"boxes": boxes, "labels": torch.tensor([0])})
>>> out.shape, out.dtype, t["boxes"].tolist()
(torch.Size([3, 64, 64]), torch.float32, [[5.0, 5.0, 10.0, 15.0]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import _get_fill, get_bounding_boxes, query_size
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

from optik.data.detection_dataset import DetectionDataset
from optik.errors import ConfigError

PAD_VALUE = 114  # letterbox / mosaic / zoom-out border, as in YOLO
_FILL = {tv_tensors.Image: PAD_VALUE, "others": 0}


def letterbox_scale(orig_hw: tuple[int, int], imgsz: int) -> float:
    """The letterbox resize factor `imgsz / max(H, W)`; boxes go back by dividing by it (up to
    the rounding of the resized shorter side, < 0.5 px of the letterboxed image).

    >>> letterbox_scale((480, 640), 320)
    0.5
    """
    return imgsz / max(int(orig_hw[0]), int(orig_hw[1]))


def letterbox_shape(orig_hw: tuple[int, int], imgsz: int) -> tuple[int, int]:
    """(h, w) of the resized image inside the imgsz x imgsz letterbox."""
    s = letterbox_scale(orig_hw, imgsz)
    return max(1, round(orig_hw[0] * s)), max(1, round(orig_hw[1] * s))


class LetterBox(v2.Transform):
    """Resize the longer side to `imgsz` (aspect kept, antialiased), then pad right/bottom to
    imgsz x imgsz with `fill` (images; 114 on uint8, 114/255 on float) or 0 (masks, resized
    nearest-exact; a mask type with a `fill_value` class attribute pads with that). Boxes
    follow the resize exactly (per-axis factors new_w / W, new_h / H)."""

    def __init__(self, imgsz: int, fill: int = PAD_VALUE) -> None:
        super().__init__()
        if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 1:
            raise ConfigError(f"imgsz={imgsz!r}: must be a positive integer")
        self.imgsz, self.fill = imgsz, fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        nh, nw = letterbox_shape((h, w), self.imgsz)
        return {"resize": (nh, nw) != (h, w), "size": [nh, nw],
                "padding": [0, 0, self.imgsz - nw, self.imgsz - nh]}  # fmt: skip

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = inpt
        if params["resize"] and isinstance(out, tv_tensors.Mask):
            # torchvision resizes masks with legacy NEAREST (floor), which shifts them by up to
            # a pixel against the boxes; nearest-exact samples pixel centres.
            m = out.as_subclass(Tensor)
            m = F.resize_image(m[None] if m.ndim == 2 else m, params["size"],
                               interpolation=v2.InterpolationMode.NEAREST_EXACT)  # fmt: skip
            out = tv_tensors.wrap(m[0] if out.ndim == 2 else m, like=out)
        elif params["resize"]:
            out = self._call_kernel(F.resize, out, size=params["size"], antialias=True)
        if any(params["padding"]):
            # masks pad with 0, unless their type says otherwise (a semantic map: 255 = void)
            fill: float = getattr(type(out), "fill_value", 0)
            if isinstance(out, (tv_tensors.Image, tv_tensors.Video)) or (
                isinstance(out, Tensor) and not isinstance(out, tv_tensors.TVTensor)
            ):
                fill = self.fill if not out.is_floating_point() else self.fill / 255.0
            out = self._call_kernel(F.pad, out, padding=params["padding"], fill=fill)
        return out


class _IoUCrop(v2.RandomIoUCrop):
    """RandomIoUCrop that leaves as they are images without boxes (torchvision's would retry until
    it draws its "no crop" option: slow for empty images) and images too small to crop: a side
    below ``1 / min_scale`` px (3 px by default) can draw a crop of ``int(side · scale) = 0`` px,
    and torchvision then divides by it (ZeroDivisionError; issue 17)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if get_bounding_boxes(flat_inputs).shape[0] == 0:
            return {}
        h, w = query_size(flat_inputs)
        if min(h, w) * self.min_scale < 1:
            return {}
        return super().make_params(flat_inputs)


# ---- OpenCV kernels behind torchvision's random parameters ------------------------------------
# torchvision's tensor kernels for affine warps (grid_sample on a float copy) and hue (RGB -> HSV -> RGB in
# torch ops) cost ~1 ms each on a 128-px image, most of a detection / segmentation sample's augmentation
# (benchmarks/data_loading.py). OpenCV does the same arithmetic on uint8 HWC arrays in ~0.03 ms; the two
# classes below keep torchvision's parameter draws (same RNG calls, same distributions) and send only the
# image / mask pixels through cv2 (boxes and anything else go to torchvision's kernels).


def _cv2_planes(x: Tensor, fn: Callable[[np.ndarray], np.ndarray], group: int = 4) -> Tensor:
    """Apply ``fn`` (HWC uint8 -> HWC uint8, at most 4 channels: OpenCV's limit) to a ``(..., C, H, W)`` uint8
    tensor, ``group`` planes per call; bool masks travel as uint8."""
    is_bool = x.dtype == torch.bool
    planes = x.reshape(-1, *x.shape[-2:])
    planes = planes.view(torch.uint8) if is_bool else planes
    out = torch.empty_like(planes)
    for i in range(0, planes.shape[0], group):
        chunk = planes[i : i + group].permute(1, 2, 0).numpy()
        res = fn(np.ascontiguousarray(chunk))
        out[i : i + group] = torch.from_numpy(res.reshape(*res.shape[:2], -1)).permute(2, 0, 1)
    out = out.view(torch.bool) if is_bool else out
    return out.reshape(x.shape)


def affine_matrix_cv2(params: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The ``(2, 3)`` inverse map (output pixel -> input pixel) of torchvision's ``F.affine`` about the image
    centre for ``RandomAffine`` params (``angle``, ``translate``, ``scale``, ``shear``), for
    ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)``. torchvision samples input pixel ``A (p - c) + t + c`` for
    output pixel ``p`` (``c = ((W - 1) / 2, (H - 1) / 2)``, ``grid_sample(align_corners=False)``).

    >>> affine_matrix_cv2({"angle": 0.0, "translate": (3, 0), "scale": 2.0, "shear": (0.0, 0.0)}, 5, 5).tolist()
    [[0.5, 0.0, 0.5], [0.0, 0.5, 1.0]]
    """
    m = _get_inverse_affine_matrix([0.0, 0.0], params["angle"], [float(t) for t in params["translate"]],
                                   params["scale"], list(params["shear"]))  # fmt: skip
    a = np.array([[m[0], m[1]], [m[3], m[4]]], np.float64)
    c = np.array([(width - 1) * 0.5, (height - 1) * 0.5])
    return np.concatenate([a, (np.array([m[2], m[5]]) + c - a @ c)[:, None]], axis=1)


def _fill_value(fill: Any, channels: int) -> tuple[float, ...]:
    if fill is None:
        return (0.0,) * 4
    values = [float(v) for v in fill] if isinstance(fill, (list, tuple)) else [float(fill)]
    values = values * channels if len(values) == 1 else values
    return tuple(values[:4]) + (0.0,) * (4 - min(len(values), 4))


class RandomAffine(v2.RandomAffine):
    """torchvision's ``RandomAffine`` (the same parameters and random draws), with uint8 images and masks
    warped by ``cv2.warpAffine``: bilinear (images, when ``interpolation`` is bilinear) or nearest (masks, as
    torchvision), the border filled with the per-type ``fill``. Matches torchvision's kernel to within 1
    grey level on images (OpenCV interpolates in 1/32-pixel fixed point) and exactly on masks but for
    sampling points within 1/32 px of a pixel boundary (tested). Other inputs (boxes, float images,
    other interpolations, a ``center``) use torchvision's kernels."""

    _CV2_MODES = {v2.InterpolationMode.BILINEAR: cv2.INTER_LINEAR, v2.InterpolationMode.NEAREST: cv2.INTER_NEAREST}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        is_mask = isinstance(inpt, tv_tensors.Mask)
        is_image = isinstance(inpt, tv_tensors.Image) or (isinstance(inpt, Tensor) and not isinstance(inpt, tv_tensors.TVTensor))
        if self.center is None and is_mask and inpt.ndim >= 2 and inpt.dtype not in (torch.uint8, torch.bool):
            # An integer class map (int64) must move exactly as the uint8/bool instance masks beside it do, so it
            # takes the same OpenCV nearest warp (as uint16: OpenCV has no int64) when its values fit.
            return self._warp_int_mask(inpt, params)
        if self.center is not None or not (is_mask or is_image) or inpt.dtype not in (torch.uint8, torch.bool) or inpt.ndim < 2:
            return super().transform(inpt, params)
        mode = cv2.INTER_NEAREST if is_mask else self._CV2_MODES.get(self.interpolation)
        if mode is None:
            return super().transform(inpt, params)
        h, w = inpt.shape[-2:]
        matrix = affine_matrix_cv2(params, h, w)
        fill = _fill_value(_get_fill(self._fill, type(inpt)), 1 if inpt.ndim == 2 else inpt.shape[-3])
        flags = mode | cv2.WARP_INVERSE_MAP

        def warp(a: np.ndarray) -> np.ndarray:
            return cv2.warpAffine(a, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)

        x = inpt.as_subclass(Tensor)
        # Masks one plane per call: OpenCV's nearest warp of a 1-channel and a multi-channel array can pick
        # different source pixels at the same point (seen: a class map and the instance masks beside it parted).
        out = _cv2_planes(x[None] if x.ndim == 2 else x, warp, group=1 if is_mask else 4)
        return tv_tensors.wrap(out[0] if x.ndim == 2 else out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def _warp_int_mask(self, inpt: Tensor, params: dict[str, Any]) -> Tensor:
        x = inpt.as_subclass(Tensor)
        if x.is_floating_point() or not x.numel() or int(x.min()) < 0 or int(x.max()) > 65535:
            return super().transform(inpt, params)
        h, w = x.shape[-2:]
        matrix = affine_matrix_cv2(params, h, w)
        fill = _fill_value(_get_fill(self._fill, type(inpt)), 1)
        planes = x.reshape(-1, h, w).numpy().astype(np.uint16)
        out = np.stack([cv2.warpAffine(p, matrix, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=fill) for p in planes])  # fmt: skip
        return tv_tensors.wrap(torch.from_numpy(out.astype(np.int64)).to(x.dtype).reshape(x.shape), like=inpt)


def adjust_hue_uint8(image: Tensor, hue_factor: float) -> Tensor:
    """``F.adjust_hue`` for a uint8 RGB ``(3, H, W)`` image through OpenCV's float HSV (the same formulas as
    torchvision's ``_rgb_to_hsv`` / ``_hsv_to_rgb``, and its float -> uint8 rule ``x · 255.999`` truncated).

    >>> img = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)   # red
    >>> adjust_hue_uint8(img, 1 / 3).flatten().tolist()                     # a third of the way round: green
    [0, 255, 0]
    """
    a = image.permute(1, 2, 0).numpy().astype(np.float32) * np.float32(1 / 255)
    hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV)  # H in degrees [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue_factor * 360.0), np.float32(360.0))
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    out = np.clip(rgb * np.float32(255.999), 0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


class RandomPhotometricDistort(v2.RandomPhotometricDistort):
    """torchvision's ``RandomPhotometricDistort`` (SSD's: the same parameters, random draws and order),
    with the hue step of uint8 RGB images done by :func:`adjust_hue_uint8` (OpenCV; torchvision's tensor
    HSV round trip is ~1.4 ms of a 128-px image's ~2 ms of augmentation)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        hue = params["hue_factor"]
        is_image = isinstance(inpt, tv_tensors.Image) or (isinstance(inpt, Tensor) and not isinstance(inpt, tv_tensors.TVTensor))
        if hue is None or not is_image or inpt.dtype != torch.uint8 or inpt.ndim != 3 or inpt.shape[0] != 3:
            return super().transform(inpt, params)
        # torchvision's order with the hue step swapped for OpenCV's
        first = {**params, "hue_factor": None, "channel_permutation": None}
        if not params["contrast_before"]:
            first["contrast_factor"] = None
        out = super().transform(inpt, first)
        out = adjust_hue_uint8(out.as_subclass(Tensor), hue)
        rest = {k: None for k in ("brightness_factor", "saturation_factor", "hue_factor")}
        rest.update(contrast_factor=None if params["contrast_before"] else params["contrast_factor"], contrast_before=False,
                    channel_permutation=params["channel_permutation"])  # fmt: skip
        out = super().transform(out, rest)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def target_tensors(inputs: Any) -> tuple[Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-box tensor of our target dict (labels,
    iscrowd, area), so all stay in sync with the boxes. Module-level: picklable for workers."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    if not isinstance(target, dict):
        return ()
    keys = ("labels", "iscrowd", "area")
    return tuple(target[k] for k in keys if isinstance(target.get(k), Tensor))


def augment_steps(
    hflip: float, scale_jitter: tuple[float, float], photometric: bool, fill: dict, *, iou_crop: bool = False
) -> list[Callable]:
    """The random part of the detection/segmentation train pipelines, in order: photometric distortion,
    scale jitter about the centre (±10 % shift; the border filled per tv_tensor type with ``fill``),
    SSD's IoU crop, horizontal flip. Bad values are ConfigErrors naming the key."""
    if not 0.0 <= hflip <= 1.0:
        raise ConfigError(f"hflip={hflip}: must be a probability in [0, 1]")
    lo, hi = (float(s) for s in scale_jitter)
    if not 0.0 < lo <= hi:
        raise ConfigError(f"scale_jitter={tuple(scale_jitter)}: need 0 < min <= max")
    steps: list[Callable] = []
    if photometric:
        steps.append(RandomPhotometricDistort(p=0.5))
    if (lo, hi) != (1.0, 1.0):
        bilinear = v2.InterpolationMode.BILINEAR
        steps.append(RandomAffine(0.0, (0.1, 0.1), (lo, hi), interpolation=bilinear, fill=fill))
    if iou_crop:
        steps.append(_IoUCrop())
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    return steps


def detect_transforms(
    imgsz: int,
    *,
    train: bool,
    hflip: float = 0.5,
    scale_jitter: tuple[float, float] = (0.5, 1.5),
    iou_crop: bool = False,
    photometric: bool = True,
) -> v2.Compose:
    """Train or eval pipeline: (uint8 image, target) -> (float32 (3, imgsz, imgsz), target).

    train: RandomPhotometricDistort (photometric) -> RandomAffine scale in `scale_jitter` about
        the centre, +-10 % shift (< 1 zooms out with a 114 border, > 1 zooms in and crops;
        scale_jitter=(1, 1) leaves the step out) ->
        RandomIoUCrop (iou_crop) -> RandomHorizontalFlip(hflip) -> LetterBox -> ClampBoundingBoxes
        -> SanitizeBoundingBoxes (boxes under 1 px go, with their labels/iscrowd) -> float.
    eval: LetterBox -> float (no box is dropped: the ground truth stays complete).
    """
    if not train:
        return v2.Compose([LetterBox(imgsz), v2.ToDtype(torch.float32, scale=True)])
    steps = augment_steps(hflip, scale_jitter, photometric, _FILL, iou_crop=iou_crop)
    steps += [
        LetterBox(imgsz),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=target_tensors),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)


class Mosaic(torch.utils.data.Dataset):
    """YOLO-style mosaic over a `DetectionDataset`: with probability `p` item `i` becomes four
    images (i and three random others) tiled around a random centre of one imgsz x imgsz canvas
    (each resized so its longer side is imgsz, border 114); boxes are shifted, clipped to their
    tile and dropped when under `min_size` px or under 10 % of their area survives. Then
    `transform(image, target)` runs (e.g. `detect_transforms(imgsz, train=True)`).

    Draws only from torch's RNG (seeded per DataLoader worker), so it is deterministic under
    `torch.manual_seed`. Set `enabled = False` to pass items through (close_mosaic).

    >>> ds = Mosaic(DetectionDataset(np.zeros((4, 32, 48, 3), np.uint8),
    ...     [{"boxes": [[0, 0, 30, 20]], "labels": [0]}] * 4, ["a"]), 64)     # doctest: +SKIP
    >>> ds[0][0].shape                                                        # doctest: +SKIP
    torch.Size([3, 64, 64])
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        imgsz: int,
        *,
        p: float = 1.0,
        transform: Callable | None = None,
        min_size: float = 2.0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"mosaic={p}: must be a probability in [0, 1]")
        if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 2:
            raise ConfigError(f"imgsz={imgsz!r}: must be an integer >= 2")
        self.dataset, self.imgsz, self.p = dataset, imgsz, float(p)
        self.transform, self.min_size = transform, float(min_size)
        self.enabled = True

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def cat_ids(self) -> list[int]:
        return self.dataset.cat_ids

    def __len__(self) -> int:
        return len(self.dataset)

    def source(self, i: int) -> str:
        return self.dataset.source(i)

    def load(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        return self.dataset.load(i)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        if self.enabled and self.p > 0 and float(torch.rand(())) < self.p:
            img, target = self._mosaic(i)
        else:
            img, target = self.dataset.load(i)
        target["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=tuple(img.shape[-2:])
        )
        image = tv_tensors.Image(img)
        if self.transform is not None:
            return self.transform(image, target)
        return image, target

    def _mosaic(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        s = self.imgsz
        n = len(self.dataset)
        idx = [i] + torch.randint(n, (3,)).tolist()
        xc, yc = (int(v) for v in torch.randint(s // 4, max(3 * s // 4, s // 4 + 1), (2,)))
        canvas = torch.full((3, s, s), PAD_VALUE, dtype=torch.uint8)
        boxes, labels, crowd = [], [], []
        first: dict[str, Any] = {}
        for tile, j in enumerate(idx):
            img, t = self.dataset.load(j)
            if tile == 0:
                first = t
            h0, w0 = img.shape[-2:]
            h, w = letterbox_shape((h0, w0), s)
            if (h, w) != (h0, w0):
                img = F.resize(img, [h, w], antialias=True)
            if tile == 0:  # top-left: the image's bottom-right corner at the centre
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            elif tile == 1:  # top-right
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s), yc
                x1b, y1b = 0, h - (y2a - y1a)
            elif tile == 2:  # bottom-left
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, s)
                x1b, y1b = w - (x2a - x1a), 0
            else:  # bottom-right
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s), min(yc + h, s)
                x1b, y1b = 0, 0
            cw, ch = x2a - x1a, y2a - y1a
            if cw <= 0 or ch <= 0:
                continue
            canvas[:, y1a:y2a, x1a:x2a] = img[:, y1b : y1b + ch, x1b : x1b + cw]
            b = t["boxes"].float() * torch.tensor([w / w0, h / h0, w / w0, h / h0])
            b += torch.tensor([x1a - x1b, y1a - y1b, x1a - x1b, y1a - y1b], dtype=torch.float32)
            region = torch.tensor([x1a, y1a, x2a, y2a], dtype=torch.float32)
            clipped = torch.cat([torch.maximum(b[:, :2], region[:2]),
                                 torch.minimum(b[:, 2:], region[2:])], 1)  # fmt: skip
            wh = clipped[:, 2:] - clipped[:, :2]
            full = (b[:, 2:] - b[:, :2]).prod(1)
            keep = (wh >= self.min_size).all(1) & (wh.clamp(min=0).prod(1) >= 0.1 * full)
            boxes.append(clipped[keep])
            labels.append(t["labels"][keep])
            crowd.append(t["iscrowd"][keep])
        target = {
            "boxes": torch.cat(boxes) if boxes else torch.zeros(0, 4),
            "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64),
            "image_id": first["image_id"],
            "iscrowd": torch.cat(crowd) if crowd else torch.zeros(0, dtype=torch.int64),
            "orig_size": (s, s),  # a mosaic has no original image: its own canvas
        }
        return canvas, target


__all__ = [
    "LetterBox",
    "Mosaic",
    "PAD_VALUE",
    "RandomAffine",
    "RandomPhotometricDistort",
    "adjust_hue_uint8",
    "affine_matrix_cv2",
    "detect_transforms",
    "letterbox_scale",
    "letterbox_shape",
    "target_tensors",
]
