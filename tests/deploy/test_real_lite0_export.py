"""ONNX export of real ImageNet weights (EfficientNet-Lite0, the ``lite0_weights`` fixture) on real photos: fp32 equals
eager, and optik's static int8 path (QDQ, per-channel, MinMax calibration) keeps the top-1 class, with the
accuracy change on the labelled photos printed and recorded (``record_property``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optik import Model
from optik.data.dataset import ClassificationDataset
from optik.data.splits import DataSplits
from optik.models.pretrained import imagenet_classes


@pytest.fixture(scope="module")
def photo_splits(real_photos) -> DataSplits:
    """Val: the four labelled photos; train (int8 calibration): 16 views of them (mirrored, corner crops)."""
    label = {"chelsea": 285, "coffee": 967, "rocket": 657, "motorcycle": 665}
    photos = list(real_photos.values())
    views = []
    for p in photos:
        h, w = p.shape[:2]
        views += [p, p[:, ::-1], p[: h * 3 // 4, : w * 3 // 4], p[h // 4 :, w // 4 :]]
    views = [np.ascontiguousarray(v) for v in views]
    classes = imagenet_classes()
    labels = [label[k] for k in real_photos]
    train = ClassificationDataset(views, [y for y in labels for _ in range(4)], classes, name="photo-views")
    return DataSplits(train=train, val=ClassificationDataset(photos, labels, classes, name="photos"), classes=classes)


@pytest.fixture(scope="module")
def eager(lite0_weights, real_photos) -> list:
    """fp32 eager predictions (amp=false: the reference the exported fp32 graph must equal)."""
    return Model(lite0_weights).predict(list(real_photos.values()), amp=False)


def test_onnx_fp32_equals_eager_on_real_photos(lite0_weights, real_photos, photo_splits, eager, tmp_path):
    fp32 = Model(lite0_weights).export(format="onnx", data=photo_splits, out=str(tmp_path / "lite0.onnx"), parity=4)
    onnx = Model(fp32).predict(list(real_photos.values()))
    for a, b in zip(eager, onnx):
        assert a.probs.top1 == b.probs.top1 and a.names == b.names
        torch.testing.assert_close(b.probs.data, a.probs.data, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # static int8: graph optimisation, calibration and parity on a 4.7M-parameter network (~15 s)
def test_onnx_int8_keeps_top1_on_real_photos(lite0_weights, real_photos, real_labels, photo_splits, eager, tmp_path, record_property):
    int8 = Model(lite0_weights).export(format="onnx-int8", data=photo_splits, out=str(tmp_path / "lite0-int8.onnx"), parity=4, calib=16)
    quant = Model(int8).predict(list(real_photos.values()))
    agree = float(np.mean([a.probs.top1 == b.probs.top1 for a, b in zip(eager, quant)]))
    acc = {fmt: float(np.mean([r.probs.top1 in real_labels[name] for name, r in zip(real_photos, rs)]))
           for fmt, rs in (("fp32", eager), ("int8", quant))}  # fmt: skip
    drift = max(float((a.probs.data - b.probs.data).abs().max()) for a, b in zip(eager, quant))
    print(f"int8 vs fp32 on {len(quant)} real photos: top-1 agreement {agree:.2f}, accuracy {acc['fp32']:.2f} -> "
          f"{acc['int8']:.2f}, max |Δp| {drift:.3f}, {int8.stat().st_size / 2**20:.1f} MB")  # fmt: skip
    record_property("int8_top1_agreement", agree)
    record_property("int8_accuracy_change", acc["int8"] - acc["fp32"])
    assert agree == 1.0 and acc["int8"] == acc["fp32"] == 1.0  # measured: max |Δp| 0.02
    assert drift < 0.1 and int8.stat().st_size < 6 * 2**20  # fp32: 17.8 MB


def test_int8_leaves_same_padding_arithmetic_in_float(tmp_path):
    """TF-"same" convolutions (timm Conv2dSame: tf_efficientnet_lite0's stride-2 layers) trace their padding as
    float arithmetic on the input shape; static int8 must not quantize it (it shifted the padding: top-1
    agreement on real photos 0.72 instead of 0.92 over 25 views of five photos)."""
    import onnx
    from timm.layers import create_conv2d

    from optik.deploy.quantize import quantize_onnx, shape_nodes

    torch.manual_seed(0)
    model = torch.nn.Sequential(create_conv2d(3, 8, 3, stride=2, padding="same"), torch.nn.ReLU6()).eval()
    src = tmp_path / "same.onnx"
    torch.onnx.export(model, torch.randn(2, 3, 32, 32), str(src), input_names=["images"], dynamic_axes={"images": {0: "batch"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    graph = onnx.load(str(src)).graph
    ops = {n.name: n.op_type for n in graph.node}
    skipped = shape_nodes(graph)
    assert {"Pad", "Conv"}.isdisjoint(ops[n] for n in skipped) and {"Shape", "Ceil"} <= {ops[n] for n in skipped}
    calib = [np.random.default_rng(i).normal(size=(4, 3, 32, 32)).astype(np.float32) for i in range(4)]
    out = quantize_onnx(src, tmp_path / "same-int8.onnx", mode="static", calib=calib)
    import onnxruntime as ort

    x = calib[0]
    ref = model(torch.from_numpy(x)).detach().numpy()
    q = ort.InferenceSession(str(out)).run(None, {"images": x})[0]
    assert q.shape == ref.shape and np.abs(q - ref).mean() < 0.05 * np.abs(ref).mean() + 1e-3
