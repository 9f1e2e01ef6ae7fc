"""Config parsing: CLI strings, YAML files, and one clear error per bad key or value."""

from __future__ import annotations

import pytest

from optik.config import build_config, parse_cli_args
from optik.errors import ConfigError


def test_cli_strings_are_coerced_to_field_types():
    cfg = build_config("classify", "train", parse_cli_args(["epochs=3", "lr=0.01", "ema=true", "name=001", "scale=[0.5,1]"]))
    assert (cfg.epochs, cfg.lr, cfg.ema, cfg.name, cfg.scale) == (3, 0.01, True, "001", (0.5, 1.0))


def test_ultralytics_aliases():
    assert build_config("classify", "train", {"lr0": "0.02"}).lr == 0.02


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*did you mean 'epochs'"):
        build_config("classify", "train", {"epoch": "3"})


def test_bad_value_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        build_config("classify", "train", {"optimizer": "lbfgs"})
    msg = str(e.value)
    assert "'optimizer'" in msg and "'lbfgs'" in msg and "adamw" in msg and "\n" not in msg


@pytest.mark.parametrize("kv", [{"epochs": "x"}, {"epochs": "0"}, {"device": "gpu"}, {"scale": "[0.9,0.1]"}])
def test_bad_values_are_config_errors(kv):
    with pytest.raises(ConfigError, match=repr(next(iter(kv)))):
        build_config("classify", "train", kv)


def test_yaml_cfg_file_and_override_precedence(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("epochs: 7\nlr: 0.5\nmodel: resnet\n")
    cfg = build_config("classify", "train", {"cfg": str(f), "lr": "0.1"})
    assert (cfg.epochs, cfg.lr, cfg.model) == (7, 0.1, "resnet")


def test_yaml_cfg_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config("classify", "train", {"cfg": str(tmp_path / "nope.yaml")})
    f = tmp_path / "bad.yaml"
    f.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        build_config("classify", "train", {"cfg": str(f)})


def test_arg_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_cli_args(["epochs", "3"])


def test_unknown_mode():
    with pytest.raises(ConfigError, match="unknown mode"):
        build_config("classify", "fly", {})


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_classification_augmentations_are_refused_for_box_and_mask_tasks(task):
    """mixup/scale/augment… would be silently ignored by the detect/segment pipelines: an error names the key."""
    with pytest.raises(ConfigError, match="unknown key 'mixup' for .* 'mixup' is a classify train key"):
        build_config(task, "train", {"data": "x", "mixup": "0.2"})
    cfg = build_config(task, "train", {"data": "x", "hflip": "0.3"})  # their own keys pass
    assert cfg.hflip == 0.3
    assert build_config("classify", "train", {"data": "x", "mixup": "0.2"}).mixup == 0.2


def test_a_mode_the_task_does_not_offer_lists_its_modes():
    """The catalog decides which modes a task has: sam has no train mode, detect no explain mode."""
    with pytest.raises(ConfigError, match="unknown mode 'train' for sam; sam offers: predict"):
        build_config("sam", "train", {})
    with pytest.raises(ConfigError, match="detect offers: train, val, predict"):
        build_config("detect", "explain", {})


@pytest.mark.parametrize(("task", "mode", "old", "new", "value"), [
    ("generate", "sample", "scheduler", "sampler", "euler"),
    ("generate", "train", "val_scheduler", "val_sampler", "dpm++"),
    ("edit", "edit", "scheduler", "sampler", "ddim"),
    ("sam", "predict", "labels", "point_labels", [1]),
])  # fmt: skip
def test_old_key_spellings_still_work_with_a_note(task, mode, old, new, value, caplog):
    extra = {"points": [[1, 2]]} if task == "sam" else {}
    cfg = build_config(task, mode, {old: value, **extra})
    assert getattr(cfg, new) == value and old not in type(cfg).model_fields
    assert f"key '{old}' is now '{new}'" in caplog.text


def test_generate_train_scheduler_is_still_the_lr_schedule():
    cfg = build_config("generate", "train", {"scheduler": "cosine", "val_sampler": "euler"})
    assert (cfg.scheduler, cfg.val_sampler) == ("cosine", "euler")
