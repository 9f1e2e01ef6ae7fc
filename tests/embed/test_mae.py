"""MAE: masking, the masked-only loss and the norm_pix target against hand computations; training and exact
resume through the Trainer; a non-ViT backbone is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from optik.config import build_config
from optik.embed.ssl import EmbedModel, mae_target, patchify, random_masking
from optik.engine.trainer import Trainer
from optik.errors import ConfigError
from optik.weights import load_state_dict

VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _mae(**kw) -> EmbedModel:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, num_classes=0, **VIT)
    return EmbedModel(vit, 32, "mae", decoder_dim=32, decoder_depth=1, **kw)


def test_masking_keeps_the_right_number_of_patches() -> None:
    torch.manual_seed(0)
    keep, mask, restore = random_masking(3, 16, 0.75)
    assert keep.shape == (3, 4) and mask.shape == (3, 16)
    assert (mask.sum(1) == 12).all()
    for b in range(3):  # the kept ids are exactly the unmasked patches, all distinct
        assert sorted(keep[b].tolist()) == torch.nonzero(mask[b] == 0).flatten().tolist()
    with pytest.raises(ValueError, match="keeps 0"):
        random_masking(1, 4, 0.8)


def test_norm_pix_target_is_per_patch_standardisation() -> None:
    torch.manual_seed(1)
    imgs = torch.randn(2, 3, 16, 16)
    a = imgs.numpy().astype(np.float64)
    expected = np.zeros((2, 4, 8 * 8 * 3))
    for b in range(2):
        for i in range(2):
            for j in range(2):
                patch = a[b, :, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8].transpose(1, 2, 0).reshape(-1)  # (row, col, channel)
                expected[b, i * 2 + j] = (patch - patch.mean()) / np.sqrt(patch.var(ddof=1) + 1e-6)
    assert np.allclose(mae_target(imgs, 8, norm_pix=True).numpy(), expected, atol=1e-5)
    assert np.allclose(mae_target(imgs, 8, norm_pix=False).numpy(), patchify(imgs, 8).numpy())


def test_loss_counts_only_masked_patches_and_encoder_sees_only_visible() -> None:
    m = _mae().train()
    imgs = torch.randn(2, 3, 32, 32)
    fixed = (torch.tensor([[0, 5, 10, 15], [3, 2, 1, 0]]), None, None)
    mask = torch.ones(2, 16)
    for b in range(2):
        mask[b, fixed[0][b]] = 0
    restore = torch.stack([torch.argsort(torch.cat([k, torch.tensor([i for i in range(16) if i not in k.tolist()])]))
                           for k in fixed[0]])  # fmt: skip
    out = m.mae_forward(imgs, (fixed[0], mask, restore))
    err = ((out["pred"].detach().double() - out["target"].double()) ** 2).mean(-1).numpy()
    hand = sum(err[b, i] for b in range(2) for i in range(16) if mask[b, i] == 1) / 24
    assert float(out["loss"].detach()) == pytest.approx(hand, rel=1e-5)
    assert m.mae_encode(imgs, fixed[0]).shape == (2, 5, 32)  # cls + the 4 visible patches
    # Changing only the visible patches' pixels changes the loss; changing a masked one's input does not touch the
    # encoder (its target changes, so compare the encoder outputs).
    other = imgs.clone()
    other[0, :, 8:16, 8:16] += 1.0  # patch 5 of image 0 (visible)
    other[1, :, 24:32, 24:32] += 1.0  # patch 15 of image 1 (masked)
    enc_a, enc_b = m.mae_encode(imgs, fixed[0]), m.mae_encode(other, fixed[0])
    assert not torch.allclose(enc_a[0], enc_b[0]) and torch.allclose(enc_a[1], enc_b[1])
    out["loss"].backward()
    assert m.backbone.blocks[0].attn.qkv.weight.grad is not None and m.decoder.mask_token.grad is not None
    m.eval()  # evaluation: the pooled (cls) feature of the whole image
    assert m(imgs).shape == (2, 32)


def test_non_vit_backbone_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ViT backbone"):
        EmbedModel(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), 8, "mae")
    with pytest.raises(ConfigError, match="ViT backbone"):
        Trainer(build_config("embed", "train", {**FAST, "model": "cnn", "backbone_args": None, "project": str(tmp_path), "epochs": 1})).fit()


SHAPES = "synthetic:shapes?n=40&size=32&classes=2&seed=0"
FAST = {"data": SHAPES, "model": "timm:vit_tiny_patch16_224", "backbone_args": VIT, "method": "mae", "imgsz": 32, "batch": 16,
        "plots": False, "decoder_dim": 32, "decoder_depth": 1, "amp": False}  # fmt: skip


def test_mae_trains_and_resume_is_exact(tmp_path: Path, interrupt_after) -> None:
    straight = Trainer(build_config("embed", "train", {**FAST, "project": str(tmp_path / "a"), "epochs": 2})).fit()
    assert 0.0 <= straight["metrics"]["knn_top1"] <= 1.0
    interrupt_after(build_config("embed", "train", {**FAST, "project": str(tmp_path / "b"), "name": "r", "epochs": 2}), 1)
    resumed = Trainer(build_config("embed", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    a, b = load_state_dict(straight["last"]), load_state_dict(resumed["last"])
    assert "decoder.mask_token" in a and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The embed run rebuilds from its own model_config (the small ViT and the decoder) for evaluation.
    from optik.embed.build import build_embedder

    model, _ = build_embedder(straight["last"], img_size=32)
    assert model.method == "mae" and model.patch == 8 and model(torch.zeros(1, 3, 32, 32)).shape == (1, 32)
