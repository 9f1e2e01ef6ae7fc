"""Detection accuracy under a CPU time budget on synthetic:shapes-det at 128 px.

For the house detector and one torchvision detector: COCO mAP@[.5:.95] and mAP@.5 on the val
split after `minutes` of training (goal for the house detector: mAP@[.5:.95] ≥ 0.70), plus
inference ms/image (batch 1, eager, NMS included).

    python benchmarks/detect_accuracy.py [minutes=10] [models=house,tv:ssdlite]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.data.synthetic import shapes_detection  # noqa: E402

DATA = "synthetic:shapes-det?n=3000&size=128&classes=3&max_objects=5&difficulty=0.3&seed=0"


def inference_ms(m: Model, n: int = 30) -> float:
    images, _, _ = shapes_detection(n=n, size=128, classes=3, max_objects=5, difficulty=0.3, seed=4242)
    m.predict(images[0])  # warm-up (model load, first-call allocations)
    t = time.perf_counter()
    for img in images:
        m.predict(img)
    return 1e3 * (time.perf_counter() - t) / n


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    minutes = float(args.get("minutes", 10))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.get("models", "house,tv:ssdlite").split(","):
            t0 = time.time()
            m = Model(name, task="detect")
            lr = {"house": 2e-3}.get(name, 1e-3)
            metrics = m.train(data=DATA, epochs=300, time=minutes / 60, imgsz=128, batch=16, lr=lr, project=tmp,
                              mosaic=0.5 if name.startswith("house") else 0.0, close_mosaic=0, plots=False)
            epochs = len(open(Path(m.run_dir) / "metrics.csv").read().splitlines()) - 1
            rows.append({"model": name, "train_min": minutes, "wall_s": round(time.time() - t0, 1), "epochs": epochs,
                         "mAP50_95": metrics["AP"], "mAP50": metrics["AP50"], "AR100": metrics["AR100"],
                         "infer_ms_per_img": inference_ms(m),
                         "goal": ">= 0.70 mAP50-95" if name == "house" else ""})
    write_results("detect_accuracy", rows, data=DATA, imgsz=128)


if __name__ == "__main__":
    main()
