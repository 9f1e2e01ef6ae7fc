"""The task catalog: the one place that knows which tasks exist.

Each entry gives a task's name, one-line help, an example, the :class:`~optik.tasks.base.Task` class and,
per mode, the config class and the runner (``"package.module:attribute"`` strings, imported on first
use, so this module — and ``optik --help`` — never imports torch). The CLI builds its commands from it,
``build_config`` validates against it, ``optik info`` lists it.

Adding a task: write ``optik/tasks/<task>.py`` (a :class:`~optik.tasks.base.Task`), ``optik/config/<task>.py``
(its keys), its models/data/metrics modules, and add one :class:`TaskSpec` to :data:`CATALOG` below.

>>> sorted(CATALOG["detect"].modes)
['benchmark', 'export', 'label', 'predict', 'serve', 'train', 'val']
>>> CATALOG["classify"].modes["train"].config
'optik.config.classify:ClassifyTrainConfig'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from optik.errors import ConfigError


@dataclass(frozen=True)
class Mode:
    """One mode of a task: its config class and the function ``runner(cfg)`` that runs it."""

    config: str
    runner: str
    help: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A catalog entry. ``task`` is None for a command without a Task object (``optik edit``);
    ``default_mode`` lets ``optik <name> key=value …`` run without naming a mode."""

    name: str
    help: str
    example: str
    modes: dict[str, Mode]
    task: str | None = None
    default_mode: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)


# The engine's runners, shared by every task that offers these modes.
RUNNERS = {
    "train": "optik.engine.trainer:train",
    "val": "optik.engine.inference:validate",
    "predict": "optik.engine.inference:predict",
    "export": "optik.deploy.export:export",
    "benchmark": "optik.deploy.benchmark:benchmark",
    "serve": "optik.serve.app:serve",
}
BASE = "optik.config.base"
SERVE = "optik.config.serve:ServeConfig"


def modes(**configs: str | Mode) -> dict[str, Mode]:
    """``mode=config`` pairs (the mode's shared runner from :data:`RUNNERS`) or ``mode=Mode(config, runner)``."""
    return {m: c if isinstance(c, Mode) else Mode(c, RUNNERS[m]) for m, c in configs.items()}


def own_configs(module: str, prefix: str, names: tuple[str, ...] = ("train", "val", "predict", "export", "benchmark")) -> dict[str, str]:
    """The engine modes of a task whose every mode has its own config class, named ``<Prefix><Mode>Config``.

    >>> own_configs("optik.config.detect", "Detect", ("train",))
    {'train': 'optik.config.detect:DetectTrainConfig'}
    """
    return {m: f"{module}:{prefix}{m.title()}Config" for m in names}


