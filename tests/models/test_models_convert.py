"""``optik models convert`` and the pretrained-model path, on small models (no real weights needed):
renaming by name then by order with its refusals, self-describing output files, ``timm:<arch> pretrained=<file>``
metadata, and the eval preprocessing a pretrained cfg asks for (against timm's own transform)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from optik.errors import ConfigError, ModelError
from optik.models import convert_checkpoint, convert_state_dict, create
from optik.models.pretrained import builtin_meta, imagenet_classes
from optik.weights import read_meta


class Foreign(nn.Module):
    """Another implementation's names for ``conv → bn → relu → pool → linear`` (EfficientNet-PyTorch style)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 4, 3, bias=False)
        self._bn0 = nn.BatchNorm2d(4)
        self._fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(torch.relu(self._bn0(self._conv_stem(x))).mean((2, 3)))


def ours() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, bias=False), bn=nn.BatchNorm2d(4), act=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=nn.Linear(4, 5)))  # fmt: skip


def trained_foreign() -> Foreign:
    torch.manual_seed(0)
    src = Foreign()
    src.train()(torch.randn(8, 3, 9, 9))  # non-trivial BatchNorm running statistics
    return src.eval()


def test_by_order_maps_values_so_the_networks_agree():
    src = trained_foreign()
    state, report = convert_state_dict(src.state_dict(), ours())
    assert report.counts == {"name": 0, "order": 7}
    assert report.pairs[0] == ("conv.weight", "_conv_stem.weight", "order") and report.pairs[-1] == ("head.bias", "_fc.bias", "order")
    model = ours()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(model.eval()(x), src(x))  # the same function, not just the same shapes


def test_exact_names_first_and_wrapper_prefixes_stripped():
    model = ours()
    own = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}  # a DDP checkpoint
    _, report = convert_state_dict(own, ours())
    assert report.counts == {"name": 7, "order": 0}
    mixed = {("head.weight" if k == "_fc.weight" else k): v for k, v in trained_foreign().state_dict().items()}
    _, report = convert_state_dict(mixed, ours())  # one tensor by name, the rest in order around it
    assert dict((k, how) for k, _, how in report.pairs)["head.weight"] == "name" and report.counts == {"name": 1, "order": 6}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("_fc.bias"), "6 source tensors for 7 model tensors"),
    (lambda s: s.update({"_fc.weight": torch.zeros(3, 4)}), "shape (5, 4) in the model, (3, 4) in the source"),
    (lambda s: s.update({"_bn0.running_var": -torch.ones(4)}), "negative"),
    (lambda s: s.update({"head.weight": torch.zeros(3, 4)}), "same name, other shape"),
    (lambda s: s.update({"extra": [1, 2]}), "'extra' is a list, not a tensor"),
])  # fmt: skip
def test_refusals_name_the_first_mismatch(edit, message):
    state = dict(trained_foreign().state_dict())
    edit(state)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_state_dict(state, ours(), source="x.pth")


def test_order_fallback_checks_the_kind_of_each_tensor():
    """Same count and shapes, but the file lists a BatchNorm's buffers before its affine weights: refused."""
    state = trained_foreign().state_dict()
    keys = list(state)
    order = [keys[0], keys[3], keys[4], keys[1], keys[2], *keys[5:]]  # running_mean, running_var before weight, bias
    with pytest.raises(ModelError, match="a 'weight' in the model, a 'running_mean' in the source"):
        convert_state_dict({k: state[k] for k in order}, ours())


