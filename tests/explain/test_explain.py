"""Explanations: Grad-CAM / Grad-CAM++ / saliency look at the object, on the original image's pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model, models
from optik.config import build_config
from optik.data.synthetic import draw_shape, random_background
from optik.data.transforms import classify_transforms
from optik.errors import ConfigError
from optik.explain.gradcam import explain_batch, find_target_layer, grad_cam
from optik.explain.run import explain, heatmap_to_original

CLASSES = ("circle", "star")
# Two shapes that differ a lot: a 32 px cnn learns them in seconds (3-class shapes take minutes).
DATA = "synthetic:shapes?n=800&size=32&classes=circle,star&difficulty=0.2&seed=0"


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """A cnn trained ~10 s on circles vs stars at 32 px (val top-1 ≈ 0.96); under xdist, trained
    once per session and shared by the workers through a file lock."""
    from filelock import FileLock

    from optik.engine.trainer import Trainer

    base = tmp_path_factory.getbasetemp()
    worker = getattr(request.config, "workerinput", None)  # set on pytest-xdist workers
    root = base if worker is None else base.parent  # parent: this session's, shared by the workers
    with FileLock(str(root / "explain_run.lock")):
        best = root / "explain_run" / "classify" / "train" / "weights" / "best.safetensors"
        if not best.is_file():
            cfg = build_config("classify", "train", {
                "data": DATA, "model": "cnn", "epochs": 8, "imgsz": 32, "batch": 32, "lr": 3e-3,
                "scale": [1.0, 1.0], "plots": False, "project": str(root / "explain_run"),
            })  # fmt: skip
            Trainer(cfg).fit()
    return str(best)


def render(rng: np.random.Generator, kind: str, h: int, w: int, d: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w) image like synthetic:shapes (textured background, one shape near the centre, noise)
    and the shape's exact mask."""
    img = random_background(rng, max(h, w), d)[:h, :w].copy()
    short = min(h, w)
    r = short * rng.uniform(0.22 - 0.08 * d, 0.38)
    cx = w / 2 + rng.uniform(-1, 1) * (short / 2 - r)  # inside the centre square the model sees
    cy = h / 2 + rng.uniform(-1, 1) * (short / 2 - r)
    bg = img.reshape(-1, 3).mean(0)
    colour = tuple(int(v) for v in np.where(bg < 128, np.minimum(bg + 170, 255), np.maximum(bg - 170, 0)))
    mask = draw_shape(img, kind, (cx, cy), r, rng.uniform(0, 2 * math.pi), colour)
    img = np.clip(np.rint(img + 5.6 * rng.standard_normal(img.shape)), 0, 255).astype(np.uint8)
    return img, mask


# Heat inside the shape's mask vs the mask's share of what the model saw (its area over the centre
# min(h, w)² square: a heatmap spread evenly over the model's view scores exactly that).
# Measured (the cnn above, 24 images per size, mean over images; hottest pixel on the shape):
#   gradcam   32x32: 0.42 vs 0.20 (peak 0.96)   40x56: 0.41 vs 0.21 (0.14 of the whole image; peak 0.71)
#   gradcam++ 32x32: 0.40 vs 0.20 (peak 0.96)   40x56: 0.39 vs 0.21 (peak 0.71)
#   saliency  32x32: 0.30 vs 0.20 (peak 0.42)   40x56: 0.33 vs 0.21 (peak 0.71)
@pytest.mark.parametrize("method, factor", [("gradcam", 1.6), ("gradcam++", 1.6), ("saliency", 1.3)])
@pytest.mark.parametrize("h, w", [(32, 32), (40, 56)])  # 40x56: the heatmap must undo resize + centre crop
def test_heat_concentrates_on_the_shape(shapes_run, method, factor, h, w):
    rng = np.random.default_rng(123)
    inside, area, peaks = [], [], []
    for k, kind in enumerate(CLASSES):  # explain the true class, named (target=<class name>)
        shots = [render(rng, kind, h, w) for _ in range(12)]
        ex = Model(shapes_run).explain([im for im, _ in shots], method=method, target=kind)
        assert {e.target for e in ex} == {k} and {e.target_name for e in ex} == {kind}
        for e, (im, mask) in zip(ex, shots):
            assert e.heatmap.shape == mask.shape and e.heatmap.dtype == np.float32
            assert e.overlay.shape == im.shape and e.overlay.dtype == np.uint8
            assert 0.0 <= e.heatmap.min() and e.heatmap.max() == pytest.approx(1.0)
            inside.append(float((e.heatmap * mask).sum() / e.heatmap.sum()))
            area.append(float(mask.sum() / min(h, w) ** 2))
            peaks.append(bool(mask.flat[int(np.argmax(e.heatmap))]))
    frac, share = float(np.mean(inside)), float(np.mean(area))
    print(f"{method} {h}x{w}: heat inside mask {frac:.3f}, mask share of the view {share:.3f}, peak inside {np.mean(peaks):.2f}")
    assert frac > factor * share
    if method != "saliency":
        assert np.mean(peaks) > 0.5  # pointing game: the hottest pixel is on the shape (chance ≈ 0.2)