CATALOG: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "classify", "Image classification: native zoo, timm:<name>, hf:<id|dir>.",
            "optik classify train data=digits model=cnn epochs=4 imgsz=32",
            task="optik.tasks.classify:ClassifyTask",
            modes=modes(
                train="optik.config.classify:ClassifyTrainConfig", val=f"{BASE}:ValConfig", predict=f"{BASE}:PredictConfig",
                export=f"{BASE}:ExportConfig", benchmark=f"{BASE}:BenchmarkConfig", serve=SERVE,
                explain=Mode("optik.config.classify:ExplainConfig", "optik.explain.run:explain"),
                prune=Mode("optik.config.classify:PruneConfig", "optik.deploy.prune:prune"),
                summary=Mode("optik.config.classify:SummaryConfig", "optik.engine.summary:summary"),
            ),
        ),
        TaskSpec(
            "detect", "Object detection: the house detector, tv:<torchvision>, hf:<DETR-family>, hf:<OWL-ViT/OWLv2> with prompts=.",
            "optik detect train data=synthetic:shapes-det model=house_s epochs=3",
            task="optik.tasks.detect:DetectTask",
            modes=modes(**own_configs("optik.config.detect", "Detect"), serve="optik.config.detect:DetectServeConfig",
                        label=Mode("optik.config.detect:DetectLabelConfig", "optik.zeroshot.autolabel:label",
                                   "auto-label source= images into a COCO JSON (open vocabulary: prompts=)")),
        ),
        TaskSpec(
            "segment", "Segmentation, task=semantic|instance|panoptic: unet, fpn, tv:<…>, mask2former, hf:<…>.",
            "optik segment train task=instance data=synthetic:shapes-inst model=tv:maskrcnn epochs=3",
            task="optik.tasks.segment:SegmentTask",
            modes=modes(**own_configs("optik.config.segment", "Segment"), serve=SERVE),
        ),
        TaskSpec(
            "sam", "Segment Anything: point/box prompts, or automatic masks without them; model=hf:<id|dir>.",
            "optik sam predict model=hf:facebook/sam-vit-base source=img.png points=[[120,80]] point_labels=[1]",
            default_mode="predict",
            modes={"predict": Mode("optik.config.sam:SamPredictConfig", "optik.sam.run:predict")},
        ),
        TaskSpec(
            "generate", "Generative models: dcgan, cgan, vae, cvae, ae, ddpm; sample with prompt= runs Stable Diffusion.",
            "optik generate train model=ddpm data=digits epochs=20; optik generate sample model=runs/generate/train n=64",
            task="optik.tasks.generate:GenerateTask",
            modes=modes(
                train="optik.config.generate:GenerateTrainConfig",
                sample=Mode("optik.config.generate:GenerateSampleConfig", "optik.generative.run:sample"),
                eval=Mode("optik.config.generate:GenerateEvalConfig", "optik.generative.run:evaluate"),
            ),
        ),
        TaskSpec(
            "edit", "Edit a photo: SAM mask from a click or box, then Stable Diffusion inpainting, then a panel.",
            'optik edit image=photo.jpg point=120,80 prompt="a red sports car"',
            default_mode="edit",
            modes={"edit": Mode("optik.config.generate:EditConfig", "optik.generative.edit:edit")},
        ),
        TaskSpec(
            "embed", "Representations: SimCLR/MoCo/DINO pretraining, k-NN + linear-probe eval, features, index and search.",
            "optik embed train data=digits model=cnn method=simclr epochs=20 imgsz=32",
            task="optik.tasks.embed:EmbedTask",
            modes=modes(
                train="optik.config.embed:EmbedTrainConfig",
                val=Mode("optik.config.embed:EmbedValConfig", "optik.embed.run:validate"),
                predict=Mode("optik.config.embed:EmbedPredictConfig", "optik.embed.run:predict"),
                index=Mode("optik.config.embed:EmbedIndexConfig", "optik.embed.run:index"),
                search=Mode("optik.config.embed:EmbedSearchConfig", "optik.embed.run:search"),
                export=f"{BASE}:ExportConfig", serve=SERVE,
            ),
        ),
        TaskSpec(
            "zeroshot", "Zero-shot classification and image-text retrieval: a tiny CLIP trained from scratch, or hf:<CLIP dir>.",
            "optik zeroshot train data=synthetic:captions model=resnet epochs=8 imgsz=64; "
            "optik zeroshot predict model=runs/zeroshot/train source=img.png labels=[red circle,blue star]",
            task="optik.tasks.zeroshot:ZeroshotTask",
            modes=modes(**own_configs("optik.config.zeroshot", "Zeroshot", ("train", "val", "predict", "export")),
                        serve="optik.config.zeroshot:ZeroshotServeConfig",
                        score=Mode("optik.config.zeroshot:ZeroshotScoreConfig", "optik.zeroshot.score:score",
                                   "CLIPScore of images against prompts, captions or their classes")),
        ),
        TaskSpec(
            "vl", "Vision-language: captioning and visual question answering (BLIP), document QA (Donut); model=hf:<dir>.",
            'optik vl caption model=hf:path/to/blip source=img.png prompt="a photo of"; '
            'optik vl vqa model=hf:path/to/blip-vqa source=img.png question="how many shapes?"',
            task="optik.tasks.vl:VlTask",
            modes={"caption": Mode("optik.config.vl:VlCaptionConfig", "optik.vl.run:caption", "caption every image"),
                   "vqa": Mode("optik.config.vl:VlVqaConfig", "optik.vl.run:vqa", "answer question= about every image"),
                   "docqa": Mode("optik.config.vl:VlDocqaConfig", "optik.vl.run:docqa", "answer question= about document images (Donut)")},
        ),
        TaskSpec(
            "models", "Model files: convert a foreign state dict (.pth/.bin/.safetensors) onto an architecture's names.",
            "optik models convert src=efficientnet-lite0.pth model=timm:tf_efficientnet_lite0 out=lite0.safetensors",
            modes={"convert": Mode("optik.config.models:ModelsConvertConfig", "optik.models.convert:convert")},
        ),
    )
}


def load(ref: str) -> Any:
    """``"package.module:attribute"`` → the attribute (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def spec(task: str) -> TaskSpec:
    """The catalog entry of ``task``; :class:`ConfigError` listing the tasks when unknown."""
    if task not in CATALOG:
        raise ConfigError(f"unknown task '{task}'; available: {', '.join(CATALOG)}")
    return CATALOG[task]


def mode(task: str, mode_name: str) -> Mode:
    """The :class:`Mode` of ``task``; :class:`ConfigError` listing the task's modes when it has no such mode."""
    s = spec(task)
    if mode_name not in s.modes:
        raise ConfigError(f"unknown mode '{mode_name}' for {task}; {task} offers: {', '.join(s.modes)}")
    return s.modes[mode_name]


def tasks_with_mode(mode_name: str) -> list[str]:
    """Names of the tasks that offer ``mode_name`` (for hints: which task a misplaced key belongs to)."""
    return [name for name, s in CATALOG.items() if mode_name in s.modes]