@pytest.fixture(scope="module")
def foreign_timm(tmp_path_factory) -> tuple:
    """timm's test_efficientnet (1000-class head) saved under other names as a torch .pth."""
    torch.manual_seed(0)
    model = create("timm:test_efficientnet").eval()
    renamed = {f"net_{i:03d}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(model.state_dict().items())}
    path = tmp_path_factory.mktemp("foreign") / "test_effnet-0000.pth"
    torch.save(renamed, path)
    return model, path


def test_convert_checkpoint_writes_a_self_describing_file(foreign_timm, tmp_path):
    model, src = foreign_timm
    out = tmp_path / "converted.safetensors"
    report = convert_checkpoint(src, "timm:test_efficientnet", out)
    assert report.out == out and report.num_classes == 1000 and report.dataset == "imagenet-1k"
    assert report.counts["order"] == len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")])
    meta = read_meta(out)
    assert meta["task"] == "classify" and meta["model"] == "timm:test_efficientnet" and meta["classes"] == imagenet_classes()
    cfg = model.pretrained_cfg  # what timm says its weights expect
    assert meta["mean"] == pytest.approx(cfg["mean"]) and meta["std"] == pytest.approx(cfg["std"])
    assert meta["interpolation"] == cfg["interpolation"] and meta["crop_pct"] == cfg["crop_pct"] and meta["imgsz"] == cfg["input_size"][-1]
    assert meta["pretrained"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["pretrained"]["source"] == str(src) and meta["pretrained"]["matched"]["counts"] == report.counts

    from optik import Model

    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    r = Model(out).predict(image, topk=3)[0]  # loads by name, predicts ImageNet names
    assert r.names[r.probs.top1] == imagenet_classes()[r.probs.top1] and len(r.names) == 1000
    from optik.data.transforms import classify_transforms

    tf = classify_transforms(cfg["input_size"][-1], train=False, mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"],
                             interpolation=cfg["interpolation"])  # fmt: skip
    with torch.no_grad():
        want = model(tf(torch.from_numpy(image).permute(2, 0, 1))[None]).softmax(-1)[0]
    torch.testing.assert_close(r.probs.data, want, atol=1e-5, rtol=1e-4)


def test_convert_refuses_bad_input(foreign_timm, tmp_path):
    _, src = foreign_timm
    with pytest.raises(ModelError, match="0 tensors match by name"):
        convert_checkpoint(src, "timm:test_resnet", tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="writes a .safetensors file"):
        convert_checkpoint(src, "timm:test_efficientnet", tmp_path / "x.pth")
    with pytest.raises(ConfigError, match="needs a 1000-output head"):
        convert_checkpoint(src, "timm:test_efficientnet", tmp_path / "x.safetensors", num_classes=10, classes="imagenet-1k")
    pickled = tmp_path / "module.pth"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # a pickled module, not a state dict: weights_only refuses it
    with pytest.raises(ModelError, match="cannot read weights"):
        convert_checkpoint(pickled, "timm:test_efficientnet", tmp_path / "y.safetensors")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_convert_cli(foreign_timm, tmp_path, capsys):
    from optik.cli import main

    _, src = foreign_timm
    out = tmp_path / "cli.safetensors"
    assert main(["models", "convert", f"src={src}", "model=timm:test_efficientnet", f"out={out}", "classes=none"]) == 0
    text = capsys.readouterr().err  # optik's console prints to stderr
    assert "by order" in text and "net_000.weight" in text and "conv_stem.weight" in text
    assert "classes" not in read_meta(out) and read_meta(out)["model"] == "timm:test_efficientnet"
    assert main(["models", "convert", "model=timm:test_efficientnet"]) == 2
    assert "missing key 'src'" in capsys.readouterr().err


def test_timm_pretrained_meta(foreign_timm, tmp_path):
    model, _ = foreign_timm
    assert builtin_meta("timm:test_efficientnet", "classify") is None  # an architecture, no weights
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)  # timm's own names, a 1000-class head, no optik metadata
    meta = builtin_meta("timm:test_efficientnet", "classify", pretrained=str(plain))
    assert meta["classes"] == imagenet_classes() and meta["imgsz"] == 160 and meta["crop_pct"] == 0.95
    assert meta["interpolation"] == "bicubic" and meta["pretrained"]["dataset"] == "imagenet-1k"
    small = create("timm:test_efficientnet", num_classes=10)
    torch.save(small.state_dict(), tmp_path / "ten.pth")
    with pytest.raises(ConfigError, match="10-class head and names no classes"):
        builtin_meta("timm:test_efficientnet", "classify", pretrained=str(tmp_path / "ten.pth"))
    with pytest.raises(ModelError, match="not found"):
        builtin_meta("timm:test_efficientnet", "classify", pretrained=str(tmp_path / "missing.pth"))

    from optik import Model

    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    m = Model("timm:test_efficientnet")
    r = m.predict(image, pretrained=str(plain))[0]
    assert len(r.names) == 1000 and r.names[0] == "tench, Tinca tinca"
    from optik.weights import save_weights

    named = save_weights(small.state_dict(), tmp_path / "named.safetensors",
                         {"model": "timm:test_efficientnet", "classes": list("abcdefghij"), "imgsz": 64})  # fmt: skip
    assert builtin_meta("timm:test_efficientnet", "classify", pretrained=str(named))["classes"] == list("abcdefghij")
    assert m.predict(image, pretrained=str(named))[0].names == list("abcdefghij")  # another file: reloaded, not cached
    with pytest.raises(ConfigError, match="needs trained weights"):
        Model("timm:test_efficientnet").predict(image)


def test_pretrained_key_needs_an_architecture_name(weights):
    from optik import Model

    with pytest.raises(ConfigError, match="'pretrained' applies to an architecture name"):
        Model(weights).predict(np.zeros((32, 32, 3), np.uint8), pretrained="other.safetensors")


def test_imagenet_class_names_are_unique():
    names = imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert names[285] == "Egyptian cat" and names[967] == "espresso"
    assert names[134] == "crane (n02012849)" and names[517] == "crane (n03126707)"  # the one shared description


def test_eval_transform_follows_the_pretrained_cfg_like_timm():
    """crop_pct / interpolation from a pretrained cfg give timm's own eval transform (resize 256, crop 224, bicubic):
    same geometry, values equal up to PIL-vs-tensor resampling."""
    from timm.data import create_transform

    from optik.data.transforms import classify_transforms

    rng = np.random.default_rng(0)
    image = (np.linspace(0, 255, 300)[None, :, None] * np.ones((200, 1, 3)) * 0.7 + rng.integers(0, 60, (200, 300, 3))).astype(np.uint8)
    kw = dict(mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.875, interpolation="bicubic")
    ours_ = classify_transforms(224, train=False, **kw)(torch.from_numpy(image).permute(2, 0, 1))
    theirs = create_transform(224, is_training=False, **kw)(Image.fromarray(image))
    assert ours_.shape == theirs.shape == (3, 224, 224)
    assert float((ours_ - theirs).abs().mean()) < 0.02  # a 1-pixel shift of this gradient would be ~0.05
    full = classify_transforms(224, train=False, **{**kw, "crop_pct": 1.0})(torch.from_numpy(image).permute(2, 0, 1))
    assert float((full - theirs).abs().mean()) > 0.05  # and crop_pct is not a no-op
    with pytest.raises(ConfigError, match="crop_pct"):
        classify_transforms(224, train=False, crop_pct=1.5)
    with pytest.raises(ConfigError, match="interpolation"):
        classify_transforms(224, train=False, interpolation="sinc")


def test_hf_model_predicts_with_its_own_preprocessing(tmp_path):
    """The same path for hf: — labels from id2label, and the normalisation its image processor names (not
    ImageNet's), read from the built model."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTImageProcessor

    from optik import Model
    from optik.data.transforms import classify_transforms

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, id2label={0: "ant", 1: "bee", 2: "cicada"})  # fmt: skip
    hf = AutoModelForImageClassification.from_config(cfg).eval()
    hf.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3, size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    r = Model(f"hf:{tmp_path / 'vit'}").predict(image, imgsz=32, amp=False)[0]
    assert r.names == ["ant", "bee", "cicada"]
    x = classify_transforms(32, train=False, mean=(0.5,) * 3, std=(0.25,) * 3)(torch.from_numpy(image).permute(2, 0, 1))
    with torch.no_grad():
        want = hf(pixel_values=x[None]).logits.softmax(-1)[0]
    torch.testing.assert_close(r.probs.data, want, atol=1e-5, rtol=1e-4)
