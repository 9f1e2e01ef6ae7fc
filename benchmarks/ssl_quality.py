"""Self-supervised representation quality on a small budget: SimCLR / MoCo v2 / DINO (CNN) and MAE (ViT) vs random
init vs supervised training of the same architecture.

Each row trains one architecture on the same data for the same number of epochs (a fixed epoch budget, not
``time=``: on the shared CPU a wall-clock budget bought 2 to 9 epochs depending on the load), then measures its
frozen features with ``optik embed val``: cosine k-NN top-1 (k=20, T=0.07, DINO's eval_knn) and a linear probe
(logistic regression) against the training split's features. "random init" is the untrained network; "supervised"
is ``optik classify train`` with labels for the same epochs, evaluated on its backbone.

Two architectures, each with its own baselines: the small CNN (``model=cnn``, 64-d) for SimCLR / MoCo / DINO
(DINO with its default 6 local crops, and with the two global crops only), and a small timm ViT
(``timm:vit_tiny_patch16_224`` with :data:`VIT`: patch 4 at 32 px, 64-d, depth 4) for MAE, which needs a ViT.

``methods=`` picks rows (comma-separated ids, default all: ``random,simclr,moco,dino,dino_2crops,supervised,
vit_random,mae,vit_supervised``); rows of an earlier run on the same data that are not rerun are kept in the JSON,
each row with its epochs and the date it was measured. The CPU is shared with other work: the timings are noisy.

    python benchmarks/ssl_quality.py [data=digits] [epochs=8] [vit_epochs=8] [methods=mae,vit_random,vit_supervised]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write_results

from optik.config import build_config
from optik.embed.run import validate
from optik.engine.trainer import Trainer

#: The ViT of the MAE rows (``backbone_args``): 8×8 = 64 patches of 4 px at 32 px, so 75 % masking leaves 16.
VIT_ARCH = "timm:vit_tiny_patch16_224"
VIT = {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4}
MAE = {"decoder_dim": 64, "decoder_depth": 2, "mask_ratio": 0.75}

# id → (label, architecture, how it is made)
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "random": ("random init", "cnn", {"kind": "random"}),
    "simclr": ("SimCLR", "cnn", {"kind": "embed", "method": "simclr"}),
    "moco": ("MoCo v2", "cnn", {"kind": "embed", "method": "moco"}),
    "dino": ("DINO (2 global + 6 local crops)", "cnn", {"kind": "embed", "method": "dino"}),
    "dino_2crops": ("DINO (2 global crops)", "cnn", {"kind": "embed", "method": "dino", "local_crops": 0}),
    "supervised": ("supervised (labels)", "cnn", {"kind": "classify"}),
    "vit_random": ("random init", "vit", {"kind": "random"}),
    "mae": ("MAE", "vit", {"kind": "embed", "method": "mae", **MAE}),
    "vit_supervised": ("supervised (labels)", "vit", {"kind": "classify"}),
}


def _vit_seed(path: Path, classes: list[str]) -> str:
    """A classify weights file of the random-init ViT: ``embed val`` and ``classify train`` rebuild :data:`VIT`
    from its ``model_config`` (neither takes ``backbone_args=``), so the baselines are exactly MAE's architecture."""
    import torch

    from optik import models
    from optik.weights import save_weights

    torch.manual_seed(0)
    net = models.create(VIT_ARCH, task="classify", num_classes=len(classes), img_size=32, **VIT)
    save_weights(net.state_dict(), path, {"model": VIT_ARCH, "task": "classify", "classes": classes, "model_config": VIT, "imgsz": 32})
    return str(path)


def _keep_config(weights: str, config: dict[str, Any]) -> None:
    """Put ``model_config`` back into a classify run's weights: ``classify train`` from a weights file does not
    carry a timm model's extra arguments forward (a timm model has no ``config_dict()``), and ``embed val`` would
    rebuild the default ViT."""
    from optik.weights import load_state_dict, read_meta, save_weights

    meta = read_meta(weights)
    if not meta.get("model_config"):
        save_weights(load_state_dict(weights), weights, {**meta, "model_config": config})


