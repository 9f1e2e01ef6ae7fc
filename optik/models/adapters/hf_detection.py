"""``hf:<hub id or local dir>`` for ``task="detect"`` — transformers object detectors (DETR, Conditional
DETR, Deformable DETR, YOLOS, … whatever ``AutoModelForObjectDetection`` builds) behind optik's
Detector protocol.

Weights load through transformers' ``from_pretrained`` with a new ``num_classes`` head; a run
rebuilds the model offline from ``model.config_dict()`` (``create("hf:<anything>", task="detect",
hf_config=that_dict, num_classes=…)``) plus its state_dict, as ``optik.models.adapters.hf`` does for
classifiers. Hungarian matching and the set loss are transformers' own (they need scipy).

>>> model = create("hf:runs/detr-tiny", task="detect", num_classes=3, class_names=["a", "b", "c"])  # doctest: +SKIP
>>> model.forward_loss(images, targets)["loss"].backward()                                           # doctest: +SKIP
>>> model.eval().forward_detect(images, conf=0.3)    # [{"boxes", "scores", "labels"}] per image     # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import box_convert, clip_boxes_to_image

from optik.errors import ModelError
from optik.models.detect.targets import checked_target
from optik.models.adapters.hf import _DATA_CONFIG_KEY, load_hf_model

_HEAD_NAMES = ("class_labels_classifier", "class_embed")  # DETR/YOLOS, Conditional/Deformable DETR
_AUX_TERM = re.compile(r"_\d+$")  # loss_ce_0 … : per-decoder-layer auxiliary terms, already inside "loss"


class HFDetector(nn.Module):
    """A transformers ``*ForObjectDetection`` model with optik's Detector protocol.

    Args:
        model: the transformers model (held as ``.model``; state_dict keys start with ``model.``).
        data_config: ``{"mean", "std", "input_size", "interpolation"}``; images are normalised with it.

    Models whose logits have C+1 columns (DETR, YOLOS: a "no object" class) are scored with a
    softmax, the others (Conditional/Deformable DETR, RT-DETR: C sigmoid columns) with a sigmoid
    and a top-k over query × class pairs — what each model's image processor does.
    """

    def __init__(self, model: nn.Module, data_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(model.config.num_labels)
        self.default_cfg = data_config
        # Not persistent: the statistics ride in config_dict(), the state_dict stays transformers' own.
        self.register_buffer("pixel_mean", torch.tensor(data_config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(data_config["std"]).view(1, -1, 1, 1), persistent=False)
        self._takes_mask = "pixel_mask" in inspect.signature(model.forward).parameters

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        """``forward_loss`` with targets, else ``forward_detect`` with its defaults."""
        return self.forward_detect(images) if targets is None else self.forward_loss(images, targets)

    def _run(self, images: Tensor, labels: list[dict[str, Tensor]] | None = None) -> Any:
        extra: dict[str, Any] = {}
        if self._takes_mask:  # every pixel is real: optik pads with grey, not with a mask
            b, _, h, w = images.shape
            extra["pixel_mask"] = torch.ones(b, h, w, dtype=torch.long, device=images.device)
        pixels = (images - self.pixel_mean) / self.pixel_std
        return self.model(pixel_values=pixels, labels=labels, return_dict=True, **extra)

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Set loss for ``(B, 3, H, W)`` images in [0, 1] and per-image targets (xyxy pixels, 0-based labels).

        Returns ``"loss"`` (transformers' weighted total, auxiliary decoder losses included) and the
        unweighted main terms it reports (``loss_ce``, ``loss_bbox``, ``loss_giou`` for DETR).
        """
        h, w = images.shape[-2:]
        labels = [self._to_hf_target(t, i, h, w, images.device) for i, t in enumerate(targets)]
        out = self._run(images, labels)
        terms = {k: v for k, v in (out.loss_dict or {}).items() if k.startswith("loss") and not _AUX_TERM.search(k)}
        return {"loss": out.loss, **terms}

    @torch.no_grad()
    def forward_detect(
        self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, agnostic: bool = False
    ) -> list[dict[str, Tensor]]:
        """Detections for ``(B, 3, H, W)`` images: per image ``{"boxes" (N, 4) xyxy input pixels, "scores", "labels"}``.

        Keeps scores above ``conf``, best first, at most ``max_det`` (≤ queries × classes). DETR's set
        prediction needs no NMS, so ``iou`` is used only with ``agnostic=True``, which runs a
        class-agnostic NMS (useful for sigmoid models that give one query several labels).
        """
        h, w = images.shape[-2:]
        out = self._run(images)
        logits, boxes = out.logits.float(), out.pred_boxes.float()
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        boxes = clip_boxes_to_image(box_convert(boxes, "cxcywh", "xyxy") * scale, (h, w))
        n_queries, n_columns = logits.shape[1:]
        results = []
        for img_logits, img_boxes in zip(logits, boxes):
            if n_columns == self.num_classes + 1:  # softmax with a trailing "no object" column
                scores, labels = img_logits.softmax(-1)[:, :-1].max(-1)
                order = scores.argsort(descending=True)[:max_det]
                scores, labels, img_boxes = scores[order], labels[order], img_boxes[order]
            else:  # independent sigmoids: best (query, class) pairs
                scores, flat = img_logits.sigmoid().flatten().topk(min(max_det, n_queries * n_columns))
                labels, img_boxes = flat % n_columns, img_boxes[flat // n_columns]
            keep = scores > conf
            scores, labels, img_boxes = scores[keep], labels[keep], img_boxes[keep]
            if agnostic and len(scores):
                keep = torchvision.ops.nms(img_boxes, scores, iou)
                scores, labels, img_boxes = scores[keep], labels[keep], img_boxes[keep]
            results.append({"boxes": img_boxes, "scores": scores, "labels": labels.long()})
        return results

    def get_classifier(self) -> nn.Module:
        """The class head (``class_labels_classifier`` or ``class_embed``), skipped by ``load_weights`` when resized."""
        for name in _HEAD_NAMES:
            head = getattr(self.model, name, None)
            if isinstance(head, nn.Module):
                return head
        raise ModelError(f"{type(self.model).__name__} has no class head (looked for {_HEAD_NAMES})")

    def config_dict(self) -> dict[str, Any]:
        """The transformers config as a JSON-able dict (plus optik's data config), for rebuilding offline."""
        config = json.loads(json.dumps(self.model.config.to_dict(), default=str))
        config[_DATA_CONFIG_KEY] = json.loads(json.dumps(self.default_cfg))
        return config

    def _to_hf_target(
        self, target: dict[str, Any], index: int, h: int, w: int, device: torch.device
    ) -> dict[str, Tensor]:
        boxes, labels = checked_target(target, index, self.num_classes, device)
        boxes = clip_boxes_to_image(boxes, (h, w))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # zero-area boxes break GIoU
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=device)
        return {"class_labels": labels[keep], "boxes": box_convert(boxes[keep], "xyxy", "cxcywh") / scale}


