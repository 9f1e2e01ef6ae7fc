"""``model=hf:<dir|id>`` for zero-shot: a transformers ``CLIPModel`` / ``SiglipModel`` (anything with
``get_image_features`` / ``get_text_features``) behind the interface of :class:`optik.zeroshot.clip.TinyCLIP`.

The tokenizer and the image processor's normalisation come from the same folder (``save_pretrained``); nothing is
downloaded unless ``<id>`` names a hub model that is not cached (``HF_HUB_OFFLINE=1`` forbids that).

>>> model = HFClip.load("path/to/clip")                                    # doctest: +SKIP
>>> model.encode_text(["a photo of a cat"]).shape                          # doctest: +SKIP
torch.Size([1, 512])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ConfigError


def _features(out: Any) -> Tensor:
    """transformers 4.x returns the projected features; 5.x a ``BaseModelOutputWithPooling`` holding them as ``pooler_output``."""
    return out if isinstance(out, Tensor) else out.pooler_output


def _side(size: Any) -> int | None:
    """A processor's ``size`` / ``crop_size`` (an int, a dict, or transformers 5's ``SizeDict``) → its square side."""
    if size is None or isinstance(size, int):
        return size
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value:
            return int(value)
    return None


class HFClip(nn.Module):
    """A transformers dual encoder with its tokenizer. ``default_cfg`` carries the processor's mean/std and size,
    so optik's transforms feed it what its processor would (resize shorter side → centre crop → normalise)."""

    def __init__(self, model: nn.Module, tokenizer: Any, processor_cfg: dict[str, Any], ref: str) -> None:
        super().__init__()
        self.hf, self.tokenizer, self.ref = model, tokenizer, ref
        self.default_cfg = processor_cfg
        # SigLIP is trained with a sigmoid loss: per-pair probabilities, not a softmax over labels.
        self.sigmoid = hasattr(model, "logit_bias")
        max_len = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
        self.context_length = int(max_len or 77)

    @classmethod
    def load(cls, ref: str) -> HFClip:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_pretrained(ref)
            tokenizer = AutoTokenizer.from_pretrained(ref)
        except (OSError, ValueError) as e:
            first = (str(e).splitlines() or [""])[0]
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' ({type(e).__name__}: {first})") from None
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ConfigError(f"bad value for 'model': 'hf:{ref}' is a {type(model).__name__}, not an image-text dual "
                              "encoder (CLIPModel, SiglipModel…)")  # fmt: skip
        cfg: dict[str, Any] = {}
        try:
            proc = AutoImageProcessor.from_pretrained(ref)
            cfg["mean"], cfg["std"] = tuple(proc.image_mean), tuple(proc.image_std)
            side = _side(getattr(proc, "crop_size", None)) or _side(getattr(proc, "size", None))
            if side:
                cfg["input_size"] = (3, int(side), int(side))
            cfg["interpolation"] = "bicubic"  # CLIP's and SigLIP's processors resample bicubic
        except (OSError, ValueError):  # no preprocessor_config.json: the caller's defaults
            pass
        return cls(model.eval(), tokenizer, cfg, ref)

    def config_dict(self) -> dict[str, Any]:
        return {"hf": self.ref}

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(_features(self.hf.get_image_features(pixel_values=images)).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        device = next(self.hf.parameters()).device
        # SigLIP was trained on max-length padding; CLIP attends with a mask, so either padding works for it.
        enc = self.tokenizer(list(texts), padding="max_length" if self.sigmoid else True, truncation=True,
                             max_length=self.context_length, return_tensors="pt")  # fmt: skip
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if self.sigmoid:
            enc.pop("attention_mask", None)
        return F.normalize(_features(self.hf.get_text_features(**enc)).float(), dim=-1)

    def scale(self) -> tuple[Tensor, Tensor | None]:
        bias = self.hf.logit_bias.float() if self.sigmoid else None
        return self.hf.logit_scale.float().exp(), bias

    def forward(self, images: Tensor) -> Tensor:
        return self.encode_image(images)
