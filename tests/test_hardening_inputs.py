"""Issue 17 regressions for inputs that used to blow up: bug 4 (unbounded overlay enlargement, in
``predict save=true`` and the server's ``POST /predict/image``) and part of bug 5 (tracebacks where
one line and exit 2 belong: ``iou_crop`` on tiny images, ``generate train`` with a one-image val
split, ``classify prune amount=[]``, ``export out=<a file>/m.onnx``).

Each test reproduces the bug from a front door (the CLI or the server) and fails without its fix.
"""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik.cli import main
from optik.viz.draw import MAX_DRAW_SIDE, MIN_TEXT_SIDE

# The serve fixtures (make_client) live in tests/serve/conftest.py, out of this module's reach:
# load that file once under its own name and take the fixture from it.
_spec = importlib.util.spec_from_file_location("_serve_fixtures", Path(__file__).parent / "serve" / "conftest.py")
_serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serve)
make_client = _serve.make_client
png = _serve.png


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("optik: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --- bug 4: bounded overlays ------------------------------------------------------------------------
def test_predict_save_of_a_1x4000_image_writes_a_bounded_overlay(weights, tmp_path, capsys):
    """Was a 512000×128 PNG and 1.5 GB RSS."""
    src = tmp_path / "line.png"
    Image.fromarray(np.full((1, 4000, 3), 77, np.uint8)).save(src)
    rc = main(["classify", "predict", f"model={weights}", f"source={src}", "save=true", f"project={tmp_path / 'runs'}"])
    assert rc == 0, capsys.readouterr().err
    (out,) = [p for p in (tmp_path / "runs").rglob("*.png")]
    h, w = Image.open(out).size[::-1]
    assert (h, w) == (MIN_TEXT_SIDE, 4000)


def test_server_draws_a_1x8000_upload(weights, make_client):
    """A 24 KB 1×8000 PNG: HTTP 500 "PNG encoding failed" after the server reached 1.9 GB; now 200
    with a small PNG (the image at its own size, padded to a readable height)."""
    c = make_client(weights)
    data = png(np.random.default_rng(0).integers(0, 255, (1, 8000, 3), dtype=np.uint8))
    r = c.post("/predict/image", files={"file": ("line.png", data, "image/png")})
    assert r.status_code == 200, r.text
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    assert out.shape == (MIN_TEXT_SIDE, 8000, 3) and len(r.content) < 4 * 2**20
    r = c.post("/predict?overlay=true", files={"file": ("line.png", data, "image/png")})
    assert r.status_code == 200, r.text
    tall = png(np.zeros((3, 500, 3), np.uint8))
    r = c.post("/predict/image", files={"file": ("bar.png", tall, "image/png")})
    shape = np.asarray(Image.open(io.BytesIO(r.content))).shape
    assert r.status_code == 200 and max(shape[:2]) <= MAX_DRAW_SIDE and min(shape[:2]) >= MIN_TEXT_SIDE, shape


# --- bug 5: iou_crop on tiny images -------------------------------------------------------------------
def _yolo_tiny(root: Path, heights=(1, 2, 3, 3)) -> Path:
    """A YOLO set of images 1–3 px tall, 40 wide, each with one box."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, h in enumerate(heights):
            Image.fromarray(np.full((h, 40, 3), 40 + 50 * i, np.uint8)).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.5 1.0\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [bar]\n")
    return root / "data.yaml"


def test_iou_crop_leaves_images_too_small_to_crop_alone():
    """torchvision's RandomIoUCrop divides by a crop height of int(h · scale) = 0 for h ≤ 3."""
    from torchvision import tv_tensors

    from optik.data.detect_transforms import augment_steps

    (crop,) = augment_steps(0.0, (1.0, 1.0), False, {}, iou_crop=True)
    torch.manual_seed(0)
    for h, w in ((1, 40), (3, 40), (40, 1), (2, 2)):
        img = tv_tensors.Image(torch.full((3, h, w), 7, dtype=torch.uint8))
        boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, w, h]]), format="XYXY", canvas_size=(h, w))
        for _ in range(30):
            out_img, out_target = crop(img, {"boxes": boxes, "labels": torch.tensor([0])})
            assert out_img.shape == img.shape and torch.equal(out_target["boxes"], boxes)


