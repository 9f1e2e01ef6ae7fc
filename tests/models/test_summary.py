"""optik.models.summary / `optik classify summary`: parameters, MACs and receptive fields against hand
formulas, torchvision's published figures and the literature."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from optik.config import build_config
from optik.engine.summary import summary
from optik.errors import ConfigError
from optik.models import create
from optik.models.summary import summarize


def conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("name", ["cnn", "resnet", "mobilenet", "tiny_vit", "mlp", "timm:resnet18", "timm:vit_tiny_patch16_224"])
def test_counts_add_up_and_equal_numel(name):
    model = create(name, num_classes=7, img_size=32)
    s = summarize(model, 32)
    assert s.params == sum(p.numel() for p in model.parameters())
    assert s.trainable_params == s.params
    assert sum(r.params for r in s.layers) == s.params
    assert sum(r.macs for r in s.layers) == s.macs > 0
    d1 = summarize(model, 32, depth=1)  # coarser rows, same totals
    assert (sum(r.params for r in d1.layers), sum(r.macs for r in d1.layers)) == (s.params, s.macs)
    assert all(r.name.count(".") == 0 for r in d1.layers)


def test_tied_and_frozen_parameters_count_once():
    emb = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(emb, nn.ReLU(), nn.Conv2d(3, 3, 1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    model[2].weight = emb.weight  # tied
    model[4].requires_grad_(False)
    s = summarize(model, 4)
    assert s.params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.layers)
    assert s.trainable_params == s.params - sum(p.numel() for p in model[4].parameters())


@pytest.mark.parametrize(("k", "s", "p", "d", "g", "cin", "cout", "size"), [
    (3, 1, 1, 1, 1, 3, 8, 17), (5, 2, 0, 1, 1, 4, 6, 23), (3, 2, 2, 2, 1, 2, 5, 19), (3, 1, 1, 1, 4, 8, 12, 10),
    (7, 3, 3, 1, 8, 8, 8, 31), (1, 1, 0, 1, 1, 16, 4, 9),
])  # fmt: skip
def test_conv_macs_equal_the_hand_formula(k, s, p, d, g, cin, cout, size):
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g)
    summ = summarize(conv, size)
    o = conv_out(size, k, s, p, d)
    assert summ.macs == cout * o * o * (cin // g) * k * k
    assert summ.layers[0].output_shape == [1, cout, o, o] and summ.params == cout * (cin // g) * k * k + cout


def test_linear_macs_equal_the_hand_formula():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 11), nn.ReLU(), nn.Linear(11, 4))
    s = summarize(net, 5)
    assert [r.macs for r in s.layers] == [0, 75 * 11, 0, 11 * 4]
    assert s.macs == 75 * 11 + 11 * 4 and s.flops == 2 * s.macs


def test_receptive_field_of_a_hand_built_stack():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),  # r 3, j 1
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # r 3 + 2·1 = 5, j 2
        nn.MaxPool2d(2),  # r 5 + 1·2 = 7, j 4
        nn.Conv2d(4, 4, 3, dilation=2, padding=2),  # effective k 5: r 7 + 4·4 = 23, j 4
        nn.AvgPool2d((3, 1), stride=(1, 1)),  # r 23 + 2·4 = 31 tall, 23 wide
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    s = summarize(net, 32)
    assert s.receptive_field == (31, 23) and s.effective_stride == (4, 4)
    assert [r.receptive_field for r in s.layers[:7]] == [(3, 3), (3, 3), (3, 3), (5, 5), (7, 7), (23, 23), (31, 23)]
    assert s.layers[-1].receptive_field is None  # the head has no field of its own
    assert "31×23 px (effective stride 4)" in s.to_text()


@pytest.mark.parametrize(("name", "rf"), [("alexnet", 195), ("vgg16", 212), ("resnet18", None)])
def test_torchvision_models_match_published_figures(name, rf):
    """Params and MACs equal torchvision's own metadata (``_ops`` is GMACs at 224 px); the fields equal
    Araujo et al. 2019 (Distill), table 1: AlexNet 195, VGG-16 212; ResNet is not a plain stack."""
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    s = summarize(torchvision.models.get_model(name), 224)
    assert s.params == meta["num_params"]
    assert s.macs / 1e9 == pytest.approx(meta["_ops"], abs=5e-4)
    assert s.receptive_field == (None if rf is None else (rf, rf))
    if rf is None:
        assert s.receptive_field_note.startswith("n/a (not a plain conv stack")


class InplaceResidual(nn.Module):
    """Every layer is fed the previous layer's output object — but a skip was added into it in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        y += x
        return self.act(y)


class FunctionalBetween(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3), nn.Conv2d(3, 3, 3)

    def forward(self, x):
        return self.b(torch.nn.functional.max_pool2d(self.a(x), 2))  # a pooling no hook sees


@pytest.mark.parametrize("make", [InplaceResidual, FunctionalBetween, *(lambda n=n: create(n, num_classes=3, img_size=32)
                                                                          for n in ("resnet", "tiny_vit", "mlp"))])  # fmt: skip
def test_not_a_plain_stack_says_so(make):
    s = summarize(make(), 32)
    assert s.receptive_field is None and s.effective_stride is None
    assert s.receptive_field_note.startswith("n/a (not a plain conv stack")
    assert all(r.receptive_field is None for r in s.layers)


def test_modes_are_restored_and_nothing_is_trained():
    model = create("cnn", num_classes=3)
    model.train()
    model.stages[0].eval()  # a frozen part keeps its own mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, 16)
    assert model.training and not model.stages[0].training and model.stages[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats untouched


def test_runner_on_names_weights_and_errors(tiny_run, tmp_path):
    out = summary(build_config("classify", "summary", {"model": "cnn", "imgsz": 32, "num_classes": 5, "in_chans": 1,
                                                       "save": True, "project": str(tmp_path)}))  # fmt: skip
    ref = create("cnn", num_classes=5, in_chans=1)
    assert out["params"] == sum(p.numel() for p in ref.parameters()) and out["input_shape"] == [1, 1, 32, 32]
    saved = json.loads((tmp_path / "classify" / "summary" / "summary.json").read_text())
    assert saved["receptive_field"] == [22, 22] and saved["macs"] == out["macs"]
    assert "Conv2d" in (tmp_path / "classify" / "summary" / "summary.txt").read_text()

    trained = summary(build_config("classify", "summary", {"model": tiny_run["run_dir"]}))
    assert trained["imgsz"] == 32 and trained["layers"][-1]["output_shape"] == [1, 3]  # its imgsz and its 3 classes
    assert "run_dir" not in trained  # save is off by default
    with pytest.raises(ConfigError, match="in_chans"):
        summary(build_config("classify", "summary", {"model": tiny_run["run_dir"], "in_chans": 1}))
    with pytest.raises(ConfigError, match="missing key 'model'"):
        summary(build_config("classify", "summary", {}))


def test_cli_prints_the_table(tmp_path):
    p = subprocess.run([sys.executable, "-m", "optik", "classify", "summary", "model=cnn", "imgsz=32"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    text = p.stdout + p.stderr
    for needle in ("stages.0.0.0", "Conv2d", "1×16×32×32", "receptive field 22 px", "MACs"):
        assert needle in text, needle
    assert not (tmp_path / "runs").exists()  # save=false: nothing written
