"""The Python facade: the same nouns as the CLI.

>>> from optik import Model
>>> m = Model("cnn", task="classify")                                   # doctest: +SKIP
>>> m.train(data="digits", epochs=2, imgsz=32, project="/tmp/runs")     # doctest: +SKIP
>>> m.val()["top1"]                                                     # doctest: +SKIP
0.97
>>> m.predict("digit.png")[0].probs.top1                                # doctest: +SKIP
3
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from optik.config import build_config
from optik.results import Results
from optik.weights import resolve_model_arg

F = TypeVar("F", bound=Callable[..., Any])


def _cleanup_on_error(method: F) -> F:
    """A run dir the method's runner created is removed again if the run dies before writing anything
    into it (:func:`optik.engine.rundir.cleanup_on_error`, as on the CLI)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from optik.engine.rundir import cleanup_on_error

        with cleanup_on_error():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Model:
    """A model to train, validate and predict with.

    Args:
        model: a native name (``"resnet"``), ``"timm:<name>"``, ``"hf:<hub id or dir>"``, an optik
            ``.safetensors`` weights file, or a run directory (its best weights).
        task: ``"classify"`` (default; inferred from a weights file's metadata when given).
    """

    def __init__(self, model: str | Path = "cnn", task: str | None = None) -> None:
        self.model = str(model)
        _, self.weights, self.meta = resolve_model_arg(self.model)
        self.task = task or self.meta.get("task") or "classify"
        self.callbacks: list[Any] = []
        self.run_dir: Path | None = None
        self.metrics: dict[str, Any] = {}
        self._loaded: tuple[Any, Any, Any] | None = None  # (key, task, model) cache for predict

    @property
    def names(self) -> list[str]:
        """Class names of the trained model (empty before training)."""
        return list(self.meta.get("classes", []))

    def add_callback(self, event: str, fn: Callable[..., Any]) -> None:
        """Call ``fn(trainer, ...)`` on a trainer event (``on_epoch_end``, …; see engine/callbacks.py)."""
        self.callbacks.append(type("Callback", (), {event: staticmethod(fn)})())

    @_cleanup_on_error
    def train(self, **kwargs: Any) -> dict[str, Any]:
        """Train (keys as on the CLI: ``data``, ``epochs``, ``imgsz``…); returns the final val metrics.
        Afterwards this object points at the run's best weights."""
        from optik.engine.trainer import Trainer

        cfg = build_config(self.task, "train", {"model": self.model, **kwargs})
        result = Trainer(cfg, callbacks=self.callbacks).fit()
        self.run_dir = Path(result["run_dir"])
        if Path(result["best"]).is_file():
            self.__init__(result["best"], self.task)  # type: ignore[misc]  # reload as the trained model
            self.run_dir = Path(result["run_dir"])
        self.metrics = result["metrics"]
        return result["metrics"]

    @_cleanup_on_error
    def val(self, **kwargs: Any) -> dict[str, Any]:
        """Evaluate the trained weights (default: on the val split of the data they were trained on)."""
        from optik.engine.inference import validate

        return validate(build_config(self.task, "val", {"model": self.model, **kwargs}))

    def predict(self, source: Any, stream: bool = False, **kwargs: Any) -> list[Results] | Iterator[Results]:
        """Predict on a file, folder, glob, video, array, PIL image or a list of them.

        Returns the list of :class:`Results`; with ``stream=True`` a generator that yields them one by
        one (the model loads at the first ``next()``; with ``save=True`` each is written as it goes), so
        a folder of 100k images or a long video runs in flat memory:

        >>> for r in Model("runs/classify/train").predict("clip.mp4", stream=True, save=True):  # doctest: +SKIP
        ...     print(r.path, r.probs.top1)

        The loaded model is cached on this object across calls (same model, ``imgsz`` and ``device``).
        """
        cfg = build_config(self.task, "predict", {"model": self.model, **kwargs})  # config errors raise now
        results = self._predict_stream(cfg, source)
        return results if stream else list(results)

    def _predict_stream(self, cfg: Any, source: Any) -> Iterator[Results]:
        from optik.engine.fastpath import optimize_loaded
        from optik.engine.inference import load_trained, predict_stream, write_results

        # pretrained: Model("timm:<arch>").predict(x, pretrained=<file>) loads that file's weights and labels
        key = (self.model, cfg.imgsz if "imgsz" in cfg.model_fields_set else None, cfg.device, str(getattr(cfg, "pretrained", None)))
        if self._loaded is None or self._loaded[0] != key:
            task, model, _ = load_trained(cfg)
            # The eager fast path (BN folded into packed, fused convs), checked equal to the loaded model; what
            # train / export / explain load is never this copy.
            self._loaded = (key, task, optimize_loaded(task, model))
        _, task, model = self._loaded
        cfg = cfg if "imgsz" in cfg.model_fields_set else cfg.model_copy(update={"imgsz": task.cfg.imgsz})
        task.cfg = cfg
        results = write_results(predict_stream(task, model, source, cfg), cfg)
        try:
            while True:
                task.cfg = cfg  # another stream of this Model may have run with its own keys in between
                try:
                    r = next(results)
                except StopIteration:
                    return
                yield r
        finally:
            results.close()  # closed early: files and the source are closed now, not at garbage collection

    @_cleanup_on_error
    def export(self, **kwargs: Any) -> Path:
        """Export to ``format="onnx"`` (default), ``"torchscript"`` or ``"onnx-int8"``; returns the file,
        which ``Model(path)`` loads back for ``predict``/``val``. A parity check against eager runs first."""
        from optik.deploy.export import export

        return export(build_config(self.task, "export", {"model": self.model, **kwargs}))

    @_cleanup_on_error
    def benchmark(self, **kwargs: Any) -> list[dict[str, Any]]:
        """One row per format (``formats=[...]``): size MB, latency p50/p95, throughput, val metric."""
        from optik.deploy.benchmark import benchmark

        return benchmark(build_config(self.task, "benchmark", {"model": self.model, **kwargs}))

    @_cleanup_on_error
    def explain(self, source: Any, **kwargs: Any) -> list[Any]:
        """Grad-CAM (``method="gradcam"``), Grad-CAM++ or gradient saliency heatmaps for ``source``."""
        from optik.explain.run import explain

        return explain(build_config(self.task, "explain", {"model": self.model, "save": False, **kwargs}), source)

    @_cleanup_on_error
    def prune(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Prune (``method=``, ``amount=[…]``), fine-tune ``epochs=`` and return the sparsity/accuracy rows."""
        from optik.deploy.prune import prune

        return prune(build_config(self.task, "prune", {"model": self.model, **kwargs}))

    def serve(self, **kwargs: Any) -> None:
        """Serve the model over HTTP (blocking): ``GET /`` web page, ``POST /predict``…"""
        from optik.serve.app import serve

        serve(build_config(self.task, "serve", {"model": self.model, **kwargs}))

    @_cleanup_on_error
    def sample(self, **kwargs: Any) -> dict[str, Any]:
        """Generative models: ``n`` images (+ grid, trajectory / interpolation) — ``optik generate sample``.

        >>> Model("runs/generate/train").sample(n=16, steps=20)["images"].shape   # doctest: +SKIP
        torch.Size([16, 1, 32, 32])
        """
        from optik.generative.run import sample

        return sample(build_config(self.task, "sample", {"model": self.model, **kwargs}))

    @_cleanup_on_error
    def evaluate(self, **kwargs: Any) -> dict[str, Any]:
        """Generative models: FID / KID / IS / precision / recall (+ CAS) — ``optik generate eval``."""
        from optik.generative.run import evaluate

        return evaluate(build_config(self.task, "eval", {"model": self.model, **kwargs}))

    def __repr__(self) -> str:
        return f"Model({self.model!r}, task={self.task!r})"
