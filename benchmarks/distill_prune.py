"""Smaller models from a trained one, on synthetic:shapes at 48 px (the demo's data), through the public API:

- teacher: ``resnet`` trained from scratch;
- students: ``cnn`` (24k parameters) and ``mobilenet`` trained on the labels alone;
- distilled students: the same architectures, same seed and epochs, with ``teacher=`` (Hinton 2015);
- pruned teacher: 50 % global-L1 unstructured pruning of the teacher + a short masked fine-tune.

Columns: val top-1, parameters (nonzero), weights MB (safetensors) and gzip MB, latency ms at batch 1
(median, eager CPU). Zeros do not make dense kernels faster: expect the pruned teacher's latency to
equal the teacher's and its gain to show in the gzip size.

    python benchmarks/distill_prune.py            # full: ~5 min on 2 idle cores
    python benchmarks/distill_prune.py --quick    # smoke run, < 1 min
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

import torch  # noqa: E402

from optik import Model  # noqa: E402
from optik.config import build_config  # noqa: E402
from optik.engine.inference import load_trained  # noqa: E402

# Fixed epoch counts (not wall-clock budgets): on a shared machine a time budget trains a different
# model every run. Both students get the same epochs, so the distilled one is not short-changed.
FULL = dict(n=4000, teacher_epochs=12, student_epochs=12, finetune=2, rounds=40)
QUICK = dict(n=128, teacher_epochs=1, student_epochs=1, finetune=1, rounds=10)
STUDENTS = ("cnn", "mobilenet")


def latencies_ms(weights: list[str], imgsz: int, rounds: int, per_round: int = 5) -> list[float]:
    """Median eager latency of one image per model. The models take turns (round-robin), so load
    from other processes on a shared machine hits them alike instead of whichever ran last."""
    models = [load_trained(build_config("classify", "val", {"model": w}))[1] for w in weights]
    x = torch.rand(1, 3, imgsz, imgsz)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for m in models:  # warm-up (oneDNN primitive creation)
            for _ in range(3):
                m(x)
        for _ in range(rounds):
            for m, t in zip(models, times):
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    m(x)
                    t.append(1e3 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def describe(name: str, model: str, weights: str, top1: float) -> dict:
    from optik.engine.checkpoint import load_state_dict

    state = load_state_dict(weights)
    raw = Path(weights).read_bytes()
    return {
        "name": name, "model": model, "top1": top1,
        "params": sum(v.numel() for k, v in state.items() if v.is_floating_point() and "running_" not in k),
        "nonzero": sum(int(torch.count_nonzero(v)) for k, v in state.items() if v.is_floating_point() and "running_" not in k),
        "size_mb": len(raw) / 1e6, "gzip_mb": len(gzip.compress(raw, 6)) / 1e6, "weights": weights,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: a < 1 min smoke run")
    ap.add_argument("--imgsz", type=int, default=48)
    ap.add_argument("--alpha", type=float, default=0.7)
    ap.add_argument("--T", type=float, default=4.0)
    args = ap.parse_args()
    p = QUICK if args.quick else FULL
    data = f"synthetic:shapes?n={p['n']}&size={args.imgsz}&classes=4&difficulty=0.4&seed=0"
    common = dict(data=data, imgsz=args.imgsz, batch=32, lr=3e-3, seed=0, plots=False, scale=[1.0, 1.0])
    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Model("resnet")
        t_top1 = teacher.train(project=tmp, name="teacher", epochs=p["teacher_epochs"], **common)["top1"]
        rows.append(describe("teacher", "resnet", str(teacher.weights), t_top1))

        for arch in STUDENTS:  # a tiny student and a mid-sized one: distillation helps them differently
            student = Model(arch)
            s_top1 = student.train(epochs=p["student_epochs"], project=tmp, name=f"student-{arch}", **common)["top1"]
            rows.append(describe("student", arch, str(student.weights), s_top1))
            distilled = Model(arch)
            d_top1 = distilled.train(
                epochs=p["student_epochs"], project=tmp, name=f"distilled-{arch}", teacher=str(teacher.weights),
                distill_alpha=args.alpha, distill_T=args.T, **common,
            )["top1"]
            rows.append(describe(f"distilled (a={args.alpha}, T={args.T})", arch, str(distilled.weights), d_top1))
        (pr,) = teacher.prune(amount=[0.5], epochs=p["finetune"], lr=3e-4, project=tmp, batch=32, scale=[1.0, 1.0])
        rows.append(describe("pruned teacher (50 %, unstructured)", "resnet", pr["weights"], pr["top1_finetuned"]))
        rows[-1]["top1_before_finetune"] = pr["top1_pruned"]
        for r, ms in zip(rows, latencies_ms([r.pop("weights") for r in rows], args.imgsz, p["rounds"])):
            r["latency_ms_b1"] = ms
    write_results(
        "distill_prune" + ("_quick" if args.quick else ""), rows, data=data, quick=args.quick,
        settings=p, wall_s=round(time.time() - t_start, 1), threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
