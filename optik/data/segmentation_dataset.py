"""`SegmentationDataset`: images with per-pixel annotations, decoded on demand — the one torch
Dataset behind every segmentation source (the readers in `formats/` and the synthetic scenes
build it; `data=` is resolved in `sources.py`) — and the compact annotations it stores.

`kind` (semantic | instance | panoptic) says what the targets hold. A target (original pixels,
from `load`/`load_target`) is `{"image_id": int, "orig_size": (H, W)}` plus
    semantic, panoptic: "semantic" int64 (H, W) class map, `IGNORE_INDEX` (255) = void;
    instance, panoptic: "masks" bool (N, H, W), "labels" int64 (N,), "iscrowd" int64 (N,),
        "boxes" float32 (N, 4) xyxy (pixel j spans [j, j + 1)), "area" float32 (N,) pixels.
Annotations are stored compactly (uint8 maps, COCO RLE, or file paths) and decoded per item.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from optik.data.dataset import checked_class_names
from optik.data.views import ImageCollection
from optik.errors import ConfigError, DatasetError

IGNORE_INDEX = 255  # semantic pixels that are void / not scored
KINDS = ("semantic", "instance", "panoptic")


class SemanticMask(tv_tensors.Mask):
    """A (H, W) class map: a `tv_tensors.Mask` that transforms pad with `IGNORE_INDEX`
    (`LetterBox` reads `fill_value`; give RandomAffine & co `{SemanticMask: 255}` fills)."""

    fill_value = IGNORE_INDEX


# ---- compact annotations: each decodes one image's target arrays on demand -----------------


class SemanticMap:
    """An in-memory class map (H, W) uint8 (255 = void)."""

    def __init__(self, semantic: np.ndarray) -> None:
        self.semantic = np.asarray(semantic)
        self.size = tuple(self.semantic.shape)

    def decode(self) -> dict[str, np.ndarray]:
        return {"semantic": self.semantic}


class SegmentMap:
    """Non-overlapping segments as an id map (H, W) (0 = none, id j + 1 -> labels[j])."""

    def __init__(self, ids: np.ndarray, labels: Any, iscrowd: Any = None) -> None:
        self.ids = np.asarray(ids)
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.iscrowd = (np.zeros(len(self.labels), np.int64) if iscrowd is None
                        else np.asarray(iscrowd, np.int64).reshape(-1))  # fmt: skip
        self.size = tuple(self.ids.shape)

    def decode(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "labels": self.labels, "iscrowd": self.iscrowd}


class RLEMasks:
    """Possibly overlapping instance masks as COCO RLEs (compressed counts), decoded on load."""

    def __init__(self, rles: list[dict], labels: Any, iscrowd: Any, size: tuple[int, int]) -> None:
        self.rles, self.size = rles, (int(size[0]), int(size[1]))
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.iscrowd = np.asarray(iscrowd, np.int64).reshape(-1)

    @classmethod
    def from_masks(cls, masks: Any, labels: Any, iscrowd: Any = None) -> RLEMasks:
        from faster_coco_eval.core import mask as mask_utils

        m = np.asarray(masks.cpu() if isinstance(masks, Tensor) else masks).astype(bool)
        h, w = m.shape[1:]
        rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
        crowd = np.zeros(len(m), np.int64) if iscrowd is None else iscrowd
        return cls(list(rles) if len(m) else [], labels, crowd, (h, w))

    def decode(self) -> dict[str, np.ndarray]:
        from faster_coco_eval.core import mask as mask_utils

        h, w = self.size
        if not self.rles:
            masks = np.zeros((0, h, w), bool)
        else:
            masks = mask_utils.decode(self.rles).transpose(2, 0, 1).astype(bool)
        return {"masks": masks, "labels": self.labels, "iscrowd": self.iscrowd}


def instances_to_semantic(masks: np.ndarray, labels: Any, iscrowd: Any = None, *,
                          offset: int = 1) -> np.ndarray:  # fmt: skip
    """Possibly overlapping instance masks (N, H, W) -> one uint8 class map (H, W), by the rule of
    torchvision's COCO segmentation reference (`references/segmentation/coco_utils.py`,
    `ConvertCocoPolysToMask`): a pixel inside exactly one instance gets that instance's
    `label + offset`, a pixel inside none the background 0, and a pixel inside two or more
    `IGNORE_INDEX` (which one is in front is unknown, so overlaps are not trained on). Beyond the
    reference, crowd regions (`iscrowd`=1) are void too: they hold many objects and some background.

    >>> m = np.zeros((2, 1, 4), bool); m[0, 0, :2] = True; m[1, 0, 1:3] = True
    >>> instances_to_semantic(m, [0, 2]).tolist()
    [[1, 255, 3, 0]]
    """
    masks = np.asarray(masks, bool)
    labels = np.asarray(labels, np.int64).reshape(-1)
    crowd = (np.zeros(len(labels), bool) if iscrowd is None
             else np.asarray(iscrowd, np.int64).reshape(-1).astype(bool))  # fmt: skip
    sem = np.zeros(masks.shape[1:], np.uint8)
    if not len(masks):
        return sem
    for m, lab in zip(masks, labels):
        sem[m] = lab + offset  # order does not matter: overlapped pixels become void below
    sem[masks.sum(0) > 1] = IGNORE_INDEX
    if crowd.any():
        sem[masks[crowd].any(0)] = IGNORE_INDEX
    return sem


class InstancesAsSemantic:
    """A semantic view of an instance annotation (`RLEMasks`, `SegmentMap`, or any object whose
    `decode()` gives masks or ids + labels + iscrowd), rasterised per item by
    `instances_to_semantic` (class k -> k + 1; 0 = background)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.size = getattr(inner, "size", None)

    def decode(self) -> dict[str, np.ndarray]:
        d = self.inner.decode()
        labels = np.asarray(d["labels"], np.int64).reshape(-1)
        if "masks" in d:
            masks = d["masks"]
        else:  # an id map: segment j + 1 -> labels[j]
            masks = np.asarray(d["ids"])[None] == np.arange(1, len(labels) + 1)[:, None, None]
        return {"semantic": instances_to_semantic(masks, labels, d.get("iscrowd"))}


