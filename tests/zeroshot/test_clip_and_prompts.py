"""The tiny CLIP's loss and towers, prompt ensembling, and the transformers CLIP adapter against CLIPModel itself."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from optik.zeroshot.clip import MAX_LOGIT_SCALE, TinyCLIP, contrastive_loss
from optik.zeroshot.prompts import class_embeddings
from hf_tiny import write_tiny_hf_clip

VOCAB = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "blue", "circle", "star", "small"]


def tiny(**kw) -> TinyCLIP:
    torch.manual_seed(0)
    return TinyCLIP(VOCAB, "cnn", embed_dim=16, text_width=16, text_layers=1, text_heads=2, context_length=8, img_size=32, **kw)


def test_contrastive_loss_is_clips_symmetric_cross_entropy() -> None:
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = (scale * img @ txt.T).tolist()
    by_hand = 0.0
    for i in range(5):  # -log softmax of the diagonal, rows and columns
        by_hand -= logits[i][i] - math.log(sum(math.exp(v) for v in logits[i]))
        by_hand -= logits[i][i] - math.log(sum(math.exp(logits[j][i]) for j in range(5)))
    assert float(contrastive_loss(img, txt, scale)) == pytest.approx(by_hand / 10, rel=1e-5)
    assert float(contrastive_loss(img, txt, scale, torch.eye(5, dtype=torch.bool))) == pytest.approx(by_hand / 10, rel=1e-5)


def test_duplicate_captions_share_the_target() -> None:
    # Images 0 and 1 have the same caption text: each row's target is split evenly over both (by hand below).
    torch.manual_seed(1)
    img, txt = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    pos = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = (5.0 * img @ txt.T).tolist()

    def row_loss(row: list[float], targets: list[int]) -> float:
        lse = math.log(sum(math.exp(v) for v in row))
        return -sum(row[t] - lse for t in targets) / len(targets)

    groups = [[0, 1], [0, 1], [2]]
    i2t = sum(row_loss(logits[i], groups[i]) for i in range(3)) / 3
    t2i = sum(row_loss([logits[j][i] for j in range(3)], groups[i]) for i in range(3)) / 3
    got = float(contrastive_loss(img, txt, torch.tensor(5.0), pos))
    assert got == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    assert got != pytest.approx(float(contrastive_loss(img, txt, torch.tensor(5.0))), rel=1e-3)


def test_logit_scale_is_clamped_at_100() -> None:
    model = tiny()
    assert float(model.scale()[0].detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale()[0].detach()) == pytest.approx(math.exp(MAX_LOGIT_SCALE))


def test_text_embedding_ignores_padding_and_context_length() -> None:
    model = tiny().eval()
    short = model.encode_tokens(model.tokenizer.encode(["a red circle"], 6))
    long = model.encode_tokens(model.tokenizer.encode(["a red circle"], 8))
    assert torch.allclose(short, long, atol=1e-5)
    assert not torch.allclose(model.encode_text(["a red circle"]), model.encode_text(["a blue circle"]))


def test_prompt_ensembling_is_mean_of_normalised_then_normalised() -> None:
    model = tiny().eval()
    w = class_embeddings(model, ["red circle", "blue star"], ["a {}", "a small {}"])
    for row, name in zip(w, ["red circle", "blue star"]):
        e = F.normalize(model.encode_text([f"a {name}", f"a small {name}"]), dim=-1)
        assert torch.allclose(row, F.normalize(e.mean(0), dim=0), atol=1e-6)


def test_config_dict_rebuilds_the_same_model(tmp_path: Path) -> None:
    model = tiny()
    again = TinyCLIP(**model.config_dict())
    again.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.eval().encode_image(x), again.eval().encode_image(x))
    assert again.tokenizer.vocab == VOCAB


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("hfclip"))


def test_hf_adapter_logits_equal_clipmodel(hf_clip: Path) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    from optik.zeroshot.hf import HFClip

    model = HFClip.load(str(hf_clip))
    assert model.default_cfg["input_size"] == (3, 32, 32) and not model.sigmoid
    ref, tok = CLIPModel.from_pretrained(hf_clip).eval(), CLIPTokenizer.from_pretrained(hf_clip)
    x, texts = torch.rand(3, 3, 32, 32), ["a red circle", "a dog", "two blue stars"]
    with torch.no_grad():
        want = ref(pixel_values=x, **tok(texts, padding=True, return_tensors="pt")).logits_per_image
        scale, bias = model.scale()
        got = scale * model.encode_image(x) @ model.encode_text(texts).T
    assert bias is None and torch.allclose(got, want, atol=1e-4)
