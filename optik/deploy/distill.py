"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network"): a student learns from a trained teacher's temperature-softened class probabilities as
well as from the labels.

    loss = alpha · T² · KL(softmax(t / T) ‖ softmax(s / T)) + (1 − alpha) · CE(s, y)

The T² factor keeps the soft term's gradients on the same scale as the hard term's when T changes
(the paper, section 2). ``optik classify train … teacher=<run dir | weights>`` uses it through
:class:`optik.tasks.classify.ClassifyTask`; the functions here are plain and reusable.

>>> s, t = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[3.0, 1.0, -2.0]])
>>> terms = distillation_loss(s, t, torch.tensor([0]), alpha=0.5, T=4.0)
>>> sorted(terms)
['ce', 'kd', 'loss']
>>> bool(torch.isclose(terms["loss"], 0.5 * terms["kd"] + 0.5 * terms["ce"]))
True
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over the batch.

    >>> float(kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), T=2.0))
    0.0
    """
    # log-probabilities on both sides (log_target) avoid log(0) for confident teachers.
    log_p_s = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    alpha: float,
    T: float,
    ce: Tensor | None = None,
) -> dict[str, Tensor]:
    """Hinton's loss as ``{"loss", "kd", "ce"}``. ``targets`` are class indices or soft (B, C)
    targets (MixUp/CutMix); pass ``ce`` to reuse a task's own hard loss (label smoothing, class
    weights).

    >>> out = distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1]), alpha=0.0, T=1.0)
    >>> round(float(out["loss"]), 4)  # alpha=0: plain cross-entropy, log(2)
    0.6931
    """
    if ce is None:
        ce = F.cross_entropy(student_logits.float(), targets)
    kd = kd_loss(student_logits, teacher_logits.detach(), T)
    return {"loss": alpha * kd + (1.0 - alpha) * ce, "kd": kd.detach(), "ce": ce.detach()}


class TeacherAdapter(nn.Module):
    """The teacher, called on the *student's* batch: undoes the student's normalisation, applies the
    teacher's, and resizes to the teacher's input size when the two differ, so the teacher sees
    the same crop as the student in the form it was trained on. Frozen, eval mode, no gradients.

    The teacher is kept out of ``self._modules`` on purpose: the adapter hangs off the task, never
    off the trained model, so DDP, optimizers and checkpoints never see the teacher's parameters.

    >>> teacher = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))                    # doctest: +SKIP
    >>> adapter = TeacherAdapter(teacher, (0.5,) * 3, (0.5,) * 3, (0.0,) * 3, (1.0,) * 3, 32)  # doctest: +SKIP
    """

    def __init__(
        self,
        teacher: nn.Module,
        student_mean: Sequence[float],
        student_std: Sequence[float],
        teacher_mean: Sequence[float],
        teacher_std: Sequence[float],
        teacher_size: int | None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "teacher", teacher)  # not a registered submodule (see above)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        s_mean, s_std = torch.tensor(student_mean), torch.tensor(student_std)
        t_mean, t_std = torch.tensor(teacher_mean), torch.tensor(teacher_std)
        # x_t = (x_s·s_std + s_mean − t_mean) / t_std = x_s·scale + shift, per channel.
        self.register_buffer("scale", (s_std / t_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).view(1, -1, 1, 1), persistent=False)
        self.same_norm = bool(torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
        self.teacher_size = teacher_size
        self._device: torch.device | None = None

    def teacher_input(self, x: Tensor) -> Tensor:
        """The student's normalised batch in the teacher's normalisation and size."""
        if not self.same_norm:
            x = x * self.scale.to(x.device, x.dtype) + self.shift.to(x.device, x.dtype)
        size = self.teacher_size
        if size and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if self._device != x.device:  # follow the student's device once (train loop moves the batch)
            self.teacher.to(x.device)
            self._device = x.device
        self.teacher.eval()
        return self.teacher(self.teacher_input(x)).float()


def load_teacher(ref: str, classes: Sequence[str], device: str = "cpu", *, task: str) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model of the student's ``task`` to distil from (eval mode) and its weights' metadata, which
    gives its own normalisation (``mean``/``std``) and ``imgsz``. ``ref`` is anything ``model=`` accepts for
    val (a ``.safetensors`` file, a run directory). Its class names must equal ``classes``, in order.

    Errors name the ``teacher`` key (ConfigError). The global RNG state is left untouched, so a
    run with a teacher draws the same random numbers as one without (same initialisation and
    augmentation for the same seed).

    >>> teacher, meta = load_teacher("runs/classify/train", ["circle", "square"], task="classify")   # doctest: +SKIP
    """
    from optik.config import build_config
    from optik.weights import resolve_model_arg
    from optik.engine.inference import load_trained

    try:
        arch, weights, meta = resolve_model_arg(str(ref))
    except ModelError as e:
        raise ConfigError(f"bad value for 'teacher': {e}") from None
    if weights is None:
        raise ConfigError(
            f"bad value for 'teacher': {str(ref)!r} (needs trained optik weights: a .safetensors file or a run directory)"
        )
    if meta.get("task", task) != task:  # the same task as the student: same outputs to match
        raise ConfigError(f"bad value for 'teacher': '{weights}' was trained for task '{meta['task']}', not '{task}'")
    t_classes = list(meta.get("classes") or [])
    if t_classes != list(classes):
        raise ConfigError(
            f"bad value for 'teacher': '{weights}' predicts classes {t_classes} but the data has {list(classes)}; "
            "the teacher must be trained on the same class names in the same order"
        )
    cfg = build_config(task, "val", {"model": str(weights), "device": device})
    with torch.random.fork_rng(devices=[]):  # building a model draws random init weights
        try:
            _, teacher, tcfg = load_trained(cfg)
        except (ConfigError, ModelError) as e:
            raise ConfigError(f"bad value for 'teacher': {e}") from None
    return teacher, {**meta, "model": arch, "imgsz": tcfg.imgsz, "weights": str(weights)}


@torch.no_grad()
def teacher_accuracy(adapter: nn.Module, dataset: Any, batch: int, device: torch.device | str = "cpu") -> float:
    """Top-1 of the teacher on ``dataset`` (the student's val split, student transforms). A plain
    loop, not :func:`optik.engine.evaluate.evaluate`: that one is collective under DDP and this
    runs on rank 0 only."""
    from torch.utils.data import DataLoader

    correct = total = 0
    with torch.random.fork_rng(devices=[]):  # a DataLoader iterator draws a base seed
        for x, y in DataLoader(dataset, batch_size=batch):
            pred = adapter(x.to(device)).argmax(-1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    return correct / max(1, total)


__all__ = ["TeacherAdapter", "distillation_loss", "kd_loss", "load_teacher", "teacher_accuracy"]