def _as_annotation(ann: Any, where: str) -> Any:
    if hasattr(ann, "decode"):
        return ann
    if isinstance(ann, dict):
        if "semantic" in ann and len(ann) == 1:
            return SemanticMap(np.asarray(ann["semantic"]))
        if "ids" in ann:
            return SegmentMap(ann["ids"], ann["labels"], ann.get("iscrowd"))
        if "masks" in ann:
            return RLEMasks.from_masks(ann["masks"], ann["labels"], ann.get("iscrowd"))
    raise DatasetError(
        f"{where}: annotation must be {{'semantic': (H, W)}}, {{'ids': (H, W), 'labels'}}, "
        f"{{'masks': (N, H, W), 'labels'}} or an object with decode(); got {type(ann).__name__}"
    )


def mask_boxes(masks: Tensor) -> Tensor:
    """(N, H, W) masks -> float32 (N, 4) xyxy boxes of their pixels (pixel j spans [j, j + 1));
    empty masks give zeros.

    >>> m = torch.zeros(1, 4, 4, dtype=torch.bool); m[0, 1:3, 2] = True
    >>> mask_boxes(m).tolist()
    [[2.0, 1.0, 3.0, 3.0]]
    """
    boxes = masks_to_boxes(masks.bool()) if len(masks) else torch.zeros(0, 4)
    nonempty = masks.flatten(1).any(1) if len(masks) else torch.zeros(0, dtype=torch.bool)
    boxes[:, 2:] += nonempty[:, None].float()
    return boxes.float()


