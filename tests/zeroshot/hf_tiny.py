"""A tiny random transformers CLIP written locally for the zeroshot tests (no download)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch


def write_tiny_hf_clip(path: Path) -> Path:
    """A random 1-layer CLIP with a character-level BPE vocabulary, saved with save_pretrained (no download)."""
    transformers = pytest.importorskip("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    try:
        tok = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    except TypeError:  # transformers 4.x: the slow tokenizer reads files
        pytest.skip("this transformers version builds CLIPTokenizer from files only")
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    tok.save_pretrained(path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path