def test_heatmap_maps_back_through_resize_and_crop():
    """A 'heatmap' made by the classify transform itself (a blob pushed through Resize + CenterCrop)
    lands back on the blob; what the crop cut off stays 0."""
    tf = classify_transforms(32, train=False)
    for h, w in [(40, 80), (90, 45), (20, 26)]:  # landscape, portrait, and an upscale
        blob = np.zeros((h, w), bool)
        cy, cx, r = h // 2 + h // 8, w // 2 - w // 10, min(h, w) // 5
        yy, xx = np.mgrid[:h, :w]
        blob[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = True
        img = torch.from_numpy(np.repeat(blob[None].astype(np.uint8) * 255, 3, 0))
        seen = (tf(img)[0] > 0).float().numpy()  # normalised: black < 0 < white
        back = heatmap_to_original(seen, (h, w), tf)
        assert back.shape == (h, w)
        pred = back > 0.5
        iou = (pred & blob).sum() / (pred | blob).sum()
        assert iou > 0.85, (h, w, iou)
        s = min(h, w)  # the model sees the centre s x s square of the original
        top, left = (h - s) // 2, (w - s) // 2
        margin = np.zeros((h, w), bool)  # what the centre crop cut off (1 px of interpolation spared)
        if w > h:
            margin[:, : left - 1] = margin[:, left + s + 1 :] = True
        else:
            margin[: top - 1] = margin[top + s + 1 :] = True
        assert margin.any() and back[margin].max() == 0.0


@pytest.mark.parametrize(
    "name, kwargs, imgsz, layer",
    [
        ("cnn", {}, 32, "stages.2.0"),  # conv + BN + ReLU of the last stage, before its pooling
        ("resnet", {}, 32, "stages.2.1"),  # stage 4 is 1x1 at 32 px: the last spatial block
        ("resnet", {}, 64, "stages.3.1"),
        ("timm:resnet18", {}, 32, "layer3.1"),
        ("timm:mobilenetv3_small_100", {}, 64, "blocks.5.0"),  # conv_head comes after the pool (1x1)
        ("tiny_vit", {"img_size": 32}, 32, "blocks.3.norm1"),  # 8x8 patch grid, 1 class token
        ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}, 32, "blocks.1.norm1"),
        ("timm:deit_tiny_distilled_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}, 32, "blocks.1.norm1"),
    ],
)
def test_automatic_layer_and_maps(name, kwargs, imgsz, layer):
    torch.manual_seed(0)
    model = models.create(name, num_classes=3, **kwargs).eval()
    assert find_target_layer(model, imgsz)[0] == layer
    x = torch.rand(2, 3, imgsz, imgsz)
    for method in ("gradcam", "gradcam++", "saliency"):
        heat, logits, used = explain_batch(model, x, method)
        assert used == (layer if method != "saliency" else "input")
        assert heat.shape == (2, imgsz, imgsz) and logits.shape == (2, 3)
        assert torch.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
        assert (heat.flatten(1).max(1).values == 1).any()  # min-max scaled (an all-negative CAM is 0)
    assert all(p.grad is None for p in model.parameters())  # explaining does not touch .grad


def test_vit_tokens_land_on_their_patches():
    """A one-layer 'ViT' that sees a single bright patch: Grad-CAM on its tokens must light up exactly
    that patch — prefix tokens (hot on purpose) dropped, the rest laid out row-major on the grid."""

    class TokenNet(torch.nn.Module):
        def __init__(self, num_prefix: int) -> None:
            super().__init__()
            self.patch_size, self.num_prefix_tokens = 8, num_prefix
            self.proj = torch.nn.Conv2d(3, 4, 8, stride=8)
            self.norm = torch.nn.Identity()

        def forward(self, x):
            t = self.proj(x).flatten(2).transpose(1, 2)  # (B, 16, 4), row-major 4x4 grid
            t = self.norm(torch.cat([torch.full_like(t[:, :self.num_prefix_tokens], 5.0), t], 1))
            score = t[:, self.num_prefix_tokens :, 0].mean(1)  # pooled patch tokens, like GAP
            return torch.stack([score, -score], 1)

    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 16:24, 24:32] = 1.0  # the patch in grid row 2, column 3
    for prefix in (1, 2):  # a class token; class + distillation tokens
        net = TokenNet(prefix)
        with torch.no_grad():
            net.proj.weight.fill_(0.01)
            net.proj.bias.zero_()
        heat, _ = grad_cam(net, x, target=0, layer="norm")
        cells = torch.nn.functional.avg_pool2d(heat[None], 8)[0, 0]  # mean heat per patch, (4, 4)
        assert divmod(int(cells.argmax()), 4) == (2, 3), prefix
        assert cells[2, 3] > 2 * cells.flatten().sort().values[-2]  # and by far
        assert cells[0, 0] == 0  # the prefix tokens' activation 5.0 does not leak onto the grid


