"""A tiny CLIP on a pretrained image tower: ``pretrained=`` loads the tower (the real ImageNet EfficientNet-Lite0), its
classifier becomes the image projection; ``freeze=backbone`` locks the tower (LiT, Zhai et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from optik import Model
from optik.errors import ConfigError
from optik.weights import load_state_dict

DATA = "synthetic:captions?n=48&val=16"
KW = dict(epochs=1, imgsz=32, batch=16, embed_dim=16, text_width=16, text_layers=1, text_heads=2, plots=False)


def test_locked_pretrained_tower_keeps_its_weights_and_trains_the_rest(lite0_weights, tmp_path) -> None:
    m = Model("timm:tf_efficientnet_lite0", task="zeroshot")
    m.train(data=DATA, pretrained=str(lite0_weights), freeze="backbone", project=str(tmp_path), name="lit", **KW)
    trained = load_state_dict(m.run_dir / "weights" / "last.safetensors")
    ref = load_state_dict(lite0_weights)
    body = [k for k in ref if not k.startswith("classifier.")]
    assert len(body) > 100
    for k in body:  # every backbone tensor (BN running statistics included) is the ImageNet one, untouched
        torch.testing.assert_close(trained[f"visual.{k}"], ref[k], rtol=0, atol=0, msg=k)
    assert trained["visual.classifier.weight"].shape == (16, 1280)  # the projection: new and trained

    unlocked = Model("timm:tf_efficientnet_lite0", task="zeroshot")
    unlocked.train(data=DATA, pretrained=str(lite0_weights), project=str(tmp_path), name="ft", **KW)
    moved = load_state_dict(unlocked.run_dir / "weights" / "last.safetensors")
    assert any(not torch.equal(moved[f"visual.{k}"], ref[k]) for k in body)  # without freeze the tower trains


def test_two_phase_freeze_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="freeze_epochs"):
        Model("cnn", task="zeroshot").train(data=DATA, freeze="backbone", freeze_epochs=1, project=str(tmp_path), **KW)
