"""Self-supervised objectives and the model that carries their state.

:class:`EmbedModel` wraps any optik backbone (native zoo, ``timm:``, ``hf:``, a trained classifier) with its
classification head removed, so ``model(x)`` is the pooled feature ``(B, D)`` — what k-NN, the linear probe,
predict, the index and export see. For training it adds what the method needs, all as submodules and buffers,
so the trainer's checkpoints (``state.pt``) hold them and resume is exact:

* ``simclr`` — SimCLR (Chen et al. 2020): MLP projector, NT-Xent over the 2B views (:func:`nt_xent`).
* ``moco`` — MoCo v2 (Chen et al. 2020, after He et al. 2019): momentum key encoder, a queue of negatives,
  InfoNCE (:func:`info_nce`); symmetrised over the two views (as MoCo v3) — a cheaper signal per batch on
  small data. The key encoder is updated at the start of each step, as in the authors' code.
* ``dino`` — DINO (Caron et al. 2021): EMA teacher (momentum cosine-scheduled to 1), centring and sharpening of
  the teacher's output (:func:`dino_loss`), a weight-normalised last layer; features come from the teacher (the
  paper evaluates the teacher). Two global crops; no multi-crop.

>>> import torch
>>> from torch import nn
>>> m = EmbedModel(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), feature_dim=8, method="simclr", proj_dim=4, hidden=16)
>>> m(torch.zeros(2, 3, 2, 2)).shape
torch.Size([2, 8])
>>> sorted(m.ssl_loss([torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)]))
['loss']
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

METHODS = ("simclr", "moco", "dino")


# --- losses ------------------------------------------------------------------------------------------------
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent: for each of the 2B projections, cross-entropy of picking its partner view among the
    other 2B - 1 by cosine similarity / ``temperature``; averaged over all 2B.

    >>> z = torch.randn(4, 8)
    >>> float(nt_xent(z, z, 0.5)) < float(nt_xent(z, torch.randn(4, 8), 0.5))
    True
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: the positive logit ``q·k`` against the negatives ``q·queue`` (all L2-normalised),
    cross-entropy with the positive at index 0, over ``temperature``."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.float().T
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def dino_loss(student: list[Tensor], teacher: list[Tensor], center: Tensor, *, student_temp: float = 0.1,
              teacher_temp: float = 0.04) -> Tensor:  # fmt: skip
    """DINO's cross-entropy between the teacher's centred, sharpened distribution of one view and the student's
    distribution of every *other* view, averaged over the view pairs."""
    t = [F.softmax((x.float() - center) / teacher_temp, dim=-1).detach() for x in teacher]
    s = [F.log_softmax(x.float() / student_temp, dim=-1) for x in student]
    total, pairs = 0.0, 0
    for i, ti in enumerate(t):
        for j, sj in enumerate(s):
            if i == j:
                continue
            total = total + (-ti * sj).sum(-1).mean()
            pairs += 1
    return total / pairs


# --- heads -------------------------------------------------------------------------------------------------
def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """SimCLR / MoCo v2 projection head: Linear → BN → ReLU → Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class DINOHead(nn.Module):
    """DINO's head: 3-layer MLP (GELU) to a bottleneck, L2-normalised, then a weight-normalised linear layer to
    ``out_dim`` prototypes (the norm of each prototype fixed to 1, the paper's ``norm_last_layer``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))  # fmt: skip
        self.last = nn.Linear(bottleneck, out_dim, bias=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last.weight, dim=1))  # weight norm with g = 1


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target ← momentum · target + (1 - momentum) · source`` for parameters; buffers (BN statistics) copied.

    The momentum networks run in the model's mode, as in the authors' code: in training their BatchNorms
    normalise with the key / teacher batch's own statistics (measured: eval-mode keys cost MoCo 4 k-NN points
    on digits); their running statistics, used in eval mode, are the student's."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


# --- the model ---------------------------------------------------------------------------------------------
class EmbedModel(nn.Module):
    """A backbone (head removed) + the state of a self-supervised method (see the module docstring).

    Args:
        backbone: maps ``(B, 3, H, W)`` to pooled features ``(B, feature_dim)`` (or ``(B, D, 1, 1)``).
        method: ``simclr`` | ``moco`` | ``dino`` | ``none`` (a frozen representation to evaluate / index).
        proj_dim: projection size (SimCLR / MoCo) or number of DINO prototypes.
        hidden: hidden width of the projector / DINO head.
        queue: MoCo queue length.
        info: JSON-able description of the backbone (architecture, its config) for :meth:`config_dict`.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, method: str = "none", *, proj_dim: int = 128, hidden: int = 512,
                 queue: int = 1024, info: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        if method not in (*METHODS, "none"):
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} or none")
        self.backbone, self.feature_dim, self.method = backbone, int(feature_dim), method
        self.proj_dim, self.hidden, self.queue_size = int(proj_dim), int(hidden), int(queue)
        self.info = dict(info or {})
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimisation steps taken (momentum schedules)
        if method in ("simclr", "moco"):
            self.projector = projector(self.feature_dim, self.hidden, self.proj_dim)
        if method == "moco":
            self.key_backbone, self.key_projector = _frozen_copy(self.backbone), _frozen_copy(self.projector)
            self.register_buffer("queue", F.normalize(torch.randn(self.queue_size, self.proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        if method == "dino":
            self.head = DINOHead(self.feature_dim, self.proj_dim, hidden=self.hidden)
            self.teacher_backbone, self.teacher_head = _frozen_copy(self.backbone), _frozen_copy(self.head)
            self.register_buffer("center", torch.zeros(1, self.proj_dim))

    # The feature extractor that evaluation, predict and export use: DINO's teacher, else the backbone.
    @property
    def encoder(self) -> nn.Module:
        return self.teacher_backbone if self.method == "dino" else self.backbone

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` → pooled features ``(B, D)``."""
        return self.encoder(x).flatten(1)

    def config_dict(self) -> dict[str, Any]:
        return {"method": self.method, "feature_dim": self.feature_dim, "proj_dim": self.proj_dim, "hidden": self.hidden,
                "queue": self.queue_size, **self.info}  # fmt: skip

    # --- training ----------------------------------------------------------------------------------------
    def ssl_loss(self, views: list[Tensor], *, temperature: float = 0.2, momentum: float = 0.99, teacher_temp: float = 0.04,
                 student_temp: float = 0.1, center_momentum: float = 0.9, total_steps: int = 0) -> dict[str, Tensor]:  # fmt: skip
        """The method's loss on a list of augmented views of the same images (two for every method)."""
        if len(views) < 2:
            raise ValueError("self-supervised training needs at least two views per image")
        if self.method == "simclr":
            n = views[0].shape[0]
            z = self.projector(self.backbone(torch.cat(views[:2])).flatten(1))  # one pass: BN sees both views
            loss = nt_xent(z[:n], z[n:], temperature)
        elif self.method == "moco":
            loss = self._moco(views[0], views[1], temperature, momentum)
        elif self.method == "dino":
            loss = self._dino(views, momentum, teacher_temp, student_temp, center_momentum, total_steps)
        else:
            raise ValueError("method 'none' has no training objective")
        if self.training:
            self.step += 1
        return {"loss": loss}

    def _moco(self, v1: Tensor, v2: Tensor, temperature: float, momentum: float) -> Tensor:
        n = v1.shape[0]
        q = self.projector(self.backbone(torch.cat([v1, v2])).flatten(1))
        with torch.no_grad():
            if self.training and int(self.step) > 0:
                ema_update(self.key_backbone, self.backbone, momentum)
                ema_update(self.key_projector, self.projector, momentum)
            k = F.normalize(self.key_projector(self.key_backbone(torch.cat([v2, v1])).flatten(1)).float(), dim=1)
        loss = info_nce(q, k, self.queue.clone(), temperature)  # q of view 1 ↔ key of view 2, and back
        if self.training:
            self._enqueue(k[:n])
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        idx = (int(self.queue_ptr) + torch.arange(len(keys), device=keys.device)) % self.queue_size
        self.queue[idx] = keys[: self.queue_size].to(self.queue.dtype) if len(keys) > self.queue_size else keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + len(keys)) % self.queue_size)

    def _dino(self, views: list[Tensor], m0: float, teacher_temp: float, student_temp: float, center_momentum: float,
              total_steps: int) -> Tensor:  # fmt: skip
        n = views[0].shape[0]
        if self.training and int(self.step) > 0:
            # Cosine schedule from m0 to 1 over the run (the paper's), applied before the step (MoCo's order).
            frac = min(1.0, int(self.step) / total_steps) if total_steps > 0 else 0.0
            m = 1 - (1 - m0) * (math.cos(math.pi * frac) + 1) / 2
            ema_update(self.teacher_backbone, self.backbone, m)
            ema_update(self.teacher_head, self.head, m)
        s = self.head(self.backbone(torch.cat(views)).flatten(1)).split(n)
        with torch.no_grad():
            t = self.teacher_head(self.teacher_backbone(torch.cat(views[:2])).flatten(1)).split(n)  # global views only
        loss = dino_loss(list(s), list(t), self.center, student_temp=student_temp, teacher_temp=teacher_temp)
        if self.training:
            with torch.no_grad():
                batch_center = torch.cat(t).float().mean(0, keepdim=True)
                self.center.mul_(center_momentum).add_(batch_center, alpha=1 - center_momentum)
        return loss