def run_row(key: str, *, data: str, epochs: int, vit_epochs: int, tmp: Path, classes: list[str]) -> dict[str, Any]:
    label, arch, how = ROWS[key]
    vit = arch == "vit"
    n_epochs = vit_epochs if vit else epochs
    common: dict[str, Any] = {"data": data, "imgsz": 32, "batch": 128, "plots": False, "seed": 0, "project": str(tmp)}
    evalkw = {"plots": False, "probe": True, "project": str(tmp), "name": f"val-{key}"}
    seed = _vit_seed(tmp / "vit_seed.safetensors", classes) if vit else None
    t0, ran = time.time(), 0
    if how["kind"] == "random":
        model = seed or "cnn"
        m = validate(build_config("embed", "val", {**common, **evalkw, "model": model}))
    else:
        extra = {k: v for k, v in how.items() if k != "kind"}
        if how["kind"] == "embed":
            model_kw = {"model": VIT_ARCH, "backbone_args": VIT} if vit else {"model": "cnn"}
            cfg = build_config("embed", "train", {**common, **model_kw, **extra, "epochs": n_epochs, "name": key})
        else:  # supervised: the same architecture trained with the labels (the ViT from the random seed file)
            cfg = build_config("classify", "train", {**common, "model": seed or "cnn", "epochs": n_epochs, "name": key, "val": True})
        out = Trainer(cfg).fit()
        ran = out["epochs_run"]
        if vit and how["kind"] == "classify":
            _keep_config(out["best"], VIT)
        train_s = time.time() - t0
        m = validate(build_config("embed", "val", {"model": out["run_dir"], **evalkw}))
    row = {"id": key, "representation": label, "model": f"{VIT_ARCH} {VIT}" if vit else "cnn", "epochs": ran,
           "train_s": round(train_s, 1) if how["kind"] != "random" else 0.0, "knn_top1": m["knn_top1"], "probe_top1": m["probe_top1"],
           "measured": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    print(f"{key}: {time.time() - t0:.0f} s  k-NN {m['knn_top1']:.4f}  probe {m['probe_top1']:.4f}", flush=True)
    return row


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    data, epochs = args.get("data", "digits"), int(args.get("epochs", 8))
    vit_epochs = int(args.get("vit_epochs", epochs))
    keys = [k.strip() for k in args.get("methods", ",".join(ROWS)).split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise SystemExit(f"unknown methods= {unknown}; choose from {', '.join(ROWS)}")
    from optik.data.sources import load_classification_data

    classes = list(load_classification_data(data, val_fraction=0.2, seed=0).classes)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = [run_row(k, data=data, epochs=epochs, vit_epochs=vit_epochs, tmp=Path(tmp), classes=classes) for k in keys]
    # Rows of an earlier run on the same data that were not rerun stay (each carries its epochs and date).
    old_path = RESULTS / "ssl_quality.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    by_id = {r["id"]: r for r in old.get("rows", []) if old.get("data") == data and "id" in r}
    by_id.update({r["id"]: r for r in fresh})
    rows = [by_id[k] for k in ROWS if k in by_id]
    print(f"\n{data}, imgsz=32 batch=128, this run: cnn {epochs} / ViT {vit_epochs} epochs (train s: shared CPU, noisy)\n")
    print(f"{'id':<16}{'representation':<34}{'epochs':>7}{'train s':>9}{'k-NN top-1':>12}{'probe top-1':>13}")
    for r in rows:
        print(f"{r['id']:<16}{r['representation']:<34}{r['epochs']:>7}{r['train_s']:>9}{r['knn_top1']:>12.4f}{r['probe_top1']:>13.4f}")
    write_results("ssl_quality", rows, data=data, imgsz=32, batch=128, vit={"arch": VIT_ARCH, **VIT},
                  mae=MAE, knn={"k": 20, "T": 0.07}, probe="sklearn LogisticRegression on standardised features")  # fmt: skip


if __name__ == "__main__":
    main()
