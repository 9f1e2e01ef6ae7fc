"""`DetectionDataset`: images with boxes and class names, the one torch Dataset behind every
detection source (the readers in `formats/` and `synthetic:shapes-det` build it; `data=` is
resolved in `sources.py`).

A target follows the shared contract: `{"boxes": (N, 4) xyxy float pixels, "labels": (N,) int64
in 0..C-1, "image_id": int, "iscrowd": (N,) int64, "orig_size": (H, W)}`; inside the dataset
"boxes" is a `tv_tensors.BoundingBoxes` so transforms.v2 move it with the image, after
`detection_collate` (collate.py) it is a plain tensor. Image ids are the source's (COCO ids) or
1..N (position + 1, kept through `subset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

from optik.data.dataset import checked_class_names
from optik.data.views import ImageCollection
from optik.errors import DatasetError


def _as_array(x: Any, shape_tail: tuple[int, ...], dtype: type, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.size == 0:
        return np.zeros((0, *shape_tail), dtype)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        want = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise DatasetError(f"{what} has shape {a.shape}; expected {want}")
    a = a.astype(dtype, copy=True)  # own copy: frozen below without touching the caller's
    a.flags.writeable = False
    return a


class DetectionDataset(ImageCollection, torch.utils.data.Dataset):
    """Images with boxes: the one torch Dataset behind every detection source.

    images: paths, or HWC uint8 arrays, or one stacked (N, H, W, 3) uint8 array (decoded per item).
    annotations: one dict per image, `{"boxes": (N, 4) xyxy float pixels, "labels": (N,) int in
        0..C-1, "iscrowd": (N,) int (optional), "area": (N,) float (optional: the source's
        object area, e.g. COCO's mask area; default box w*h)}`.
    classes: class names, index = label. cat_ids: the source's category id per class (COCO
        export), default 0..C-1. image_ids: one int per image, default 1..N.
    sizes: optional (H, W) per image (None entries allowed); unknown sizes are read from file
        headers once, on demand, and cached (shared with subsets).
    transform: called as `transform(image, target)` in `__getitem__` with a uint8
        `tv_tensors.Image` (3, H, W) and the target dict (boxes as `BoundingBoxes`).

    >>> ds = DetectionDataset(np.zeros((1, 8, 8, 3), np.uint8),
    ...     [{"boxes": [[1, 1, 4, 5]], "labels": [0]}], ["cat"])
    >>> ds.to_coco()["annotations"][0]["bbox"]
    [1.0, 1.0, 3.0, 4.0]
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray] | np.ndarray,
        annotations: Sequence[dict],
        classes: list[str],
        cat_ids: list[int] | None = None,
        transform: Callable | None = None,
        name: str = "dataset",
        image_ids: Sequence[int] | None = None,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        self.name = name
        self.transform = transform
        self.classes = checked_class_names(classes, name)
        self.cat_ids = (
            list(range(len(self.classes))) if cat_ids is None else [int(c) for c in cat_ids]
        )
        if len(self.cat_ids) != len(self.classes) or len(set(self.cat_ids)) != len(self.cat_ids):
            raise DatasetError(
                f"{name}: cat_ids {self.cat_ids} must be {len(self.classes)} distinct ints"
            )
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise DatasetError(
                    f"{name}: image array of shape {images.shape} must be (N, H, W, C) or (N, H, W)"
                )
        else:
            images = [str(x) if isinstance(x, Path) else x for x in images]
        self._images = images
        n = len(images)
        if len(annotations) != n:
            raise DatasetError(f"{name}: {n} images but {len(annotations)} annotation dicts")
        ids = list(range(1, n + 1)) if image_ids is None else [int(v) for v in image_ids]
        if len(ids) != n:
            raise DatasetError(f"{name}: {n} images but {len(ids)} image_ids")
        if len(set(ids)) != n:
            raise DatasetError(f"{name}: duplicate image ids")
        self._ids = ids
        if sizes is not None and len(sizes) != n:
            raise DatasetError(f"{name}: {n} images but {len(sizes)} sizes")
        self._sizes: list[tuple[int, int] | None] = (
            [None if s is None else (int(s[0]), int(s[1])) for s in sizes]
            if sizes is not None
            else [None] * n
        )
        if isinstance(images, np.ndarray):  # stacked: every size is known
            self._sizes = [(int(images.shape[1]), int(images.shape[2]))] * n
        self._anns = [self._validate(k, a) for k, a in enumerate(annotations)]
        self._index: np.ndarray | None = None  # positions of this view's items (subset)

    def _validate(self, k: int, ann: dict) -> dict[str, np.ndarray]:
        where = self._source_at(k)
        if not isinstance(ann, dict) or "boxes" not in ann or "labels" not in ann:
            raise DatasetError(f"{where}: annotation must be a dict with 'boxes' and 'labels'")
        boxes = _as_array(ann["boxes"], (4,), np.float32, f"{where}: field 'boxes'")
        m = len(boxes)
        out = {"boxes": boxes}
        for key, dtype, default in (("labels", np.int64, None), ("iscrowd", np.int64, 0),
                                    ("area", np.float32, None)):  # fmt: skip
            if key not in ann or ann[key] is None:
                if default is not None:
                    out[key] = np.full(m, default, dtype)
                continue
            a = _as_array(ann[key], (), dtype, f"{where}: field {key!r}")
            if len(a) != m:
                raise DatasetError(f"{where}: field {key!r} has {len(a)} entries for {m} boxes")
            out[key] = a
        labels = out["labels"]
        raw = np.asarray(ann["labels"].cpu() if isinstance(ann["labels"], Tensor) else ann["labels"])
        if m and raw.dtype.kind not in "iub" and not np.array_equal(raw, labels):
            raise DatasetError(f"{where}: field 'labels': {raw.tolist()[:5]} are not class indices")
        c = len(self.classes)
        if m and (labels.min() < 0 or labels.max() >= c):
            bad = int(labels[(labels < 0) | (labels >= c)][0])
            raise DatasetError(
                f"{where}: field 'labels': class index {bad} out of range for {c} classes"
            )
        if m and not np.isfinite(boxes).all():
            raise DatasetError(f"{where}: field 'boxes': non-finite coordinates")
        if m and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            j = int(np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0])
            raise DatasetError(
                f"{where}: field 'boxes': box {j} {boxes[j].tolist()} has zero or negative "
                "width/height (xyxy expected)"
            )
        return out

    # ---- items -----------------------------------------------------------------------------
    def load(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """Item `i` untransformed: uint8 (3, H, W) image and a target of plain tensors in
        original pixel coordinates."""
        k = self._position(i)
        img = self._decode_at(k)
        hw = (int(img.shape[1]), int(img.shape[2]))
        known = self._sizes[k]
        if known is None:
            self._sizes[k] = hw
        elif known != hw:
            raise DatasetError(
                f"{self._source_at(k)}: image is {hw[1]}x{hw[0]} (WxH) but the annotation says "
                f"{known[1]}x{known[0]} (field width/height)"
            )
        a = self._anns[k]
        target = {
            "boxes": torch.from_numpy(a["boxes"].copy()),
            "labels": torch.from_numpy(a["labels"].copy()),
            "image_id": self._ids[k],
            "iscrowd": torch.from_numpy(a["iscrowd"].copy()),
            "orig_size": hw,
        }
        return img, target

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """-> (image, target): `transform(tv_tensors.Image uint8 (3, H, W), target)`, or the
        untransformed pair (boxes as `BoundingBoxes`) without a transform."""
        img, target = self.load(i)
        target["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=target["orig_size"]
        )
        image = tv_tensors.Image(img)
        if self.transform is not None:
            return self.transform(image, target)
        return image, target

    def annotation(self, i: int) -> dict[str, np.ndarray]:
        """Item `i`'s annotation arrays (boxes, labels, iscrowd[, area]); read-only views."""
        return self._anns[self._position(i)]

    def num_objects(self) -> int:
        return int(sum(len(self._anns[int(k)]["labels"]) for k in self._positions()))

    def to_coco(self) -> dict[str, Any]:
        """This dataset as a COCO ground-truth dict (original pixels; bbox xywh; category ids =
        `cat_ids`; area = the source's area when given, else w*h). Image sizes come from the
        cache or file headers, never a full decode. Annotation ids are 1..M (pycocotools
        treats id 0 as "unmatched")."""
        images, anns = [], []
        for k in self._positions():
            k = int(k)
            h, w = self._size_at(k)
            img_id = self._ids[k]
            images.append({"id": img_id, "file_name": self._source_at(k), "width": w, "height": h})
            a = self._anns[k]
            b = a["boxes"].astype(np.float64)
            wh = b[:, 2:] - b[:, :2]
            area = a["area"].astype(np.float64) if "area" in a else wh[:, 0] * wh[:, 1]
            for j in range(len(b)):
                anns.append({
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": self.cat_ids[int(a["labels"][j])],
                    "bbox": [float(b[j, 0]), float(b[j, 1]), float(wh[j, 0]), float(wh[j, 1])],
                    "area": float(area[j]),
                    "iscrowd": int(a["iscrowd"][j]),
                })  # fmt: skip
        cats = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.classes)]
        return {"info": {"description": self.name}, "images": images, "annotations": anns,
                "categories": cats}  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"classes={len(self.classes)}, transform={self.transform is not None})"
        )


__all__ = ["DetectionDataset"]
