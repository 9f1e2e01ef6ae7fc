"""Tiny random OWL-ViT / OWLv2 detectors written locally for the open-vocabulary tests (no download)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch


def char_tokenizer(max_length: int = 16) -> tuple[object, dict[str, int]]:
    """A character-level CLIPTokenizer (no merges) whose start token's id is 1, not 0, and its vocabulary."""
    transformers = pytest.importorskip("transformers")
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase + string.digits + ".":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    try:
        return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length), vocab
    except TypeError:  # transformers 4.x: the slow tokenizer reads files
        pytest.skip("this transformers version builds CLIPTokenizer from files only")


def write_tiny_owl(path: Path, version: int = 1, image_size: int = 64, seed: int = 0) -> Path:
    """A random 1-layer OWL-ViT (``version=1``) or OWLv2 (``2``) with a character-level vocabulary, its tokenizer and
    image processor, saved with save_pretrained. The start token's id is not 0: transformers treats queries whose
    first id is 0 as padding."""
    transformers = pytest.importorskip("transformers")
    tok, vocab = char_tokenizer()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=16)
    torch.manual_seed(seed)
    if version == 1:
        config = transformers.OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32)
        transformers.OwlViTForObjectDetection(config).save_pretrained(path)
        size = {"height": image_size, "width": image_size}
        transformers.OwlViTImageProcessor(size=size, crop_size=size).save_pretrained(path)
        processor_cls = transformers.OwlViTProcessor
        image_processor = transformers.OwlViTImageProcessor.from_pretrained(path)
    else:
        config = transformers.Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
        transformers.Owlv2ForObjectDetection(config).save_pretrained(path)
        transformers.Owlv2ImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
        processor_cls = transformers.Owlv2Processor
        image_processor = transformers.Owlv2ImageProcessor.from_pretrained(path)
    processor_cls(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path
