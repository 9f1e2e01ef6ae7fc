"""SigLIP through ``optik zeroshot`` (``hf:`` dual encoders with a sigmoid loss): a tiny random SiglipModel saved
locally, loaded through the real from_pretrained path; probabilities are per-label sigmoids, equal to transformers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model

from owl_tiny import char_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    """A 1-layer SigLIP; its tokenizer is a character-level CLIPTokenizer (SigLIP's own needs sentencepiece, which
    is not installed here) — the zero-shot path only needs ids, padding and the model's pooled text feature."""
    path = tmp_path_factory.mktemp("siglip") / "model"
    tok, vocab = char_tokenizer()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():  # a bias and scale away from their init, so a wrong use of either shows
        model.logit_bias.fill_(-1.5)
        model.logit_scale.fill_(1.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def _reference(path: Path, image: np.ndarray, labels: list[str]) -> torch.Tensor:
    """transformers: processor pixels + max-length-padded ids → SiglipModel → sigmoid(logits_per_image)."""
    model = transformers.SiglipModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    proc = transformers.SiglipImageProcessor.from_pretrained(path)
    pixels = proc(images=[image], return_tensors="pt")["pixel_values"]
    ids = tok(labels, padding="max_length", max_length=16, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits_per_image.sigmoid()[0]


def test_siglip_probabilities_are_sigmoids_equal_to_transformers(siglip_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # the model's own size: no resampling differences
    Image.fromarray(image).save(tmp_path / "img.png")
    labels = ["a cat", "a dog", "a red star"]
    r = Model(f"hf:{siglip_dir}", task="zeroshot").predict(str(tmp_path / "img.png"), labels=labels, templates=["{}"])[0]
    ours = r.probs.data.float()
    expected = _reference(siglip_dir, image, labels)
    torch.testing.assert_close(ours, expected, atol=2e-3, rtol=0)  # bicubic resample of PIL vs torchvision at equal size
    assert abs(float(ours.sum()) - 1.0) > 1e-3  # independent sigmoids, not a softmax over the labels


def test_siglip_scores_do_not_depend_on_the_other_labels(siglip_dir: Path, tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    m = Model(f"hf:{siglip_dir}", task="zeroshot")
    a = m.predict(str(tmp_path / "img.png"), labels=["a cat", "a dog"], templates=["{}"])[0].probs.data
    b = m.predict(str(tmp_path / "img.png"), labels=["a cat", "a boat", "a tree"], templates=["{}"])[0].probs.data
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)  # a softmax would change with the label set
