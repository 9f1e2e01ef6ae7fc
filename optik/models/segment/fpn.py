"""Semantic FPN: the semantic branch of Panoptic FPN (Kirillov et al. 2019, "Panoptic Feature Pyramid
Networks") on any timm backbone.

    [0, 1] image → normalise → pad to the backbone stride → timm features (strides 4 … 32)
    → FPN (Lin et al. 2017: 1×1 laterals, nearest top-down sum, 3×3 smoothing)
    → per level: (3×3 conv → GroupNorm → ReLU → 2× bilinear) until stride 4, summed
    → 1×1 class conv → bilinear up to the input → crop → (B, C, H, W) logits

>>> model = create("fpn", task="semantic", num_classes=3)                       # doctest: +SKIP
>>> model = create("fpn", task="semantic", num_classes=3, backbone="timm:convnext_atto",
...                backbone_pretrained=True)                                     # doctest: +SKIP
>>> model(torch.rand(1, 3, 50, 70)).shape                                        # doctest: +SKIP
torch.Size([1, 3, 50, 70])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import init_weights, to_2tuple
from optik.models.registry import register_model
from optik.models.zoo.unet import pad_to_multiple

_MAX_LEVELS = 4  # P2–P5 as in Panoptic FPN


def timm_features(spec: str, pretrained: bool | str = False, in_chans: int = 3) -> nn.Module:
    """``timm.create_model(name, features_only=True)`` for ``spec = "timm:<name>"``.

    ``pretrained``: False (random), True (timm's hub download) or a local weights file (timm's own
    loading code; a classifier checkpoint is fine, timm drops its head).
    """
    prefix, sep, name = spec.partition(":")
    if prefix != "timm" or not sep or not name:
        raise ModelError(f"fpn backbone {spec!r}: write 'timm:<name>', e.g. 'timm:resnet18'")
    if not timm.is_model(name):
        raise ModelError(f"fpn backbone {spec!r}: timm has no such model; see timm.list_models()")
    kwargs: dict[str, Any] = {"features_only": True, "in_chans": in_chans, "pretrained": bool(pretrained)}
    if isinstance(pretrained, (str, Path)) and str(pretrained):
        if not Path(pretrained).is_file():
            raise ModelError(f"fpn backbone {spec!r}: pretrained weights file {str(pretrained)!r} not found")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
    try:
        return timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, OSError) as e:
        where = " (pretrained=True downloads from the hub; offline, pass a file)" if pretrained is True else ""
        raise ModelError(f"cannot build fpn backbone {spec!r} (features_only){where}: {type(e).__name__}: {e}") from e


def backbone_normalization(backbone: nn.Module, in_chans: int, img_size: int | None) -> tuple[dict[str, Any], Tensor, Tensor]:
    """A segmenter's ``default_cfg`` and its input mean/std as ``(1, C, 1, 1)`` tensors, from the timm
    backbone's ``pretrained_cfg`` (the statistics its weights were trained with; ImageNet's without one)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean") or IMAGENET_DEFAULT_MEAN), tuple(cfg.get("std") or IMAGENET_DEFAULT_STD)
    if len(mean) != in_chans:  # grey input: the mean of the RGB statistics
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    default_cfg = {
        "mean": mean, "std": std, "interpolation": "bilinear",
        "input_size": None if img_size is None else (in_chans, *to_2tuple(img_size)),
    }  # fmt: skip
    return default_cfg, torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def conv_gn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv → GroupNorm (up to 32 groups, as the paper) → ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(32, c_out), c_out),
                         nn.ReLU())  # fmt: skip


