"""Decoupled anchor-free head and its decoding: points at cell centres, boxes as distances.

Each level gets its own head with two branches (decoupled, as YOLOX/YOLOv8: classification and
localisation want different features). At every cell centre (FCOS, Tian et al. 2019) the box branch
predicts the distances (l, t, r, b) to the box sides, in units of the level's stride.

**Box regression: DFL, not plain distances.** Each distance is a discrete distribution over
``0 … reg_max-1`` strides (Generalized Focal Loss, Li et al. 2020), read out as its expectation.
Why: an edge that is ambiguous (occlusion, blur) gets a spread-out distribution instead of a forced
point estimate, DFL's cross-entropy on the two neighbouring bins gives well-scaled gradients at
every box size, and it is YOLOv8's proven recipe. The price is ``4 × reg_max`` output channels and a
bounded range — ``reg_max - 1`` strides (120 px at stride 8, 480 px at stride 32 with reg_max 16),
ample for the 64–640 px inputs optik trains on.

>>> head = DecoupledHead(num_classes=3, in_channels=32, num_levels=3, reg_max=16)
>>> [tuple(m.shape[1:]) for m in head([torch.zeros(1, 32, s, s) for s in (8, 4, 2)])]
[(67, 8, 8), (67, 4, 4), (67, 2, 2)]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from optik.models.detect.backbone import conv


class DecoupledHead(nn.Module):
    """Per level: box branch (two 3×3 convs → ``4·reg_max``) and class branch (two 3×3 convs → ``C``).

    Output per level: ``(B, 4·reg_max + C, H, W)`` raw maps — DFL logits first, class logits last.

    Args:
        num_classes: C.
        in_channels: width of every neck level.
        num_levels: number of levels (3).
        reg_max: DFL bins per side.
        prior_prob: initial foreground probability of every class (Focal Loss, Lin et al. 2017): keeps
            the early BCE from being swamped by thousands of easy negatives.
    """

    def __init__(
        self, num_classes: int, in_channels: int, num_levels: int = 3, reg_max: int = 16, prior_prob: float = 0.01
    ) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        c_box = max(16, in_channels // 4, 4 * reg_max)  # YOLOv8's branch widths
        c_cls = max(in_channels, min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(conv(in_channels, c_box), conv(c_box, c_box), nn.Conv2d(c_box, 4 * reg_max, 1))
            for _ in range(num_levels)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(conv(in_channels, c_cls), conv(c_cls, c_cls), nn.Conv2d(c_cls, num_classes, 1))
            for _ in range(num_levels)
        )
        for branch in self.cls:
            nn.init.constant_(branch[-1].bias, -math.log((1 - prior_prob) / prior_prob))
        # Box prior: bin logits decaying by log(1.5) per bin give an expected distance of 2 strides per
        # side, i.e. every level first proposes boxes ~4 strides wide — its own scale, as in FCOS.
        for branch in self.box:
            bins = -torch.arange(reg_max, dtype=torch.float32) * math.log(1.5)
            branch[-1].bias.data.copy_(bins.repeat(4))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """``L × (B, in_channels, H_l, W_l) -> L × (B, 4·reg_max + C, H_l, W_l)``."""
        return [torch.cat([box(f), cls(f)], dim=1) for f, box, cls in zip(feats, self.box, self.cls)]


def make_anchors(maps: list[Tensor], strides: list[int]) -> tuple[Tensor, Tensor]:
    """Cell-centre points of every level, in input pixels, in the order :func:`flatten_maps` uses.

    Returns ``points (A, 2)`` as (x, y) and ``stride (A, 1)``, ``A = Σ H_l·W_l``.

    >>> pts, st = make_anchors([torch.zeros(1, 1, 2, 2)], [8])
    >>> pts.tolist(), st.flatten().tolist()
    ([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]], [8.0, 8.0, 8.0, 8.0])
    """
    points, stride_list = [], []
    for m, s in zip(maps, strides):
        h, w = m.shape[-2:]
        ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) * s
        xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2))
        stride_list.append(torch.full_like(points[-1][:, :1], float(s)))
    return torch.cat(points), torch.cat(stride_list)


def flatten_maps(maps: list[Tensor], reg_max: int) -> tuple[Tensor, Tensor]:
    """``L × (B, 4·reg_max + C, H_l, W_l) -> (dist (B, A, 4·reg_max), logits (B, A, C))``."""
    flat = torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)
    return flat[..., : 4 * reg_max], flat[..., 4 * reg_max :]


def dfl_distances(dist: Tensor, reg_max: int) -> Tensor:
    """Expected distance per side: ``(B, A, 4·reg_max) -> (B, A, 4)`` in stride units (softmax · bins)."""
    bins = torch.arange(reg_max, device=dist.device, dtype=dist.dtype)
    return dist.unflatten(-1, (4, reg_max)).softmax(-1) @ bins


def distances_to_boxes(ltrb: Tensor, points: Tensor, stride: Tensor) -> Tensor:
    """``ltrb (B, A, 4)`` in strides around ``points (A, 2)`` px → ``(B, A, 4)`` xyxy px."""
    ltrb = ltrb * stride
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def boxes_to_distances(boxes: Tensor, points: Tensor, stride: Tensor) -> Tensor:
    """Inverse of :func:`distances_to_boxes`: xyxy px ``(..., A, 4)`` → ltrb in strides."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1) / stride


__all__ = [
    "DecoupledHead",
    "boxes_to_distances",
    "dfl_distances",
    "distances_to_boxes",
    "flatten_maps",
    "make_anchors",
]
