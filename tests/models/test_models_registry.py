"""Registry: names → builders keyed by task; create() is the one door, errors name the way out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from optik.errors import ModelError
from optik.models import create, list_models, register_model, registry


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


# --- registration on import (timm's way) ------------------------------------------------------------
def test_registry_imports_no_model_package() -> None:
    """registry.py is the mechanism only: models register themselves when ``optik.models`` is imported."""
    import ast

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("optik")} <= {"optik.errors", "optik.models.transfer"}


def test_every_task_has_models_and_adapters_resolve() -> None:
    """Each package registered its models; every lazy ``module:function`` adapter names a real function."""
    import ast
    import importlib.util

    for task in ("classify", "detect", "semantic", "instance", "panoptic", "generate"):
        assert list_models(task=task), task
    assert ("generate", "hf") in registry._ADAPTERS and ("classify", "timm") in registry._ADAPTERS
    for (task, prefix), target in registry._ADAPTERS.items():
        if not isinstance(target, str):
            continue
        module, _, fn = target.partition(":")
        spec = importlib.util.find_spec(module)  # finds the file without importing transformers & co.
        assert spec is not None and spec.origin, target
        defs = {n.name for n in ast.parse(Path(spec.origin).read_text()).body if isinstance(n, ast.FunctionDef)}
        assert fn in defs, f"{prefix}: for {task}: {target}"


def test_import_models_stays_light() -> None:
    """``import optik.models`` registers everything without importing transformers or diffusers."""
    import subprocess
    import sys

    code = ("import sys, optik.models; print(sorted(m for m in ('transformers', 'diffusers') if m in sys.modules)); "
            "print(optik.models.list_models(task='generate'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.stdout.splitlines() == ["[]", "['ae', 'cgan', 'cvae', 'dcgan', 'ddpm', 'vae']"], out.stdout + out.stderr


def test_generate_hf_adapter_routes_to_diffusers(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="config.json|UNet2DModel"):
        create(f"hf:{tmp_path}", task="generate")
    with pytest.raises(ModelError, match="generate"):
        create("tv:nope", task="generate")


def test_optik_info_lists_models_from_the_registry_without_naming_tasks():
    """`optik info` loops over the registry's keys; each adapter says what it takes (its hint)."""
    from optik.models import adapter_hints, model_tasks

    keys = model_tasks()
    assert {"classify", "detect", "semantic", "instance", "panoptic", "generate"} <= set(keys)
    assert any("tv:fasterrcnn" in h for h in adapter_hints("detect"))
    assert any(h.startswith("timm:") for h in adapter_hints("classify"))
    source = (__import__("pathlib").Path(__import__("optik.info").info.__file__)).read_text()
    assert not any(f'"{k}"' in source for k in keys)
