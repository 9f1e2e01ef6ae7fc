"""``optik info``: versions, device, and what optik can run."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("torch", "torchvision", "timm", "transformers", "diffusers", "onnxruntime", "opencv-python-headless", "numpy")
DATA_SOURCES = (
    "digits                      scikit-learn's bundled 8x8 digits (10 classes), upsampled to imgsz",
    "synthetic:shapes[?n=&size=&classes=&difficulty=&seed=]   procedural shapes on textured backgrounds",
    "<folder>                    ImageFolder: class sub-folders, or train/ + val/ splits",
    "<file.csv>                  columns path,label (optional classes.txt beside it)",
    "datasets.Dataset (Python)   Hugging Face datasets with image + label columns",
    "synthetic:shapes-det[?n=&size=&classes=&max_objects=&seed=]   detection scenes with exact boxes",
    "<coco.json> | <data.yaml> | <voc dir>   detection datasets (COCO, YOLO, Pascal VOC)",
    "synthetic:shapes-seg|shapes-inst|shapes-pan[?n=&size=&classes=&seed=]   segmentation scenes with exact masks",
    "<images/+masks/ dir> | <coco.json> | <coco panoptic dir> | <VOC dir>   segmentation datasets",
)


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_info() -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from optik.version import __version__
    from optik.catalog import CATALOG
    from optik.models import adapter_hints, list_models, model_tasks

    console = Console()
    t = Table(title=f"optik {__version__}", show_header=False)
    t.add_row("python", platform.python_version())
    t.add_row("platform", platform.platform())
    for p in PACKAGES:
        t.add_row(p, _version(p))
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "none (CPU)"
    t.add_row("accelerator", cuda)
    t.add_row("threads", str(torch.get_num_threads()))
    console.print(t)
    console.print("[bold]tasks[/bold]:")
    for spec in CATALOG.values():
        console.print(f"  {spec.name:<10} {' | '.join(spec.modes):<52} {spec.help}")
    # Model names per registry key (a task, or a segmentation flavour), with what each adapter prefix takes.
    for key in model_tasks():
        native = ", ".join(list_models(task=key)) or "none"
        console.print(f"[bold]{key} models[/bold]: {native}")
        hints = adapter_hints(key)
        if hints:
            console.print("  also " + "; ".join(hints))
    console.print("[bold]data sources[/bold]:")
    for d in DATA_SOURCES:
        console.print("  " + d)
