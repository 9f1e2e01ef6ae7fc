"""Knowledge distillation: Hinton's loss by hand, the teacher's view of the student's batch, and
distillation through the normal trainer (alpha=0 is plain training, bit for bit)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optik.config import build_config
from optik.deploy.distill import TeacherAdapter, distillation_loss, kd_loss
from optik.engine.trainer import Trainer, TrainStep
from optik.errors import ConfigError

STUDENT_DATA = "synthetic:shapes?n=48&size=32&classes=3&seed=1"  # same class names as tiny_run's data


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_loss_equals_hand_computation():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    t = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 1, 4])
    T, alpha = 3.0, 0.3
    s_req = s.clone().float().requires_grad_(True)
    out = distillation_loss(s_req, t.float(), y, alpha=alpha, T=T)

    sn, tn = s.numpy(), t.numpy()
    p_s, p_t = _softmax(sn / T), _softmax(tn / T)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean()
    ce = -np.log(_softmax(sn)[np.arange(4), y.numpy()]).mean()
    assert float(out["kd"]) == pytest.approx(T * T * kl, rel=1e-5)
    assert float(out["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(alpha * T * T * kl + (1 - alpha) * ce, rel=1e-5)

    # The T² factor: d(T²·KL)/ds = T·(p_s − p_t)/B, so the soft term's gradient scale does not shrink with T.
    (grad,) = torch.autograd.grad(kd_loss(s_req, t.float(), T), s_req)
    np.testing.assert_allclose(grad.numpy(), T * (p_s - p_t) / 4, rtol=1e-4, atol=1e-6)


def test_kd_is_zero_for_equal_logits_and_grows_with_disagreement():
    z = torch.randn(3, 4)
    assert float(kd_loss(z, z, T=2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(z, z.flip(-1), T=2.0)) > 0.01


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return torch.zeros(len(x), 3)


def test_teacher_sees_its_own_normalisation_and_size():
    raw = torch.rand(2, 3, 16, 16)
    s_mean, s_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    t_mean, t_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    student_x = (raw - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(s_std).view(1, 3, 1, 1)
    teacher_x = (raw - torch.tensor(t_mean).view(1, 3, 1, 1)) / torch.tensor(t_std).view(1, 3, 1, 1)

    rec = _Recorder()
    TeacherAdapter(rec, s_mean, s_std, t_mean, t_std, 16)(student_x)
    torch.testing.assert_close(rec.seen, teacher_x, rtol=1e-5, atol=1e-5)

    TeacherAdapter(rec, s_mean, s_std, t_mean, t_std, 8)(student_x)  # resized to the teacher's imgsz
    expect = F.interpolate(teacher_x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    assert rec.seen.shape == (2, 3, 8, 8)
    torch.testing.assert_close(rec.seen, expect, rtol=1e-4, atol=1e-4)
    assert not rec.w.requires_grad  # frozen
    assert "teacher" not in dict(TeacherAdapter(rec, s_mean, s_std, t_mean, t_std, 8).named_modules())


def _train(tmp_path: Path, name: str, **extra) -> Trainer:
    cfg = build_config("classify", "train", {
        "data": STUDENT_DATA, "model": "cnn", "epochs": 1, "imgsz": 24, "batch": 16, "plots": False,
        "project": str(tmp_path), "name": name, "seed": 3, **extra,
    })
    trainer = Trainer(cfg)
    trainer.result = trainer.fit()
    return trainer


def test_alpha_zero_trains_exactly_like_plain_training(tiny_run, tmp_path):
    plain = _train(tmp_path, "plain")
    kd = _train(tmp_path, "kd", teacher=tiny_run["run_dir"], distill_alpha=0.0)  # teacher: imgsz 32, student 24

    a, b = plain.model.state_dict(), kd.model.state_dict()
    assert a.keys() == b.keys()  # no teacher weights in the student
    assert all(torch.equal(a[k], b[k]) for k in a)

    rows = list(csv.DictReader(open(kd.run_dir / "metrics.csv")))
    assert float(rows[0]["train/kd"]) > 0  # the teacher did run: its KL term was computed and logged
    assert float(rows[0]["train/ce"]) == pytest.approx(float(rows[0]["train/loss"]), rel=1e-6)
    # The teacher hangs off the task: DDP (which wraps TrainStep) never sees its parameters.
    step_params = {id(p) for p in TrainStep(kd.task, kd.model).parameters()}
    teacher_params = {id(p) for p in kd.task._teacher.teacher.parameters()}
    assert step_params == {id(p) for p in kd.model.parameters()} and not step_params & teacher_params
    info = kd.task.meta["distill"]
    assert info["alpha"] == 0.0 and 0.0 <= info["teacher_top1"] <= 1.0


def test_distillation_changes_training_and_is_reported(tiny_run, tmp_path):
    plain = _train(tmp_path, "plain")
    kd = _train(tmp_path, "kd", teacher=tiny_run["best"], distill_alpha=0.9, distill_T=2.0)
    a, b = plain.model.state_dict(), kd.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    report = "\n".join(kd.task.report_lines(kd.result["metrics"]))  # what report.md gets (plots=true)
    assert "distilled from" in report and f"teacher top-1 {kd.task.meta['distill']['teacher_top1']:.4f}" in report
    from optik.weights import read_meta

    assert read_meta(kd.run_dir / "weights" / "best.safetensors")["distill"]["T"] == 2.0


def test_teacher_with_other_classes_is_a_config_error(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="'teacher'.*classes"):
        _train(tmp_path, "bad", data="synthetic:shapes?n=24&size=32&classes=2", teacher=tiny_run["best"])
    with pytest.raises(ConfigError, match="'teacher'"):
        _train(tmp_path, "bad2", teacher=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="'teacher'"):
        _train(tmp_path, "bad3", teacher="cnn")  # an architecture, not trained weights
    with pytest.raises(ConfigError, match="'distill_T' needs 'teacher'"):
        _train(tmp_path, "bad4", distill_T=2.0)


def test_onnx_teacher(tiny_run, tmp_path):
    """An exported teacher runs through its runtime wrapper and gives the same soft targets."""
    pytest.importorskip("onnxruntime")
    from optik import Model

    onnx = Model(tiny_run["best"]).export(format="onnx", out=str(tmp_path / "teacher.onnx"), parity=2)
    # fp32 students: under bf16 autocast the eager teacher's soft targets would be bf16 and the ONNX one's fp32
    eager = _train(tmp_path, "eager", teacher=tiny_run["best"], distill_alpha=0.5, amp=False)
    exported = _train(tmp_path, "onnx", teacher=str(onnx), distill_alpha=0.5, amp=False)
    assert exported.task.meta["distill"]["teacher_top1"] == eager.task.meta["distill"]["teacher_top1"]
    a, b = eager.model.state_dict(), exported.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


@pytest.mark.slow
def test_distillation_under_torchrun(tiny_run, tmp_path):
    """Two DDP processes, each with its own frozen teacher: the teacher is no DDP parameter."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={port}", "-m", "optik", "classify", "train", f"data={STUDENT_DATA}", "model=cnn", "epochs=1",
        "imgsz=24", "batch=8", f"teacher={tiny_run['best']}", "distill_alpha=0.5", "plots=false",
        f"project={tmp_path}", "name=ddp",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "classify" / "ddp" / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["train/kd"]) > 0
