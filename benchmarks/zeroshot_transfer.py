"""Transfer from a tiny CLIP: zero-shot vs fine-tuned vs WiSE-FT, and DeViSE vs CLIP on generalised zero-shot.

1. A tiny CLIP is trained from scratch on synthetic:captions (its default held-out colour-shape pairs never seen).
2. ``objective=finetune`` on synthetic:shapes (5 shape names the CLIP knows; other colours, backgrounds and sizes than
   its captions) with ``head=zeroshot`` and ``head=linear``; every WiSE-FT α of the grid scored on the shapes' val split
   (in-distribution) and on a shifted set (``difficulty=0.9`` instead of 0.2: low contrast, heavy texture, another seed).
3. ``objective=devise`` on synthetic:captions one-shape scenes (labels: the 25 colour-shape pairs, the 5 held-out pairs
   unseen), label embeddings from the CLIP's text tower; S / U / H / ZSL next to the CLIP's own zero-shot on the same
   test images (the CLIP, too, never saw the unseen pairs).

Timings come from a 2-core CPU shared with other jobs: noisy.

    python benchmarks/zeroshot_transfer.py [n=3000] [clip_epochs=5] [ft_epochs=15] [devise_epochs=6] [imgsz=40]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402

SHAPES = "circle,square,triangle,star,cross"


def clip_gzsl(clip_dir: str, devise_dir: str) -> dict[str, float]:
    """The CLIP's zero-shot logits over the 25 pairs on DeViSE's GZSL test images, scored by the same metric."""
    from optik.config import build_config
    from optik.tasks.zeroshot import ZeroshotTask
    from optik.weights import read_meta
    from optik.zeroshot.devise import gzsl_from_scores
    from optik.zeroshot.finetune import zeroshot_logits
    from optik.zeroshot.objective import load_clip

    meta = read_meta(Path(devise_dir) / "weights" / "best.safetensors")
    task = ZeroshotTask(build_config("zeroshot", "val", {"model": devise_dir, "data": meta["data"], "imgsz": meta["imgsz"]}), meta=meta)
    test = task.datasets().val
    clip, cmeta = load_clip(clip_dir)
    task.meta.update(mean=clip.default_cfg.get("mean", task.meta.get("mean")), std=clip.default_cfg.get("std", task.meta.get("std")))
    scores, labels = [], []
    with torch.no_grad():
        for i in range(0, len(test), 128):
            batch = [test[j] for j in range(i, min(i + 128, len(test)))]
            x = torch.stack([b[0] for b in batch])
            scores.append(zeroshot_logits(clip, x, meta["classes"], cmeta["templates"]))
            labels += [b[1]["label"] for b in batch]
    seen = [c not in meta["unseen"] for c in meta["classes"]]
    return gzsl_from_scores(torch.cat(scores), torch.tensor(labels), seen)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    n, imgsz = int(args.get("n", 3000)), int(args.get("imgsz", 40))
    clip_epochs, ft_epochs, dv_epochs = int(args.get("clip_epochs", 5)), int(args.get("ft_epochs", 15)), int(args.get("devise_epochs", 6))
    rows, t_all = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        clip = Model("cnn", task="zeroshot")
        cm = clip.train(data=f"synthetic:captions?n={n}&val=300", epochs=clip_epochs, imgsz=imgsz, batch=128, lr=2e-3,
                        warmup_epochs=1, project=tmp, name="clip", plots=False)  # fmt: skip
        clip_dir, clip_s = str(clip.run_dir), time.time() - t0
        print(f"tiny CLIP: {clip_s:.0f} s, held-out-pair zero-shot top-1 {cm['top1']:.3f} (25 names)")

        data = f"synthetic:shapes?n=1500&size={imgsz}&difficulty=0.2&classes={SHAPES}"
        shift = f"synthetic:shapes?n=300&size={imgsz}&classes={SHAPES}&difficulty=0.9&seed=11"
        grid = [0, 0.25, 0.5, 0.75, 1]
        for head in ("zeroshot", "linear"):
            t0 = time.time()
            m = Model(clip_dir, task="zeroshot")
            met = m.train(objective="finetune", head=head, data=data, shift_data=shift, epochs=ft_epochs, batch=64, lr=1e-3,
                          wise=grid, project=tmp, name=f"ft_{head}", plots=False)  # fmt: skip
            secs = time.time() - t0
            for a in grid:
                k = f"a{a:g}"
                rows.append({"part": "finetune", "head": head, "alpha": a, "val_top1": round(met[f"top1@{k}"], 3),
                             "shift_top1": round(met[f"shift_top1@{k}"], 3), "train_s": round(secs, 1)})  # fmt: skip

        t0 = time.time()
        d = Model("cnn", task="zeroshot")
        dm = d.train(objective="devise", text_model=clip_dir, data=f"synthetic:captions?n={n}&val=300", epochs=dv_epochs, imgsz=imgsz,
                     batch=64, lr=2e-3, project=tmp, name="devise", plots=False)  # fmt: skip
        dv_s = time.time() - t0
        cz = clip_gzsl(clip_dir, str(d.run_dir))
        for name, m_, secs in (("devise", dm, dv_s), ("clip zero-shot", cz, clip_s)):
            rows.append({"part": "gzsl", "method": name, **{k: round(m_[k], 3) for k in ("S", "U", "H", "zsl")},
                         "seen_images": m_["seen_images"], "unseen_images": m_["unseen_images"], "train_s": round(secs, 1)})  # fmt: skip
    write_results("zeroshot_transfer", rows, note=(
        f"tiny CLIP (cnn, {n} caption scenes, {clip_epochs} epochs, imgsz {imgsz}); fine-tuning on synthetic:shapes "
        f"({SHAPES}; difficulty 0.2, 1500 images, {ft_epochs} epochs), shift = difficulty 0.9; DeViSE {dv_epochs} epochs on the caption scenes' "
        f"one-shape images, unseen = the CLIP's 5 held-out pairs. Total {time.time() - t_all:.0f} s on a shared 2-core CPU "
        "(noisy timings)."))  # fmt: skip


if __name__ == "__main__":
    main()
