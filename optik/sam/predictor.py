"""Promptable segmentation with SAM (Kirillov et al. 2023, "Segment Anything") on transformers'
``SamModel`` + ``SamProcessor``.

The image encoder runs once per image (:meth:`SamPredictor.set_image` caches the embedding); every
prompt after that only runs the light prompt encoder + mask decoder, as in segment-anything's own
``SamPredictor``. Masks come back in original-image pixels as an optik :class:`~optik.results.Results`
(``masks`` + ``boxes`` with ``conf`` = the decoder's predicted IoU, class 0 ``"object"``).

>>> p = SamPredictor("hf:facebook/sam-vit-base")                     # doctest: +SKIP
>>> p.set_image("dog.jpg")                                           # doctest: +SKIP
>>> r = p.predict(points=[[120, 80], [40, 40]], labels=[1, 0])       # doctest: +SKIP
>>> r.masks.data.shape, r.boxes.conf                                 # 3 masks, best first  # doctest: +SKIP
(torch.Size([3, 480, 640]), tensor([0.97, 0.91, 0.62]))
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_SAM = "hf:facebook/sam-vit-base"
NAMES = ["object"]  # SAM masks are class-agnostic


# ----------------------------------------------------------------------------------------------- loading
def _hub_reachable(timeout: float = 2.0) -> bool:
    """A 2 s TCP probe of the hub endpoint: without it an offline machine spends ~25 s in
    huggingface_hub's retries before the same 'cannot connect' error."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


def processor_for(config: Any) -> Any:
    """A ``SamProcessor`` matching ``config.vision_config.image_size`` (for model dirs saved
    without ``preprocessor_config.json``): longest edge → S, pad to S×S, masks at S/4."""
    from transformers import SamImageProcessor, SamProcessor

    s = int(config.vision_config.image_size)
    m = int(config.prompt_encoder_config.image_embedding_size) * 4
    return SamProcessor(SamImageProcessor(size={"longest_edge": s}, pad_size={"height": s, "width": s},
                                          mask_size={"longest_edge": m}, mask_pad_size={"height": m, "width": m}))


