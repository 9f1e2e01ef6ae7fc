"""Vision-language task: image captioning and visual question answering with a transformers BLIP model, document
question answering with a Donut (``model=hf:<dir>``). Inference only: ``optik vl caption``, ``vqa`` and ``docqa`` (runners in :mod:`optik.vl.run`).

The task owns what the runner asks of it — the model (:meth:`VlTask.build_model`), the texts paired with each
image (:meth:`VlTask.texts`) and the :class:`~optik.results.Results` built from what the model generates
(:meth:`VlTask.postprocess`) — so the runner never branches on the mode.

>>> from optik.config import build_config
>>> task = VlTask(build_config("vl", "vqa", {"model": "hf:blip-vqa", "question": "how many?"}))
>>> task.texts(2)
['how many?', 'how many?']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from optik.errors import ConfigError
from optik.results import Results
from optik.tasks.base import DataSplits, Task


class VlTask(Task):
    name = "vl"
    fitness_key = "none"
    # No train mode: the degenerate-case suite covers tasks with a train mode only (catalog_units), so it skips vl.
    data_kind = None
    smallest_model = None
    pipeline_modes: ClassVar[dict[str, str]] = {}

    @property
    def kind(self) -> str:
        """``caption``, ``vqa`` or ``docqa``: the config's mode."""
        return self.cfg.mode if self.cfg.mode in ("vqa", "docqa") else "caption"

    def datasets(self) -> DataSplits:
        raise ConfigError("optik vl runs pretrained transformers models (caption, vqa, docqa); it has no training or validation data")

    def transforms(self, train: bool) -> Callable:
        # The model's own processor preprocesses (resize, normalise, tokenize): optik hands it the uint8 image.
        return lambda image: image

    def build_model(self) -> nn.Module:
        """``hf:<dir|id>`` → :class:`~optik.vl.hf.HFVisionLanguage` checked to be a model of this mode."""
        from optik.vl.hf import HFVisionLanguage

        model = self.check()
        hf = HFVisionLanguage.load(model[3:], self.kind)  # type: ignore[arg-type]
        self.meta["model"], self.meta["model_config"] = model, hf.config_dict()
        return hf

    def check(self) -> str:
        """The config's mistakes as :class:`ConfigError` before anything loads; returns the ``hf:`` model string."""
        model = (self.cfg.model or "").strip()
        if not model:
            example = {"vqa": "blip-vqa", "docqa": "donut"}.get(self.kind, "blip")
            raise ConfigError(f"missing key 'model' (e.g. model=hf:path/to/{example}, a transformers folder written by save_pretrained)")
        if not model.startswith("hf:"):
            raise ConfigError(f"bad value for 'model': '{model}'; optik vl runs transformers models: model=hf:<folder or cached hub id>")
        if self.kind != "caption" and not getattr(self.cfg, "question", None):
            raise ConfigError("missing key 'question' (the question asked about every image, e.g. question=\"how many shapes?\")")
        return model

    def texts(self, n: int) -> list[str | None]:
        """The text paired with each of ``n`` images: the question (vqa, docqa), else the caption prompt (None = none)."""
        text = self.cfg.question if self.kind != "caption" else getattr(self.cfg, "prompt", None)
        return [text] * n

    def forward(self, model: nn.Module, inputs: Any) -> list[str]:
        return model.generate(inputs, self.texts(len(inputs)), max_new_tokens=self.cfg.max_new_tokens, num_beams=self.cfg.num_beams)

    def loss(self, outputs: Any, targets: Any) -> dict[str, Any]:
        raise ConfigError("optik vl does not train")

    def metric(self) -> Any:
        raise ConfigError("optik vl has no validation mode")

    def postprocess(self, outputs: list[str], meta: list[dict[str, Any]]) -> list[Results]:
        """Generated strings → Results: ``text`` (caption) or ``question`` + ``answer`` (vqa, docqa)."""
        if self.kind != "caption":
            return [Results(m["orig_img"], path=m["path"], names=[], question=self.cfg.question, answer=a) for a, m in zip(outputs, meta)]
        return [Results(m["orig_img"], path=m["path"], names=[], text=t) for t, m in zip(outputs, meta)]

    def describe(self) -> dict[str, Any]:
        return {"subtask": self.kind, "colors": [], "empty": "no text"}
