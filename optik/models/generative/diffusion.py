"""Denoising diffusion (DDPM) on a diffusers ``UNet2DModel``, class-conditional with classifier-free guidance.

Training regresses the noise added at a random timestep (:func:`diffusion_loss`); sampling runs any
of four diffusers schedulers (:func:`make_scheduler`) from pure noise (:func:`sample`). A conditional
model has one extra "null" class (index ``num_classes``) that the loss substitutes for the label with
probability ``cond_drop``, so one network learns both ``eps(x, y)`` and ``eps(x, ∅)`` for guidance.
diffusers is imported on first use, so registering ``ddpm`` (``import optik.models``) stays cheap.

>>> model = DiffusionModel(channels=1, img_size=16, num_classes=10, widths=(16, 32))
>>> x0 = torch.rand(8, 1, 16, 16) * 2 - 1                     # model space [-1, 1]
>>> diffusion_loss(model, x0, torch.arange(8))["loss"].shape
torch.Size([])
>>> imgs, strip = sample(model, 4, labels=[0, 1, 2, 3], steps=5, guidance_scale=3.0, trajectory=3)
>>> imgs.shape, len(strip)
(torch.Size([4, 1, 16, 16]), 3)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from optik.errors import ConfigError
from optik.models.generative.base import GenerativeModel
from optik.models.registry import register_adapter, register_model

SCHEDULERS = ("ddpm", "ddim", "dpm++", "euler")
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiffusionModel(GenerativeModel):
    """A ``UNet2DModel`` noise predictor plus the training noise schedule (Ho et al. 2020, DDPM).

    ``widths`` are the channels per resolution level (each level but the last halves the size), so
    ``img_size`` must be divisible by ``2 ** (len(widths) - 1)``. ``attention=True`` adds self-attention
    at the lowest resolution only (down, mid and up), where it is cheap. ``unet_config`` (set by
    :meth:`from_pretrained`) overrides the architecture with a full diffusers UNet config.

    >>> m = DiffusionModel(channels=1, img_size=32, num_classes=10)   # default (32, 64, 64): ~1.0 M params
    >>> m(torch.randn(2, 1, 32, 32), torch.tensor([10, 500]), torch.tensor([3, 7])).shape
    torch.Size([2, 1, 32, 32])
    """

    kind = "ddpm"
    default_lr = 5e-4
    train_options = ("cond_drop",)

    def __init__(
        self,
        channels: int = 1,
        img_size: int = 32,
        num_classes: int = 0,
        widths: Sequence[int] = (32, 64, 64),
        layers_per_block: int = 1,
        attention: bool = False,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "epsilon",
        unet_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        widths = tuple(int(w) for w in widths)
        if beta_schedule not in _BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule={beta_schedule!r}: expected one of {', '.join(_BETA_SCHEDULES)}")
        if prediction_type not in _PREDICTION_TYPES:
            raise ConfigError(f"prediction_type={prediction_type!r}: expected one of {', '.join(_PREDICTION_TYPES)}")
        if num_classes < 0:
            raise ConfigError(f"num_classes={num_classes}: must be >= 0")
        self.channels, self.img_size, self.num_classes = int(channels), int(img_size), int(num_classes)
        self.widths, self.layers_per_block, self.attention = widths, int(layers_per_block), bool(attention)
        self.num_train_timesteps, self.beta_schedule = int(num_train_timesteps), beta_schedule
        self.prediction_type = prediction_type
        self.unet_config = dict(unet_config) if unet_config else None
        if self.unet_config is not None:
            self.unet = UNet2DModel.from_config(self.unet_config)
        else:
            if not widths or img_size % 2 ** (len(widths) - 1):
                raise ConfigError(f"img_size={img_size}: must be divisible by 2**(len(widths)-1) for widths={widths}")
            # Small widths: 8 groups (or fewer if widths demand) instead of diffusers' 32, which would be
            # one channel per group at width 32 and fail outright at width 16.
            groups = math.gcd(8, *widths)
            down = ["DownBlock2D"] * len(widths)
            if attention:
                down[-1] = "AttnDownBlock2D"
            up = ["AttnUpBlock2D" if b.startswith("Attn") else "UpBlock2D" for b in reversed(down)]
            self.unet = UNet2DModel(
                sample_size=img_size,
                in_channels=channels,
                out_channels=channels,
                down_block_types=tuple(down),
                up_block_types=tuple(up),
                block_out_channels=widths,
                layers_per_block=layers_per_block,
                norm_num_groups=groups,
                attention_head_dim=8,
                add_attention=attention,  # mid-block attention
                # Index num_classes is the "null" label for classifier-free guidance (Ho & Salimans 2022).
                num_class_embeds=num_classes + 1 if num_classes else None,
            )
        # The forward (noising) process of training; sampling builds its own scheduler (make_scheduler).
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type=prediction_type
        )

    @property
    def null_class(self) -> int:
        """Label index meaning "no condition" (only for ``num_classes > 0``)."""
        return self.num_classes

    def forward(self, x_t: Tensor, t: Tensor | int, labels: Tensor | None = None) -> Tensor:
        """Predicted noise (or v / x0 per ``prediction_type``) for noisy ``x_t`` at timesteps ``t``.

        A conditional model given ``labels=None`` predicts unconditionally (null class).
        """
        if self.num_classes:
            if labels is None:
                labels = torch.full((x_t.shape[0],), self.null_class, dtype=torch.long, device=x_t.device)
            labels = labels.to(x_t.device, torch.long)
        elif labels is not None:
            raise ConfigError("labels: this diffusion model is unconditional (num_classes=0)")
        return self.unet(x_t, t, class_labels=labels).sample

    def config_dict(self) -> dict[str, Any]:
        """JSON-able kwargs that rebuild this model: ``DiffusionModel(**m.config_dict())``."""
        cfg: dict[str, Any] = {
            "channels": self.channels,
            "img_size": self.img_size,
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "layers_per_block": self.layers_per_block,
            "attention": self.attention,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
        }
        if self.unet_config is not None:
            cfg["unet_config"] = json.loads(json.dumps(self.unet_config))
        return cfg

    @classmethod
    def from_pretrained(cls, path_or_id: str) -> DiffusionModel:
        """Wrap a diffusers ``UNet2DModel`` (a dir with ``config.json``, a DDPMPipeline dir with ``unet/``, or a hub id).

        The pipeline's ``scheduler/scheduler_config.json`` (if any) supplies the training schedule. A UNet
        with ``num_class_embeds=K`` is taken as optik-style conditional: ``K - 1`` classes + null.

        >>> m = DiffusionModel.from_pretrained("runs/ddpm-cifar10")      # doctest: +SKIP
        """
        from diffusers import DDPMScheduler, UNet2DModel

        path = Path(path_or_id)
        sched_cfg: dict[str, Any] = {}
        try:
            if path.is_dir():
                unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
                if not (unet_dir / "config.json").is_file():
                    raise ConfigError(f"model={path_or_id}: no config.json (neither a UNet2DModel nor a pipeline dir)")
                unet = UNet2DModel.from_pretrained(unet_dir)
                for f in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
                    if f.is_file():
                        sched_cfg = json.loads(f.read_text())
                        break
            elif path.exists() or path_or_id.count("/") != 1:
                raise ConfigError(f"model={path_or_id}: not a directory or a hub id 'owner/name'")
            else:  # hub id: pipeline layout first, then a bare UNet repo
                try:
                    unet = UNet2DModel.from_pretrained(path_or_id, subfolder="unet")
                    sched_cfg = dict(DDPMScheduler.load_config(path_or_id, subfolder="scheduler"))
                except (OSError, ValueError):
                    unet = UNet2DModel.from_pretrained(path_or_id)
        except ConfigError:
            raise
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise ConfigError(f"model={path_or_id}: cannot load a diffusers UNet2DModel ({type(e).__name__})") from e
        c = unet.config
        if c.in_channels != c.out_channels:
            raise ConfigError(
                f"model={path_or_id}: out_channels {c.out_channels} != in_channels {c.in_channels} "
                "(learned variance is unsupported)"
            )
        size = c.sample_size if isinstance(c.sample_size, int) else (c.sample_size or [32])[0]
        ucfg = {k: v for k, v in dict(c).items() if not k.startswith("_")}
        model = cls(
            channels=c.in_channels,
            img_size=int(size),
            num_classes=max(0, (c.num_class_embeds or 0) - 1),
            widths=tuple(c.block_out_channels),
            layers_per_block=c.layers_per_block,
            attention=any("Attn" in b for b in c.down_block_types),
            num_train_timesteps=int(sched_cfg.get("num_train_timesteps", 1000)),
            beta_schedule=sched_cfg.get("beta_schedule", "linear" if sched_cfg else "squaredcos_cap_v2"),
            prediction_type=sched_cfg.get("prediction_type", "epsilon"),
            unet_config=ucfg,
        )
        model.unet.load_state_dict(unet.state_dict())
        return model

    # --- the GenerativeModel protocol ---------------------------------------------------------
    def training_loss(self, images: Tensor, labels: Tensor | None, *, cond_drop: float = 0.1, **_: Any) -> dict[str, Tensor]:
        """:func:`diffusion_loss` of one batch (``cond_drop``: label dropout for classifier-free guidance)."""
        return diffusion_loss(self, images, labels, cond_drop=cond_drop)

    def sample(self, n: int, labels: Tensor | None = None, *, seed: int | None = None, **sampling: Any) -> Tensor:
        """:func:`sample`'s images (``sampling``: ``steps``, ``guidance_scale``, ``sampler``, ``progress``);
        ``seed=None`` draws one from torch's global generator."""
        return sample(self, n, labels, seed=_seed(seed), **sampling)[0]

    def trajectory(self, n: int, labels: Tensor | None = None, *, seed: int = 0, snapshots: int = 8, **sampling: Any) -> list[Tensor]:
        """``snapshots`` predicted clean images, first to last denoising step (:func:`sample`'s ``trajectory``)."""
        return sample(self, n, labels, seed=seed, trajectory=snapshots, **sampling)[1]


