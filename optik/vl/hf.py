"""``model=hf:<dir|id>`` for ``optik vl``: a transformers BLIP (or Donut) model and its processor, loaded offline,
behind one ``generate(images, texts)`` call.

Only local folders and models already in the hub cache load (``local_files_only``): nothing is downloaded.
The folder's ``config.json`` names the architecture, which decides what the model can do: a
``BlipForConditionalGeneration`` captions, a ``BlipForQuestionAnswering`` answers questions, a Donut
(``VisionEncoderDecoderModel`` + ``DonutProcessor``) answers questions about documents.

>>> m = HFVisionLanguage.load("path/to/blip", kind="caption")                   # doctest: +SKIP
>>> m.generate([image], ["a photo of"], max_new_tokens=20)                      # doctest: +SKIP
['a photo of a red circle']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from optik.errors import ConfigError

Kind = Literal["caption", "vqa", "docqa"]

#: The architectures (``config.json``'s ``architectures``) each mode runs. Others (BLIP-2, GIT, Florence…) share the
#: processor + ``generate`` API but are untested here, so they are refused with a clear message rather than guessed.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "caption": ("BlipForConditionalGeneration",),
    "vqa": ("BlipForQuestionAnswering",),
    # Donut (OCR-free): transformers' document-question-answering pipeline runs it; LayoutLM-style extractive
    # models need an OCR engine (Tesseract) for words and boxes, which optik does not depend on.
    "docqa": ("VisionEncoderDecoderModel",),
}


def _modes_of(archs: list[str]) -> list[str]:
    return [m for m, names in ARCHITECTURES.items() if any(a in names for a in archs)]


class HFVisionLanguage(nn.Module):
    """A transformers image-to-text model with its processor (image preprocessing + tokenizer)."""

    def __init__(self, model: nn.Module, processor: Any, kind: Kind, ref: str) -> None:
        super().__init__()
        self.hf, self.processor, self.kind, self.ref = model, processor, kind, ref

    @classmethod
    def load(cls, ref: str, kind: Kind) -> HFVisionLanguage:
        """Load ``ref`` (a folder or a cached hub id) for ``kind``; :class:`ConfigError` naming ``model`` when it is
        missing, is not a transformers model, or is an architecture for the other mode."""
        import transformers
        from transformers import AutoConfig, AutoProcessor

        try:
            config = AutoConfig.from_pretrained(ref, local_files_only=True)
        except (OSError, ValueError) as e:
            first = (str(e).splitlines() or [""])[0]
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' ({type(e).__name__}: {first}); optik vl loads a local "
                              "folder written by save_pretrained, or a model already in the hub cache") from None  # fmt: skip
        archs = list(getattr(config, "architectures", None) or [])
        arch = next((a for a in archs if a in ARCHITECTURES[kind]), None)
        if arch is None:
            found = archs[0] if archs else f"a '{config.model_type}' model with no architecture"
            others = _modes_of(archs)
            hint = f"; it is a {others[0]} model: use optik vl {others[0]}" if others else ""
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' is {found}, not a {kind} model "
                              f"({' / '.join(ARCHITECTURES[kind])}){hint}")  # fmt: skip
        try:
            model = getattr(transformers, arch).from_pretrained(ref, local_files_only=True)
            processor = AutoProcessor.from_pretrained(ref, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            first = (str(e).splitlines() or [""])[0]
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' cannot be loaded with its processor "
                              f"({type(e).__name__}: {first})") from None  # fmt: skip
        if kind == "docqa" and type(processor).__name__ != "DonutProcessor":
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' has a {type(processor).__name__}; optik vl docqa runs Donut "
                              "models (a VisionEncoderDecoderModel with a DonutProcessor)")  # fmt: skip
        return cls(model.eval(), processor, kind, ref)

    def config_dict(self) -> dict[str, Any]:
        return {"hf": self.ref, "kind": self.kind}

    @torch.no_grad()
    def generate(self, images: Sequence[np.ndarray], texts: Sequence[str | None], *, max_new_tokens: int = 30,
                 num_beams: int = 1) -> list[str]:  # fmt: skip
        """One decoded string per ``(image, text)`` pair: the caption (``text`` = its prompt or None) or the
        answer (``text`` = the question). Images are (H, W, 3) uint8 RGB arrays, preprocessed by the model's
        own processor, so the result is what ``processor`` + ``model.generate`` + ``processor.decode`` give."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return []
        if self.kind == "docqa":
            return self._document_answers(images, texts, max_new_tokens=max_new_tokens, num_beams=num_beams)
        device = next(self.hf.parameters()).device
        if all(t is None for t in texts):
            enc = self.processor(images=list(images), return_tensors="pt")
        elif any(t is None for t in texts):
            raise ValueError("either every image has a text or none has")
        else:
            # Left-aligned padding: BLIP's text decoder attends with the mask; one prompt for all images pads nothing.
            enc = self.processor(images=list(images), text=list(texts), return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        out = self.hf.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return list(self.processor.batch_decode(out, skip_special_tokens=True))

    def _document_answers(self, images: Sequence[np.ndarray], questions: Sequence[str | None], **generate: int) -> list[str]:
        """Donut through transformers' ``document-question-answering`` pipeline (its task prompt
        ``<s_docvqa><s_question>…</s_question><s_answer>`` and its answer parsing); "" when the model closes no answer."""
        from PIL import Image
        from transformers import pipeline

        key = tuple(sorted(generate.items()))
        if getattr(self, "_pipe", (None, None))[0] != key:  # one pipeline per decoding setting
            pipe = pipeline("document-question-answering", model=self.hf, tokenizer=self.processor.tokenizer,
                            image_processor=self.processor.image_processor, device=next(self.hf.parameters()).device,
                            do_sample=False, **generate)  # fmt: skip
            self._pipe = (key, pipe)
        pipe = self._pipe[1]
        out = []
        for image, question in zip(images, questions):
            if not question:
                raise ValueError("document QA needs a question per image")
            rows = pipe(image=Image.fromarray(np.ascontiguousarray(image)), question=question)
            row = rows[0] if isinstance(rows, list) else rows
            out.append(row.get("answer") or "")
        return out
