"""Generative models on scikit-learn's digits after a fixed CPU budget each, through the public API.

Rows: DCGAN (unconditional), conditional GAN, VAE (unconditional), class-conditional DDPM
(classifier-free guidance), each trained for ``--minutes`` of wall-clock time (``time=`` key), then ``optik
generate eval``: FID / KID / IS / precision / recall of as many generated images as the val split
has (same class mix) against the val split, and CAS (train a classifier on as many generated images
as the real train split has, same class mix; test on the real val split) for the conditional models;
the DDPM is evaluated at guidance 2 and 4. A "real data" row gives the floor: train images vs val
images through the same features, and CAS of a classifier trained on real train images.

Features: the dataset-specific optik classifier (``features=auto``): FIDs rank models on digits;
they are not comparable with published Inception FIDs.

    python benchmarks/generate_quality.py              # full: 4 x 5 min training + eval, ~27 min on 2 idle cores
    python benchmarks/generate_quality.py --quick      # smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write_results  # noqa: E402

import torch  # noqa: E402

from optik import Model  # noqa: E402

DATA = "digits"
IMGSZ = 16  # digits are 8x8: 16 px keeps every detail and lets a DDPM train on CPU
MODELS = {  # model -> extra train keys
    "dcgan": {"lr": 2e-4, "ema": True, "label_smoothing": 0.1},
    "cgan": {"lr": 2e-4, "ema": True, "label_smoothing": 0.1},
    "vae": {"lr": 1e-3},
    "ddpm": {"lr": 1e-3, "ema": True, "ema_decay": 0.995},
}
GUIDANCE = {"ddpm": (2.0, 4.0)}  # classifier-free guidance scales evaluated (the same trained model)


def real_floor(project: Path, cas_epochs: int) -> dict:
    """FID of real train images vs the val split, and CAS of real train images: the best a model can do."""
    from optik.config import build_config
    from optik.generative.cas import classification_accuracy_score
    from optik.generative.features import resolve_features
    from optik.metrics.generative import GenerativeMetrics
    from optik.tasks.generate import GenerateTask

    cfg = build_config("generate", "train", {"data": DATA, "imgsz": IMGSZ, "project": str(project)})
    task = GenerateTask(cfg)
    data = task.datasets()
    val, train = data.val, data.train.with_transform(task.transforms(train=False))
    metric = GenerativeMetrics(resolve_features(cfg))
    xv = torch.stack([val[i][0] for i in range(len(val))])
    xt = torch.stack([train[i][0] for i in range(len(val))])
    metric.update(xt, xv)
    m = metric.compute()

    def hwc(ds, n):
        from optik.generative.utils import to_uint8

        x = to_uint8(torch.stack([ds[i][0] for i in range(n)]))
        return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy(), [int(ds[i][1]) for i in range(n)]

    (ft, yt), (fv, yv) = hwc(train, len(train)), hwc(val, len(val))
    cas = classification_accuracy_score(ft, yt, fv, yv, data.meta["classes"], epochs=cas_epochs, imgsz=IMGSZ,
                                        project=str(project / "cas_real"), hflip=0.0)  # fmt: skip
    return {"model": "real data (train vs val)", "FID": m["FID"], "KID": m["KID"], "IS": m["IS"], "precision": m["precision"],
            "recall": m["recall"], "CAS": cas["CAS"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 s per model: a smoke run")
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    args = ap.parse_args()
    minutes = 1 / 3 if args.quick else args.minutes
    cas_epochs = 2 if args.quick else 10
    project = Path(tempfile.mkdtemp(prefix="optik-genq-"))
    rows = []
    try:
        rows.append(real_floor(project, cas_epochs))
        for name in args.models.split(","):
            m = Model(name, task="generate")
            t0 = time.time()
            m.train(data=DATA, imgsz=IMGSZ, batch=64, epochs=1000, time=minutes / 60, val=False, project=str(project),
                    name=name, plots=True, **MODELS[name])  # fmt: skip
            train_s = time.time() - t0
            epochs = sum(1 for _ in open(Path(m.run_dir) / "metrics.csv")) - 1
            conditional = name in ("cgan", "ddpm")
            for w in GUIDANCE.get(name, (2.0,)):
                ev = m.evaluate(project=str(project), name=f"{name}-eval", cas=conditional, cas_epochs=cas_epochs,
                                steps=25, guidance_scale=w, scheduler="ddim")  # fmt: skip
                row = {"model": name + (f" (CFG {w:g}, 25 DDIM)" if name == "ddpm" else ""), "train_s": round(train_s),
                       "epochs": epochs, **{k: ev[k] for k in ("FID", "KID", "IS", "precision", "recall")},
                       "CAS": ev.get("CAS"), "img_per_s": ev["images_per_second"]}  # fmt: skip
                rows.append(row)
                if not args.quick:
                    shutil.copy(Path(ev["run_dir"]) / "samples.png", RESULTS / f"generate_quality_{name}{'' if w == 2.0 else f'_cfg{w:g}'}.png")
        write_results("generate_quality" + ("_quick" if args.quick else ""), rows, data=DATA, imgsz=IMGSZ,
                      minutes_per_model=minutes, features="auto (optik cnn trained on digits, dataset-specific FID)")  # fmt: skip
    finally:
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
