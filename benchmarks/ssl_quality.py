"""Self-supervised representation quality on a small budget: SimCLR / MoCo v2 / DINO vs random init vs supervised.

Each row trains the same small CNN (``model=cnn``, 32 px) on the same data for the same number of epochs (a
fixed epoch budget, not ``time=``: on the shared CPU a wall-clock budget bought 2 to 9 epochs depending on the
load), then measures its frozen features with ``optik embed val``:
cosine k-NN top-1 (k=20, T=0.07, DINO's eval_knn) and a linear probe (logistic regression) against the training
split's features. "random init" is the untrained CNN; "supervised" is ``optik classify train`` with labels for the
same epochs, evaluated on its backbone. The CPU is shared with other work: the timings are noisy.

    python benchmarks/ssl_quality.py [data=digits] [epochs=8]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results

from optik.config import build_config
from optik.embed.run import validate
from optik.engine.trainer import Trainer


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    data, epochs = args.get("data", "digits"), int(args.get("epochs", 8))
    common = {"data": data, "model": "cnn", "imgsz": 32, "batch": 128, "plots": False, "seed": 0}
    evalkw = {"plots": False, "probe": True}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        m = validate(build_config("embed", "val", {**common, **evalkw, "project": tmp, "name": "random"}))
        rows.append({"representation": "random init", "epochs": 0, "train_s": 0.0, "knn_top1": m["knn_top1"], "probe_top1": m["probe_top1"]})
        print(f"random init: {time.time() - t0:.0f} s", flush=True)
        runs = [(f"ssl {method}", "embed", {"method": method}) for method in ("simclr", "moco", "dino")]
        runs.append(("supervised (labels)", "classify", {}))
        for label, task, extra in runs:
            t0 = time.time()
            cfg = build_config(task, "train", {**common, **extra, "epochs": epochs, "project": tmp, "name": label.split()[-1].strip("()"),
                                               "val": task == "classify"})  # fmt: skip
            out = Trainer(cfg).fit()
            seconds = time.time() - t0
            m = validate(build_config("embed", "val", {"model": out["run_dir"], **evalkw, "project": tmp, "name": f"val-{label.split()[-1]}"}))
            rows.append({"representation": label, "epochs": out["epochs_run"], "train_s": round(seconds, 1), "knn_top1": m["knn_top1"],
                         "probe_top1": m["probe_top1"]})  # fmt: skip
            print(f"{label}: {seconds:.0f} s", flush=True)
    print(f"\n{data}, model=cnn imgsz=32 batch=128, {epochs} epochs each (train s: shared CPU, noisy)\n")
    print(f"{'representation':<22}{'epochs':>7}{'train s':>9}{'k-NN top-1':>12}{'probe top-1':>13}")
    for r in rows:
        print(f"{r['representation']:<22}{r['epochs']:>7}{r['train_s']:>9}{r['knn_top1']:>12.4f}{r['probe_top1']:>13.4f}")
    write_results("ssl_quality", rows, data=data, epochs=epochs, model="cnn", imgsz=32, batch=128,
                  knn={"k": 20, "T": 0.07}, probe="sklearn LogisticRegression on standardised features")  # fmt: skip


if __name__ == "__main__":
    main()
