"""Segmentation accuracy under a CPU time budget on synthetic scenes at 128 px.

- semantic: U-Net (``unet_s``) on ``synthetic:shapes-seg``: val mIoU after ``minutes`` (goal ≥ 0.90);
- instance: Mask R-CNN (``tv:maskrcnn``, resnet18-FPN, random init) on ``synthetic:shapes-inst``:
  mask mAP@[.5:.95] / mAP@.5 (and box mAP) after ``inst_minutes``;
plus inference ms/image (batch 1, eager, post-processing included).

    python benchmarks/segment_accuracy.py [minutes=5] [inst_minutes=10] [which=semantic,instance]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.data.synthetic import shapes_segmentation  # noqa: E402

SEM_DATA = "synthetic:shapes-seg?n=2000&size=128&classes=3&difficulty=0.3&seed=0"
INST_DATA = "synthetic:shapes-inst?n=2000&size=128&classes=3&difficulty=0.3&seed=0"


def inference_ms(m: Model, kind: str, n: int = 20) -> float:
    images = shapes_segmentation(n=n, size=128, classes=3, difficulty=0.3, seed=4242, kind=kind)[0]
    m.predict(images[0])  # warm-up
    t = time.perf_counter()
    for img in images:
        m.predict(img)
    return 1e3 * (time.perf_counter() - t) / n


def _epochs(m: Model) -> int:
    return len(open(Path(m.run_dir) / "metrics.csv").read().splitlines()) - 1


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    which = args.get("which", "semantic,instance").split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "semantic" in which:
            minutes = float(args.get("minutes", 5))
            t0 = time.time()
            m = Model(args.get("model", "unet_s"), task="segment")
            r = m.train(data=SEM_DATA, epochs=300, time=minutes / 60, imgsz=128, batch=8, lr=3e-3, project=tmp, plots=False)
            rows.append({"task": "semantic", "model": m.meta.get("model"), "train_min": minutes, "wall_s": round(time.time() - t0, 1),
                         "epochs": _epochs(m), "mIoU": r["mIoU"], "pixel_acc": r["pixel_acc"], "mDice": r["mDice"],
                         "infer_ms_per_img": inference_ms(m, "semantic"), "goal": "mIoU >= 0.90"})
        if "instance" in which:
            minutes = float(args.get("inst_minutes", 10))
            t0 = time.time()
            m = Model("tv:maskrcnn", task="segment")
            r = m.train(task="instance", data=INST_DATA, epochs=300, time=minutes / 60, imgsz=128, batch=4, lr=1e-3,
                        project=tmp, plots=False)
            rows.append({"task": "instance", "model": "tv:maskrcnn", "train_min": minutes, "wall_s": round(time.time() - t0, 1),
                         "epochs": _epochs(m), "mask_mAP50_95": r["AP"], "mask_mAP50": r["AP50"], "box_mAP50_95": r.get("box_AP"),
                         "infer_ms_per_img": inference_ms(m, "instance")})
    # Rows of the tasks not run now are kept from the last results (each task is a separate, long run).
    import json

    from _common import RESULTS

    old = RESULTS / "segment_accuracy.json"
    kept = [r for r in json.loads(old.read_text())["rows"] if r["task"] not in which] if old.is_file() else []
    write_results("segment_accuracy", kept + rows, semantic_data=SEM_DATA, instance_data=INST_DATA, imgsz=128)


if __name__ == "__main__":
    main()
