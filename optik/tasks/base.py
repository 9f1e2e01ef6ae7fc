"""The Task interface: the one seam between the engine and what is special about a task.

The engine's trainer never branches on the task's name: it asks the task for data, a model, a loss,
a metric and artifacts, and runs the same loop for every task. A task that needs a different
optimisation step (a GAN's alternating discriminator/generator updates) sets ``manual_optimization``
and implements :meth:`Task.optimization_step` rather than writing a second loop. Serving and export
never branch on it either: what they need to know (the per-request controls, how int8 agreement is
judged, what is traced) the task says through :meth:`Task.predict_controls`, :meth:`Task.describe`,
:meth:`Task.export_module` and :meth:`Task.export_agreement`.

Adding a task: subclass :class:`Task`, set ``name`` and ``fitness_key``, implement the abstract methods,
and add its entry to :mod:`optik.catalog` (see ``optik/tasks/classify.py`` for the reference implementation).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from optik.config import CommonConfig
from optik.data.splits import DataSplits
from optik.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from optik.deploy.parity import Agreement


@dataclass(frozen=True)
class Control:
    """One prediction setting a task reads per request: a query parameter of ``optik serve`` (validated
    against ``min``/``max``) and a slider on its page. Its name — the key in :meth:`Task.predict_controls` —
    is a key of the task's predict config, which the request's value overrides for that one prediction.

    >>> Control(0.25, 0.0, 1.0, 0.01, "Confidence threshold").as_dict()["default"]
    0.25
    """

    default: float | int
    min: float | int
    max: float | int
    step: float | int
    label: str
    hint: str = ""
    integer: bool = False  # an int query parameter, a whole-number slider
    min_exclusive: bool = False  # the API takes values > min; the slider starts one step above it
    slider_max: float | int | None = None  # the slider's end where it is below ``max`` (top-k: the class count)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextListControl:
    """A per-request list of texts (zero-shot ``labels``): ``optik serve`` reads it as one comma-separated query
    parameter (``?labels=cat,dog``), checked (non-empty, no repeats, at most ``max_items`` of at most ``max_chars``
    characters, and — when ``choices`` is set, e.g. an exported file's baked label set — each one of them; a bad
    value → 422 naming it); the page shows a text box. ``default`` None: the task's own default.

    >>> TextListControl(None, "Labels", choices=("cat", "dog")).as_dict()["kind"]
    'list'
    """

    default: list[str] | None
    label: str
    hint: str = ""
    choices: tuple[str, ...] | None = None
    max_items: int = 1000
    max_chars: int = 200

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": "list"}


class Task(ABC):
    """Base class of every task. One instance serves one run (train, val or predict)."""

    name: ClassVar[str]
    #: The key of the validation metrics that picks the "best" checkpoint (higher is better). The engine
    #: reads it from the task, never from a metric object; a task whose key depends on its config
    #: (segmentation: mIoU / AP / PQ) may expose it as a property.
    fitness_key: ClassVar[str]
    #: What the task's ``data=`` holds — the annotation kind its readers take: ``"classification"``,
    #: ``"detection"``, ``"semantic"``, ``"instance"``, ``"panoptic"`` … (a flavoured task, segmentation,
    #: answers per flavour). The degenerate-case suite (``tests/degenerate``) writes its datasets per kind,
    #: so a task of a kind that suite already writes is covered without editing it.
    data_kind: ClassVar[str | None] = None
    #: The task's smallest registered model, for cheap smoke runs (``tests/degenerate``); None: the registry's
    #: model with the fewest parameters.
    smallest_model: ClassVar[str | None] = None
    #: The catalog mode that plays each role of the pipeline train → ``val`` → ``predict`` → ``export``
    #: (a task whose "predict" is sampling names its own modes); a role the task does not offer is left out.
    pipeline_modes: ClassVar[dict[str, str]] = {"val": "val", "predict": "predict", "export": "export"}
    #: Whether a run from random weights with ``lr`` unset uses the optimizer's higher from-scratch default
    #: (:data:`optik.engine.optim.SCRATCH_LR`). Measured for classification only (``benchmarks/first_run.py``);
    #: detectors and Mask R-CNN diverge at AdamW 5e-3, so other tasks keep :data:`~optik.engine.optim.DEFAULT_LR`.
    scratch_lr: ClassVar[bool] = False
    #: What loads a trained / exported model for inference (export, serve): ``"module:function"`` taking the
    #: mode's config and returning ``(task, model, cfg)``. A task whose ``model=`` accepts more than its own
    #: weights (embed: classify runs, ``timm:`` backbones) names its own loader.
    loader: ClassVar[str] = "optik.engine.inference:load_trained"

    @property
    def model_task(self) -> str:
        """The model registry's task key (segmentation: its subtask); default the task's name."""
        return self.name

    def __init__(self, cfg: CommonConfig, meta: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.meta: dict[str, Any] = dict(meta or {})  # filled by datasets() or a checkpoint's metadata

    # --- data -------------------------------------------------------------------------------
    @abstractmethod
    def datasets(self) -> DataSplits:
        """Build the train/val datasets (transforms attached); set ``self.meta``."""

    @abstractmethod
    def transforms(self, train: bool) -> Callable:
        """The sample transform of the train (augmenting) or val/predict split. The engine's predict path
        and export (parity images, int8 calibration, the metadata's ``transforms``) call it with
        ``train=False``; it may read ``self.meta`` (normalisation) after :meth:`datasets`/:meth:`build_model`."""

    def collate(self, batch: list[Any]) -> tuple[Any, Any]:
        """Samples → ``(inputs, targets)``; the default stacks tensors."""
        return torch.utils.data.default_collate(batch)

    def train_sampler(self, dataset: Dataset) -> Sampler | None:
        """A custom training sampler (e.g. class-balanced); None = seeded shuffling."""
        return None

    def batch_transform(self) -> Callable[[Any, Any], tuple[Any, Any]] | None:
        """A batch-level augmentation applied in the train loop (MixUp/CutMix); None = off."""
        return None

    # --- model ------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module:
        """Create the model for ``self.cfg`` and ``self.meta`` (pretrained weights loaded)."""

    def create_model(self, default: str, *, num_classes: int | None = None, strict: bool = False, **kwargs: Any) -> nn.Module:
        """Shared model construction: ``cfg.model`` (a name, or an optik weights file / run dir whose
        metadata names the architecture and its config) through the registry, its weights loaded.

        ``num_classes`` defaults to one output per class name (``self.meta`` or the weights' metadata; an
        error without any); a task whose models need no class names passes its own (generative: 0 =
        unconditional). Weights load with head mismatches skipped (transfer to new classes), or exactly
        with ``strict=True``. An exported ``.onnx`` / ``.torchscript`` gives its runtime wrapper instead.
        """
        from optik import models
        from optik.weights import load_state_dict, resolve_model_arg

        cfg = self.cfg
        arch, weights, wmeta = resolve_model_arg(cfg.model or default)
        if weights is not None and wmeta.get("task") not in (None, self.name):
            raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{wmeta['task']}', not '{self.name}'")
        classes = self.meta.get("classes") or wmeta.get("classes")
        if num_classes is None and not classes:
            raise ConfigError(f"cannot build a {self.name} model without class names: pass data=… or a trained weights file")
        if classes:
            self.meta["classes"] = list(classes)
        if weights is not None and "export" in wmeta:  # an exported .onnx / .torchscript: its runtime, no eager build
            from optik.config import TrainConfig
            from optik.deploy.runtime import load_exported

            if isinstance(cfg, TrainConfig):
                raise ConfigError(f"bad value for 'model': '{weights}' is an exported model (inference only); "
                                  "train from its .safetensors weights")  # fmt: skip
            self.meta["model"] = arch
            return load_exported(weights, meta=wmeta)
        model = models.create(
            arch, task=self.model_task, num_classes=len(classes) if num_classes is None else num_classes,
            img_size=cfg.imgsz, class_names=list(classes or []), pretrained=None if weights else getattr(cfg, "pretrained", None),
            config=wmeta.get("model_config"), **kwargs,  # rebuild exactly what was trained (HF config, house widths…)
        )  # fmt: skip
        if weights is not None:
            state = load_state_dict(weights)
            if strict:
                missing, unexpected = model.load_state_dict(state, strict=False)
                if missing or unexpected:
                    raise ModelError(f"model: '{weights}' does not fit {arch} ({len(missing)} missing, {len(unexpected)} unexpected keys)")
            else:
                models.load_weights(model, state)
        self.meta["model"] = arch
        if hasattr(model, "config_dict"):
            self.meta["model_config"] = model.config_dict()
        elif wmeta.get("model_config"):  # e.g. timm kwargs the weights were built with: the next run rebuilds the same
            self.meta["model_config"] = wmeta["model_config"]
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups; the default disables weight decay on biases and norms."""
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> nn.Module | None:
        """Hook for per-epoch changes (unfreezing, close_mosaic); ``epochs`` is the current total
        (a ``time=`` budget re-estimates it). Return the model if its trainable parameters changed."""
        return None

    # --- step -------------------------------------------------------------------------------
    def forward(self, model: nn.Module, inputs: Any) -> Any:
        return model(inputs)

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:
        """Loss terms; must contain ``"loss"`` (the value that is back-propagated)."""

    def train_step(self, model: nn.Module, inputs: Any, targets: Any) -> tuple[dict[str, Tensor], Any]:
        """Forward + loss for one batch; the engine back-propagates ``losses["loss"]`` and steps."""
        outputs = self.forward(model, inputs)
        return self.loss(outputs, targets), outputs

    #: True when the task runs backward and optimizer steps itself in :meth:`optimization_step`
    #: (a GAN's alternating D/G updates). The engine still owns the loop, LR schedule, EMA,
    #: checkpoints, logging and the time budget; gradient accumulation and torchrun are refused.
    manual_optimization: bool = False

    def optimization_step(self, model: nn.Module, inputs: Any, targets: Any, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One full update (forward, backward, ``optimizer.step()``) for ``manual_optimization`` tasks;
        returns detached loss terms including ``"loss"``. ``optimizer`` holds :meth:`param_groups`."""
        raise NotImplementedError(f"task {self.name!r} sets manual_optimization but has no optimization_step")

    # --- evaluation ---------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, inputs: Any, targets: Any) -> tuple[Any, dict[str, Tensor] | None]:
        """Outputs for the metric + loss terms (None when a task has no eval-mode loss, e.g.
        detectors whose loss needs train-mode forward)."""
        outputs = self.forward(model, inputs)
        return outputs, self.loss(outputs, targets)

    def train_fitness(self, train_logs: dict[str, float]) -> float:
        """"Best checkpoint" score of an epoch without validation; default: lowest train loss.
        NaN means "no quality signal: the latest weights become best" (GAN losses)."""
        return -train_logs.get("train/loss", float("inf"))

    @abstractmethod
    def metric(self) -> Any:
        """A fresh :class:`optik.metrics.base.Metric` for validation."""

    def update_metric(self, metric: Any, outputs: Any, targets: Any) -> None:
        metric.update(outputs, targets)

    @abstractmethod
    def postprocess(self, outputs: Any, meta: list[dict[str, Any]]) -> list[Any]:
        """Raw model outputs → one :class:`optik.results.Results` per image."""

    def plots(self, run_dir: Path, metrics: dict[str, Any], model: nn.Module, val_data: Dataset | None) -> list[Path]:
        """Write task-specific plots into ``run_dir/plots``; return the paths."""
        return []

    @torch.no_grad()
    def prediction_grid(self, model: nn.Module, data: Any, path: Path, n: int = 8) -> Path:
        """Up to ``n`` evenly spaced val images with their predictions drawn (``Results.plot``),
        tiled 4 per row. ``data`` needs ``__getitem__`` (transformed), ``load(i)`` (original uint8
        image first) and ``source(i)``."""
        import numpy as np
        from PIL import Image

        idx = np.linspace(0, len(data) - 1, num=min(n, len(data))).astype(int).tolist()
        from optik.device import model_device

        device = model_device(model)
        was = model.training
        model.eval()
        try:
            outputs = self.forward(model, torch.stack([data[i][0] for i in idx]).to(device))
        finally:
            model.train(was)
        meta = [{"orig_img": data.load(i)[0].permute(1, 2, 0).numpy(), "path": data.source(i)} for i in idx]
        tiles = [np.asarray(Image.fromarray(r.plot()).resize((256, 256))) for r in self.postprocess(outputs, meta)]
        while len(tiles) % 4:
            tiles.append(np.full_like(tiles[0], 255))
        rows = [np.concatenate(tiles[k : k + 4], 1) for k in range(0, len(tiles), 4)]
        Image.fromarray(np.concatenate(rows, 0)).save(path)
        return path

    def write_val_artifacts(self, run_dir: Path) -> list[Path]:
        """Extra files of ``val`` mode (COCO-style tasks: ``predictions.json``, :class:`optik.tasks.coco.CocoResults`)."""
        return []

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        """Markdown lines summarising ``metrics`` for the run report."""
        return []

    # --- export -----------------------------------------------------------------------------
    def export_module(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """What ``optik TASK export`` traces: a module mapping a float32 ``(B, 3, S, S)`` batch to tensors
        only, and how to use it: ``{"outputs": [names], "preprocess": {…}, "postprocess": {…}}`` (optional:
        ``"batch": 1`` for a one-image graph, ``"dynamic_axes"``, ``"meta"``: keys the graph fixes that override the
        file's metadata — zero-shot: its baked label set as ``classes``). Raise :class:`~optik.errors.ExportError`
        naming the model and the reason when it cannot be exported. The default fits a classifier: the
        model itself, logits → softmax.

        >>> module, info = task.export_module(model)       # doctest: +SKIP
        >>> info["outputs"], info["postprocess"]["type"]   # doctest: +SKIP
        (['logits'], 'softmax')
        """
        s = self.cfg.imgsz
        mean, std = self.meta.get("mean", (0.485, 0.456, 0.406)), self.meta.get("std", (0.229, 0.224, 0.225))
        # A pretrained model's own eval crop and filter (its meta's crop_pct / interpolation), as transforms(False).
        resize = math.floor(s / float(self.meta.get("crop_pct") or 1.0))
        interpolation = self.meta.get("interpolation") or "bilinear"
        preprocess = {"resize": f"shorter side to {resize} ({interpolation}, antialiased)", "crop": f"center {s}x{s}",
                      "scale": "x / 255", "normalize": {"mean": list(mean), "std": list(std)}, "layout": "NCHW RGB"}  # fmt: skip
        return model, {"outputs": ["logits"], "preprocess": preprocess, "postprocess": {"type": "softmax", "axis": -1, "then": "top-k"}}

    def export_agreement(self, model: nn.Module) -> Agreement:
        """How export judges the exported :meth:`export_module` of ``model`` against eager (int8 agreement
        floor; one-image detection graphs: matched detections, fp32 too). The default: top-1 agreement."""
        from optik.deploy.parity import TOP1

        return TOP1

    # --- serving ----------------------------------------------------------------------------
    def predict_controls(self) -> dict[str, Control]:
        """The settings a request may change (``optik serve``'s query parameters and page sliders), with
        their defaults for ``self.cfg``; none by default."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a served model says about its task in ``/info`` next to its name, classes and controls:
        ``subtask`` (the task's flavour; None without one), ``colors`` (each class's overlay colour as
        ``"#rrggbb"``, None = drawn untinted) and ``empty`` (the page's text for a prediction that lists nothing)."""
        from optik.viz.draw import color_for

        classes = self.meta.get("classes") or []
        return {"subtask": None, "colors": hex_colors([color_for(i) for i in range(len(classes))]), "empty": "nothing found"}

    def image_embedding(self, model: nn.Module, inputs: Tensor) -> Tensor | None:
        """The ``(B, D)`` embedding of a preprocessed batch (``optik serve``'s ``POST /embed``); None: the task's
        models do not embed images (the default)."""
        return None

    def checkpoint_meta(self) -> dict[str, Any]:
        """JSON-able metadata stored in the weights file so it is self-describing."""
        return dict(self.meta)


def hex_colors(rgb: list[tuple[int, int, int] | None]) -> list[str | None]:
    """RGB triples → ``"#rrggbb"`` (None stays None: drawn untinted).

    >>> hex_colors([(255, 0, 16), None])
    ['#ff0010', None]
    """
    return [None if c is None else "#{:02x}{:02x}{:02x}".format(*c) for c in rgb]


def get_task(name: str) -> type[Task]:
    """The :class:`Task` class of ``name``, found through the task catalog (:mod:`optik.catalog`)."""
    from optik import catalog

    ref = catalog.spec(name).task
    if ref is None:
        raise ConfigError(f"'{name}' is a command without a Task (its modes: {', '.join(catalog.spec(name).modes)})")
    return catalog.load(ref)
