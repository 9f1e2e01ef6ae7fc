"""``hf:<hub id or local dir>`` for ``task=semantic | instance | panoptic`` — transformers segmentation models.

* Universal models (``AutoModelForUniversalSegmentation``: Mask2Former, OneFormer, MaskFormer …) become an
  :class:`HFUniversalSegmenter` speaking optik's Segmenter protocol for the three sub-tasks: the set loss
  with Hungarian matching is transformers' own; ``forward_predict`` follows the image processors'
  ``post_process_{semantic,instance,panoptic}_segmentation`` but on tensors at input size.
* Semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, DPT …, ``task=semantic`` only)
  become an :class:`HFSemanticSegmenter`, a plain ``pixels -> logits (B, C, S, S)`` module like optik's own
  semantic models (the task applies its loss).

Weights load through ``from_pretrained`` with a new ``num_classes`` head (``id2label`` from ``class_names``);
a run rebuilds the model offline from ``config_dict()`` (``create("hf:<anything>", task=…,
hf_config=that_dict, num_classes=…)``), as :mod:`optik.models.adapters.hf_detection` does.

OneFormer is conditioned on a task prompt (``"the task is panoptic"``) given as CLIP token ids. They are
tokenised once with the checkpoint's own tokenizer when it has one (stored in ``config_dict()``), else a
fixed code per sub-task is used (fine for models trained in optik). Training leaves out OneFormer's
text-contrastive loss (``is_training=False``: no text encoder); the mask/class/dice losses are kept.

>>> model = create("hf:runs/m2f-tiny", task="panoptic", subtask="panoptic", num_classes=4,
...                isthing=[True, True, False, False])                              # doctest: +SKIP
>>> model.forward_loss(images, targets)["loss"].backward()                           # doctest: +SKIP
>>> model.eval().forward_predict(images, conf=0.5)   # [{"masks", "labels", "scores"}]  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import DatasetError, ModelError
from optik.models.adapters.hf import _DATA_CONFIG_KEY, load_hf_model
from optik.models.segment.protocol import Segmenter

log = logging.getLogger(__name__)

SUBTASKS = ("semantic", "instance", "panoptic")
_STRIDE = 32  # inputs are padded (right/bottom) to this multiple and the outputs cropped back
_MIN_SIDE = 64  # and to at least this: GroupNorm(32, 32) on a 1×1 stride-32 map has one value per group
_TASK_INPUTS_KEY = "task_inputs"  # in the data config: OneFormer task-prompt token ids per sub-task
_MASK_THRESHOLD = 0.5  # the image processors' defaults
_OVERLAP_THRESHOLD = 0.8


def _plain(x: Any, device: Any = None) -> Tensor:
    return torch.as_tensor(x).as_subclass(Tensor).to(device=device)


def _pad_to_stride(x: Tensor, value: float = 0.0) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = max(-h % _STRIDE, _MIN_SIDE - h), max(-w % _STRIDE, _MIN_SIDE - w)
    return F.pad(x, (0, pw, 0, ph), value=value) if ph or pw else x


class _Normalised(nn.Module):
    """Shared by both wrappers: ``[0, 1]`` pixels → normalised, padded to the stride."""

    def __init__(self, model: nn.Module, data_config: dict[str, Any], subtask: str) -> None:
        super().__init__()
        self.model = model
        self.subtask = subtask
        self.num_classes = int(model.config.num_labels)
        self.default_cfg = {k: v for k, v in data_config.items() if k != _TASK_INPUTS_KEY}
        self._data_config = data_config
        # Not persistent: the statistics ride in config_dict(), the state_dict stays transformers' own.
        self.register_buffer("pixel_mean", torch.tensor(data_config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(data_config["std"]).view(1, -1, 1, 1), persistent=False)

    def _pixels(self, images: Tensor) -> Tensor:
        return _pad_to_stride((images - self.pixel_mean) / self.pixel_std)

    def _crop_up(self, maps: Tensor, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Low-resolution ``(B, K, h, w)`` maps → the padded input size (bilinear), cropped to ``size``."""
        maps = F.interpolate(maps, size=padded, mode="bilinear", align_corners=False)
        return maps[..., : size[0], : size[1]]

    def config_dict(self) -> dict[str, Any]:
        """The transformers config as a JSON-able dict (plus optik's data config), for rebuilding offline."""
        config = json.loads(json.dumps(self.model.config.to_dict(), default=str))
        config[_DATA_CONFIG_KEY] = json.loads(json.dumps(self._data_config))
        return config

    def _find_head(self, names: tuple[str, ...]) -> nn.Module:
        for name, module in self.model.named_modules():
            if name.rsplit(".", 1)[-1] in names:
                return module
        raise ModelError(f"{type(self.model).__name__} has no class head (looked for {names})")


