"""The tiny CLIP's text tower: a causal Transformer over word tokens whose end-token feature, layer-normed and
projected, is the text embedding (Radford et al. 2021, §2.4; widths scaled down).

>>> enc = TextTransformer(vocab_size=20, embed_dim=32, width=32, layers=1, heads=2, context_length=8)
>>> enc(torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0]])).shape
torch.Size([1, 32])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optik.zeroshot.tokenizer import END


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 128, width: int = 128, layers: int = 2, heads: int = 4,
                 context_length: int = 16) -> None:  # fmt: skip
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        # Causal: a token sees only those before it, so the end token summarises the text and padding after it
        # changes nothing (no padding mask needed).
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(context_length), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, L)`` token ids (L ≤ context_length) → ``(B, embed_dim)`` unnormalised text features."""
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = self.transformer(x, mask=self.causal_mask[:n, :n], is_causal=True)
        x = self.ln_final(x)
        # The end token's position (the first END; a text cut to length keeps END last).
        end = (tokens == END).int().argmax(dim=1)
        return self.projection(x[torch.arange(len(tokens), device=tokens.device), end])