class TimmSegmenter(nn.Module):
    """What the semantic heads on a timm ``features_only`` backbone share (:class:`SemanticFPN`,
    :class:`~optik.models.segment.unet_timm.TimmUNet`): the backbone, its input normalisation, padding to
    its coarsest stride, the class conv and the rebuild config. A subclass builds ``self.decoder_modules()``
    from the backbone's levels and implements :meth:`decode` (levels → features at ``out_stride``)."""

    num_classes: int
    stride: int  # coarsest backbone stride used: inputs are padded to a multiple of it
    out_stride: int  # stride of decode()'s output: logits are upsampled from it
    _config: dict[str, Any]

    def _build_backbone(self, num_classes: int, backbone: str, backbone_pretrained: bool | str, in_chans: int) -> Any:
        """Create ``self.backbone``; return its timm ``feature_info``."""
        if num_classes < 1:
            raise ModelError(f"a semantic segmentation model needs num_classes >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.backbone = timm_features(backbone, backbone_pretrained, in_chans)
        return self.backbone.feature_info

    def _finish(self, width: int, drop_rate: float, heads: tuple[nn.Module, ...], in_chans: int, img_size: int | None) -> None:
        """The class conv on ``width`` channels, initialisation of the new ``heads`` (the backbone keeps timm's
        or the pretrained init) and the backbone's normalisation."""
        self.drop = nn.Dropout2d(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Conv2d(width, self.num_classes, 1)
        for module in (*heads, self.head):
            module.apply(init_weights)
        self.default_cfg, mean, std = backbone_normalization(self.backbone, in_chans, img_size)
        # Not persistent: derived from the backbone, so checkpoints hold only learned weights.
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def decode(self, feats: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 1] → ``(B, num_classes, H, W)`` logits."""
        h, w = x.shape[-2], x.shape[-1]
        x = pad_to_multiple((x - self.mean) / self.std, self.stride)
        y = self.head(self.drop(self.decode(self.backbone(x))))
        if self.out_stride > 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]

    def get_classifier(self) -> nn.Module:
        """The 1×1 class conv (skipped by ``load_weights`` when ``num_classes`` differs)."""
        return self.head

    def config_dict(self) -> dict[str, Any]:
        """Architecture kwargs that, with ``num_classes``, rebuild this model through ``create``
        (``backbone_pretrained`` is left out: the weights file already holds the backbone)."""
        return dict(self._config)


class FPN(nn.Module):
    """Feature pyramid: ``[(B, c_i, H_i, W_i)] fine→coarse -> [(B, dim, H_i, W_i)]``."""

    def __init__(self, channels: list[int], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.smooth = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in channels)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 2, -1, -1):  # top-down: coarse maps flow into finer ones
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.smooth, laterals)]


class SemanticFPN(TimmSegmenter):
    """Panoptic FPN's semantic branch on a timm backbone (see module docstring).

    Args:
        num_classes: C, output channels.
        in_chans: input channels.
        img_size: the training side in pixels (recorded in ``default_cfg`` only; any size ≥ 32 works).
        backbone: ``"timm:<name>"``, any timm model that supports ``features_only``.
        backbone_pretrained: False, True (timm hub download) or a local weights file for the backbone.
        fpn_dim: FPN width (256 in the paper).
        head_dim: semantic-branch width (128 in the paper).
        drop_rate: channel dropout before the class conv.

    Uses the backbone's levels at stride ≥ 4 (the last four), normalises with the backbone's
    ``pretrained_cfg`` mean/std and pads inputs to the coarsest stride.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        img_size: int | None = None,
        backbone: str = "timm:resnet18",
        backbone_pretrained: bool | str = False,
        fpn_dim: int = 128,
        head_dim: int = 64,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        info = self._build_backbone(num_classes, backbone, backbone_pretrained, in_chans)
        self._config = {"backbone": backbone, "fpn_dim": fpn_dim, "head_dim": head_dim, "drop_rate": drop_rate}
        reductions = list(info.reduction())
        self.levels = [i for i, r in enumerate(reductions) if r >= 4][-_MAX_LEVELS:] or [len(reductions) - 1]
        strides = [reductions[i] for i in self.levels]
        if any(b % a for a, b in zip(strides, strides[1:])):
            raise ModelError(f"fpn backbone {backbone!r}: feature strides {strides} are not nested powers of 2")
        self.out_stride, self.stride = strides[0], strides[-1]
        self.fpn = FPN([info.channels()[i] for i in self.levels], fpn_dim)
        self.branches = nn.ModuleList()
        for s in strides:  # stride s needs log2(s / finest) upsampling steps (at least one conv)
            steps = int(round(math.log2(s // strides[0])))
            blocks: list[nn.Module] = []
            for k in range(max(steps, 1)):
                blocks.append(conv_gn_relu(fpn_dim if k == 0 else head_dim, head_dim))
                if steps:
                    blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.branches.append(nn.Sequential(*blocks))
        self._finish(head_dim, drop_rate, (self.fpn, self.branches), in_chans, img_size)

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Backbone levels → the summed semantic branches at stride ``out_stride`` (4)."""
        pyramid = self.fpn([feats[i] for i in self.levels])
        y = self.branches[0](pyramid[0])
        for branch, p in zip(self.branches[1:], pyramid[1:]):
            y = y + branch(p)
        return y


@register_model("fpn", task="semantic")
def fpn(pretrained: bool | str | None = None, **kwargs: Any) -> SemanticFPN:
    """Semantic FPN on ``backbone="timm:resnet18"`` (default; ~12.3 M params), fpn_dim 128, head_dim 64.

    ``pretrained`` (True: timm's hub weights; a path: a timm/classifier weights file) initialises the
    backbone through timm, the same as ``backbone_pretrained``.
    """
    if pretrained:
        kwargs.setdefault("backbone_pretrained", pretrained)
    return SemanticFPN(**kwargs)


__all__ = ["FPN", "SemanticFPN", "TimmSegmenter", "backbone_normalization", "conv_gn_relu", "fpn", "timm_features"]
