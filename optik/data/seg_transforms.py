"""Mask-aware segmentation transforms on torchvision.transforms.v2.

Input is what `SegmentationDataset` yields: a uint8 `tv_tensors.Image` (3, H, W) and a target
whose "semantic" is a `SemanticMask` (H, W) and "masks" a `tv_tensors.Mask` (N, H, W) with
"boxes" `BoundingBoxes`. Output: a float32 image in [0, 1] of (3, imgsz, imgsz), letterboxed
top-left (image pad 114, semantic pad 255 = void, instance-mask pad 0), semantic int64, masks
bool, and boxes/area recomputed from the transformed masks (instances left empty are dropped
with their labels/iscrowd). A bare image works too (predict mode).

>>> tf = seg_transforms(32, train=False)
>>> img = tv_tensors.Image(torch.zeros(3, 16, 32, dtype=torch.uint8))
>>> out, t = tf(img, {"semantic": SemanticMask(torch.zeros(16, 32, dtype=torch.uint8))})
>>> out.shape, t["semantic"].dtype, t["semantic"][-1, 0].item()
(torch.Size([3, 32, 32]), torch.int64, 255)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from optik.data.detect_transforms import PAD_VALUE, LetterBox, augment_steps
from optik.data.segmentation_dataset import IGNORE_INDEX, SemanticMask, mask_boxes

_FILL = {tv_tensors.Image: PAD_VALUE, SemanticMask: IGNORE_INDEX, "others": 0}
_PER_INSTANCE = ("labels", "iscrowd")


class FinishTarget:
    """Last step: plain tensors (semantic int64, masks bool), instances emptied by the
    transforms dropped, boxes and area recomputed from the masks. A bare image passes."""

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) != 2 or not isinstance(inputs[1], dict):
            return inputs[0] if len(inputs) == 1 else inputs
        image, target = inputs
        target = dict(target)
        if "semantic" in target:
            target["semantic"] = target["semantic"].as_subclass(Tensor).long()
        if "masks" in target:
            masks = target["masks"].as_subclass(Tensor).bool()
            area = masks.flatten(1).sum(1)
            keep = area > 0
            if not bool(keep.all()):
                masks, area = masks[keep], area[keep]
                for key in _PER_INSTANCE:
                    if isinstance(target.get(key), Tensor):
                        target[key] = target[key][keep]
            target["masks"] = masks
            target["boxes"] = mask_boxes(masks)
            target["area"] = area.float()
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def seg_transforms(
    imgsz: int,
    *,
    train: bool,
    hflip: float = 0.5,
    scale_jitter: tuple[float, float] = (0.75, 1.25),
    photometric: bool = True,
) -> v2.Compose:
    """Train or eval pipeline: (uint8 image, target) -> (float32 (3, imgsz, imgsz), target).

    train: RandomPhotometricDistort (photometric) -> RandomAffine scale in `scale_jitter` about
        the centre, +-10 % shift (zoom-out border: image 114, semantic 255, masks 0;
        scale_jitter=(1, 1) leaves it out) -> RandomHorizontalFlip(hflip) -> LetterBox -> float
        -> FinishTarget.
    eval: LetterBox -> float -> FinishTarget (nothing random).

    >>> seg_transforms(64, train=True).transforms[-1]
    FinishTarget()
    """
    if not train:
        return v2.Compose([LetterBox(imgsz), v2.ToDtype(torch.float32, scale=True), FinishTarget()])
    steps = augment_steps(hflip, scale_jitter, photometric, _FILL)
    steps += [LetterBox(imgsz), v2.ToDtype(torch.float32, scale=True), FinishTarget()]
    return v2.Compose(steps)


__all__ = ["FinishTarget", "seg_transforms"]
