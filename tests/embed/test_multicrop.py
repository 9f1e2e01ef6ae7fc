"""DINO multi-crop: the loss over (teacher global i, student crop j != i) pairs against a hand computation, the
per-resolution batching of the student, the teacher seeing only the global crops, the views, config errors, and
training + exact resume through the Trainer with local crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optik.config import build_config
from optik.embed.ssl import EmbedModel, dino_loss, multi_crop_forward
from optik.embed.views import local_crop_size, ssl_views
from optik.engine.trainer import Trainer
from optik.errors import ConfigError
from optik.weights import load_state_dict


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("n_local", [0, 1, 4])
def test_dino_loss_with_local_crops_equals_hand_computation(n_local: int) -> None:
    """DINOLoss: each teacher global view i against every student view j != i (the local ones included), mean over
    the batch, summed, divided by the 2·(2 + N) − 2 pairs."""
    rng = np.random.default_rng(n_local)
    t = [rng.normal(size=(3, 7)) for _ in range(2)]
    s = [rng.normal(size=(3, 7)) for _ in range(2 + n_local)]
    c = rng.normal(size=(1, 7))
    terms = []
    for i in range(2):
        pt = _softmax((t[i] - c) / 0.04)
        for j in range(2 + n_local):
            if j != i:
                terms.append((-(pt * np.log(_softmax(s[j] / 0.1))).sum(1)).mean())
    expected = sum(terms) / (2 * (2 + n_local) - 2)
    got = dino_loss([torch.tensor(x) for x in s], [torch.tensor(x) for x in t], torch.tensor(c), student_temp=0.1, teacher_temp=0.04)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # The count matters: the plain mean over all 2·(2 + N) products would differ.
    assert float(got) != pytest.approx(sum(terms) / (2 * (2 + n_local)), rel=1e-3)


class _Recorder(nn.Module):
    """A pooled linear 'backbone' without batch statistics that records the shapes of its input batches."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 5)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.lin(x.mean((2, 3)))


def test_multi_crop_forward_runs_the_backbone_once_per_resolution() -> None:
    torch.manual_seed(0)
    net, head = _Recorder(), nn.Linear(5, 4)
    views = [torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 6, 6) for _ in range(3)]
    out = multi_crop_forward(net, head, views)
    assert net.calls == [(4, 3, 16, 16), (6, 3, 6, 6)]  # the global pair together, the local crops together
    for o, v in zip(out, views):  # the same as one forward per view (this backbone has no batch statistics)
        assert torch.allclose(o, head(net.lin(v.mean((2, 3)))), atol=1e-6)


def _dino(**kw) -> EmbedModel:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return EmbedModel(backbone, 4, "dino", proj_dim=6, hidden=8, **kw).train()


def test_teacher_sees_only_the_global_crops_and_the_student_all() -> None:
    m = _dino()
    seen: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    m.backbone.register_forward_hook(lambda mod, args, out: seen["student"].append(tuple(args[0].shape)))
    m.teacher_backbone.register_forward_hook(lambda mod, args, out: seen["teacher"].append(tuple(args[0].shape)))
    views = [torch.randn(4, 3, 12, 12) for _ in range(2)] + [torch.randn(4, 3, 6, 6) for _ in range(3)]
    loss = m.ssl_loss(views, teacher_temp=0.04, student_temp=0.1, center_momentum=0.5, total_steps=10)["loss"]
    assert seen == {"student": [(8, 3, 12, 12), (12, 3, 6, 6)], "teacher": [(8, 3, 12, 12)]}
    loss.backward()
    assert m.backbone[0].weight.grad is not None and torch.isfinite(loss)
    # The centre is updated from the teacher's global outputs only: c = 0.5 · 0 + 0.5 · mean(teacher(globals)).
    with torch.no_grad():
        t = m.teacher_head(m.teacher_backbone(torch.cat(views[:2])))
    assert torch.allclose(m.center, 0.5 * t.mean(0, keepdim=True), atol=1e-6)


def test_views_global_then_local() -> None:
    img = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    views = ssl_views("dino", 32, mean=(0.5,) * 3, std=(0.5,) * 3, local_crops=3)(img)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 14, 14)] * 3
    assert not torch.equal(views[2], views[3])  # each local crop draws its own crop
    assert len(ssl_views("dino", 32, mean=(0.5,) * 3, std=(0.5,) * 3, local_crops=0)(img)) == 2
    assert local_crop_size(224) == 96
    with pytest.raises(ValueError, match="multi-crop"):
        ssl_views("simclr", 32, mean=(0.5,) * 3, std=(0.5,) * 3, local_crops=2)


def test_local_crops_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local_crops"):
        build_config("embed", "train", {"data": "digits", "method": "moco", "local_crops": 2})
    # A fixed-size ViT cannot take 14 px crops: a ConfigError that says what to change, not a timm traceback.
    vit = {"model": "timm:vit_tiny_patch16_224", "backbone_args": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}
    with pytest.raises(ConfigError, match="local crops.*local_crops=0"):
        Trainer(build_config("embed", "train", {**FAST, **vit, "project": str(tmp_path), "epochs": 1})).fit()


SHAPES = "synthetic:shapes?n=48&size=32&classes=3&seed=0"
FAST = {"data": SHAPES, "model": "cnn", "imgsz": 32, "batch": 16, "plots": False, "proj_dim": 16, "hidden": 32, "amp": False,
        "method": "dino"}  # fmt: skip


def test_multi_crop_trains_and_resume_is_exact(tmp_path: Path, interrupt_after) -> None:
    kw = {**FAST, "local_crops": 3, "local_size": 12, "epochs": 2}
    straight = Trainer(build_config("embed", "train", {**kw, "project": str(tmp_path / "a")})).fit()
    assert 0.0 <= straight["metrics"]["knn_top1"] <= 1.0
    interrupt_after(build_config("embed", "train", {**kw, "project": str(tmp_path / "b"), "name": "r"}), 1)
    resumed = Trainer(build_config("embed", "train", {"resume": True, "name": "r", "project": str(tmp_path / "b")})).fit()
    a, b = load_state_dict(straight["last"]), load_state_dict(resumed["last"])
    assert a.keys() == b.keys() and int(a["step"]) == 2 * 3  # 48 images, batch 16
    for k in a:
        assert torch.equal(a[k], b[k]), k
