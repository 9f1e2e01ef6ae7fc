"""The batched predict path (decode to HWC arrays → BatchPreprocess → model → lazy Results) gives the same
probabilities as the per-image path it replaced (``as_image_tensor`` → the task's eval ``Compose`` per image →
stack → model → softmax), for eager and ONNX models, on every kind of input predict accepts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model, models
from optik.data.image import as_image_array, as_image_tensor, load_image
from optik.engine.inference import eval_preprocess
from optik.weights import save_weights

RNG = np.random.default_rng(0)
CLASSES = ["circle", "square", "triangle"]  # synthetic:shapes' classes: the exporter's parity images


def _pil(mode: str, w: int, h: int) -> Image.Image:
    if mode == "P":
        im = Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8), "L").convert("P")
        im.info["transparency"] = 3
        return im
    if mode == "I;16":
        return Image.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16))
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    a = RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a, mode)


def _exif_rotated_jpeg(path, w: int = 40, h: int = 24) -> str:
    """A JPEG stored landscape with EXIF Orientation 6 (display rotated 90° clockwise: portrait)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG", exif=exif.tobytes())
    return str(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list:
    d = tmp_path_factory.mktemp("src")
    png = d / "grey16.png"
    _pil("I;16", 19, 23).save(png)
    return [
        _pil("RGB", 53, 37), _pil("L", 20, 20), _pil("RGBA", 15, 30), _pil("LA", 9, 14), _pil("P", 33, 31),
        _pil("RGB", 1, 1), _pil("RGB", 300, 5),  # beyond 3:1 (LimitAspect crops first)
        _pil("RGB", 32, 32), _pil("RGB", 64, 64),  # the model's size (no resize) and a downsample
        RNG.integers(0, 256, (17, 29), dtype=np.uint8),  # grey array
        RNG.random((21, 13, 3), dtype=np.float32),  # float array in [0, 1]
        RNG.integers(0, 256, (11, 12, 4), dtype=np.uint8),  # RGBA array
        torch.randint(0, 256, (3, 25, 31), dtype=torch.uint8), torch.rand(1, 18, 22),  # tensors
        _exif_rotated_jpeg(d / "rotated.jpg"), str(png),  # files
    ]  # fmt: skip


def _weights(path, **meta) -> str:
    torch.manual_seed(0)
    model = models.create("cnn", task="classify", num_classes=len(CLASSES))
    return str(save_weights(model.state_dict(), path, {"task": "classify", "model": "cnn", "classes": CLASSES,
                                                       "imgsz": 32, **meta}))  # fmt: skip


@pytest.fixture(scope="module")
def timm_like(tmp_path_factory) -> str:
    """Weights whose metadata asks for a pretrained model's eval preprocessing (crop 0.875, bicubic, own mean/std)."""
    return _weights(tmp_path_factory.mktemp("w") / "cnn_timm_like.safetensors", crop_pct=0.875,
                    interpolation="bicubic", mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])  # fmt: skip


@pytest.fixture(scope="module")
def timm_like_onnx(timm_like, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("onnx") / "cnn_timm_like.onnx"
    return str(Model(timm_like).export(format="onnx", parity=2, data="synthetic:shapes?n=4&size=32&classes=3", out=str(out)))


def reference_probs(m: Model, items: list) -> torch.Tensor:
    """The per-image path predict used before: as_image_tensor, the task's eval Compose per image, stack,
    the same loaded model (fp32), softmax."""
    _, task, model = m._loaded
    tf = task.transforms(train=False)
    x = torch.stack([tf(as_image_tensor(i)) for i in items])
    with torch.no_grad():
        return model(x).float().softmax(-1)


def check_parity(m: Model, items: list, batch: int) -> None:
    results = m.predict(items, batch=batch, amp=False)
    ref = reference_probs(m, items)
    got = torch.stack([r.probs.data for r in results])
    assert (got - ref).abs().max().item() <= 1e-6
    for r, item, p in zip(results, items, ref):
        old = as_image_tensor(item).permute(1, 2, 0).numpy()  # what orig_img was before
        assert np.array_equal(r.orig_img, old) and r.orig_img.flags.writeable
        if isinstance(item, np.ndarray):
            assert not np.shares_memory(r.orig_img, item)
        assert torch.allclose(p[r.probs.top5], p.sort(descending=True).values, atol=1e-6)  # ranked as the old probs


@pytest.mark.parametrize("batch", [1, 4, 32])
def test_eager_predict_equals_the_per_image_path(weights, sources, batch):
    check_parity(Model(weights), sources, batch)


@pytest.mark.parametrize("batch", [1, 32])
def test_eager_and_onnx_with_pretrained_style_preprocessing(timm_like, timm_like_onnx, sources, batch):
    for path in (timm_like, timm_like_onnx):
        m = Model(path)
        check_parity(m, sources, batch)
        same = [_pil("RGB", 40, 30) for _ in range(6)]  # one size: the whole batch resized in one call
        check_parity(m, same, batch)


def test_decoded_arrays_equal_the_old_tensors(sources, tmp_path):
    for item in sources:
        a = as_image_array(item)
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype == np.uint8 and a.shape[2] == 3
        assert np.array_equal(a, as_image_tensor(item).permute(1, 2, 0).numpy())
    rotated = next(s for s in sources if isinstance(s, str) and s.endswith(".jpg"))
    assert as_image_array(rotated).shape[:2] == (40, 24) == np.asarray(load_image(rotated)).shape[:2]  # upright


def test_preprocessing_is_built_once_per_model(weights):
    m = Model(weights)
    m.predict(np.zeros((8, 8, 3), np.uint8))
    task = m._loaded[1]
    first = eval_preprocess(task)
    assert first.batched  # classify's eval Compose compiles to the batched kernels
    m.predict([np.zeros((9, 9, 3), np.uint8)] * 3, batch=2)
    assert eval_preprocess(m._loaded[1]) is first  # same loaded task: not rebuilt per call
    m.predict(np.zeros((8, 8, 3), np.uint8), imgsz=40)  # another input size: another model load and pipeline
    assert eval_preprocess(m._loaded[1]) is not first
    assert list(eval_preprocess(m._loaded[1]).transform.transforms[2].size) == [40, 40]


def test_results_rank_lazily_but_the_same(weights, monkeypatch):
    m = Model(weights)
    arr = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    (expected,) = m.predict(arr)
    top5, top1conf = expected.probs.top5, expected.probs.top1conf
    calls = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda *a, **k: calls.append(1) or real(*a, **k))
    (r,) = m.predict(arr)
    assert calls == []  # nothing ranked while predicting
    assert r.probs.top5 == top5 and r.probs.top1conf == top1conf
    assert calls == [1]  # ranked once, at first use
    r.to_json(), r.verbose()
    assert calls == [1]
    buf = io.BytesIO()
    Image.fromarray(r.plot()).save(buf, "PNG")  # plotting a (lazily ranked) result works
