"""Vision Transformer (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words"): the image is cut
into patches, each linearly embedded; a learnable CLS token and position embeddings are added and a
stack of pre-norm encoder blocks (x + MHSA(LN(x)); x + MLP(LN(x))) mixes them; the CLS token's final
state is the image feature. Small sizes for CPU. (Not Wu et al.'s TinyViT — that one is
``timm:tiny_vit_5m_224``.)

>>> model = create("tiny_vit", num_classes=10, img_size=32, patch_size=4)   # doctest: +SKIP
>>> model(torch.zeros(2, 3, 32, 32)).shape                                 # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ModelError
from optik.models.layers import ImageClassifier, Mlp, to_2tuple
from optik.models.registry import register_model

Size = int | tuple[int, int]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches → linear embedding, as one strided conv.

    ``(B, C, H, W) -> (B, (H / p) * (W / p), dim)``.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, ``(B, N, dim) -> (B, N, dim)``."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"tiny_vit: embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, dim / heads)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(ImageClassifier):
    """Patch embed → [CLS] + tokens + position embedding → encoder blocks → LayerNorm → CLS → head.

    Inputs of another size than ``img_size`` still work: the position embeddings are resized
    (bicubic) to the new patch grid, as in fine-tuning at a higher resolution.

    Args:
        img_size: training input side; fixes the learned position-embedding grid.
        patch_size: side of a square patch; ``img_size`` must be a multiple of it.
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = to_2tuple(img_size)
        if h % patch_size or w % patch_size:
            raise ModelError(f"tiny_vit: img_size {(h, w)} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid_size = (h // patch_size, w // patch_size)
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*(EncoderBlock(embed_dim, num_heads, mlp_ratio, drop_rate) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.init_head(embed_dim, num_classes, drop_rate, in_chans, (h, w))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        gh, gw = self.grid_size
        patch_pos = patch_pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self._pos_embed(grid))
        return self.norm(self.blocks(x))[:, 0]


def _vit(img_size: Size | None, patch_size: int | None, **kwargs: Any) -> VisionTransformer:
    img_size = 32 if img_size is None else img_size
    if patch_size is None:  # default: about an 8×8 patch grid, cheap at any size
        h, w = to_2tuple(img_size)
        patch_size = next(p for p in range(max(1, min(h, w) // 8), 0, -1) if h % p == 0 and w % p == 0)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, **kwargs)


@register_model("tiny_vit")
def tiny_vit(img_size: Size | None = None, patch_size: int | None = None, **kwargs: Any) -> VisionTransformer:
    """dim 64, 4 blocks, 4 heads; ``img_size`` defaults to 32, ``patch_size`` to about ``img_size // 8``."""
    kwargs = {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, **kwargs}
    return _vit(img_size, patch_size, **kwargs)


@register_model("small_vit")
def small_vit(img_size: Size | None = None, patch_size: int | None = None, **kwargs: Any) -> VisionTransformer:
    """dim 192, 6 blocks, 3 heads (ViT-Ti width); ``img_size`` 32, ``patch_size`` about ``img_size // 8`` by default."""
    kwargs = {"embed_dim": 192, "depth": 6, "num_heads": 3, "mlp_ratio": 4.0, **kwargs}
    return _vit(img_size, patch_size, **kwargs)
