"""Open-vocabulary detection: OWL-ViT / OWLv2 (transformers) behind optik's Detector protocol, so
``optik detect predict model=hf:<owl dir> prompts=[a cat,a remote]`` gives the usual detection
:class:`~optik.results.Results` — and ``val`` (COCO metrics with the data's class names as the text queries),
overlays, serving and auto-labelling (:mod:`optik.zeroshot.autolabel`) work unchanged.

Each text query is one class. Its embedding is computed once per query set (OWL's text tower does not
depend on the image), then every batch runs the vision tower, OWL's class head (cosine similarity of
each patch's class embedding with each query, learned shift and scale) and box head — the same
functions transformers' ``forward`` calls, so the outputs equal transformers' ``forward`` +
``post_process_object_detection`` (tested). A box's score is the sigmoid of its best query's logit
(one label per patch box, as transformers' post-processing), then per-class NMS at ``iou`` (OWL predicts
one box per patch, so an object is found by several neighbouring patches; ``iou=1`` keeps them all).

Input: optik letterboxes to a square (top-left, grey padding) — what OWLv2's processor does (pad to a
square, then resize); OWL-ViT v1's processor squashes the image instead, so v1 boxes can differ slightly
from transformers' pipeline on non-square photos. ``imgsz`` defaults to the checkpoint's image size
(768 for OWL-ViT B/32, 960 for OWLv2 B/16); another size interpolates the position embeddings.

>>> from optik import Model
>>> r = Model("hf:path/to/owlv2-base-patch16-ensemble", task="detect").predict("street.jpg", prompts=["a car", "a bus"])  # doctest: +SKIP
>>> r[0].boxes.xyxy, [r[0].names[int(c)] for c in r[0].boxes.cls]                                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import box_convert, clip_boxes_to_image

from optik.errors import ConfigError, ModelError
from optik.models.adapters.hf import OPEN_VOCAB_TYPES, _data_config
from optik.zeroshot.hf import _features


class OwlDetector(nn.Module):
    """A transformers ``OwlViTForObjectDetection`` / ``Owlv2ForObjectDetection`` with text queries as classes.

    Args:
        model: the transformers detector (held as ``.model``).
        processor: its processor (the tokenizer is what is used: queries are tokenised exactly as transformers does).
        data_config: ``{"mean", "std", "input_size", "interpolation"}`` from the image processor.
        queries: the text queries, one per class (:meth:`set_queries` changes them).
    """

    open_vocabulary = True
    predict_conf = 0.1  # OWL's sigmoid scores run low: transformers' examples threshold at 0.1

    def __init__(self, model: nn.Module, processor: Any, data_config: dict[str, Any], queries: list[str]) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.default_cfg = data_config
        self.register_buffer("pixel_mean", torch.tensor(data_config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(data_config["std"]).view(1, -1, 1, 1), persistent=False)
        self.native_size = int(model.config.vision_config.image_size)
        self.queries: list[str] = []
        self._query_embeds: Tensor | None = None
        self.set_queries(queries)

    @property
    def num_classes(self) -> int:
        return len(self.queries)

    def set_queries(self, queries: list[str]) -> None:
        """Use ``queries`` (non-empty, unique texts) as the classes from now on."""
        queries = [str(q) for q in queries]
        if not queries or any(not q.strip() for q in queries):
            raise ConfigError("bad value for 'prompts': give at least one non-empty text query, e.g. prompts=[a cat,a remote]")
        if len(set(queries)) != len(queries):
            raise ConfigError(f"bad value for 'prompts': repeated queries in {queries}")
        if queries != self.queries:
            self.queries, self._query_embeds = queries, None

    @torch.no_grad()
    def query_embeds(self) -> Tensor:
        """``(Q, D)`` projected text embeddings of the queries (cached until the queries change)."""
        device = self.pixel_mean.device
        if self._query_embeds is None or self._query_embeds.device != device:
            # As OWL's processor: padded to the text tower's positions (16), longer queries truncated.
            length = int(self.model.config.text_config.max_position_embeddings)
            text = self.processor.tokenizer(self.queries, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            base = getattr(self.model, "owlvit", None) or self.model.owlv2  # OWL-ViT / OWLv2's dual encoder
            out = base.get_text_features(input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device))
            self._query_embeds = _features(out).float()
        return self._query_embeds

    @torch.no_grad()
    def raw(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, P, Q)`` class logits and ``(B, P, 4)`` cxcywh boxes (fractions of the input) for ``(B, 3, S, S)`` images in [0, 1]."""
        h, w = images.shape[-2:]
        interpolate = (h, w) != (self.native_size, self.native_size)
        pixels = (images - self.pixel_mean) / self.pixel_std
        feature_map = self.model.image_embedder(pixel_values=pixels, interpolate_pos_encoding=interpolate)[0]
        b, ph, pw, d = feature_map.shape
        feats = feature_map.reshape(b, ph * pw, d)
        queries = self.query_embeds().to(feats.dtype)
        query_embeds = queries.unsqueeze(0).expand(b, -1, -1)
        mask = torch.ones(b, len(queries), dtype=torch.bool, device=feats.device)
        logits = self.model.class_predictor(feats, query_embeds, mask)[0]
        boxes = self.model.box_predictor(feats, feature_map, interpolate_pos_encoding=interpolate)
        return logits.float(), boxes.float()

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        return self.forward_detect(images) if targets is None else self.forward_loss(images, targets)

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        raise ModelError("open-vocabulary detectors (OWL-ViT / OWLv2) are inference-only in optik: use them with "
                         "val / predict / serve / label and prompts=; fine-tuning them is not implemented")  # fmt: skip

    @torch.no_grad()
    def forward_detect(
        self, images: Tensor, *, conf: float = 0.1, iou: float = 0.5, max_det: int = 300, agnostic: bool = False
    ) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes" (N, 4) xyxy input pixels, "scores", "labels" (query index)}``, best first."""
        h, w = images.shape[-2:]
        logits, boxes = self.raw(images)
        best = logits.max(-1)
        all_scores, all_labels = best.values.sigmoid(), best.indices
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        all_boxes = clip_boxes_to_image(box_convert(boxes, "cxcywh", "xyxy") * scale, (h, w))
        results = []
        for scores, labels, img_boxes in zip(all_scores, all_labels, all_boxes):
            keep = scores > conf
            scores, labels, img_boxes = scores[keep], labels[keep], img_boxes[keep]
            if iou < 1 and len(scores):
                keep = (torchvision.ops.nms(img_boxes, scores, iou) if agnostic
                        else torchvision.ops.batched_nms(img_boxes, scores, labels, iou))  # fmt: skip
            else:
                keep = scores.argsort(descending=True)
            keep = keep[:max_det]
            results.append({"boxes": img_boxes[keep], "scores": scores[keep], "labels": labels[keep].long()})
        return results

    def config_dict(self) -> dict[str, Any]:
        """The transformers config as a JSON-able dict plus the queries (what a report / export metadata records)."""
        config = json.loads(json.dumps(self.model.config.to_dict(), default=str))
        return {**config, "optik_queries": list(self.queries)}


