"""Self-supervised objectives and the model that carries their state.

:class:`EmbedModel` wraps any optik backbone (native zoo, ``timm:``, ``hf:``, a trained classifier) with its
classification head removed, so ``model(x)`` is the pooled feature ``(B, D)`` — what k-NN, the linear probe,
predict, the index and export see. For training it adds what the method needs, all as submodules and buffers,
so the trainer's checkpoints (``state.pt``) hold them and resume is exact:

* ``simclr`` — SimCLR (Chen et al. 2020): MLP projector, NT-Xent over the 2B views (:func:`nt_xent`); under DDP
  over the global batch of all ranks (:func:`global_nt_xent`), and MoCo enqueues the keys of all ranks.
* ``moco`` — MoCo v2 (Chen et al. 2020, after He et al. 2019): momentum key encoder, a queue of negatives,
  InfoNCE (:func:`info_nce`); symmetrised over the two views (as MoCo v3) — a cheaper signal per batch on
  small data. The key encoder is updated at the start of each step, as in the authors' code.
* ``dino`` — DINO (Caron et al. 2021): EMA teacher (momentum cosine-scheduled to 1), centring and sharpening of
  the teacher's output (:func:`dino_loss`), a weight-normalised last layer; features come from the teacher (the
  paper evaluates the teacher). Multi-crop: the student sees the two global crops and any number of small local
  crops, the teacher only the global ones (:func:`multi_crop_forward` runs the backbone once per crop size).
* ``mae`` — MAE (He et al. 2021), ViT backbones only (timm ``VisionTransformer``): a random ``mask_ratio`` of the
  patches is dropped, the encoder (timm's patch_embed, pos_embed, cls token, blocks, norm) sees only the visible
  ones, a small transformer decoder (:class:`MAEDecoder`, timm ``Block``) with a shared mask token reconstructs
  the pixels of every patch, and the loss (:func:`mae_loss`) is the MSE on the masked patches only, against
  per-patch standardised pixels when ``norm_pix`` (:func:`mae_target`). Features: the encoder's pooled output on
  the whole, unmasked image (cls token or mean, the backbone's ``global_pool``).

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

from optik import distributed as dist
from optik.errors import ConfigError

METHODS = ("simclr", "moco", "dino", "mae")


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


def global_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """:func:`nt_xent` over the *global* batch under DistributedDataParallel: every rank's projections are gathered
    (:func:`optik.distributed.all_gather_rows` with gradient), so each of this rank's 2b anchors is contrasted with
    all 2N - 1 other views of the N images of all ranks, its partner at its global index. The value is this rank's
    share of the global loss (the mean of its rows, times ``world · b / N`` — exactly 1 when all ranks hold b
    images): the mean over ranks is the single-process loss of the N images, and the gradients DDP averages are
    its gradients. One process: :func:`nt_xent` itself, bit for bit.

    >>> z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> bool(global_nt_xent(z1, z2, 0.5) == nt_xent(z1, z2, 0.5))   # single process
    True
    """
    world = dist.world_size()
    if world == 1:
        return nt_xent(z1, z2, temperature)
    b = z1.shape[0]
    # One collective for both views: rows = this rank's images, columns = [view 1 | view 2].
    both = dist.all_gather_rows(torch.cat([z1, z2], 1).float(), grad=True)
    n = both.shape[0]
    start = sum(int(t) for t in dist.all_gather_rows(torch.tensor([b], device=z1.device))[: dist.rank()])
    z = F.normalize(torch.cat(both.split(z1.shape[1], dim=1)), dim=1)  # (2N, d): all view 1, then all view 2
    own = torch.arange(start, start + b, device=z.device)
    rows = torch.cat([own, own + n])  # this rank's anchors in the global order
    sim = z[rows] @ z.T / temperature
    sim[torch.arange(2 * b, device=z.device), rows] = float("-inf")  # a view is not its own negative
    target = torch.cat([own + n, own])
    return F.cross_entropy(sim, target) * (world * b / n)


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
    distribution of every *other* view, averaged over the view pairs (DINO's ``DINOLoss``).

    ``teacher`` holds the global crops, ``student`` the same global crops first and then the local ones, so a
    pair (teacher i, student j) is skipped only when j == i: with 2 global and N local crops there are
    2·(2 + N) − 2 terms.

    >>> s, t = [torch.randn(4, 16) for _ in range(8)], [torch.randn(4, 16) for _ in range(2)]
    >>> float(dino_loss(s, t, torch.zeros(1, 16))) > 0
    True
    """
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


def multi_crop_forward(backbone: nn.Module, head: nn.Module, views: list[Tensor]) -> list[Tensor]:
    """``head(backbone(view))`` for every view, with one backbone pass per run of consecutive views of the same
    size (DINO's ``MultiCropWrapper``: the two global crops together, then all the local crops together) and one
    head pass over everything. Returns one ``(B, out)`` tensor per view, in order.

    >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> out = multi_crop_forward(net, nn.Identity(), [torch.ones(2, 3, 8, 8), torch.ones(2, 3, 8, 8), torch.ones(2, 3, 4, 4)])
    >>> [tuple(o.shape) for o in out]
    [(2, 3), (2, 3), (2, 3)]
    """
    sizes = [tuple(v.shape[-2:]) for v in views]
    feats, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and sizes[end] == sizes[start]:
            end += 1
        # BatchNorm sees each resolution as its own batch, as in DINO's MultiCropWrapper.
        feats.append(backbone(torch.cat(views[start:end])).flatten(1))
        start = end
    return list(head(torch.cat(feats)).split([v.shape[0] for v in views]))


