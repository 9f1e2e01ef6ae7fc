"""Multi-process training under ``torchrun``: process-group set-up, samplers, rank-0 helpers.

``torchrun --nproc_per_node=2 -m optik classify train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
optik then trains with DistributedDataParallel (gloo on CPU, nccl on CUDA). Without those
variables everything here degrades to the single-process case.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> bool:
    """Join the process group if launched by torchrun; returns True when distributed."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj: object) -> object:
    """Rank 0's value of ``obj`` on every rank (e.g. the run directory)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP keeps parameters equal
    (gradients are all-reduced) but each rank updates BN statistics on its own batches, so before a
    sharded evaluation every rank must hold the weights rank 0 saves."""
    if world_size() == 1:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Every rank's rows of ``x`` concatenated in rank order, and each rank's row count (ranks may differ: rows
    are padded to the longest for the collective, then trimmed)."""
    x = x.contiguous()
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    padded = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])]) if x.shape[0] < longest else x
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes)]), sizes


class _GatherRowsWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out, ctx.sizes = _gather_rows(x)  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every rank's loss may use every row: the gradient of a rank's own rows is the sum over ranks of the
        # gradients w.r.t. them (a reduce-scatter; gloo has none, so all-reduce and keep the own slice).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        sizes = ctx.sizes  # type: ignore[attr-defined]
        start = sum(sizes[: rank()])
        return grad[start : start + sizes[rank()]]


def all_gather_rows(x: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """Every rank's rows of ``x`` (dim 0) concatenated in rank order; ranks may hold different numbers of rows.
    Without a process group: ``x`` itself.

    ``grad=False`` gathers detached values (MoCo's ``concat_all_gather``). ``grad=True`` lets the gradient flow
    back: a rank's rows receive the sum over all ranks of the gradient of their losses w.r.t. those rows. So when
    each rank's loss is its share of a global objective (``global = mean over ranks of the local losses``), the
    gradients DistributedDataParallel averages are exactly the single-process gradient of the global objective
    (SimCLR's cross-replica concat; ``torch.distributed.nn.functional.all_gather`` does the same but is
    deprecated, warns on every call and needs equal sizes).

    >>> all_gather_rows(torch.ones(2, 3)).shape   # single process
    torch.Size([2, 3])
    """
    if world_size() == 1:
        return x
    return _GatherRowsWithGrad.apply(x) if grad else _gather_rows(x.detach())[0]


class ShardedShuffleSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded over ranks (DistributedSampler semantics).

    Used for single-process training too, so that a resumed run sees the exact same order as
    an uninterrupted one: the permutation depends only on (seed, epoch), not on RNG history.
    """

    def __init__(self, n: int, seed: int = 0, num_replicas: int | None = None, rank_: int | None = None) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.num_replicas = num_replicas or world_size()
        self.rank = rank() if rank_ is None else rank_
        self.num_samples = math.ceil(n / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.randperm(self.n, generator=g).tolist()
        total = self.num_samples * self.num_replicas
        idx += idx[: total - len(idx)]  # pad so every rank gets the same number of batches
        return iter(idx[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class WeightedEpochSampler(Sampler[int]):
    """Class-balanced sampling with replacement, seeded by (seed, epoch), sharded over ranks."""

    def __init__(self, weights: torch.Tensor, seed: int = 0) -> None:
        self.weights = weights.double()
        self.seed, self.epoch = seed, 0
        self.num_samples = math.ceil(len(weights) / world_size())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch + rank())
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r takes r, r+W, … so metric sums stay exact."""

    def __init__(self, n: int) -> None:
        self.indices = list(range(rank(), n, world_size()))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
