"""The same command under torchrun with 2 processes trains with DDP (gloo on CPU)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# The metric comparisons below are exact (sharded sums == one process), so they run in fp32: bf16 results
# depend on the kernel and memory layout (training-time val runs the channels-last training model, `val` the
# loaded one), which moves a pixel or an image across a decision boundary now and then.
FP32 = "amp=false"


def torchrun_optik(tmp_path, *args: str) -> None:
    """`torchrun --nproc_per_node=2 -m optik ARGS` on 127.0.0.1; fails the test with its stderr."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "-m", "optik", *args, f"project={tmp_path}", "name=ddp",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=400, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    torchrun_optik(tmp_path, "classify", "train", "data=synthetic:shapes?n=80&size=24&classes=3", "model=cnn",
                   "epochs=2", "imgsz=24", "batch=8", FP32)
    run = tmp_path / "classify" / "ddp"
    assert (run / "weights" / "best.safetensors").is_file() and (run / "report.md").is_file()
    assert not (tmp_path / "classify" / "ddp2").exists()  # rank 1 did not create its own run dir
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2  # rank 0 logged once per epoch

    # Sharded evaluation + metric all-reduce must equal a single-process evaluation of the same weights.
    v = subprocess.run(
        [sys.executable, "-m", "optik", "classify", "val", f"model={run}", f"project={tmp_path}", "name=v", FP32],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path,
    )
    assert v.returncode == 0, v.stderr[-3000:]
    single = json.loads((tmp_path / "classify" / "v" / "metrics.json").read_text())
    best = max(float(r["val/top1"]) for r in rows)  # best.safetensors is the best epoch's weights
    assert abs(best - single["top1"]) < 1e-9


@pytest.mark.slow
def test_torchrun_two_processes_detection(tmp_path):
    """Detectors train through forward_loss; DDP must still all-reduce their gradients."""
    torchrun_optik(tmp_path, "detect", "train", "data=synthetic:shapes-det?n=16&size=64&classes=2", "model=house_s",
                   "epochs=1", "imgsz=64", "batch=4", "plots=false")
    assert (tmp_path / "detect" / "ddp" / "weights" / "best.safetensors").is_file()


@pytest.mark.slow
def test_torchrun_two_processes_segmentation(tmp_path):
    """Sharded semantic evaluation (confusion matrices summed over ranks) equals a single-process val."""
    torchrun_optik(tmp_path, "segment", "train", "data=synthetic:shapes-seg?n=20&size=48&classes=2", "model=unet_s",
                   "epochs=1", "imgsz=48", "batch=4", "plots=false", FP32)
    run = tmp_path / "segment" / "ddp"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    v = subprocess.run(
        [sys.executable, "-m", "optik", "segment", "val", f"model={run}", f"project={tmp_path}", "name=v", "plots=false", FP32],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path,
    )
    assert v.returncode == 0, v.stderr[-3000:]
    single = json.loads((tmp_path / "segment" / "v" / "metrics.json").read_text())
    assert abs(float(rows[-1]["val/mIoU"]) - single["mIoU"]) < 1e-9
    assert abs(float(rows[-1]["val/pixel_acc"]) - single["pixel_acc"]) < 1e-9