class HFSemanticSegmenter(_Normalised):
    """A transformers ``*ForSemanticSegmentation`` model as ``(B, 3, S, S)`` in [0, 1] → logits ``(B, C, S, S)``.

    Any ``S ≥ 32``: the input is padded to a multiple of 32 (at least 64) and the logits are upsampled and cropped back.
    """

    def forward(self, images: Tensor) -> Tensor:
        """Class logits at input size (argmax = prediction)."""
        h, w = images.shape[-2:]
        pixels = self._pixels(images)
        logits = self.model(pixel_values=pixels, return_dict=True).logits
        return self._crop_up(logits, tuple(pixels.shape[-2:]), (h, w))

    def get_classifier(self) -> nn.Module:
        """The class-count-dependent final layer (``classifier``), skipped by ``load_weights`` when resized."""
        return self._find_head(("classifier",))


class HFUniversalSegmenter(_Normalised, Segmenter):
    """A transformers universal segmenter (Mask2Former, OneFormer, MaskFormer) with optik's Segmenter protocol.

    Args:
        model: the transformers model (held as ``.model``; state_dict keys start with ``model.``).
        data_config: ``{"mean", "std", "input_size", "interpolation"}`` (+ ``"task_inputs"`` for OneFormer).
        subtask: ``"semantic"``, ``"instance"`` or ``"panoptic"`` — what ``forward_predict`` returns.
        isthing: per class, whether it is a thing (panoptic: stuff classes are fused into one segment
            per class; instance: only things are reported). ``None``: all things.
    """

    def __init__(
        self, model: nn.Module, data_config: dict[str, Any], subtask: str, isthing: list[bool] | None = None
    ) -> None:
        super().__init__(model, data_config, subtask)
        if isthing is not None and len(isthing) != self.num_classes:
            raise ModelError(f"isthing has {len(isthing)} entries for num_classes={self.num_classes}")
        self.isthing = [bool(t) for t in isthing] if isthing is not None else [True] * self.num_classes
        task_inputs = None
        if "task_inputs" in inspect.signature(model.forward).parameters:  # OneFormer
            ids = (data_config.get(_TASK_INPUTS_KEY) or {}).get(subtask)
            if ids is None:
                raise ModelError(f"{type(model).__name__} needs task-prompt token ids for {subtask!r} in its data config")
            task_inputs = torch.tensor(ids, dtype=torch.float32)[None]
        self.register_buffer("task_inputs", task_inputs, persistent=False)
        self._captured: dict[str, Tensor] | None = None
        if isinstance(getattr(model, "criterion", None), nn.Module):
            model.criterion.register_forward_hook(self._capture_terms)

    def _capture_terms(self, module: nn.Module, args: Any, output: dict[str, Tensor]) -> None:
        # transformers returns only the total; its criterion's dict (weighted in place afterwards) has the terms.
        self._captured = output

    def _run(self, images: Tensor, **labels: Any) -> Any:
        pixels = self._pixels(images)
        extra: dict[str, Any] = {}
        if self.task_inputs is not None:
            extra["task_inputs"] = self.task_inputs.expand(len(images), -1)
        return self.model(pixel_values=pixels, return_dict=True, **extra, **labels), tuple(pixels.shape[-2:])

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        """``forward_loss`` with targets, else ``forward_predict`` with its defaults."""
        return self.forward_predict(images) if targets is None else self.forward_loss(images, targets)

    def forward_loss(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Set loss for ``(B, 3, S, S)`` images in [0, 1]; per-image targets ``{"masks" (N, S, S), "labels" (N,),
        "iscrowd"?}`` (crowd segments dropped) or ``{"semantic" (S, S)}`` (one mask per present class, 255 = void).

        Returns ``"loss"`` (transformers' weighted total, auxiliary decoder layers included) and the weighted
        last-layer terms ``loss_cross_entropy``, ``loss_mask``, ``loss_dice``.
        """
        h, w = images.shape[-2:]
        mask_labels, class_labels = [], []
        for i, t in enumerate(targets):
            masks, labels = self._target_masks(t, i, images.device)
            mask_labels.append(_pad_to_stride(masks.float()))
            class_labels.append(labels)
        self._captured = None
        out, _ = self._run(images, mask_labels=mask_labels, class_labels=class_labels)
        terms = {k: v for k, v in (self._captured or {}).items() if k.startswith("loss") and not k[-1].isdigit()}
        self._captured = None  # graph-holding tensors must not outlive the step (deepcopy for EMA)
        return {"loss": out.loss, **terms}

    def _target_masks(self, target: dict[str, Any], index: int, device: Any) -> tuple[Tensor, Tensor]:
        where = f"image {target.get('image_id', index)}"
        if "masks" not in target and "semantic" in target:
            sem = _plain(target["semantic"], device).long()
            labels = torch.unique(sem)
            labels = labels[labels != 255]
            masks = sem[None] == labels[:, None, None]
        else:
            if "masks" not in target:
                raise DatasetError(f"{where}: a segmentation target needs 'masks' (N, H, W) or 'semantic' (H, W)")
            masks = _plain(target["masks"], device).bool()
            labels = _plain(target["labels"], device).long().reshape(-1)
            if masks.ndim != 3 or len(masks) != len(labels):
                raise DatasetError(f"{where}: 'masks' must be ({len(labels)}, H, W) to match 'labels', got {tuple(masks.shape)}")
            if "iscrowd" in target:
                keep = _plain(target["iscrowd"], device).reshape(-1) == 0
                masks, labels = masks[keep], labels[keep]
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
            raise DatasetError(f"{where}: 'labels' {labels.tolist()} outside 0..{self.num_classes - 1} (num_classes={self.num_classes})")
        return masks, labels

    @torch.no_grad()
    def forward_predict(
        self, images: Tensor, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 100
    ) -> Tensor | list[dict[str, Tensor]]:
        """Predictions for ``(B, 3, S, S)`` images in [0, 1], per ``self.subtask``:

        * ``"semantic"``: ``(B, C, S, S)`` class scores, Σ_q p(c | q) · sigmoid(mask_q) (argmax = prediction);
        * ``"instance"``: per image ``{"boxes" (N, 4) xyxy, "scores", "labels", "masks" (N, S, S) float in [0, 1]}``:
          the best ``num_queries`` (query, class) pairs, scored class prob × mean mask prob inside the mask,
          kept above ``conf``, best first, at most ``max_det`` (set prediction: ``iou`` is not used);
        * ``"panoptic"``: per image ``{"masks" (N, S, S) bool non-overlapping, "labels", "scores"}``: queries with
          class prob above ``conf`` claim pixels by score-weighted mask prob; a segment survives if over 80% of
          its own mask is kept; stuff classes (``isthing`` False) are fused into one segment per class.
        """
        h, w = images.shape[-2:]
        out, padded = self._run(images)
        cls_logits = out.class_queries_logits.float()
        mask_logits = out.masks_queries_logits.float()
        # One post-processing per sub-task, each on (Q, C + 1) query probabilities ("no object" last).
        post = {"semantic": self._semantic, "instance": self._instance_queries, "panoptic": self._panoptic}[self.subtask]
        results = []
        for i in range(len(images)):
            masks = self._crop_up(mask_logits[i : i + 1], padded, (h, w))[0]  # (Q, S, S) logits
            probs = cls_logits[i].softmax(-1)  # (Q, C + 1), last = "no object"
            results.append(post(probs, masks, conf, max_det))
        return torch.stack(results) if results and isinstance(results[0], Tensor) else results

    def _semantic(self, probs: Tensor, masks: Tensor, conf: float, max_det: int) -> Tensor:
        """``(C, S, S)`` class scores: Σ_q p(c | q) · sigmoid(mask_q) (``probs`` (Q, C + 1) with "no object")."""
        return torch.einsum("qc,qhw->chw", probs[:, :-1], masks.sigmoid())

    def _instance_queries(self, probs: Tensor, masks: Tensor, conf: float, max_det: int) -> dict[str, Tensor]:
        return self._instances(probs[:, :-1], masks, conf, max_det)  # "no object" dropped

    def _instances(self, probs: Tensor, masks: Tensor, conf: float, max_det: int) -> dict[str, Tensor]:
        n_queries, n_classes = probs.shape
        if not all(self.isthing):  # stuff is not an instance
            probs = probs * torch.tensor(self.isthing, dtype=probs.dtype, device=probs.device)
        scores, flat = probs.flatten().topk(min(n_queries, probs.numel()))
        labels, queries = flat % n_classes, flat // n_classes
        logits = masks[queries]
        binary = logits > 0
        mask_prob = logits.sigmoid()
        area = binary.flatten(1).sum(1)
        scores = scores * (mask_prob * binary).flatten(1).sum(1) / (area + 1e-6)
        keep = (scores >= conf) & (area > 0)
        order = scores[keep].argsort(descending=True)[:max_det]
        binary, mask_prob = binary[keep][order], mask_prob[keep][order]
        boxes = _mask_boxes(binary)
        return {"boxes": boxes, "scores": scores[keep][order], "labels": labels[keep][order].long(), "masks": mask_prob}

    def _panoptic(self, probs: Tensor, masks: Tensor, conf: float, max_det: int) -> dict[str, Tensor]:
        scores, labels = probs.max(-1)
        keep = (labels != self.num_classes) & (scores > conf)
        scores, labels = scores[keep], labels[keep]
        weighted = masks[keep].sigmoid() * scores[:, None, None]
        h, w = masks.shape[-2:]
        segs: list[Tensor] = []
        seg_labels: list[int] = []
        seg_scores: list[float] = []
        stuff_index: dict[int, int] = {}
        if len(scores):
            owner = weighted.argmax(0)
            for k in range(len(scores)):  # query order, as compute_segments
                mask_k = owner == k
                area = int(mask_k.sum())
                original = int((weighted[k] >= _MASK_THRESHOLD).sum())
                if area == 0 or original == 0 or not area / original > _OVERLAP_THRESHOLD:
                    continue
                label, score = int(labels[k]), float(scores[k])
                if not self.isthing[label] and label in stuff_index:  # fuse stuff: one segment per class
                    j = stuff_index[label]
                    segs[j] |= mask_k
                    seg_scores[j] = max(seg_scores[j], score)
                    continue
                if not self.isthing[label]:
                    stuff_index[label] = len(segs)
                segs.append(mask_k)
                seg_labels.append(label)
                seg_scores.append(score)
        device = masks.device
        out_scores = torch.tensor(seg_scores, dtype=torch.float32, device=device)
        order = out_scores.argsort(descending=True)[:max_det]
        out_masks = torch.stack(segs) if segs else torch.zeros(0, h, w, dtype=torch.bool, device=device)
        return {
            "masks": out_masks[order], "labels": torch.tensor(seg_labels, dtype=torch.long, device=device)[order],
            "scores": out_scores[order],
        }  # fmt: skip

    def get_classifier(self) -> nn.Module:
        """The class head (``class_predictor`` for Mask2Former, ``class_embed`` for OneFormer), skipped by ``load_weights`` when resized."""
        return self._find_head(("class_predictor", "class_embed"))


def _mask_boxes(binary: Tensor) -> Tensor:
    """xyxy boxes of non-empty masks; pixel j spans [j, j+1) (optik's convention for boxes from masks)."""
    if not len(binary):
        return torch.zeros(0, 4, device=binary.device)
    from torchvision.ops import masks_to_boxes

    return masks_to_boxes(binary) + torch.tensor([0.0, 0.0, 1.0, 1.0], device=binary.device)


class _AutoSegmentation:
    """Picks ``AutoModelForUniversalSegmentation`` or ``AutoModelForSemanticSegmentation`` from the config."""

    @staticmethod
    def pick(config: Any) -> Any:
        from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as SEMANTIC,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES as UNIVERSAL,
        )

        if config.model_type in UNIVERSAL:
            return AutoModelForUniversalSegmentation
        if config.model_type in SEMANTIC:
            return AutoModelForSemanticSegmentation
        raise ValueError(f"model_type {config.model_type!r} is neither a universal nor a semantic segmentation model")

    @classmethod
    def from_config(cls, config: Any) -> nn.Module:
        return cls.pick(config).from_config(config)

    @classmethod
    def from_pretrained(cls, ref: str, config: Any, **kwargs: Any) -> nn.Module:
        return cls.pick(config).from_pretrained(ref, config=config, **kwargs)


def _prepare(config: Any) -> None:
    # The checkpoint (or the caller's state_dict) holds the backbone: never fetch ImageNet weights.
    for cfg in (config, getattr(config, "backbone_config", None)):
        if cfg is not None and getattr(cfg, "use_pretrained_backbone", False):
            cfg.use_pretrained_backbone = False
    if getattr(config, "model_type", None) == "oneformer":
        # is_training=True adds the text encoder for the contrastive loss and turns dropout on even in eval
        # mode (it gates dropout instead of module.training); optik trains without the text loss.
        config.is_training = False


def task_token_ids(ref: str | None, seq_len: int) -> dict[str, list[int]]:
    """OneFormer's task prompts ``"the task is {subtask}"`` as token ids of length ``seq_len``.

    Uses the tokenizer saved with ``ref`` (what ``OneFormerProcessor`` does); without one, a fixed code
    per sub-task (``[k + 1, 0, 0, …]``), which a model trained in optik learns just as well.

    >>> task_token_ids(None, 4)["instance"]
    [2, 0, 0, 0]
    """
    if ref:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(ref)
            enc = tok([f"the task is {t}" for t in SUBTASKS], padding="max_length", max_length=seq_len, truncation=True)
            return {t: list(map(int, ids)) for t, ids in zip(SUBTASKS, enc["input_ids"])}
        except Exception as e:  # no tokenizer files: the fixed code below
            log.info("hf:%s: no tokenizer for OneFormer task prompts (%s); using fixed task codes", ref, e)
    return {t: [k + 1] + [0] * (seq_len - 1) for k, t in enumerate(SUBTASKS)}


def create_hf_segmenter(
    ref: str,
    *,
    num_classes: int = 150,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    subtask: str | None = None,
    isthing: list[bool] | None = None,
    class_names: list[str] | None = None,
    hf_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HFUniversalSegmenter | HFSemanticSegmenter:
    """Load ``ref`` (hub id or local dir) with a ``num_classes`` head, or build it from ``hf_config``.

    Args:
        subtask: ``"semantic"``, ``"instance"`` or ``"panoptic"``; ``None``: panoptic when ``isthing`` is
            given, else instance for universal models and semantic for semantic-only ones.
        isthing: per class (panoptic stuff fusing; instance keeps things only).
        pretrained: ``False`` random weights for the architecture; a path loads a local weights file (a class
            head of another size skipped); ``None``/``True`` the checkpoint's weights.
        class_names: become ``id2label``; other kwargs go to ``from_pretrained``.

    Raises:
        ModelError: missing directory, not a segmentation model, a semantic-only model for instance/panoptic.

    >>> m = create("hf:runs/m2f", task="panoptic", subtask="panoptic", num_classes=3)   # doctest: +SKIP
    """
    if in_chans != 3:
        raise ModelError(f"hf:{ref} segmenters take RGB input (in_chans=3), got in_chans={in_chans}")
    if subtask is not None and subtask not in SUBTASKS:
        raise ModelError(f"hf:{ref}: subtask must be one of {SUBTASKS}, got {subtask!r}")
    if kwargs.pop("backbone", None) is not None:
        raise ModelError(f"hf:{ref}: the backbone comes from the transformers config; drop backbone=")
    data_extra = dict((hf_config or {}).get(_DATA_CONFIG_KEY) or {})
    model, data_cfg = load_hf_model(
        ref, _AutoSegmentation, num_classes=num_classes, class_names=class_names, hf_config=hf_config,
        pretrained=pretrained, prepare=_prepare, what="segmentation model", **kwargs,
    )
    data_cfg = {**data_cfg, **{k: v for k, v in data_extra.items() if k not in data_cfg}}
    if img_size is not None and not data_cfg.get("input_size"):
        data_cfg["input_size"] = (3, int(img_size), int(img_size))
    model = model.float()
    universal = type(model).__name__.endswith("UniversalSegmentation")
    if subtask is None:
        subtask = "panoptic" if isthing is not None and universal else "instance" if universal else "semantic"
    if not universal:
        if subtask != "semantic":
            raise ModelError(f"hf:{ref} ({type(model).__name__}) is a semantic model; task={subtask} needs Mask2Former/OneFormer")
        wrapper: nn.Module = HFSemanticSegmenter(model, data_cfg, subtask)
    else:
        if "task_inputs" in inspect.signature(model.forward).parameters and _TASK_INPUTS_KEY not in data_cfg:
            data_cfg[_TASK_INPUTS_KEY] = task_token_ids(None if hf_config is not None else ref, model.config.task_seq_len)
        wrapper = HFUniversalSegmenter(model, data_cfg, subtask, isthing=isthing if subtask != "semantic" else None)
    wrapper.train()
    if isinstance(pretrained, str) and pretrained:
        from optik.models.transfer import load_into_wrapper

        load_into_wrapper(wrapper, pretrained)
    return wrapper


def create_hf_semantic(ref: str, **kwargs: Any) -> nn.Module:
    """:func:`create_hf_segmenter` with ``subtask="semantic"`` unless given (a registry entry per sub-task)."""
    return create_hf_segmenter(ref, **{"subtask": "semantic", **kwargs})


def create_hf_instance(ref: str, **kwargs: Any) -> nn.Module:
    """:func:`create_hf_segmenter` with ``subtask="instance"`` unless given."""
    return create_hf_segmenter(ref, **{"subtask": "instance", **kwargs})


def create_hf_panoptic(ref: str, **kwargs: Any) -> nn.Module:
    """:func:`create_hf_segmenter` with ``subtask="panoptic"`` unless given."""
    return create_hf_segmenter(ref, **{"subtask": "panoptic", **kwargs})


__all__ = [
    "HFSemanticSegmenter", "HFUniversalSegmenter", "SUBTASKS", "create_hf_instance", "create_hf_panoptic",
    "create_hf_segmenter", "create_hf_semantic", "task_token_ids",
]
