"""``optik demo`` (what ``make demo`` runs): train → val → predict on built-in data, ~1 min on 2 cores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

DEMO_DATA = "synthetic:shapes?n=4000&size=48&classes=4&difficulty=0.4&seed=0"


def run_demo(project: str = "runs", epochs: Any = 12, model: str = "resnet", imgsz: Any = 48, **extra: Any) -> dict[str, Any]:
    """Classification demo; later tasks append their own sections here."""
    from rich.console import Console
    from rich.table import Table

    from optik import Model
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
    results = m.predict(files, save=True, project=project, name="demo_predict")
    correct = sum(r.probs.top1 == y for r, y in zip(results, labels))

    table = Table(title="optik demo: what was made", show_header=True)
    table.add_column("artifact")
    table.add_column("where")
    table.add_row("training run (weights, metrics.csv, tb/, plots/, report.html)", str(run_dir))
    table.add_row("validation (metrics.json, confusion matrix)", metrics["run_dir"])
    table.add_row("predictions on 8 new images (annotated PNGs, predictions.jsonl)", str(Path(project) / "classify"))
    console.print(table)
    console.print(
        f"val top-1 {metrics['top1']:.3f} · new images {correct}/{len(results)} correct · "
        f"{time.time() - t0:.0f} s total. Open {run_dir / 'report.html'}"
    )
    return {"run_dir": str(run_dir), "top1": metrics["top1"], "predict_correct": correct}
