"""The Metric interface every task's metric implements, and exact cross-rank syncing.

A metric accumulates *sums and counts* in tensors (never running means), so reducing it across
DDP ranks is one ``all_reduce(SUM)`` per state tensor and gives exactly the numbers one process
would have computed over the whole dataset.

>>> m = task.metric()                                   # doctest: +SKIP
>>> for logits, targets in val_loader:                  # doctest: +SKIP
...     m.update(logits, targets)
>>> m.sync(); result = m.compute()                      # doctest: +SKIP
>>> result[m.fitness_key]                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.distributed as dist

__all__ = ["Metric"]

log = logging.getLogger(__name__)


class Metric(ABC):
    """Accumulating evaluation metric.

    Subclasses keep their state as tensors named in ``_state_names`` (sums/counts only) and
    implement ``update``, ``compute`` and ``_reset_state``; the base class provides ``reset`` and
    ``sync``. A metric whose state is not a set of summable tensors (e.g. a list of detections)
    overrides ``sync`` as well (``all_gather_object``). ``fitness_key`` names the key of
    ``compute()`` that "best checkpoint" and early stopping maximise.

    ``sync()`` sums the state over all ranks once; afterwards ``update`` is refused until
    ``reset()`` (updating a synced metric and syncing again would count other ranks twice).
    """

    fitness_key: ClassVar[str]
    _state_names: ClassVar[tuple[str, ...]] = ()
    # Class default, so subclasses need no super().__init__(); becomes an instance attribute.
    _synced: bool = False

    @abstractmethod
    def update(self, preds: Any, targets: Any) -> None:
        """Add one batch of predictions and targets to the state."""

    @abstractmethod
    def compute(self) -> dict:
        """Return the metric values for everything accumulated so far (contains ``fitness_key``)."""

    @abstractmethod
    def _reset_state(self) -> None:
        """(Re)create the zeroed state tensors named in ``_state_names``."""

    def reset(self) -> None:
        """Forget everything accumulated (start of a new epoch)."""
        self._reset_state()
        self._synced = False

    def _check_updatable(self) -> None:
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}.update() called after sync(); call reset() first"
            )

    def sync(self) -> None:
        """Sum the state over all ranks (``all_reduce(SUM)``); a no-op without a process group.

        Idempotent: a second call before ``reset()`` does nothing. Works with gloo (CPU tensors)
        and NCCL (state is moved to the current CUDA device for the reduction and back).
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        for name in self._state_names:
            state: torch.Tensor = getattr(self, name)
            buf = state.to(device).clone()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            setattr(self, name, buf.to(state.device))
        self._synced = True
        log.debug("synced %s over %d ranks", type(self).__name__, dist.get_world_size())
