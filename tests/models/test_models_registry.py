"""Registry: names → builders keyed by task; create() is the one door, errors name the way out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from optik.errors import ModelError
from optik.models import create, list_models, register_model
from optik.models import registry


def test_list_models_has_native_zoo() -> None:
    names = list_models()
    assert {"mlp", "cnn", "vgg", "resnet", "mobilenet", "tiny_vit"} <= set(names)
    assert names == sorted(names)
    assert list_models("res*") and all(n.startswith("res") for n in list_models("res*"))
    assert "cnn" in list_models(task="classify")
    assert "cnn" not in list_models(task="detect")


def test_register_model_and_create() -> None:
    name = "test_models_registry_dummy"

    @register_model(name)
    def dummy(num_classes: int = 1000, in_chans: int = 3, img_size=None, **kwargs):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    try:
        assert name in list_models()
        assert create(name, num_classes=4)(torch.randn(2, 3, 8, 8)).shape == (2, 4)
        with pytest.raises(ModelError, match="already registered"):
            register_model(name)(lambda **kw: None)
    finally:
        del registry._MODELS[("classify", name)]


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ModelError, match="did you mean 'resnet'") as info:
        create("resnte")
    assert "mobilenet" in str(info.value)  # the available names are listed


def test_timm_only_name_points_to_timm_prefix() -> None:
    with pytest.raises(ModelError, match="timm:resnet18"):
        create("resnet18")


def test_other_task_is_an_error() -> None:
    with pytest.raises(ModelError, match="for task 'detect'") as info:
        create("resnet", task="detect")
    assert "classify" in str(info.value)
    with pytest.raises(ModelError, match="detect"):
        create("timm:resnet18", task="detect")


def test_bad_kwarg_is_model_error() -> None:
    with pytest.raises(ModelError, match="cnn"):
        create("cnn", no_such_option=1)


def test_native_pretrained_true_is_an_error() -> None:
    with pytest.raises(ModelError, match="pretrained"):
        create("cnn", pretrained=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_native_pretrained_from_file_keeps_backbone(tmp_path: Path, suffix: str) -> None:
    source = create("cnn", num_classes=10)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:  # a training checkpoint wrapping the weights
        torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)

    model = create("cnn", num_classes=3, pretrained=str(path))
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, source.state_dict()[key]), key


def test_pretrained_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        create("cnn", num_classes=3, pretrained=str(tmp_path / "nope.safetensors"))
