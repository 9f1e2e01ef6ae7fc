"""Accuracy under a wall-clock budget on built-in data, through the public API.

- digits: top-1 on the digits validation split after 60 s of CPU training (goal ≥ 98 %).
- shapes: top-1 on synthetic:shapes (4 classes, 48 px) after 2 minutes.

    python benchmarks/digits_accuracy.py [digits_s=60] [shapes_s=120]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402

RUNS = [
    # name, budget key, model, train kwargs
    ("digits", "digits_s", "cnn", dict(data="digits", imgsz=32, batch=32, lr=3e-3, epochs=100, scale=[0.85, 1.0], hflip=0.0)),
    ("shapes", "shapes_s", "resnet", dict(data="synthetic:shapes?n=6000&size=48&classes=4&difficulty=0.4", imgsz=48,
                                          batch=32, lr=3e-3, epochs=100, scale=[1.0, 1.0])),
]


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    budgets = {"digits_s": float(args.get("digits_s", 60)), "shapes_s": float(args.get("shapes_s", 120))}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, key, model, kw in RUNS:
            t0 = time.time()
            m = Model(model)
            metrics = m.train(time=budgets[key] / 3600, project=tmp, plots=False, **kw)
            rows.append({
                "data": name, "model": model, "budget_s": budgets[key], "wall_s": round(time.time() - t0, 1),
                "epochs": len(open(Path(m.run_dir) / "metrics.csv").read().splitlines()) - 1,
                "top1": metrics["top1"], "f1_macro": metrics["f1_macro"], "val_images": metrics["count"],
                "goal": ">= 0.98" if name == "digits" else "",
            })
    write_results("digits_accuracy", rows)


if __name__ == "__main__":
    main()
