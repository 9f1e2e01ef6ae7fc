"""Automatic mask generation ("segment everything"), the algorithm of the SAM paper (Kirillov et al.
2023, §7.1 and appendix) as in segment-anything's ``SamAutomaticMaskGenerator``:

1. crop layers: the whole image, then 2×2, 4×4… overlapping crops (``crop_n_layers``);
2. per crop: encode it once, prompt the decoder with a regular point grid in batches (3 masks per
   point), keep masks whose predicted IoU > ``pred_iou_thresh`` and whose stability score (IoU of the
   mask logits thresholded at ``mask_threshold ± stability_score_offset``) ≥ ``stability_score_thresh``,
   drop masks touching a crop edge that is not an image edge, box-NMS within the crop;
3. NMS across crops (masks of smaller crops win), optional removal of small holes/islands;
masks are kept as COCO RLE in between (``faster_coco_eval.core.mask``) so memory stays small.

>>> gen = SamAutomaticMaskGenerator(SamPredictor("hf:facebook/sam-vit-base"), points_per_side=16)  # doctest: +SKIP
>>> r = gen.generate("street.jpg")                                  # doctest: +SKIP
>>> len(r.masks), r.masks.data.shape[1:]                            # doctest: +SKIP
(57, torch.Size([480, 640]))
"""

from __future__ import annotations

import math
import time
from itertools import product
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_area, masks_to_boxes

from optik.errors import ConfigError
from optik.sam.predictor import DEFAULT_SAM, SamPredictor, as_hwc_uint8, sam_results


# ----------------------------------------------------------------------------------------------- helpers
def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n_per_side``² points at cell centres of [0, 1]², x varying fastest, (n², 2) as (x, y).

    >>> build_point_grid(2).tolist()
    [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    """
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # xs varies along columns: rows of constant y
    return np.stack([xs, ys], -1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int = 1) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(max(1, int(n_per_side / scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes xyxy (pixels) and their layer index: the whole image, then per layer i ≥ 1 a
    (2^i × 2^i) grid of crops overlapping by ``overlap_ratio`` × short side × 2 / 2^i.

    >>> generate_crop_boxes((100, 200), 1, 0.25)[0]
    [[0, 0, 200, 100], [0, 0, 113, 63], [0, 38, 113, 100], [88, 0, 200, 63], [88, 38, 200, 100]]
    """
    im_h, im_w = im_size
    short = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw, ch = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((cw - overlap) * k) for k in range(n)]
        y0s = [int((ch - overlap) * k) for k in range(n)]
        for x0, y0 in product(x0s, y0s):  # x outer, y inner: segment-anything's order
            boxes.append([x0, y0, min(x0 + cw, im_w), min(y0 + ch, im_h)])
            layers.append(i + 1)
    return boxes, layers


def stability_score(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """IoU of the masks ``logits > t + offset`` and ``logits > t - offset`` (the first lies inside
    the second, so IoU = |high| / |low|); (…, H, W) → (…). An empty low mask scores 0.

    >>> stability_score(torch.tensor([[[-2.0, 0.5], [1.5, 3.0]]]), 0.0, 1.0)
    tensor([0.6667])
    """
    # Row sums in int16 then int32 (segment-anything's trick): ~8x faster than one int64 sum of bools,
    # and this is AMG's hot loop; int16 holds a row count while W < 32768.
    row = torch.int16 if logits.shape[-1] < 2**15 else torch.int32
    inter = (logits > mask_threshold + offset).sum(-1, dtype=row).sum(-1, dtype=torch.int32)
    union = (logits > mask_threshold - offset).sum(-1, dtype=row).sum(-1, dtype=torch.int32)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros((), dtype=torch.float32))


