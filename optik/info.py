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
    from optik.models import list_models

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
    console.print("[bold]classify models[/bold]: " + ", ".join(list_models(task="classify")))
    console.print("  also timm:<any timm name> (e.g. timm:convnext_atto), hf:<hub id or local dir>")
    console.print("[bold]detect models[/bold]: " + ", ".join(list_models(task="detect")))
    console.print("  also tv:fasterrcnn, tv:retinanet, tv:fcos, tv:ssdlite (torchvision), hf:<DETR-family id or dir>")
    for sub in ("semantic", "instance", "panoptic"):
        console.print(f"[bold]segment task={sub} models[/bold]: " + ", ".join(list_models(task=sub)))
    console.print("  also tv:deeplabv3_mobilenet_v3_large, tv:lraspp_…, tv:fcn_resnet50 (semantic), tv:maskrcnn (instance),"
                  " hf:<Mask2Former/OneFormer/SegFormer id or dir>; sam predict: hf:<SAM id or dir>")
    console.print("[bold]generate models[/bold]: " + ", ".join(list_models(task="generate")))
    console.print("  also hf:<diffusers UNet2DModel dir> (DDPM); generate sample prompt=… model=hf:<Stable Diffusion id or dir>")
    console.print("[bold]data sources[/bold]:")
    for d in DATA_SOURCES:
        console.print("  " + d)