# --- MAE ---------------------------------------------------------------------------------------------------
def patchify(imgs: Tensor, p: int) -> Tensor:
    """``(B, C, H, W)`` → ``(B, L, p·p·C)``, patches in raster order, each flattened (row, column, channel) as in
    the MAE code."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def random_masking(batch: int, length: int, mask_ratio: float, device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise: keeps ``int(length · (1 - mask_ratio))``
    patches. Returns ``ids_keep`` ``(B, keep)``, ``mask`` ``(B, L)`` (1 = masked, in the original order) and
    ``ids_restore`` ``(B, L)`` (un-shuffles ``[kept, masked]`` back to raster order).

    >>> keep, mask, _ = random_masking(2, 16, 0.75)
    >>> keep.shape, int(mask.sum())
    (torch.Size([2, 4]), 24)
    """
    keep = int(length * (1 - mask_ratio))
    if not 1 <= keep < length:
        raise ValueError(f"mask_ratio={mask_ratio} keeps {keep} of {length} patches; it must keep at least one and mask one")
    ids_shuffle = torch.argsort(torch.rand(batch, length, device=device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore


def mae_target(imgs: Tensor, p: int, norm_pix: bool = True) -> Tensor:
    """The reconstruction target: the patches of ``imgs``, each standardised by its own mean and (unbiased, as the
    MAE code) variance when ``norm_pix`` — the paper's better-representation variant."""
    t = patchify(imgs.float(), p)
    if norm_pix:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    return t


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error per patch, averaged over the masked patches only (``mask`` 1 = masked)."""
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def _check_vit(backbone: nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        raise ConfigError(f"method=mae needs a ViT backbone (model=timm:vit_*, e.g. timm:vit_tiny_patch16_224); "
                          f"got {type(backbone).__name__}")  # fmt: skip
    if backbone.cls_token is None or backbone.num_prefix_tokens != 1 or backbone.pos_embed is None or backbone.no_embed_class \
            or getattr(backbone, "dynamic_img_size", False):  # fmt: skip
        raise ConfigError("method=mae needs a plain ViT (one cls token, learned pos_embed including it, no register "
                          "tokens, fixed image size)")  # fmt: skip


class MAEDecoder(nn.Module):
    """MAE's light decoder: encoder width → ``dim``, mask tokens filled in, learned position embeddings, ``depth``
    timm ViT blocks, a linear layer to the ``patch_dim`` pixels of each patch."""

    def __init__(self, num_patches: int, enc_dim: int, patch_dim: int, dim: int = 128, depth: int = 2) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        heads = max(1, dim // 32)  # head width 32 (the paper's 512-d decoder has 16 heads)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        """``x``: encoder output ``(B, 1 + keep, D)`` (cls first) → predicted pixels ``(B, L, patch_dim)``."""
        x = self.embed(x)
        b, length = ids_restore.shape
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, length + 1 - x.shape[1], -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # back to raster order
        x = torch.cat([x[:, :1], tokens], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x)))[:, 1:]


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
        mask_ratio, norm_pix, decoder_dim, decoder_depth: MAE's masking ratio, per-patch target standardisation,
            decoder width and depth.
        info: JSON-able description of the backbone (architecture, its config) for :meth:`config_dict`.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, method: str = "none", *, proj_dim: int = 128, hidden: int = 512,
                 queue: int = 1024, info: dict[str, Any] | None = None, mask_ratio: float = 0.75, norm_pix: bool = True,
                 decoder_dim: int = 128, decoder_depth: int = 2) -> None:  # fmt: skip
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
        if method == "mae":
            _check_vit(backbone)
            pe = backbone.patch_embed
            self.patch = int(pe.patch_size[0])
            self.mask_ratio, self.norm_pix = float(mask_ratio), bool(norm_pix)
            self.decoder_dim, self.decoder_depth = int(decoder_dim), int(decoder_depth)
            self.decoder = MAEDecoder(pe.num_patches, backbone.embed_dim, self.patch * self.patch * pe.proj.in_channels,
                                      self.decoder_dim, self.decoder_depth)  # fmt: skip

    # The feature extractor that evaluation, predict and export use: DINO's teacher, else the backbone.
    @property
    def encoder(self) -> nn.Module:
        return self.teacher_backbone if self.method == "dino" else self.backbone

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` → pooled features ``(B, D)``."""
        return self.encoder(x).flatten(1)

    def config_dict(self) -> dict[str, Any]:
        return {"method": self.method, "feature_dim": self.feature_dim, "proj_dim": self.proj_dim, "hidden": self.hidden,
                "queue": self.queue_size, **self._mae_config(), **self.info}  # fmt: skip

    def _mae_config(self) -> dict[str, Any]:
        if self.method != "mae":
            return {}
        return {"mask_ratio": self.mask_ratio, "norm_pix": self.norm_pix, "decoder_dim": self.decoder_dim,
                "decoder_depth": self.decoder_depth}  # fmt: skip

    # --- training ----------------------------------------------------------------------------------------
    def ssl_loss(self, views: list[Tensor], *, temperature: float = 0.2, momentum: float = 0.99, teacher_temp: float = 0.04,
                 student_temp: float = 0.1, center_momentum: float = 0.9, total_steps: int = 0) -> dict[str, Tensor]:  # fmt: skip
        """The method's loss on a list of augmented views of the same images (two for every method but MAE, which
        reconstructs the first; DINO: the two global crops, then any local crops)."""
        if self.method == "mae":
            loss = self.mae_forward(views[0])["loss"]
            if self.training:
                self.step += 1
            return {"loss": loss}
        if len(views) < 2:
            raise ValueError("self-supervised training needs at least two views per image")
        if self.method == "simclr":
            n = views[0].shape[0]
            z = self.projector(self.backbone(torch.cat(views[:2])).flatten(1))  # one pass: BN sees both views
            # Under DDP the negatives are the global batch's (every rank trains, so every rank gathers).
            loss = (global_nt_xent if self.training else nt_xent)(z[:n], z[n:], temperature)
        elif self.method == "moco":
            loss = self._moco(views[0], views[1], temperature, momentum)
        elif self.method == "dino":
            loss = self._dino(views, momentum, teacher_temp, student_temp, center_momentum, total_steps)
        else:
            raise ValueError("method 'none' has no training objective")
        if self.training:
            self.step += 1
        return {"loss": loss}

    def mae_encode(self, imgs: Tensor, ids_keep: Tensor) -> Tensor:
        """The ViT encoder on the kept patches only: ``(B, 1 + keep, D)``, cls token first."""
        vit = self.backbone
        x = vit.patch_embed(imgs) + vit.pos_embed[:, 1:]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = vit.norm_pre(torch.cat([cls, x], dim=1))
        return vit.norm(vit.blocks(x))

    def mae_forward(self, imgs: Tensor, mask: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """MAE on a batch: ``loss``, ``pred`` ``(B, L, p·p·C)``, ``target``, ``mask`` (1 = masked). ``mask`` — the
        output of :func:`random_masking` — fixes the masking (tests); by default it is drawn at random."""
        n, length = imgs.shape[0], self.decoder.pos_embed.shape[1] - 1
        ids_keep, m, ids_restore = mask if mask is not None else random_masking(n, length, self.mask_ratio, imgs.device)
        pred = self.decoder(self.mae_encode(imgs, ids_keep), ids_restore)
        target = mae_target(imgs, self.patch, self.norm_pix)
        return {"loss": mae_loss(pred, target, m), "pred": pred, "target": target, "mask": m}

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
            # Under DDP every rank enqueues the keys of all ranks (MoCo's concat_all_gather), so the queues stay
            # identical and hold the global batch's keys (one process: k[:n] itself).
            keys = dist.all_gather_rows(k[:n])
            if len(keys) != n:  # this rank's share of the global mean: × 1 exactly when all ranks hold n images
                loss = loss * (dist.world_size() * n / len(keys))
            self._enqueue(keys)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` at the pointer, circularly, as if one by one: more keys than the queue holds leave the
        newest ``queue_size`` of them (any queue length works, no need to divide the global batch)."""
        ptr, total = int(self.queue_ptr), len(keys)
        if total > self.queue_size:  # the older keys would be overwritten within this same call
            ptr, keys = ptr + total - self.queue_size, keys[-self.queue_size :]
        idx = (ptr + torch.arange(len(keys), device=keys.device)) % self.queue_size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + total) % self.queue_size)

    def _dino(self, views: list[Tensor], m0: float, teacher_temp: float, student_temp: float, center_momentum: float,
              total_steps: int) -> Tensor:  # fmt: skip
        n = views[0].shape[0]
        if self.training and int(self.step) > 0:
            # Cosine schedule from m0 to 1 over the run (the paper's), applied before the step (MoCo's order).
            frac = min(1.0, int(self.step) / total_steps) if total_steps > 0 else 0.0
            m = 1 - (1 - m0) * (math.cos(math.pi * frac) + 1) / 2
            ema_update(self.teacher_backbone, self.backbone, m)
            ema_update(self.teacher_head, self.head, m)
        s = multi_crop_forward(self.backbone, self.head, views)  # global crops first, then the local ones
        with torch.no_grad():
            t = self.teacher_head(self.teacher_backbone(torch.cat(views[:2])).flatten(1)).split(n)  # global views only
        loss = dino_loss(list(s), list(t), self.center, student_temp=student_temp, teacher_temp=teacher_temp)
        if self.training:
            with torch.no_grad():
                batch_center = torch.cat(t).float().mean(0, keepdim=True)
                self.center.mul_(center_momentum).add_(batch_center, alpha=1 - center_momentum)
        return loss