def _paint(d: dict[str, np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """Semantic map from segments (crowd painted with its class; no segment = void)."""
    if "ids" in d:
        lut = np.full(max(int(d["ids"].max(initial=0)) + 1, len(d["labels"]) + 1), IGNORE_INDEX,
                      np.uint8)  # fmt: skip
        lut[1 : len(d["labels"]) + 1] = d["labels"]
        return lut[d["ids"]]
    sem = np.full(hw, IGNORE_INDEX, np.uint8)
    for m, lab in zip(d["masks"], d["labels"]):
        sem[m] = lab
    return sem


class SegmentationDataset(ImageCollection, torch.utils.data.Dataset):
    """Images with per-pixel annotations: the one torch Dataset behind every segmentation source.

    images: paths, or HWC uint8 arrays, or one stacked (N, H, W, 3) uint8 array.
    annotations: one per image: an object with `decode()` (SemanticMap, SegmentMap, RLEMasks,
        or a reader's file-backed annotation) or a dict `{"semantic": (H, W)}`, `{"ids": (H, W),
        "labels"}` or `{"masks": (N, H, W), "labels", "iscrowd"?}`.
    kind: semantic | instance | panoptic (what targets hold, see the module docstring); an
        instance view of panoptic segments keeps the things only.
    isthing: per class (panoptic; instance: all True; semantic: None).
    transform: called as `transform(image, target)` with a uint8 `tv_tensors.Image`,
        "semantic" a `SemanticMask` (uint8), "masks" a `tv_tensors.Mask` (uint8 (N, H, W)) and
        "boxes" `BoundingBoxes` (see seg_transforms).

    >>> ds = SegmentationDataset(np.zeros((1, 8, 8, 3), np.uint8),
    ...     [{"semantic": np.ones((8, 8), np.uint8)}], ["bg", "fg"], kind="semantic")
    >>> ds.load_target(0)["semantic"].sum().item()
    64
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray] | np.ndarray,
        annotations: Sequence[Any],
        classes: list[str],
        *,
        kind: str,
        isthing: list[bool] | None = None,
        cat_ids: list[int] | None = None,
        transform: Callable | None = None,
        name: str = "dataset",
        image_ids: Sequence[int] | None = None,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        self.name, self.transform = name, transform
        if kind not in KINDS:
            raise ConfigError(f"{name}: kind={kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.classes = checked_class_names(classes, name)
        c = len(self.classes)
        if kind != "instance" and c > IGNORE_INDEX:
            raise DatasetError(f"{name}: {c} classes; semantic maps hold at most {IGNORE_INDEX}")
        if isthing is None:
            isthing = [True] * c if kind == "instance" else None
        if isthing is not None and len(isthing) != c:
            raise DatasetError(f"{name}: isthing has {len(isthing)} entries for {c} classes")
        self.isthing = None if isthing is None else [bool(t) for t in isthing]
        self.cat_ids = list(range(c)) if cat_ids is None else [int(v) for v in cat_ids]
        if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
            raise DatasetError(f"{name}: image array of shape {images.shape} must be (N, H, W, C)")
        if not isinstance(images, np.ndarray):
            images = [str(x) if isinstance(x, Path) else x for x in images]
        self._images = images
        n = len(images)
        if len(annotations) != n:
            raise DatasetError(f"{name}: {n} images but {len(annotations)} annotations")
        ids = list(range(1, n + 1)) if image_ids is None else [int(v) for v in image_ids]
        if len(ids) != n or len(set(ids)) != n:
            raise DatasetError(f"{name}: need {n} distinct image_ids")
        self._ids = ids
        self._anns = [_as_annotation(a, self._source_at(k)) for k, a in enumerate(annotations)]
        if isinstance(images, np.ndarray):
            self._sizes = [(int(images.shape[1]), int(images.shape[2]))] * n
        elif sizes is not None:
            if len(sizes) != n:
                raise DatasetError(f"{name}: {n} images but {len(sizes)} sizes")
            self._sizes = [None if s is None else (int(s[0]), int(s[1])) for s in sizes]
        else:
            self._sizes = [getattr(a, "size", None) for a in self._anns]
        for k, a in enumerate(self._anns):  # in-memory maps: cheap to check once, here
            if isinstance(a, (SemanticMap, SegmentMap, RLEMasks)):
                self._check_memory(k, a)
        self._index: np.ndarray | None = None

    def _check_memory(self, k: int, a: Any) -> None:
        where, c = self._source_at(k), len(self.classes)
        if self._sizes[k] is not None and tuple(a.size) != self._sizes[k]:
            raise DatasetError(
                f"{where}: mask is {a.size[1]}x{a.size[0]} but the image is "
                f"{self._sizes[k][1]}x{self._sizes[k][0]} (WxH)"
            )
        if isinstance(a, SemanticMap):
            bad = a.semantic[(a.semantic >= c) & (a.semantic != IGNORE_INDEX)]
            if bad.size:
                raise DatasetError(
                    f"{where}: field 'semantic': class index {int(bad[0])} out of range for {c} "
                    f"classes (255 = void)"
                )
            if self.kind != "semantic":
                raise DatasetError(f"{where}: a semantic map cannot give {self.kind} targets")
            return
        if len(a.labels) and (a.labels.min() < 0 or a.labels.max() >= c):
            raise DatasetError(
                f"{where}: field 'labels': class index {int(a.labels.max())} out of range for "
                f"{c} classes"
            )
        if len(a.iscrowd) != len(a.labels):
            raise DatasetError(f"{where}: field 'iscrowd' has {len(a.iscrowd)} entries for "
                               f"{len(a.labels)} segments")  # fmt: skip
        if isinstance(a, SegmentMap) and int(a.ids.max(initial=0)) > len(a.labels):
            raise DatasetError(
                f"{where}: field 'ids': segment id {int(a.ids.max())} has no label "
                f"({len(a.labels)} labels)"
            )

    def as_semantic(self, background: str = "background") -> SegmentationDataset:
        """A semantic view of an instance dataset (e.g. COCO instances), sharing its storage:
        classes `[background, *classes]` (class k becomes k + 1; "__background__" when a class is
        already called `background`), `cat_ids` `[0, *cat_ids]` (-1 for the background when a
        category has id 0), each item's masks rasterised by `instances_to_semantic` (overlaps and
        crowd regions void, 255).

        >>> m = np.zeros((1, 4, 4), bool); m[0, :2] = True
        >>> ds = SegmentationDataset(np.zeros((1, 4, 4, 3), np.uint8),
        ...     [{"masks": m, "labels": [0]}], ["cat"], kind="instance").as_semantic()
        >>> ds.classes, ds.load_target(0)["semantic"].sum().item()
        (['background', 'cat'], 8)
        """
        if self.kind != "instance":
            raise DatasetError(f"{self.name}: holds {self.kind} annotations; as_semantic() reads "
                               "instance annotations")  # fmt: skip
        if len(self.classes) + 1 > IGNORE_INDEX:
            raise DatasetError(f"{self.name}: {len(self.classes)} categories + background; a "
                               f"semantic map holds at most {IGNORE_INDEX} classes")  # fmt: skip
        new = copy.copy(self)
        name = background if background not in self.classes else f"__{background}__"
        new.classes = checked_class_names([name, *self.classes], self.name)
        new.cat_ids = [0 if 0 not in self.cat_ids else -1, *self.cat_ids]
        new.kind, new.isthing = "semantic", None
        new._anns = [InstancesAsSemantic(a) for a in self._anns]
        return new

    # ---- indexing (ImageCollection) -------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def annotation(self, i: int) -> Any:
        """Item `i`'s stored (compact) annotation object."""
        return self._anns[self._position(i)]

    # ---- items -----------------------------------------------------------------------------
    def _target_at(self, k: int, hw: tuple[int, int] | None = None) -> dict[str, Any]:
        d = self._anns[k].decode()
        shape = next(v.shape[-2:] for key, v in d.items() if key in ("semantic", "ids", "masks"))
        hw = tuple(int(v) for v in shape) if hw is None else hw
        if tuple(shape) != tuple(hw):
            raise DatasetError(
                f"{self._source_at(k)}: mask is {shape[1]}x{shape[0]} but the image is "
                f"{hw[1]}x{hw[0]} (WxH)"
            )
        target: dict[str, Any] = {"image_id": self._ids[k], "orig_size": hw}
        if self.kind in ("semantic", "panoptic"):
            sem = d["semantic"] if "semantic" in d else _paint(d, hw)
            target["semantic"] = torch.from_numpy(sem.astype(np.int64))
        if self.kind in ("instance", "panoptic"):
            labels, crowd = d["labels"], d["iscrowd"]
            if "masks" in d:
                masks = torch.from_numpy(np.ascontiguousarray(d["masks"], dtype=bool))
            else:
                ids = torch.from_numpy(d["ids"].astype(np.int64))
                masks = ids[None] == torch.arange(1, len(labels) + 1)[:, None, None]
            keep = np.ones(len(labels), bool)
            if self.kind == "instance" and self.isthing is not None:
                keep = np.asarray([self.isthing[int(lab)] for lab in labels], bool).reshape(-1)
            if not keep.all():
                masks = masks[torch.from_numpy(keep)]
                labels, crowd = labels[keep], crowd[keep]
            target["masks"] = masks
            target["labels"] = torch.from_numpy(np.asarray(labels, np.int64).copy())
            target["iscrowd"] = torch.from_numpy(np.asarray(crowd, np.int64).copy())
            target["boxes"] = mask_boxes(masks)
            target["area"] = masks.flatten(1).sum(1).float()
        return target

    def load_target(self, i: int) -> dict[str, Any]:
        """Item `i`'s target in original pixels (plain tensors), without decoding the image."""
        return self._target_at(self._position(i))

    def load(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """Item `i` untransformed: uint8 (3, H, W) image and its target (plain tensors)."""
        k = self._position(i)
        img = self._decode_at(k)
        hw = (int(img.shape[1]), int(img.shape[2]))
        self._sizes[k] = hw
        return img, self._target_at(k, hw)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        """-> `transform(image, target)` with tv_tensors (see the class docstring), or the
        untransformed tv_tensors pair without a transform."""
        img, target = self.load(i)
        return apply_transform(self.transform, img, target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, n={len(self)}, "
            f"classes={len(self.classes)}, transform={self.transform is not None})"
        )


def apply_transform(
    transform: Callable | None, img: Tensor, target: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    """Wrap a plain (image, target) pair in tv_tensors and run `transform` on it."""
    hw = tuple(target["orig_size"])
    if "semantic" in target:
        target["semantic"] = SemanticMask(target["semantic"].to(torch.uint8))
    if "masks" in target:
        target["masks"] = tv_tensors.Mask(target["masks"].to(torch.uint8))
        target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=hw)
    image = tv_tensors.Image(img)
    if transform is not None:
        return transform(image, target)
    return image, target


__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "InstancesAsSemantic",
    "RLEMasks",
    "SegmentMap",
    "SegmentationDataset",
    "SemanticMap",
    "SemanticMask",
    "apply_transform",
    "instances_to_semantic",
    "mask_boxes",
]