def is_box_near_crop_edge(boxes: Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> Tensor:
    """True for (crop-relative) boxes within ``atol`` px of a crop edge that is not an image edge:
    such masks are probably cut by the crop and are better predicted by another crop.

    >>> is_box_near_crop_edge(torch.tensor([[5., 5., 40., 40.], [5., 5., 95., 40.]]), [0, 0, 100, 100], [0, 0, 200, 100], 10)
    tensor([False,  True])
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    boxes = boxes.float() + crop[[0, 1, 0, 1]]
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``
    pixels (8-connectivity, OpenCV connected components). Returns (mask, changed).

    >>> m = np.ones((5, 5), bool); m[2, 2] = False
    >>> bool(remove_small_regions(m, 2, "holes")[0].all())
    True
    """
    import cv2

    holes = mode == "holes"
    work = (holes ^ mask).astype(np.uint8)
    n, regions, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:  # keep the large islands (at least the largest)
        fill = [i for i in range(n) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def masks_to_rle(masks: Tensor) -> list[dict[str, Any]]:
    """bool (N, H, W) → COCO RLEs with str counts (``optik.results.encode_rle``)."""
    from optik.results import encode_rle

    return encode_rle(masks) if len(masks) else []


def rle_to_masks(rles: list[dict[str, Any]], size: tuple[int, int]) -> Tensor:
    """COCO RLEs → bool (N, H, W)."""
    from faster_coco_eval.core import mask as mask_utils

    if not rles:
        return torch.zeros((0, *size), dtype=torch.bool)
    return torch.from_numpy(np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))).bool()


class _MaskData:
    """Column store for candidate masks: parallel tensors + a list of RLEs, filtered together."""

    def __init__(self, **cols: Any) -> None:
        self.cols = cols

    def __len__(self) -> int:
        return len(self.cols.get("iou", ()))

    def filter(self, keep: Tensor) -> None:
        idx = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        for k, v in self.cols.items():
            self.cols[k] = [v[i] for i in idx.tolist()] if isinstance(v, list) else v[idx.to(v.device)]

    def cat(self, other: _MaskData) -> None:
        for k, v in other.cols.items():
            mine = self.cols.get(k)
            self.cols[k] = v if mine is None else (mine + v if isinstance(v, list) else torch.cat([mine, v]))

    def __getitem__(self, k: str) -> Any:
        return self.cols[k]


