"""Transfer learning: head/backbone split, freezing (BatchNorm statistics included), weight loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from optik.errors import ModelError
from optik.models import (
    create,
    freeze_backbone,
    load_weights,
    model_data_config,
    read_state_dict,
    split_head,
    unfreeze,
)


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return [b.clone() for m in bns for b in (m.running_mean, m.running_var)]


def test_load_weights_skips_mismatched_head(caplog: pytest.LogCaptureFixture) -> None:
    source = create("resnet", num_classes=10)
    model = create("resnet", num_classes=3)
    head_before = model.head.weight.clone()
    with caplog.at_level(logging.WARNING):
        skipped = load_weights(model, source.state_dict())
    assert skipped == ["head.bias", "head.weight"]
    assert "head.weight" in caplog.text
    assert torch.equal(model.head.weight, head_before)
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, source.state_dict()[key]), key


def test_load_weights_same_head_loads_everything() -> None:
    source, model = create("cnn", num_classes=4), create("cnn", num_classes=4)
    assert load_weights(model, source.state_dict()) == []
    assert torch.equal(model.head.weight, source.head.weight)


def test_strict_head_raises() -> None:
    with pytest.raises(ModelError, match="head.weight"):
        load_weights(create("cnn", num_classes=3), create("cnn", num_classes=10).state_dict(), strict_head=True)


def test_body_mismatch_names_key_and_shapes() -> None:
    source = create("resnet_w32", num_classes=3).state_dict()
    with pytest.raises(ModelError) as info:
        load_weights(create("resnet", num_classes=3), source)
    msg = str(info.value)
    assert "'stem.0.0.weight'" in msg and "(32, 3, 3, 3)" in msg and "(16, 3, 3, 3)" in msg


def test_missing_and_unexpected_body_keys_raise() -> None:
    state = create("cnn", num_classes=3).state_dict()
    missing = {k: v for k, v in state.items() if k != "stages.0.0.0.weight"}
    with pytest.raises(ModelError, match="missing key 'stages.0.0.0.weight'"):
        load_weights(create("cnn", num_classes=3), missing)
    with pytest.raises(ModelError, match="unexpected key 'extra.weight'"):
        load_weights(create("cnn", num_classes=3), {**state, "extra.weight": torch.zeros(1)})


def test_num_batches_tracked_and_wrapper_prefix_tolerated() -> None:
    source = create("cnn", num_classes=3)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = create("cnn", num_classes=3)
    assert load_weights(model, state) == []
    assert torch.equal(model.stages[0][0][0].weight, source.stages[0][0][0].weight)


def test_split_head_partitions_parameters() -> None:
    model = create("mobilenet", num_classes=5)
    backbone, head = split_head(model)
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    assert len(backbone) + len(head) == len(list(model.parameters()))
    assert not {id(p) for p in backbone} & {id(p) for p in head}


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "cnn"])
def test_freeze_backbone_then_unfreeze(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, num_classes=3)
    params_before = [id(p) for p in model.parameters()]
    keys_before = list(model.state_dict())
    x = torch.randn(8, 3, 32, 32)
    model.train()
    model(x)  # move the BN statistics off their init so "unchanged" is a real check

    freeze_backbone(model)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.head.named_parameters(prefix="head")}
    stats = _bn_stats(model)
    out = model(x)
    assert all(torch.equal(a, b) for a, b in zip(stats, _bn_stats(model))), "train-mode forward moved BN stats"
    out.sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head"))
    # Frozen BN normalises with running statistics even in train mode: features equal eval features.
    with torch.no_grad():
        feats_train = model.forward_features(x)
        model.eval()
        torch.testing.assert_close(feats_train, model.forward_features(x))
    assert [id(p) for p in model.parameters()] == params_before
    assert list(model.state_dict()) == keys_before

    unfreeze(model)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    stats = _bn_stats(model)
    model(x)
    assert not all(torch.equal(a, b) for a, b in zip(stats, _bn_stats(model))), "unfrozen BN stats did not update"
    assert [id(p) for p in model.parameters()] == params_before


def test_frozen_model_survives_deepcopy_and_pickle(tmp_path: Path) -> None:
    import copy

    model = create("resnet", num_classes=3)
    freeze_backbone(model)
    twin = copy.deepcopy(model).train()
    stats = _bn_stats(twin)
    twin(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(a, b) for a, b in zip(stats, _bn_stats(twin)))
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert type(loaded.stem[0][1]).__name__ == "BatchNorm2dFrozenStats"
    unfreeze(loaded)
    assert type(loaded.stem[0][1]) is nn.BatchNorm2d


def test_model_data_config_native() -> None:
    cfg = model_data_config(create("cnn", num_classes=3, img_size=48))
    assert cfg["input_size"] == (3, 48, 48)
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert model_data_config(create("cnn", num_classes=3))["input_size"] is None


def test_read_state_dict_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"a": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(ModelError, match="state_dict"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "wrapped.pt")
    assert torch.equal(read_state_dict(tmp_path / "wrapped.pt")["w"], torch.ones(2))
