"""SSL objectives against hand computations; the momentum / EMA / queue / centre state of EmbedModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from optik.embed.ssl import EmbedModel, dino_loss, ema_update, info_nce, nt_xent
from optik.embed.views import ssl_views


def _np_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_nt_xent_equals_the_papers_formula() -> None:
    """SimCLR eq. 1: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), averaged over all 2N anchors."""
    torch.manual_seed(0)
    z1, z2, t = torch.randn(5, 6), torch.randn(5, 6), 0.3
    z = _np_normalize(np.concatenate([z1.numpy(), z2.numpy()]).astype(np.float64))
    n2, n = len(z), 5
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / t) / denom)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(total / n2, rel=1e-5)


def test_info_nce_equals_hand_computation() -> None:
    torch.manual_seed(1)
    q, k, queue, t = torch.randn(4, 8), torch.randn(4, 8), torch.nn.functional.normalize(torch.randn(10, 8), dim=1), 0.2
    qn, kn = _np_normalize(q.numpy().astype(np.float64)), _np_normalize(k.numpy().astype(np.float64))
    losses = []
    for i in range(4):
        logits = np.concatenate([[qn[i] @ kn[i]], qn[i] @ queue.numpy().T.astype(np.float64)]) / t
        losses.append(-logits[0] + np.log(np.exp(logits).sum()))
    assert float(info_nce(q, k, queue, t)) == pytest.approx(np.mean(losses), rel=1e-5)


def test_dino_loss_equals_hand_computation() -> None:
    torch.manual_seed(2)
    s, t, c = [torch.randn(3, 5) for _ in range(2)], [torch.randn(3, 5) for _ in range(2)], torch.randn(1, 5)

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    expected = 0.0
    for i, j in ((0, 1), (1, 0)):  # teacher view i against the student's other view j
        pt = softmax((t[i].numpy() - c.numpy()) / 0.04)
        ls = np.log(softmax(s[j].numpy() / 0.1))
        expected += (-(pt * ls).sum(1)).mean()
    assert float(dino_loss(s, t, c, student_temp=0.1, teacher_temp=0.04)) == pytest.approx(expected / 2, rel=1e-4)


def test_ema_update() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    old = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * old + 0.1 * b.weight)


def _tiny(method: str, **kw) -> EmbedModel:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return EmbedModel(backbone, 4, method, proj_dim=6, hidden=8, **kw).train()


def _views(n: int = 4) -> list[torch.Tensor]:
    return [torch.randn(n, 3, 8, 8), torch.randn(n, 3, 8, 8)]


def test_moco_queue_and_key_encoder() -> None:
    m = _tiny("moco", queue=6)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for step in range(3):
        key_before = m.key_backbone[0].weight.detach().clone()
        student_before = m.backbone[0].weight.detach().clone()
        m.ssl_loss(_views(), momentum=0.9)["loss"].backward()
        opt.step()
        opt.zero_grad()
        expected = key_before if step == 0 else 0.9 * key_before + 0.1 * student_before  # updated before the step's keys
        assert torch.allclose(m.key_backbone[0].weight, expected, atol=1e-6)
    assert int(m.queue_ptr) == (3 * 4) % 6  # wraps around a queue that is not a multiple of the batch
    assert torch.allclose(m.queue.norm(dim=1), torch.ones(6), atol=1e-5)
    assert not any(p.requires_grad for p in m.key_backbone.parameters())
    assert {"queue", "queue_ptr", "step"} <= set(dict(m.named_buffers()))


def test_dino_teacher_centre_and_features_from_teacher() -> None:
    m = _tiny("dino")
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        m.ssl_loss(_views(), momentum=0.9, total_steps=100, center_momentum=0.5)["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert int(m.step) == 2 and m.center.abs().sum() > 0
    assert not torch.equal(m.teacher_backbone[0].weight, m.backbone[0].weight)  # EMA, not a copy
    m.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(m(x), m.teacher_backbone(x))  # DINO evaluates the teacher
    assert m.teacher_backbone.training is False


def test_simclr_trains_and_views_differ() -> None:
    m = _tiny("simclr")
    loss = m.ssl_loss(_views())["loss"]
    loss.backward()
    assert m.backbone[0].weight.grad is not None and torch.isfinite(loss)
    with pytest.raises(ValueError, match="two views"):
        m.ssl_loss(_views()[:1])
    img = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    for method in ("simclr", "moco", "dino"):
        v1, v2 = ssl_views(method, 32, mean=(0.5,) * 3, std=(0.5,) * 3)(img)
        assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.float32 and not torch.equal(v1, v2)