# --------------------------------------------------------------------------------------------- generator
class SamAutomaticMaskGenerator:
    """Masks for everything in an image, without prompts (segment-anything's AMG).

    Args:
        predictor: a :class:`SamPredictor` (or a model reference to build one).
        points_per_side: grid points per side on the full image (``points_per_side``² prompts).
        points_per_batch: prompts decoded together (memory vs speed).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 = off).
        stability_score_thresh: keep masks at least this stable (0 = off).
        stability_score_offset: logit offset for the stability score.
        box_nms_thresh: box IoU for NMS within a crop.
        crop_n_layers: extra crop layers (layer i has (2^i)² crops).
        crop_overlap_ratio: crop overlap, as a fraction of the short side (first layer).
        crop_nms_thresh: box IoU for NMS across crops.
        crop_n_points_downscale_factor: layer i uses points_per_side / factor^i points per side.
        min_mask_region_area: fill holes / drop islands below this area (pixels; 0 = off).
        mask_threshold: logit threshold of a mask pixel.
        crop_edge_atol: px distance counted as touching a crop edge.

    >>> gen = SamAutomaticMaskGenerator("hf:facebook/sam-vit-base", points_per_side=16)  # doctest: +SKIP
    >>> gen.generate("street.jpg").verbose()                        # doctest: +SKIP
    '57 object'
    """

    def __init__(self, predictor: SamPredictor | str = DEFAULT_SAM, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                 box_nms_thresh: float = 0.7, crop_n_layers: int = 0, crop_overlap_ratio: float = 512 / 1500,
                 crop_nms_thresh: float = 0.7, crop_n_points_downscale_factor: int = 1, min_mask_region_area: int = 0,
                 mask_threshold: float = 0.0, crop_edge_atol: float = 20.0, device: str = "cpu") -> None:
        checks = {"points_per_side": points_per_side >= 1, "points_per_batch": points_per_batch >= 1,
                  "box_nms_thresh": 0 < box_nms_thresh <= 1, "crop_nms_thresh": 0 < crop_nms_thresh <= 1,
                  "crop_n_layers": crop_n_layers >= 0, "crop_overlap_ratio": 0 <= crop_overlap_ratio < 1,
                  "stability_score_offset": stability_score_offset >= 0, "min_mask_region_area": min_mask_region_area >= 0,
                  "crop_n_points_downscale_factor": crop_n_points_downscale_factor >= 1,
                  "stability_score_thresh": stability_score_thresh <= 1}  # fmt: skip
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"bad value for '{key}': {locals()[key]!r}")
        self.predictor = predictor if isinstance(predictor, SamPredictor) else SamPredictor(predictor, device=device)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.stability_score_offset, self.mask_threshold = stability_score_offset, mask_threshold
        self.box_nms_thresh, self.crop_nms_thresh = box_nms_thresh, crop_nms_thresh
        self.crop_n_layers, self.crop_overlap_ratio = crop_n_layers, crop_overlap_ratio
        self.min_mask_region_area, self.crop_edge_atol = min_mask_region_area, crop_edge_atol
        self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        self.timing: dict[str, float] = {}

    @torch.inference_mode()
    def generate(self, image: Any, path: str | None = None) -> Any:
        """All masks of ``image`` (path, PIL, (H,W,3) array or (3,H,W) tensor) as
        :class:`~optik.results.Results`: ``masks`` in original pixels, ``boxes.conf`` = predicted IoU,
        best first. Afterwards ``self.timing`` holds the seconds spent in encoder / decoder /
        postprocess, and ``self.stability_scores``, ``self.point_coords``, ``self.crop_boxes`` describe
        each kept mask (same order as the Results)."""
        t_start = time.perf_counter()
        img = as_hwc_uint8(image)
        path = path or (str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else "image0")
        h, w = img.shape[:2]
        self.timing = {"encoder": 0.0, "decoder": 0.0}
        crops, layers = generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        data = _MaskData()
        for crop, layer in zip(crops, layers):
            data.cat(self._process_crop(img, crop, layer, (h, w)))
        if len(crops) > 1 and len(data):  # duplicates across crops: the smaller crop's mask wins
            crop_boxes = data["crop_boxes"].float()
            keep = batched_nms(data["boxes"].float(), 1 / box_area(crop_boxes), torch.zeros(len(data)), self.crop_nms_thresh)
            data.filter(keep)
        if self.min_mask_region_area > 0 and len(data):
            self._remove_small_regions(data, (h, w))
        if len(data):
            data.filter(data["iou"].argsort(descending=True, stable=True))
        masks = rle_to_masks(data["rles"], (h, w)) if len(data) else torch.zeros((0, h, w), dtype=torch.bool)
        result = sam_results(img, path, masks, data["iou"] if len(data) else torch.zeros(0))
        total = time.perf_counter() - t_start
        self.timing["postprocess"] = total - self.timing["encoder"] - self.timing["decoder"]
        self.timing["total"] = total
        # per kept mask, aligned with the Results: the extras segment-anything reports
        self.stability_scores = data["stability"] if len(data) else torch.zeros(0)
        self.point_coords = data["points"] if len(data) else torch.zeros(0, 2)
        self.crop_boxes = data["crop_boxes"] if len(data) else torch.zeros(0, 4)
        result.speed = {k: 1e3 * v for k, v in self.timing.items() if k != "total"}
        result.speed["inference"] = result.speed["encoder"] + result.speed["decoder"]
        return result

    def _process_crop(self, img: np.ndarray, crop: list[int], layer: int, orig_size: tuple[int, int]) -> _MaskData:
        x0, y0, x1, y1 = crop
        p = self.predictor
        p.set_image(img[y0:y1, x0:x1])
        self.timing["encoder"] += p.timing["encoder"]
        ch, cw = y1 - y0, x1 - x0
        points = torch.from_numpy(self.point_grids[layer] * np.array([cw, ch])).float()
        data = _MaskData()
        for i in range(0, len(points), self.points_per_batch):
            data.cat(self._process_batch(points[i : i + self.points_per_batch], crop, orig_size))
        p.reset_image()
        if not len(data):
            return data
        keep = batched_nms(data["boxes"].float(), data["iou"], torch.zeros(len(data)), self.box_nms_thresh)
        data.filter(keep)
        offset = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        data.cols["boxes"] = data["boxes"] + offset
        data.cols["points"] = data["points"] + offset[:2]
        data.cols["crop_boxes"] = torch.tensor([crop] * len(data), dtype=torch.float32)
        return data

    def _process_batch(self, points: Tensor, crop: list[int], orig_size: tuple[int, int]) -> _MaskData:
        p = self.predictor
        low, iou = p.predict_torch(points[:, None], torch.ones(len(points), 1, dtype=torch.int64), None, multimask=True)
        self.timing["decoder"] += p.timing["decoder"]
        pts = points.repeat_interleave(low.shape[1], 0)
        low, iou = low.flatten(0, 1), iou.flatten().float().cpu()
        if self.pred_iou_thresh > 0:  # before upscaling: the IoU needs no pixels, upscaling is the costly part
            keep = iou > self.pred_iou_thresh
            low, iou, pts = low[keep.to(low.device)], iou[keep], pts[keep]
        if len(low):
            logits = p.upscale(low[:, None])[:, 0]  # (n, h_crop, w_crop) on the model's device
        else:
            logits = torch.zeros((0, crop[3] - crop[1], crop[2] - crop[0]), device=low.device)
        stab = stability_score(logits, self.mask_threshold, self.stability_score_offset).cpu()
        keep = stab >= self.stability_score_thresh if self.stability_score_thresh > 0 else torch.ones(len(iou), dtype=torch.bool)
        masks = (logits[keep.to(logits.device)] > self.mask_threshold).cpu()
        iou, stab, pts = iou[keep], stab[keep], pts[keep]
        boxes = masks_to_boxes(masks) if len(masks) else torch.zeros(0, 4)  # empty masks → zeros
        keep = ~is_box_near_crop_edge(boxes, crop, [0, 0, orig_size[1], orig_size[0]], self.crop_edge_atol) & masks.flatten(1).any(1)
        masks, iou, stab, pts, boxes = masks[keep], iou[keep], stab[keep], pts[keep], boxes[keep]
        x0, y0, x1, y1 = crop
        if (x0, y0, x1, y1) != (0, 0, orig_size[1], orig_size[0]):  # uncrop: pad back to the full image
            masks = torch.nn.functional.pad(masks, (x0, orig_size[1] - x1, y0, orig_size[0] - y1))
        return _MaskData(rles=masks_to_rle(masks), iou=iou, stability=stab, points=pts, boxes=boxes)

    def _remove_small_regions(self, data: _MaskData, size: tuple[int, int]) -> None:
        """segment-anything's postprocess_small_regions: clean each mask, then NMS preferring
        masks that needed no cleaning (so a cleaned duplicate never beats an intact mask)."""
        masks, scores = [], []
        for mask in rle_to_masks(data["rles"], size).numpy():
            mask, changed_holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_islands = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(torch.from_numpy(np.ascontiguousarray(mask)))
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        stacked = torch.stack(masks)
        boxes = masks_to_boxes(stacked)
        keep = batched_nms(boxes, torch.tensor(scores), torch.zeros(len(masks)), self.box_nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                data["rles"][i] = masks_to_rle(stacked[i : i + 1])[0]
                data["boxes"][i] = boxes[i]
        empty = ~stacked.flatten(1).any(1)
        keep = keep[~empty[keep]]
        data.filter(keep)