def load_sam(ref: str | Path) -> tuple[nn.Module, Any]:
    """(SamModel, SamProcessor) from ``hf:<hub id>``, ``hf:<dir>`` or a bare local dir.

    Hub ids are looked up in the local cache first; the network is tried only when the hub answers,
    so a missing model is one :class:`ModelError` line in about a second, not a retry log.
    """
    from transformers import SamModel, SamProcessor

    ref = str(ref)
    name = ref[3:] if ref.startswith("hf:") else ref
    if not name:
        raise ModelError("bad value for 'model': empty SAM reference (use hf:facebook/sam-vit-base or a local dir)")
    path = Path(name).expanduser()
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if local:
        if not path.is_dir():
            raise ModelError(f"bad value for 'model': SAM model directory '{path}' not found")
        if not (path / "config.json").is_file():
            raise ModelError(f"bad value for 'model': '{path}' is not a transformers model directory (no config.json)")
        attempts = [{"local_files_only": True}]
    else:
        attempts = [{"local_files_only": True}] + ([{}] if _hub_reachable() else [])
    error: Exception | None = None
    for kwargs in attempts:
        try:
            model = SamModel.from_pretrained(str(path) if local else name, dtype=torch.float32, **kwargs)
            break
        except (OSError, ValueError, KeyError, TypeError) as e:
            error = e
    else:
        if not local and len(attempts) == 1:
            raise ModelError(f"bad value for 'model': '{ref}' is not in the Hugging Face cache and the hub is unreachable "
                             "(download it once online, or pass a local directory)") from None
        first = (str(error).splitlines() or [""])[0]
        raise ModelError(f"bad value for 'model': cannot load '{ref}' as a SAM model ({type(error).__name__}: {first})") from None
    if getattr(model.config, "model_type", None) != "sam":
        raise ModelError(f"bad value for 'model': '{ref}' is a {model.config.model_type!r} model, not SAM")
    try:
        processor = SamProcessor.from_pretrained(str(path) if local else name, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        log.info("%s has no usable SamProcessor config; building one for image_size=%s", ref,
                 model.config.vision_config.image_size)
        processor = processor_for(model.config)
    if int(processor.image_processor.pad_size["height"]) != int(model.config.vision_config.image_size):
        raise ModelError(f"'{ref}': processor pads to {processor.image_processor.pad_size} but the model expects "
                         f"{model.config.vision_config.image_size} px inputs")
    return model, processor


# ------------------------------------------------------------------------------------------ prompt parsing
def _as_array(value: Any, width: int | None, key: str, example: str) -> np.ndarray:
    """Nested lists / arrays / tensors → float (N, width) (one flat prompt is wrapped)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for '{key}': {value!r} (expected numbers, e.g. {example})") from None
    if width is None:
        return a.reshape(-1)
    if a.ndim == 1 and a.size == width:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width or not np.isfinite(a).all():
        raise ConfigError(f"bad value for '{key}': {value!r} (expected {example})")
    return a


def parse_prompts(points: Any = None, labels: Any = None, boxes: Any = None) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Validate user prompts → ``points`` (N,2) float, ``labels`` (N,) int64 (default: all 1 =
    foreground), ``boxes`` (M,4) float xyxy. Errors name the key.

    >>> p, l, b = parse_prompts([[10, 20], [5, 5]], [1, 0])
    >>> p.shape, l.tolist(), b
    (torch.Size([2, 2]), [1, 0], None)
    """
    pts = lab = bxs = None
    if points is not None and len(np.asarray(points, dtype=object).reshape(-1)):
        pts = _as_array(points, 2, "points", "[[x, y], ...]")
        if labels is None:
            lab = np.ones(len(pts))
        else:
            lab = _as_array(labels, None, "labels", "[1, 0, ...]")
            if len(lab) != len(pts):
                raise ConfigError(f"bad value for 'labels': {len(lab)} labels for {len(pts)} points "
                                  "(one label per point: 1 = object, 0 = background)")
            if not np.isin(lab, (0, 1)).all():
                raise ConfigError(f"bad value for 'labels': {labels!r} (labels are 1 = object or 0 = background)")
    elif labels is not None and len(np.asarray(labels).reshape(-1)):
        raise ConfigError("bad value for 'labels': labels given without 'points'")
    if boxes is not None and len(np.asarray(boxes, dtype=object).reshape(-1)):
        bxs = _as_array(boxes, 4, "boxes", "[[x1, y1, x2, y2], ...]")
        if ((bxs[:, 2] < bxs[:, 0]) | (bxs[:, 3] < bxs[:, 1])).any():
            raise ConfigError(f"bad value for 'boxes': {boxes!r} (each box is x1, y1, x2, y2 with x2 >= x1, y2 >= y1)")
    as_t = lambda a, dt: None if a is None else torch.as_tensor(a, dtype=dt)  # noqa: E731
    return as_t(pts, torch.float32), as_t(lab, torch.int64), as_t(bxs, torch.float32)


def as_hwc_uint8(image: Any) -> np.ndarray:
    """Any image optik reads (path, PIL, ndarray, (3,H,W) tensor) → (H, W, 3) uint8 RGB."""
    from optik.data.image import as_image_tensor

    return np.ascontiguousarray(as_image_tensor(image).permute(1, 2, 0).numpy())


# ------------------------------------------------------------------------------------------------ predictor
class SamPredictor:
    """SAM behind optik: ``set_image`` once, then ``predict`` with any number of prompts.

    Args:
        model: ``hf:<hub id>`` / ``hf:<dir>`` / a dir, or a ready ``SamModel`` (then pass ``processor``
            or one is built from the model config).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        processor: a ``SamProcessor`` to use with a ready model.

    >>> p = SamPredictor("hf:facebook/sam-vit-base")                # doctest: +SKIP
    >>> p.set_image(np.zeros((480, 640, 3), np.uint8))              # doctest: +SKIP
    >>> p.predict(boxes=[[100, 100, 300, 250]], multimask=False).masks.data.shape  # doctest: +SKIP
    torch.Size([1, 480, 640])
    """

    def __init__(self, model: str | Path | nn.Module = DEFAULT_SAM, device: str | torch.device = "cpu",
                 processor: Any = None) -> None:
        if isinstance(model, (str, Path)):
            self.model, self.processor = load_sam(model)
            self.name = str(model)
        else:
            self.model, self.processor = model, processor or processor_for(model.config)
            self.name = type(model).__name__
        if isinstance(device, str):
            from optik.engine.trainer import resolve_device

            device = resolve_device(device.strip().lower())
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval()
        self.timing: dict[str, float] = {"encoder": 0.0, "decoder": 0.0}
        self.reset_image()

    # -- image ------------------------------------------------------------------------------------------
    def reset_image(self) -> None:
        """Forget the cached image and embedding."""
        self.image: np.ndarray | None = None
        self.path = "image0"
        self.embedding: Tensor | None = None
        self.orig_size: tuple[int, int] = (0, 0)
        self.input_size: tuple[int, int] = (0, 0)

    @torch.inference_mode()
    def set_image(self, image: Any, path: str | None = None) -> None:
        """Run the image encoder once and cache the embedding for later prompts.

        ``image``: a path, PIL image, (H,W,3) uint8 array or (3,H,W) tensor.
        """
        t0 = time.perf_counter()
        if path is None and isinstance(image, (str, Path)):
            path = str(image)
        self.image = as_hwc_uint8(image)
        self.path = path or "image0"
        chw = torch.from_numpy(self.image).permute(2, 0, 1)
        enc = self.processor.image_processor(images=chw, input_data_format="channels_first", return_tensors="pt")
        pixels = enc["pixel_values"].to(self.device, torch.float32)
        self.orig_size = tuple(int(v) for v in enc["original_sizes"][0])  # type: ignore[assignment]
        self.input_size = tuple(int(v) for v in enc["reshaped_input_sizes"][0])  # type: ignore[assignment]
        self.embedding = self.model.get_image_embeddings(pixels)
        self.timing["encoder"] = time.perf_counter() - t0

    def _require_image(self) -> None:
        if self.embedding is None:
            raise ConfigError("SamPredictor: call set_image(image) before predict()")

    # -- low level ----------------------------------------------------------------------------------------
    def to_input_coords(self, xy: Tensor) -> Tensor:
        """Original-pixel x, y (…, 2k) → the resized model input's coordinates (as the processor does)."""
        (h, w), (nh, nw) = self.orig_size, self.input_size
        scale = torch.tensor([nw / w, nh / h], dtype=torch.float32, device=xy.device)
        return (xy.reshape(*xy.shape[:-1], -1, 2) * scale).reshape(xy.shape)

    @torch.inference_mode()
    def predict_torch(self, points: Tensor | None, labels: Tensor | None, boxes: Tensor | None,
                      multimask: bool = True) -> tuple[Tensor, Tensor]:
        """Batched prompts on the cached embedding, coordinates in original pixels.

        ``points`` (B, N, 2), ``labels`` (B, N), ``boxes`` (B, 4) — one object per row B. Returns the
        low-resolution mask logits (B, K, h, w) and predicted IoUs (B, K) (K = 3 with multimask, else 1).
        """
        self._require_image()
        t0 = time.perf_counter()
        kwargs: dict[str, Tensor] = {}
        if points is not None:
            kwargs["input_points"] = self.to_input_coords(points.to(self.device, torch.float32))[None]
            kwargs["input_labels"] = labels.to(self.device, torch.int64)[None]
        if boxes is not None:
            kwargs["input_boxes"] = self.to_input_coords(boxes.to(self.device, torch.float32))[None]
        out = self.model(image_embeddings=self.embedding, multimask_output=multimask, **kwargs)
        self.timing["decoder"] = time.perf_counter() - t0
        return out.pred_masks[0], out.iou_scores[0]

    def upscale(self, low_res: Tensor) -> Tensor:
        """Low-res logits (B, K, h, w) → logits at the original image size (B, K, H, W), via the
        processor's ``post_process_masks`` (remove the padding, then resize)."""
        return self.processor.post_process_masks([low_res.float()], [self.orig_size], [self.input_size], binarize=False)[0]

    # -- user level ----------------------------------------------------------------------------------------
    def predict(self, points: Any = None, labels: Any = None, boxes: Any = None, multimask: bool = True,
                mask_threshold: float = 0.0) -> Any:
        """Masks for prompts in original-image pixels, as :class:`~optik.results.Results`.

        - ``points`` [[x, y], …] with ``labels`` [1, 0, …] (1 = object, 0 = background; default all 1)
          and/or one box [x1, y1, x2, y2] describe ONE object: ``multimask=True`` returns SAM's 3
          candidate masks ranked by predicted IoU (best first), else its single mask.
        - Several ``boxes`` → one mask per box, in box order (the best of 3 when ``multimask``); the
          points, if any, apply to every box.

        >>> r = predictor.predict(points=[[50, 40]], labels=[1])     # doctest: +SKIP
        >>> len(r.masks), r.boxes.conf.tolist()                      # doctest: +SKIP
        (3, [0.95, 0.90, 0.71])
        """
        self._require_image()
        pts, lab, bxs = parse_prompts(points, labels, boxes)
        if pts is None and bxs is None:
            raise ConfigError("SAM prompting needs 'points' or 'boxes' (without prompts, sam predict segments every object)")
        t0 = time.perf_counter()
        n_obj = 1 if bxs is None else len(bxs)
        if pts is not None:
            pts, lab = pts[None].expand(n_obj, -1, -1), lab[None].expand(n_obj, -1)
        low, iou = self.predict_torch(pts, lab, bxs, multimask)
        t1 = time.perf_counter()
        if n_obj == 1:  # one object: every candidate, best first
            order = iou[0].argsort(descending=True)
            low, iou = low[0, order][:, None], iou[0, order]
        else:  # one mask per box, in box order
            best = iou.argmax(1)
            idx = torch.arange(n_obj, device=iou.device)
            low, iou = low[idx, best][:, None], iou[idx, best]
        masks = self.upscale(low)[:, 0] > mask_threshold  # (N, H, W) original pixels
        result = sam_results(self.image, self.path, masks, iou)
        enc, dec, post = self.timing["encoder"], t1 - t0, time.perf_counter() - t1
        result.speed = {"encoder": 1e3 * enc, "decoder": 1e3 * dec, "inference": 1e3 * (enc + dec), "postprocess": 1e3 * post}
        return result


def sam_results(image: np.ndarray | None, path: str, masks: Tensor, scores: Tensor) -> Any:
    """bool (N, H, W) masks + predicted IoUs → ``Results`` with ``masks`` and ``boxes`` (class 0
    ``"object"``, ``conf`` = predicted IoU)."""
    from optik.results import Boxes, Masks, Results

    masks = masks.cpu().bool()
    size = tuple(masks.shape[-2:])
    m = Masks(masks, size)
    boxes = Boxes(m.boxes(), scores.float().cpu(),
                  torch.zeros(len(masks), dtype=torch.long), size)
    img = image if image is not None else np.zeros((*size, 3), np.uint8)
    return Results(img, path, list(NAMES), boxes=boxes, masks=m)