def test_detect_train_with_iou_crop_on_3px_images(tmp_path, capsys):
    data = _yolo_tiny(tmp_path / "tiny")
    rc = main(["detect", "train", f"data={data}", "model=house_s", "epochs=1", "imgsz=32", "batch=4", "iou_crop=true",
               "mosaic=0", "plots=false", "workers=0", f"project={tmp_path / 'runs'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "ZeroDivision" not in err, err
    assert (tmp_path / "runs" / "detect" / "train" / "weights" / "best.safetensors").is_file()


# --- bug 5: generate with a one-image val split --------------------------------------------------------
def test_generative_metrics_skip_fid_and_kid_below_two_images():
    from optik.metrics.generative import GenerativeMetrics

    feats = lambda x: (x.flatten(1)[:, :8].double(), None)  # a stand-in feature network
    m = GenerativeMetrics(feats)
    m.update(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    out = m.compute()
    assert math.isnan(out["FID"]) and math.isnan(out["KID"]) and math.isnan(out["fitness"])
    assert out["n_real"] == 1 and out["n_fake"] == 1
    m = GenerativeMetrics(feats)
    m.update(torch.rand(12, 1, 4, 4), torch.rand(12, 1, 4, 4))
    assert math.isfinite(m.compute()["FID"])  # two or more: computed as before


def test_generate_train_with_a_one_image_val_split(tmp_path, capsys):
    """Was a ValueError traceback after the first epoch ("need features of shape (N >= 2, D)").
    Training runs, the FID/KID are NaN with the reason logged once before training, and the weights are saved."""
    project = tmp_path / "runs"
    rc = main(["generate", "train", "data=synthetic:shapes?n=6&size=16&classes=2", "model=vae", "epochs=1", "imgsz=16",
               "batch=4", "val_fraction=0.1", "plots=false", f"project={project}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    text = " ".join(err.split())  # the console wraps long log lines
    assert text.count("val split has 1 image") == 1 and "FID" in text, err
    run = project / "generate" / "train"
    assert (run / "weights" / "best.safetensors").is_file() and (run / "weights" / "last.safetensors").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2


# --- bug 5: prune amount=[] ------------------------------------------------------------------------------
@pytest.mark.parametrize("amount", ["[]", "", "[[0.3]]"])
def test_prune_with_no_amount_is_a_config_error(weights, amount, tmp_path, capsys):
    """``amount=[]`` was an IndexError traceback after pruning and fine-tuning nothing (``amount=``: a TypeError)."""
    args = ["classify", "prune", f"amount={amount}", f"model={weights}", "data=synthetic:shapes?n=24&size=16&classes=3",
            "epochs=0", f"project={tmp_path}"]  # fmt: skip
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "'amount'" in err
    assert not list(tmp_path.iterdir())  # refused before a run dir was made


def test_prune_amount_still_accepts_lists():
    from optik.config import build_config

    assert build_config("classify", "prune", {"amount": [0.2, 0.4]}).amount == [0.2, 0.4]
    assert build_config("classify", "prune", {"amount": "0.5"}).amount == [0.5]
    assert build_config("classify", "prune", {"amount": "0.1,0.2"}).amount == [0.1, 0.2]
    assert build_config("classify", "prune", {"amount": 0.5}).amount == [0.5]


# --- bug 5: export out=<a file>/m.onnx ------------------------------------------------------------------
def test_export_out_under_a_file_is_a_config_error(weights, tmp_path, capsys):
    """Was a FileExistsError traceback from mkdir."""
    (tmp_path / "afile").write_text("not a folder")
    assert main(["classify", "export", f"model={weights}", f"out={tmp_path / 'afile' / 'm.onnx'}"]) == 2
    err = one_line_error(capsys)
    assert "'out'" in err and "afile" in err and "not a folder" in err
    assert main(["classify", "export", f"model={weights}", f"out={tmp_path / 'afile' / 'deeper' / 'm.onnx'}"]) == 2
    assert "'out'" in one_line_error(capsys)
    (tmp_path / "adir.onnx").mkdir()
    assert main(["classify", "export", f"model={weights}", f"out={tmp_path / 'adir.onnx'}"]) == 2
    assert "'out'" in one_line_error(capsys)
    assert not list(tmp_path.rglob("*.onnx*")) or [p.name for p in tmp_path.rglob("*.onnx*")] == ["adir.onnx"]


def test_classify_eval_transform_never_builds_a_huge_intermediate():
    """A 1×8000 upload used to be resized to 224×1,792,000 (gigabytes) before the centre crop; the eval
    pipeline now limits the aspect first, and up to 3:1 its output is unchanged."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from optik.data.transforms import classify_transforms

    tf = classify_transforms(224, train=False)
    x = tv_tensors.Image(torch.randint(0, 255, (3, 1, 8000), dtype=torch.uint8))
    largest = 0
    for step in tf.transforms:
        x = step(x)
        largest = max(largest, x.numel())
    assert x.shape == (3, 224, 224) and largest <= 3 * 224 * 672
    old = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224), *tf.transforms[-2:]])
    for hw in [(50, 150), (150, 50), (30, 89)]:
        img = tv_tensors.Image(torch.randint(0, 255, (3, *hw), dtype=torch.uint8))
        assert torch.equal(tf(img), old(img))


def test_house_detector_imgsz_not_a_multiple_of_32_fails_before_training(tmp_path, capsys):
    from optik.cli import main

    rc = main(["detect", "train", "data=synthetic:shapes-det?n=8&size=64", "model=house_s", "imgsz=100", "epochs=1",
               f"project={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "bad value for 'imgsz': 100" in err and "imgsz=96" in err
    assert not (tmp_path / "detect" / "train").exists()  # no empty run dir left behind


def test_ap_summaries_print_a_dash_where_coco_has_no_value():
    from optik.metrics.detection import format_ap

    assert (format_ap(0.51234), format_ap(-1.0), format_ap(float("nan")), format_ap(None)) == ("0.5123", "-", "-", "-")
    from optik.config import build_config
    from optik.tasks.detect import DetectTask

    lines = DetectTask(build_config("detect", "val", {}), meta={"classes": ["a"]}).report_lines(
        {"AP": -1.0, "AP50": -1.0, "AP75": -1.0, "AR100": -1.0, "APs": -1.0, "APm": 0.5, "APl": -1.0,
         "per_class_AP": {"a": -1.0}, "per_class_AP50": {"a": -1.0}})
    assert "-1.0" not in "\n".join(lines) and "mAP@[.50:.95]**: -" in lines[0]


def test_one_training_image_with_batchnorm_is_a_one_line_error(tmp_path, capsys):
    """A batch of one image at a size where BatchNorm sees a 1x1 map: a clear error, not torch's ValueError."""
    import numpy as np
    from PIL import Image

    from optik.cli import main

    for split in ("train", "val"):  # one training image, one class
        (tmp_path / "data" / split / "a").mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(tmp_path / "data" / split / "a" / "x.png")
    rc = main(["classify", "train", f"data={tmp_path / 'data'}", "model=resnet", "imgsz=32", "batch=4", "epochs=1",
               f"project={tmp_path / 'runs'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "batch of one image" in err and "Traceback" not in err, err


def test_metrics_json_is_strict_json():
    import json

    from optik.engine.inference import finite_or_null

    out = json.dumps(finite_or_null({"a": float("nan"), "b": [1.0, float("-inf")], "c": __import__("numpy").array([0.5, float("nan")])}))
    assert json.loads(out) == {"a": None, "b": [1.0, None], "c": [0.5, None]} and "NaN" not in out


def test_explain_maps_heat_back_through_the_aspect_limit():
    """A 20×200 image: the eval transform keeps its central 20×60 (3:1), then the central square; heat maps back
    there and nowhere else (no fallback to stretching the heatmap over the whole image)."""
    import numpy as np

    from optik.data.transforms import classify_transforms
    from optik.explain.run import heatmap_to_original

    heat = heatmap_to_original(np.ones((32, 32), np.float32), (20, 200), classify_transforms(32, train=False))
    cols = np.flatnonzero(heat.max(0) > 0)
    assert heat.shape == (20, 200) and (cols.min(), cols.max()) == (90, 109)
