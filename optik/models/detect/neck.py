"""FPN + PAN neck: fuse backbone levels top-down (FPN, Lin et al. 2017) then bottom-up (PANet, Liu
et al. 2018), as in YOLOv8, into three maps of one width so a single head design serves every level.

>>> neck = PANFPN((32, 64, 128), width=48)
>>> feats = [torch.zeros(1, c, s, s) for c, s in ((32, 8), (64, 4), (128, 2))]
>>> [tuple(p.shape[1:]) for p in neck(feats)]
[(48, 8, 8), (48, 4, 4), (48, 2, 2)]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optik.models.detect.backbone import CSPBlock, conv


class PANFPN(nn.Module):
    """``[C3, C4, C5]`` (strides 8/16/32, any widths) → ``[P3, P4, P5]``, all ``width`` channels.

    1×1 laterals bring every level to ``width``; top-down: upsample ×2, concatenate, CSPBlock;
    bottom-up: stride-2 conv, concatenate, CSPBlock. Inputs must be exactly 2× apart in size
    (input side a multiple of 32).

    Args:
        in_channels: channels of C3, C4, C5.
        width: channels of every output level.
        depth: bottlenecks per CSPBlock.
    """

    def __init__(self, in_channels: tuple[int, ...] | list[int], width: int = 64, depth: int = 1) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv(c, width, 1) for c in in_channels)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        # no shortcuts inside the neck's blocks (as YOLOv8): the concatenated input is not a residual stream
        self.top_down = nn.ModuleList(CSPBlock(2 * width, width, depth, shortcut=False) for _ in range(2))
        self.down = nn.ModuleList(conv(width, width, 3, 2) for _ in range(2))
        self.bottom_up = nn.ModuleList(CSPBlock(2 * width, width, depth, shortcut=False) for _ in range(2))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """``[(B, c3, H, W), (B, c4, H/2, W/2), (B, c5, H/4, W/4)] -> 3 × (B, width, ·, ·)``."""
        c3, c4, c5 = (lat(f) for lat, f in zip(self.lateral, feats))
        p4 = self.top_down[0](torch.cat([self.up(c5), c4], dim=1))
        p3 = self.top_down[1](torch.cat([self.up(p4), c3], dim=1))
        p4 = self.bottom_up[0](torch.cat([self.down[0](p3), p4], dim=1))
        p5 = self.bottom_up[1](torch.cat([self.down[1](p4), c5], dim=1))
        return [p3, p4, p5]


__all__ = ["PANFPN"]