def _no_backbone_download(config: Any) -> None:
    # The detector's own checkpoint (or the caller's state_dict) holds the backbone; never fetch ImageNet weights.
    for cfg in (config, getattr(config, "backbone_config", None)):
        if cfg is not None and getattr(cfg, "use_pretrained_backbone", False):
            cfg.use_pretrained_backbone = False


def create_hf_detector(
    ref: str,
    *,
    num_classes: int = 80,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    class_names: list[str] | None = None,
    hf_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HFDetector:
    """Load ``ref`` (hub id or local dir) with a ``num_classes`` head, or build from ``hf_config``.

    ``pretrained=False`` builds the architecture with random weights; a path loads a local weights
    file into it (a class head of another size skipped). ``class_names`` become ``id2label``; other
    kwargs go to ``from_pretrained``. ``img_size`` is only recorded: DETR-family models take any size.

    Raises:
        ModelError: missing directory, not a transformers detector, unloadable weights, in_chans != 3.
    """
    from transformers import AutoModelForObjectDetection

    from optik.zeroshot.owl import create_owl_detector, is_open_vocab

    if is_open_vocab(ref, hf_config):  # OWL-ViT / OWLv2: text queries are the classes (optik/zeroshot/owl.py)
        return create_owl_detector(ref, class_names=class_names, in_chans=in_chans, pretrained=pretrained)  # type: ignore[return-value]
    if in_chans != 3:
        raise ModelError(f"hf:{ref} detectors take RGB input (in_chans=3), got in_chans={in_chans}")
    if kwargs.pop("backbone", None) is not None:
        raise ModelError(f"hf:{ref}: the backbone comes from the transformers config; drop backbone=")
    model, data_cfg = load_hf_model(
        ref, AutoModelForObjectDetection, num_classes=num_classes, class_names=class_names, hf_config=hf_config,
        pretrained=pretrained, prepare=_no_backbone_download, what="object detector", **kwargs,
    )
    if img_size is not None and not data_cfg.get("input_size"):
        data_cfg = {**data_cfg, "input_size": (3, int(img_size), int(img_size))}

    detector = HFDetector(model.float(), data_cfg).train()
    if isinstance(pretrained, str) and pretrained:
        from optik.models.transfer import load_into_wrapper

        load_into_wrapper(detector, pretrained)
    return detector


__all__ = ["HFDetector", "create_hf_detector"]