def test_layer_by_name_and_bad_layer(shapes_run):
    img = [render(np.random.default_rng(1), "star", 32, 32)[0]]
    auto = Model(shapes_run).explain(img)[0]
    named = Model(shapes_run).explain(img, layer="stages.1.0")[0]
    assert auto.layer == "stages.2.0" and named.layer == "stages.1.0"
    assert not np.allclose(auto.heatmap, named.heatmap)  # a different layer, a different map
    with pytest.raises(ConfigError, match=r"'layer'.*stages\.9.*did you mean.*stages\.") as e:
        Model(shapes_run).explain(img, layer="stages.9")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="head.*spatial"):
        Model(shapes_run).explain(img, layer="head")  # (B, classes): no map to weight


def test_target_by_index_name_and_errors(shapes_run):
    img = [render(np.random.default_rng(2), "circle", 32, 32)[0]] * 2
    by_name = Model(shapes_run).explain(img, target="star")
    by_index = Model(shapes_run).explain(img, target=1)
    by_text = Model(shapes_run).explain(img, target="1")  # CLI values arrive as text
    for ex in (by_name, by_index, by_text):
        assert [e.target_name for e in ex] == ["star", "star"]
    np.testing.assert_allclose(by_name[0].heatmap, by_index[0].heatmap)
    circle = Model(shapes_run).explain(img, target="circle")[0]
    assert circle.score == pytest.approx(1 - by_name[0].score, abs=1e-5)  # two classes: p(circle) + p(star) = 1
    with pytest.raises(ConfigError, match="'target'.*'starr'.*did you mean star"):
        Model(shapes_run).explain(img, target="starr")
    with pytest.raises(ConfigError, match=r"'target'.*0\.\.1"):
        Model(shapes_run).explain(img, target=5)


def test_cli_writes_panels_and_jsonl(shapes_run, tmp_path):
    from optik.cli import main

    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i, kind in enumerate(["circle", "star", "star"]):
        cv2.imwrite(str(src / f"{kind}{i}.png"), render(rng, kind, 40, 56)[0][..., ::-1])
    args = ["classify", "explain", f"model={shapes_run}", f"source={src}", "method=gradcam++", f"project={tmp_path}/runs"]
    assert main(args) == 0
    out = tmp_path / "runs" / "classify" / "explain"
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["0000_circle0.png", "0001_star1.png", "0002_star2.png"]
    w, h = Image.open(pngs[0]).size
    assert (h, w) == (40 * 4, 3 * 56 * 4 + 16)  # image | heatmap | overlay, enlarged to >= 128 px
    rows = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["circle0.png", "star1.png", "star2.png"]
    assert {r["method"] for r in rows} == {"gradcam++"} and all(r["shape"] == [40, 56] for r in rows)
    assert main([*args, "layer=stages.7"]) == 2  # a bad layer: one-line error, exit 2


def test_exported_model_is_refused(shapes_run, tmp_path):
    """Gradients need the eager model: an exported file is refused with a ConfigError saying so."""
    onnx = Model(shapes_run).export(format="onnx", out=str(tmp_path / "best.onnx"), parity=0)
    img = [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(ConfigError, match="exported.*gradients.*safetensors"):
        Model(str(onnx)).explain(img)
    fake = tmp_path / "other.torchscript"  # refused by name, before anything is loaded
    fake.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="exported"):
        explain(build_config("classify", "explain", {"model": str(fake), "save": False}), img)
    with pytest.raises(ConfigError, match="not an eager PyTorch model"):  # a runtime wrapper without weights
        grad_cam(torch.nn.Flatten(), torch.zeros(1, 3, 8, 8))


def test_explanation_save(shapes_run, tmp_path):
    ex = Model(shapes_run).explain([render(np.random.default_rng(4), "circle", 32, 32)[0]], method="saliency")[0]
    assert ex.layer == "input" and ex.method == "saliency"
    p = ex.save(tmp_path / "deep" / "x.png")
    panel = np.asarray(Image.open(p).convert("RGB"))
    assert panel.shape == (128, 3 * 128 + 16, 3)  # 32 px tiles enlarged 4x, two 8 px gaps
    assert np.array_equal(panel[::4, -128::4], ex.overlay)  # the last tile is the overlay, nearest-enlarged
    assert ex.to_dict()["target_name"] == ex.target_name