def _seed(seed: int | None) -> int:
    return int(torch.randint(0, 2**31 - 1, ())) if seed is None else int(seed)


def make_scheduler(name: str, model: DiffusionModel):
    """A fresh sampling scheduler matching ``model``'s training schedule: ``ddpm|ddim|dpm++|euler``.

    >>> make_scheduler("dpm++", DiffusionModel(img_size=16, widths=(16, 32))).config.algorithm_type
    'dpmsolver++'
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
    common = dict(
        num_train_timesteps=model.num_train_timesteps,
        beta_schedule=model.beta_schedule,
        prediction_type=model.prediction_type,
    )
    cosine = model.beta_schedule == "squaredcos_cap_v2"
    if name == "ddpm":  # ancestral sampling, Ho et al. 2020
        return DDPMScheduler(**common)
    if name == "ddim":  # deterministic (eta=0) non-Markovian sampler, Song et al. 2021 (DDIM)
        # "trailing" starts at t = T-1, the pure-noise step training saw; x0 is clipped to [-1, 1].
        return DDIMScheduler(**common, timestep_spacing="trailing")
    if name == "dpm++":  # 2nd-order multistep data-prediction solver, Lu et al. 2022 (DPM-Solver++)
        # Cosine schedule: alpha_bar -> 0 at the end makes log-SNR -> -inf; clip it as diffusers advises.
        clip = -5.1 if cosine else -float("inf")
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2, lambda_min_clipped=clip)
    if name == "euler":  # Euler ODE step in sigma space (Karras et al. 2022)
        # The cosine schedule's sigma(T-1) ~ 2e4 amplifies any eps error; "leading" starts lower (sigma ~ 34 at 50 steps).
        return EulerDiscreteScheduler(**common, timestep_spacing="leading", steps_offset=1)
    raise ConfigError(f"sampler={name!r}: expected one of {', '.join(SCHEDULERS)}")


def diffusion_loss(
    model: DiffusionModel,
    x0: Tensor,
    labels: Tensor | None = None,
    cond_drop: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Simple DDPM loss ``|| eps - eps_theta(x_t, t, y) ||²`` at a uniform random ``t`` (Ho et al. 2020).

    Labels are replaced by the null class with probability ``cond_drop`` (classifier-free guidance
    training, Ho & Salimans 2022). ``generator`` (on CPU) makes ``t``, noise and dropout reproducible.

    >>> m = DiffusionModel(img_size=16, widths=(16, 32))
    >>> float(diffusion_loss(m, torch.zeros(2, 1, 16, 16))["loss"].detach()) > 0
    True
    """
    b, dev = x0.shape[0], x0.device
    gdev = generator.device if generator is not None else dev
    t = torch.randint(0, model.num_train_timesteps, (b,), generator=generator, device=gdev).to(dev)
    noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev, x0.dtype)
    x_t = model.noise_scheduler.add_noise(x0, noise, t)
    if model.num_classes and labels is not None:
        labels = labels.to(dev, torch.long)
        drop = torch.rand(b, generator=generator, device=gdev).to(dev) < cond_drop
        labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
    elif model.num_classes:
        labels = torch.full((b,), model.null_class, dtype=torch.long, device=dev)
    else:
        labels = None
    if model.prediction_type == "epsilon":
        target = noise
    elif model.prediction_type == "v_prediction":  # Salimans & Ho 2022
        target = model.noise_scheduler.get_velocity(x0, noise, t)
    else:
        target = x0
    pred = model(x_t, t, labels)
    return {"loss": F.mse_loss(pred.float(), target.float())}


