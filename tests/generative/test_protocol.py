"""The GenerativeModel protocol: every registered generative model speaks it, and the generate task,
sampling and artifacts work for any model that does — without knowing which model it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from optik.config import build_config
from optik.generative.artifacts import write_sample_artifacts
from optik.generative.sampling import generate_batches, generate_images
from optik.models import create, list_models, register_model, registry
from optik.models.generative import GenerativeModel, unwrap
from optik.tasks.generate import GenerateTask

SMALL = {"dcgan": {"width": 8}, "cgan": {"width": 8}, "vae": {"width": 8}, "cvae": {"width": 8}, "ae": {"width": 8},
         "ddpm": {"width": 8, "timesteps": 50}}  # fmt: skip


def test_every_generate_model_is_registered_and_speaks_the_protocol() -> None:
    assert list_models(task="generate") == sorted(SMALL)
    for name, kw in SMALL.items():
        model = create(name, task="generate", num_classes=3, in_chans=1, img_size=16, **kw)
        assert isinstance(model, GenerativeModel), name
        assert model.conditional and model.num_classes == 3
        # config= rebuilds exactly (what a weights file's model_config does)
        twin = create(name, task="generate", config=model.config_dict())
        assert type(twin) is type(model) and twin.config_dict() == model.config_dict()
        twin.load_state_dict(model.state_dict())
        x = model.sample(3, torch.tensor([0, 1, 2]), seed=1, steps=2)
        assert x.shape == (3, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
        assert torch.equal(x, model.sample(3, torch.tensor([0, 1, 2]), seed=1, steps=2)), name  # seeded
        assert model.default_lr > 0 and set(model.train_options)
        assert model.manual_optimization == (name in ("dcgan", "cgan"))


def test_optional_views_follow_the_model() -> None:
    kw = {"task": "generate", "num_classes": 0, "in_chans": 1, "img_size": 16, "width": 8}
    gan, vae, ddpm = create("dcgan", **kw), create("vae", **kw), create("ddpm", timesteps=50, **kw)
    assert (gan.latent, vae.latent, ddpm.latent) == (64, 16, None)
    assert gan.trajectory(2, seed=0) == [] and len(ddpm.trajectory(2, seed=0, snapshots=3, steps=4)) == 3
    x = torch.zeros(2, 1, 16, 16)
    assert vae.reconstruct(x).shape == (4, 1, 16, 16) and gan.reconstruct(x) is None and ddpm.reconstruct(x) is None
    assert gan.decode(torch.zeros(2, 64)).shape == (2, 1, 16, 16)


def test_sampling_drops_labels_for_unconditional_models_and_batches_are_seeded() -> None:
    gan = create("dcgan", task="generate", num_classes=0, in_chans=1, img_size=16, width=8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    a = torch.cat(list(generate_batches(gan, 5, labels, batch=2, seed=7)))
    assert a.shape == (5, 1, 16, 16) and gan.training  # the mode is restored
    assert torch.equal(a[:2], generate_images(gan, 2, labels[:2], seed=7))  # batch k is seeded seed + k
    assert torch.equal(a[2:4], generate_images(gan, 2, seed=8))
    with pytest.raises(Exception, match="not a generative model"):
        unwrap(nn.Linear(2, 2))


class Blob(GenerativeModel):
    """A toy model the task has never heard of: a learned mean image plus noise."""

    kind = "blob"
    default_lr = 0.1
    train_options = ("beta",)

    def __init__(self, channels: int = 1, img_size: int = 8, num_classes: int = 0) -> None:
        super().__init__()
        self.channels, self.img_size, self.num_classes = channels, img_size, num_classes
        self.mean = nn.Parameter(torch.zeros(max(1, num_classes), channels, img_size, img_size))

    def config_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "img_size": self.img_size, "num_classes": self.num_classes}

    def sample(self, n: int, labels: Tensor | None = None, *, seed: int | None = None, **sampling: Any) -> Tensor:
        g = torch.Generator().manual_seed(seed or 0)
        idx = labels if labels is not None else torch.zeros(n, dtype=torch.long)
        return (self.mean[idx] + 0.1 * torch.randn(n, self.channels, self.img_size, self.img_size, generator=g)).clamp(-1, 1)

    def training_loss(self, images: Tensor, labels: Tensor | None, *, beta: float = 1.0, **_: Any) -> dict[str, Tensor]:
        idx = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)
        return {"loss": beta * (self.mean[idx] - images).pow(2).mean()}


@pytest.fixture
def blob() -> Any:
    @register_model("test_blob", task="generate")
    def test_blob(num_classes: int = 0, in_chans: int = 1, img_size: int | None = 8, config: dict | None = None, **_: Any):
        return Blob(**config) if config else Blob(in_chans, img_size or 8, num_classes)

    yield test_blob
    del registry._MODELS[("generate", "test_blob")]


def test_the_task_trains_samples_and_draws_a_model_it_does_not_know(blob: Any, tmp_path: Path) -> None:
    cfg = build_config("generate", "train", {"model": "test_blob", "imgsz": 8, "conditional": True, "beta": 2.0})
    task = GenerateTask(cfg, {"classes": ["a", "b"], "channels": 1})
    model = task.build_model()
    assert isinstance(model, Blob) and model.num_classes == 2 and not task.manual_optimization
    assert task.meta["model_kind"] == "blob" and task.meta["model_config"] == model.config_dict()
    groups = task.param_groups(model)
    assert all(g["lr"] == 0.1 for g in groups)  # the model's default_lr
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 0, 1])
    losses, _ = task.train_step(model, x, y)
    torch.testing.assert_close(losses["loss"], 2.0 * (model.mean[y] - x).pow(2).mean())  # beta reached the model
    assert task.train_fitness({"train/loss": 0.5}) == -0.5
    paths = write_sample_artifacts(model, tmp_path, real=x, real_labels=y)
    assert [p.name for p in paths] == ["samples.png"]  # no trajectory, latent space or reconstructions to show