def is_open_vocab(ref: str, hf_config: dict[str, Any] | None = None) -> bool:
    """Whether ``hf:<ref>`` (or an optik ``hf_config`` dict) is an OWL-ViT / OWLv2 model; False when unreadable
    (the caller's own loader then reports the problem)."""
    if hf_config is not None:
        return hf_config.get("model_type") in OPEN_VOCAB_TYPES
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(ref).model_type in OPEN_VOCAB_TYPES
    except Exception:  # not loadable here: let the DETR-family loader give its one-line error
        return False


def create_owl_detector(
    ref: str,
    *,
    class_names: list[str] | None = None,
    in_chans: int = 3,
    pretrained: bool | str | None = None,
    **kwargs: Any,
) -> OwlDetector:
    """Load an OWL-ViT / OWLv2 checkpoint (local dir or hub cache; never a download in tests) with
    ``class_names`` as its text queries.

    Raises:
        ModelError: not loadable, in_chans != 3, or ``pretrained=`` a weights file (OWL loads its own checkpoint).
        ConfigError: no queries.
    """
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    if in_chans != 3:
        raise ModelError(f"hf:{ref}: OWL detectors take RGB input (in_chans=3), got in_chans={in_chans}")
    if isinstance(pretrained, str) and pretrained or pretrained is False:
        raise ModelError(f"hf:{ref}: OWL detectors load their own checkpoint; drop pretrained=")
    try:
        model = AutoModelForZeroShotObjectDetection.from_pretrained(ref, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(ref)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).splitlines() or [""])[0]
        raise ModelError(f"cannot load hf:{ref} as an open-vocabulary detector: {type(e).__name__}: {first}") from None
    data_cfg = _data_config(ref, model.config.vision_config)
    if not data_cfg.get("input_size"):
        side = int(model.config.vision_config.image_size)
        data_cfg["input_size"] = (3, side, side)
    return OwlDetector(model.eval(), processor, data_cfg, list(class_names or []) or ["object"])


__all__ = ["OPEN_VOCAB_TYPES", "OwlDetector", "create_owl_detector", "is_open_vocab"]