def _guided_output(model: DiffusionModel, x: Tensor, t: Tensor, labels: Tensor | None, w: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): ``eps_u + w (eps_c - eps_u)``, one doubled batch."""
    if labels is None or w == 1.0:  # unconditional model, or w = 1: the conditional prediction itself
        return model(x, t, labels)
    null = torch.full_like(labels, model.null_class)
    out = model(torch.cat([x, x]), t, torch.cat([null, labels]))
    eps_u, eps_c = out.chunk(2)
    return eps_u + w * (eps_c - eps_u)


def _x0_estimate(sched: Any, x: Tensor, t: Tensor, out: Tensor, prediction_type: str) -> Tensor:
    """Predicted x0 for schedulers whose step output lacks it (DPM-Solver++, VP parametrisation)."""
    ab = sched.alphas_cumprod[int(t)].to(x.device, x.dtype)
    if prediction_type == "epsilon":
        return (x - (1 - ab).sqrt() * out) / ab.sqrt()
    if prediction_type == "v_prediction":
        return ab.sqrt() * x - (1 - ab).sqrt() * out
    return out


@torch.no_grad()
def sample(
    model: DiffusionModel,
    n: int,
    labels: Tensor | Sequence[int] | None = None,
    steps: int = 50,
    guidance_scale: float = 1.0,
    sampler: str = "ddim",
    seed: int = 0,
    trajectory: int = 0,
    progress: bool = False,
) -> tuple[Tensor, list[Tensor]]:
    """Generate ``n`` images in ``[-1, 1]`` from noise; returns ``(images, snapshots)``.

    A conditional model without ``labels`` samples classes ``0, 1, …`` cyclically (a class grid).
    ``guidance_scale`` w: ``eps_u + w (eps_c - eps_u)``; w = 1 is the plain conditional model (no extra
    pass), w = 0 unconditional; ignored for unconditional models. ``trajectory=k`` returns ``k`` evenly
    spaced predicted-x0 snapshots (first to last step) for a denoising strip. Same ``seed`` → same images.

    >>> m = DiffusionModel(img_size=16, widths=(16, 32))
    >>> x, _ = sample(m, 2, steps=3, sampler="dpm++"); x.shape
    torch.Size([2, 1, 16, 16])
    """
    if not 1 <= steps <= model.num_train_timesteps:
        raise ConfigError(f"steps={steps}: must be in 1..{model.num_train_timesteps}")
    sched = make_scheduler(sampler, model)
    device = next(model.parameters()).device
    if model.num_classes:
        if labels is None:
            labels = torch.arange(n) % model.num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(device)
        if len(labels) != n or labels.min() < 0 or labels.max() >= model.num_classes:
            raise ConfigError(f"labels: need {n} class ids in 0..{model.num_classes - 1}")
    else:
        labels = None
    gen = torch.Generator("cpu").manual_seed(int(seed))
    shape = (n, model.channels, model.img_size, model.img_size)
    sched.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=gen).to(device) * sched.init_noise_sigma
    last = len(sched.timesteps) - 1
    keep = set(np.linspace(0, last, trajectory).round().astype(int).tolist()) if trajectory > 0 else set()
    snaps: list[Tensor] = []
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from optik.console import console

        bar = Progress(TextColumn(f"[bold]sampling ({sampler})"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console, transient=True, auto_refresh=console.is_terminal)
        task = bar.add_task("sample", total=len(sched.timesteps))
        bar.start()
    try:
        for i, t in enumerate(sched.timesteps):
            out = _guided_output(model, sched.scale_model_input(x, t), t, labels, float(guidance_scale))
            step = sched.step(out, t, x, generator=gen)
            if i in keep:
                x0 = getattr(step, "pred_original_sample", None)
                if x0 is None:
                    x0 = _x0_estimate(sched, x, t, out, model.prediction_type)
                snaps.append(x0.clamp(-1, 1).cpu())
            x = step.prev_sample
            if bar is not None:
                bar.update(task, advance=1)
    finally:
        if bar is not None:
            bar.stop()
        model.train(was_training)
    return x.clamp(-1, 1), snaps



# ----------------------------------------------------------------------------- registry entries
@register_model("ddpm", task="generate")
def ddpm(num_classes: int = 0, in_chans: int = 3, img_size: int | None = 32, width: int | None = None,
         timesteps: int = 1000, config: dict[str, Any] | None = None, **_: Any) -> DiffusionModel:  # fmt: skip
    """DDPM (Ho 2020) on diffusers' UNet2DModel; class-conditional with CFG when ``num_classes`` > 0;
    ``config`` (a saved config_dict) rebuilds a trained model exactly."""
    if config:
        return DiffusionModel(**config)
    extra: dict[str, Any] = {"widths": (width, 2 * width, 2 * width)} if width else {}
    return DiffusionModel(channels=in_chans, img_size=img_size or 32, num_classes=num_classes,
                          num_train_timesteps=timesteps, **extra)  # fmt: skip


def hf_unet(name: str, config: dict[str, Any] | None = None, **_: Any) -> DiffusionModel:
    """``hf:<id|dir>``: a diffusers UNet2DModel (e.g. a DDPMPipeline) as an unconditional DDPM; ``config``
    rebuilds a model trained from one without reading ``name`` again."""
    return DiffusionModel(**config) if config else DiffusionModel.from_pretrained(name)


register_adapter("hf", "generate", hf_unet, "hf:<diffusers UNet2DModel dir> (DDPM)")

__all__ = ["DiffusionModel", "make_scheduler", "diffusion_loss", "sample", "SCHEDULERS"]
