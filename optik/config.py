"""Run configuration: one pydantic model per mode, filled from CLI ``key=value`` pairs, a YAML file
(``cfg=run.yaml``) or keyword arguments. Unknown keys and bad values raise :class:`ConfigError`
naming the key and what it accepts.

>>> cfg = build_config("classify", "train", {"data": "digits", "epochs": "3"})
>>> cfg.epochs, cfg.optimizer
(3, 'adamw')
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from optik.errors import ConfigError

# Ultralytics spellings users type from habit, mapped to optik's keys.
ALIASES = {"lr0": "lr", "imgsz": "imgsz", "img_size": "imgsz", "batch_size": "batch", "weights": "model"}


class CommonConfig(BaseModel):
    """Keys every mode understands."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    task: str = "classify"
    mode: str = "train"
    model: str | None = Field(None, description="native name, timm:<name>, hf:<id|dir>, or a .safetensors / run dir")
    data: Any = Field(None, description="digits | synthetic:shapes[?n=..] | folder | file.csv | datasets.Dataset")
    imgsz: int = Field(64, ge=8, le=4096, description="square input size in pixels")
    batch: int = Field(32, ge=1, description="batch size (per process under torchrun)")
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = load in the main process)")
    device: str = Field("cpu", description="cpu | cuda | cuda:N | N | auto")
    seed: int = 0
    project: str = Field("runs", description="root folder for run directories")
    name: str | None = Field(None, description="run name; a taken name gets a numeric suffix unless exist_ok")
    exist_ok: bool = False
    save: bool = True
    verbose: bool = False
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction when data has no val split")
    skip_bad: bool = Field(False, description="skip (and count) unreadable images instead of failing")
    amp: bool = Field(False, description="bf16 autocast (opt-in: slow on CPUs without bf16 units)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v.isdigit():
            return f"cuda:{v}"
        if v in ("cpu", "cuda", "auto", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("expected cpu, cuda, cuda:N, N or auto")


class TrainConfig(CommonConfig):
    epochs: int = Field(10, ge=1)
    time: float | None = Field(None, gt=0, description="training budget in hours; overrides epochs")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 1e-3 adamw, 0.01 sgd)")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between decays for scheduler=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for scheduler=step")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr / peak lr for cosine")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    clip_grad: float | None = Field(None, gt=0, description="max gradient norm")
    ema: bool = False
    ema_decay: float = Field(0.999, gt=0, lt=1)
    patience: int = Field(100, ge=0, description="epochs without improvement before stopping (0 = never)")
    resume: bool | str = Field(False, description="true (latest/named run) or a run dir / state.pt path")
    pretrained: bool | str | None = Field(None, description="true (hub weights) or a weights file / hub id")
    freeze: Literal["none", "backbone"] = "none"
    freeze_epochs: int = Field(0, ge=0, description="two-phase fine-tune: head only for N epochs, then all")
    finetune_lr: float = Field(0.1, gt=0, le=1, description="lr factor for phase 2 of a two-phase fine-tune")
    val: bool = True
    save_period: int = Field(-1, description="also keep weights/epochN.safetensors every N epochs")
    # augmentation (classification presets on torchvision.transforms.v2)
    augment: Literal["none", "randaugment", "trivialaugment", "autoaugment", "augmix"] = "none"
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] = (0.6, 1.0)
    color_jitter: float = Field(0.0, ge=0)
    erasing: float = Field(0.0, ge=0, le=1)
    mixup: float = Field(0.0, ge=0, description="MixUp alpha (0 = off)")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off)")
    # class imbalance
    class_weights: bool = Field(False, description="inverse-frequency ('balanced') weights in the loss")
    sampler: Literal["none", "weighted"] = Field("none", description="weighted = class-balanced sampling")
    # knowledge distillation (classification; Hinton et al. 2015)
    teacher: str | None = Field(None, description="distil from this trained model (weights file / run dir / .onnx)")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-target KL term (1 - alpha: hard CE)")
    distill_T: float = Field(4.0, gt=0, description="softmax temperature of the soft targets")
    # loggers
    mlflow: bool = False
    plots: bool = True

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("expected two numbers 0 < min <= max <= 1, e.g. [0.6, 1.0]")
        return v


class ValConfig(CommonConfig):
    mode: str = "val"
    split: Literal["val", "train"] = "val"
    plots: bool = True


class PredictConfig(CommonConfig):
    mode: str = "predict"
    source: Any = Field(None, description="image file, folder, glob, or (Python) arrays / PIL images")
    topk: int = Field(5, ge=1)
    save: bool = False
    save_txt: bool = Field(False, description="with save=true: labels/<image>.txt (YOLO boxes / YOLO-seg polygons / top-k)")


EXPORT_FORMATS = ("torchscript", "onnx", "onnx-int8")


class ExportConfig(ValConfig):
    """``optik TASK export``: a self-describing TorchScript / ONNX file next to the weights, checked
    against eager on real validation images (``data`` defaults to what the weights were trained on)."""

    mode: str = "export"
    format: Literal["torchscript", "onnx", "onnx-int8"] = Field("onnx", description="torchscript | onnx | onnx-int8")
    out: str | None = Field(None, description="output file (default: next to the weights, e.g. weights/best.onnx)")
    batch: int = Field(8, ge=1, description="images per parity / calibration batch")
    dynamic: bool = Field(True, description="dynamic batch axis")
    opset: int = Field(17, ge=11, le=23, description="ONNX opset")
    int8: Literal["static", "dynamic"] = Field("static", description="onnx-int8: static (calibrated QDQ) or dynamic quantization")
    calib: int = Field(64, ge=1, description="onnx-int8 static: training images used for calibration")
    parity: int = Field(16, ge=0, description="validation images for the eager-vs-exported parity check (0 = skip)")
    tol: float | None = Field(None, gt=0, description="parity tolerance (default: 1e-3 relative for fp32; int8 checks agreement)")
    plots: bool = False


class BenchmarkConfig(ExportConfig):
    """``optik TASK benchmark``: every format's size, latency, throughput and val metric in one table."""

    mode: str = "benchmark"
    formats: list[str] = Field(["pytorch", "torchscript", "onnx", "onnx-int8"], description="formats to compare (pytorch = eager)")
    batch: int = Field(32, ge=1, description="throughput batch size")
    iters: int = Field(30, ge=1, description="timed runs per measurement")
    warmup: int = Field(3, ge=0, description="untimed runs first")

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> Any:
        v = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
        bad = [x for x in v if x not in ("pytorch", *EXPORT_FORMATS)]
        if bad:
            raise ValueError(f"unknown format {bad[0]!r}; expected pytorch, {', '.join(EXPORT_FORMATS)}")
        return v


class ExplainConfig(PredictConfig):
    """``optik classify explain``: class-activation heatmaps (Grad-CAM, Grad-CAM++, gradient saliency)."""

    mode: str = "explain"
    method: Literal["gradcam", "gradcam++", "saliency"] = "gradcam"
    layer: str | None = Field(None, description="target layer name (default: chosen automatically for CNNs and ViTs)")
    target: int | str | None = Field(None, description="class index or name to explain (default: the predicted class)")
    alpha: float = Field(0.5, ge=0, le=1, description="heatmap opacity in the overlay")
    save: bool = True


class PruneConfig(TrainConfig):
    """``optik classify prune``: magnitude pruning (unstructured or whole channels), a short fine-tune
    that keeps the zeros, and a sparsity-vs-accuracy table."""

    mode: str = "prune"
    method: Literal["unstructured", "structured"] = "unstructured"
    amount: list[float] = Field([0.3, 0.5, 0.7], description="fractions of weights (or channels) to remove, one row each")
    epochs: int = Field(1, ge=0, description="fine-tune epochs after pruning (0 = none)")
    lr: float | None = Field(1e-4, gt=0, description="fine-tune learning rate")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (int, float, str)) and not (isinstance(v, str) and "," in v) else v
        v = [float(x) for x in (v.split(",") if isinstance(v, str) else v)]
        if any(not 0 < x < 1 for x in v):
            raise ValueError("each amount is a fraction 0 < a < 1, e.g. amount=[0.3,0.5]")
        return v


class ServeConfig(CommonConfig):
    """``optik serve``: a FastAPI server with a web page for any trained or exported model."""

    mode: str = "serve"
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(1, ge=1, le=64, description="inference threads (each request runs off the event loop)")
    max_queue: int = Field(32, ge=1, description="requests waiting for a worker before new ones get 503")
    max_upload_mb: float = Field(10.0, gt=0, description="largest accepted upload (larger: 413)")
    timeout: float = Field(30.0, gt=0, description="seconds per request before 504")
    conf: float | None = Field(None, ge=0, le=1, description="default score threshold (detect/segment)")
    iou: float = Field(0.7, gt=0, le=1, description="default NMS IoU (detect/segment)")
    topk: int = Field(5, ge=1, description="default top-k (classify)")
    threads: int | None = Field(None, ge=1, description="torch/ORT intra-op threads (default: torch's; 1 is best for tiny models under load)")


class DetectOptions(BaseModel):
    """Keys shared by every detection mode (mixed into the detect configs below)."""

    conf: float | None = Field(None, ge=0, le=1, description="score threshold (default: 0.001 val, 0.25 predict)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="detections kept per image")
    agnostic_nms: bool = Field(False, description="NMS across classes")
    strict: bool = Field(False, description="boxes outside the image: error (true) or clip (false)")


class DetectTrainConfig(TrainConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096, description="square (letterboxed) input size in pixels")
    batch: int = Field(16, ge=1, description="batch size (per process under torchrun)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 2e-3 adamw, 0.01 sgd)")
    weight_decay: float = Field(0.0005, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    mosaic: float = Field(0.5, ge=0, le=1, description="probability of a 4-image mosaic (house detector)")
    close_mosaic: int = Field(2, ge=0, description="turn mosaic off for the last N epochs")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="random rescale range")
    iou_crop: bool = Field(False, description="SSD-style random IoU crop")
    photometric: bool = True
    clip_grad: float | None = Field(10.0, gt=0, description="max gradient norm")
    backbone: str | None = Field(None, description="house detector backbone: native (default) or timm:<name>")


class DetectValConfig(ValConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(16, ge=1)
    save_json: bool = Field(True, description="write COCO-format predictions.json")


class DetectPredictConfig(PredictConfig, DetectOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(8, ge=1)


SUBTASKS = ("semantic", "instance", "panoptic")


class SegmentOptions(BaseModel):
    """Keys shared by every segmentation mode. Users type ``task=semantic|instance|panoptic``;
    :func:`build_config` maps it to ``subtask`` (``task`` itself names the optik task, "segment")."""

    subtask: Literal["semantic", "instance", "panoptic"] = Field("semantic", description="semantic | instance | panoptic (CLI: task=…)")
    conf: float | None = Field(None, ge=0, le=1, description="instance/panoptic score threshold (default: 0.001 val, 0.25 predict; panoptic 0.5)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS IoU threshold (instance)")
    max_det: int = Field(100, ge=1, description="instances kept per image")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="probability above which a mask pixel is on")
    strict: bool = Field(False, description="annotation problems: error (true) or clip/skip with a log line (false)")


class SegmentTrainConfig(TrainConfig, SegmentOptions):
    imgsz: int = Field(128, ge=32, le=4096, description="square (letterboxed) input size in pixels")
    batch: int = Field(8, ge=1, description="batch size (per process under torchrun)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 2e-3 adamw semantic, 1e-4 mask2former/oneformer, 0.01 sgd)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.5, ge=0)
    loss: Literal["ce", "dice", "focal", "ce+dice", "focal+dice"] = Field("ce+dice", description="semantic loss")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="random rescale range")
    photometric: bool = True
    clip_grad: float | None = Field(10.0, gt=0, description="max gradient norm")
    backbone: str | None = Field(None, description="fpn: timm:<name>; tv:maskrcnn: resnet18 | resnet50 | mobilenet_v3_large")


class SegmentValConfig(ValConfig, SegmentOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(8, ge=1)
    save_json: bool = Field(True, description="instance: write COCO-format (RLE) predictions.json")


class SegmentPredictConfig(PredictConfig, SegmentOptions):
    imgsz: int = Field(128, ge=32, le=4096)
    batch: int = Field(8, ge=1)


def _rows(value: Any, width: int, example: str) -> list[list[float]] | None:
    """``[x, y]`` / ``[[x, y], …]`` (lists, arrays, tensors, YAML strings) → list of float rows."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_cli_value(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected {example}") from None
    if a.size == 0:
        return None
    if a.ndim == 1 and a.size == width:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width or not np.isfinite(a).all():
        raise ValueError(f"expected {example}")
    return a.tolist()


class SamPredictConfig(PredictConfig):
    """Keys of ``optik sam predict``: prompts (``points``/``labels``/``boxes``) give masks for those objects;
    without prompts SAM's automatic mask generator segments everything (the ``points_per_side`` … keys)."""

    task: str = "sam"
    mode: str = "predict"
    model: str | None = Field("hf:facebook/sam-vit-base", description="hf:<SAM hub id> or a local SamModel directory")
    points: list[list[float]] | None = Field(None, description="point prompts [[x, y], ...] in original pixels")
    labels: list[int] | None = Field(None, validate_default=True, description="per point: 1 = object, 0 = background")
    boxes: list[list[float]] | None = Field(None, description="box prompts [[x1, y1, x2, y2], ...] (one mask per box)")
    multimask: bool = Field(True, description="one object → SAM's 3 candidate masks ranked by predicted IoU")
    mask_threshold: float = Field(0.0, description="mask logit threshold")
    # automatic mask generator (no prompts), segment-anything's defaults
    points_per_side: int = Field(32, ge=1, le=256, description="AMG: point grid per side")
    points_per_batch: int = Field(64, ge=1, description="AMG: prompts decoded together")
    pred_iou_thresh: float = Field(0.88, ge=0, le=1, description="AMG: min predicted IoU (0 = off)")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="AMG: min stability score (0 = off)")
    stability_score_offset: float = Field(1.0, ge=0, description="AMG: logit offset of the stability score")
    box_nms_thresh: float = Field(0.7, gt=0, le=1, description="AMG: box NMS IoU within a crop")
    crop_n_layers: int = Field(0, ge=0, le=4, description="AMG: extra crop layers ((2^i)^2 crops in layer i)")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="AMG: crop overlap (fraction of short side)")
    crop_nms_thresh: float = Field(0.7, gt=0, le=1, description="AMG: box NMS IoU across crops")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="AMG: layer i uses points_per_side / factor^i")
    min_mask_region_area: int = Field(0, ge=0, description="AMG: fill holes / drop islands smaller than this (px)")

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, v: Any) -> Any:
        return _rows(v, 2, "[[x, y], ...] point coordinates")

    @field_validator("boxes", mode="before")
    @classmethod
    def _boxes(cls, v: Any) -> Any:
        rows = _rows(v, 4, "[[x1, y1, x2, y2], ...]")
        if rows and any(b[2] < b[0] or b[3] < b[1] for b in rows):
            raise ValueError("each box is x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        return rows

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any, info: ValidationInfo) -> Any:
        points = info.data.get("points")
        if isinstance(v, str):
            v = parse_cli_value(v)
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, (int, float)):
            v = [v]
        if v is None or (isinstance(v, list) and not v):
            return None if points is None else [1] * len(points)
        if points is None:
            raise ValueError("labels given without 'points'")
        if not isinstance(v, list) or any(x not in (0, 1) for x in v):
            raise ValueError("one label per point: 1 = object, 0 = background")
        if len(v) != len(points):
            raise ValueError(f"{len(v)} labels for {len(points)} point{'s' * (len(points) != 1)} (one label per point: 1 = object, 0 = background)")
        return [int(x) for x in v]



# --- generative (optik generate train | sample | eval, optik edit) ------------------------------
GENERATE_MODELS = ("dcgan", "cgan", "vae", "cvae", "ae", "ddpm")
DIFFUSION_SCHEDULERS = ("ddim", "ddpm", "dpm++", "euler", "euler_a", "pndm", "lms")


class GenerateOptions(BaseModel):
    """Sampling keys shared by generate train (its validation samples), sample and eval."""

    channels: int | None = Field(None, ge=1, le=4, description="image channels (default: 1 when the data is grayscale, else 3)")
    steps: int = Field(25, ge=1, le=1000, description="diffusion: denoising steps (num_inference_steps)")
    guidance_scale: float = Field(2.0, ge=0, description="diffusion: classifier-free guidance scale (1 = off; SD default 7.5)")
    scheduler: str = Field("ddim", description=f"diffusion sampler: {' | '.join(DIFFUSION_SCHEDULERS)}")
    labels: list[int] | None = Field(None, description="conditional models: class indices to generate (default: every class in turn)")

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in DIFFUSION_SCHEDULERS:
            raise ValueError(f"expected one of {', '.join(DIFFUSION_SCHEDULERS)}")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = parse_cli_value(v)
        if isinstance(v, (int, float, str)):
            v = [v]
        return v


class GenerateTrainConfig(TrainConfig):
    """``optik generate train``: GANs, VAEs and DDPMs on image data (the LR ``scheduler`` is TrainConfig's;
    validation sampling uses ``val_steps`` / ``val_scheduler`` / ``guidance_scale``)."""

    model: str | None = Field("ddpm", description=f"{' | '.join(GENERATE_MODELS)} | hf:<diffusers UNet2DModel dir> | weights")
    imgsz: int = Field(32, ge=8, le=1024, description="square image size in pixels")
    batch: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 2e-4 GANs, 1e-3 VAE, 5e-4 DDPM)")
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = "constant"
    hflip: float = Field(0.0, ge=0, le=1, description="horizontal flip probability (off: digits are not symmetric)")
    channels: int | None = Field(None, ge=1, le=4, description="image channels (default: 1 when the data is grayscale, else 3)")
    conditional: bool | None = Field(None, description="class-conditional (default: cgan, cvae, ddpm yes; dcgan, vae, ae no)")
    latent: int | None = Field(None, ge=1, description="latent size (default: 64 GAN noise, 16 VAE)")
    width: int | None = Field(None, ge=4, description="base channel width (default: the model's)")
    # GAN
    gan_loss: Literal["ns", "hinge", "wgan-gp"] = Field("ns", description="GAN loss: non-saturating, hinge or WGAN-GP")
    lr_d: float | None = Field(None, gt=0, description="discriminator learning rate (default: lr; TTUR when different)")
    d_steps: int = Field(1, ge=1, description="discriminator updates per generator update")
    label_flip: float = Field(0.0, ge=0, lt=0.5, description="GAN: probability of swapping real/fake targets for D")
    diffaug: str | None = Field(None, description="GAN: DiffAugment policy, e.g. color,translation,cutout")
    spectral_norm: bool = Field(False, description="GAN: spectral normalisation in D")
    gp_weight: float = Field(10.0, ge=0, description="GAN: gradient-penalty weight (wgan-gp)")
    # VAE
    beta: float = Field(1.0, ge=0, description="VAE: weight of the KL term (beta-VAE)")
    recon: Literal["bce", "mse"] = Field("bce", description="VAE reconstruction loss")
    # DDPM
    cond_drop: float = Field(0.1, ge=0, lt=1, description="DDPM: label dropout for classifier-free guidance")
    timesteps: int = Field(1000, ge=10, description="DDPM: training diffusion steps")
    # validation: FID/KID on val_samples generated images against the val split
    val_samples: int = Field(500, ge=10, description="validation images compared (and generated) per evaluation")
    val_steps: int = Field(20, ge=1, description="DDPM: denoising steps of validation samples")
    val_scheduler: str = Field("ddim", description="DDPM: sampler of validation samples")
    guidance_scale: float = Field(2.0, ge=0, description="DDPM: guidance scale of validation samples")
    features: str = Field("auto", description="FID features: auto (an optik classifier trained on this data) | classifier weights / run dir | inception:<weights file>")


class GenerateSampleConfig(CommonConfig, GenerateOptions):
    """``optik generate sample``: images from a trained model, or Stable Diffusion when ``prompt`` is given."""

    mode: str = "sample"
    n: int = Field(64, ge=1, le=100000, description="images to generate (SD: images per prompt)")
    batch: int = Field(64, ge=1)
    nrow: int | None = Field(None, ge=1, description="grid columns (default: one row per class / 8)")
    save: bool = Field(True, description="also write each image to images/")
    trajectory: bool = Field(True, description="diffusion: write a denoising-trajectory strip")
    interpolate: bool = Field(True, description="GAN/VAE: write a latent interpolation grid")
    # Stable Diffusion (model=hf:<id|dir> of a diffusers pipeline)
    prompt: str | None = Field(None, description="text prompt (Stable Diffusion)")
    negative_prompt: str | None = Field(None, description="what to steer away from")
    image: str | None = Field(None, description="img2img / inpaint / ControlNet input image")
    mask: str | None = Field(None, description="inpaint mask (white = repaint)")
    strength: float = Field(0.8, gt=0, le=1, description="img2img/inpaint: how much of the image is re-noised")
    controlnet: str | None = Field(None, description="hf:<ControlNet id|dir>; the control image is the Canny edge map of 'image'")
    lora: str | None = Field(None, description="LoRA weights (file or dir) loaded into the pipeline")
    lora_scale: float = Field(1.0, ge=0, description="LoRA strength")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="pipeline dtype (float32 on CPU)")


class GenerateEvalConfig(ValConfig, GenerateOptions):
    """``optik generate eval``: FID / KID / IS / precision-recall of generated vs real val images; CAS optionally."""

    n: int | None = Field(None, ge=10, description="images to generate (default: as many as real val images)")
    batch: int = Field(100, ge=1)
    features: str = Field("auto", description="auto (an optik classifier trained on this data) | classifier weights / run dir | inception:<weights file>")
    cas: bool = Field(False, description="also the Classification Accuracy Score (train on generated, test on real)")
    cas_epochs: int = Field(10, ge=1, description="CAS classifier epochs")
    kid_subset_size: int = Field(100, ge=2)


class EditConfig(CommonConfig):
    """``optik edit``: SAM mask from a click or box → dilate/feather → Stable Diffusion inpainting → panel."""

    task: str = "edit"
    mode: str = "edit"
    image: str | None = Field(None, description="the photo to edit")
    point: list[float] | None = Field(None, description="x,y click on the object (original pixels)")
    box: list[float] | None = Field(None, description="x1,y1,x2,y2 box around the object")
    mask: str | None = Field(None, description="a ready mask image instead of SAM (white = edit)")
    prompt: str | None = Field(None, description="what to paint into the masked region")
    negative_prompt: str | None = None
    model: str | None = Field("hf:stable-diffusion-v1-5/stable-diffusion-inpainting", description="SD inpainting pipeline: hf:<id|dir>")
    sam: str = Field("hf:facebook/sam-vit-base", description="SAM model: hf:<id|dir>")
    dilate: int = Field(8, ge=0, description="grow the mask by this many pixels (covers object edges and shadows)")
    feather: int = Field(8, ge=0, description="blur the mask edge over this many pixels when compositing")
    imgsz: int = Field(512, ge=32, le=2048, description="Stable Diffusion working size (multiple of 8)")
    steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=0)
    strength: float = Field(1.0, gt=0, le=1)
    scheduler: str | None = Field(None, description=f"{' | '.join(DIFFUSION_SCHEDULERS)} (default: the pipeline's)")
    n: int = Field(1, ge=1, le=16, description="variants to generate")
    out: str | None = Field(None, description="output file (default: <run dir>/edited.png)")

    @field_validator("point", "box", mode="before")
    @classmethod
    def _coords(cls, v: Any, info: ValidationInfo) -> Any:
        width = 2 if info.field_name == "point" else 4
        if isinstance(v, str) and v.strip()[:1] not in "[(":
            v = [s for s in v.replace(" ", "").split(",") if s]
        rows = _rows(v, width, "x,y" if width == 2 else "x1,y1,x2,y2")
        if rows is None:
            return None
        if len(rows) != 1:
            raise ValueError(f"one {info.field_name} (x,y)" if width == 2 else "one box x1,y1,x2,y2")
        return rows[0]


MODE_CONFIGS: dict[str, type[CommonConfig]] = {
    "train": TrainConfig, "val": ValConfig, "predict": PredictConfig, "export": ExportConfig,
    "benchmark": BenchmarkConfig, "explain": ExplainConfig, "prune": PruneConfig, "serve": ServeConfig,
    "sample": GenerateSampleConfig, "eval": GenerateEvalConfig, "edit": EditConfig,
}
# Tasks with keys of their own override the mode's config class.
TASK_CONFIGS: dict[tuple[str, str], type[CommonConfig]] = {
    ("detect", "train"): DetectTrainConfig,
    ("detect", "val"): DetectValConfig,
    ("detect", "predict"): DetectPredictConfig,
    ("segment", "train"): SegmentTrainConfig,
    ("segment", "val"): SegmentValConfig,
    ("segment", "predict"): SegmentPredictConfig,
    ("sam", "predict"): SamPredictConfig,
    ("generate", "train"): GenerateTrainConfig,
}
# export / benchmark need the task's thresholds and input size (the val split is evaluated).
for _task, _opts, _size in (("detect", DetectOptions, 128), ("segment", SegmentOptions, 128)):
    for _base in (ExportConfig, BenchmarkConfig):
        _mode = _base.model_fields["mode"].default
        TASK_CONFIGS[(_task, _mode)] = type(
            f"{_task.title()}{_base.__name__}", (_base, _opts), {"__annotations__": {"imgsz": int}, "imgsz": Field(_size, ge=32, le=4096)}
        )

# TrainConfig keys only the classification pipeline reads (an error elsewhere, not a silent no-op).
CLASSIFY_ONLY_KEYS = (
    "augment", "vflip", "scale", "color_jitter", "erasing", "mixup", "cutmix", "sampler", "teacher", "distill_alpha", "distill_T",
)

# Keys whose change is legitimate when resuming; everything else must match the run being resumed.
RESUME_MUTABLE = {"epochs", "time", "patience", "workers", "device", "verbose", "resume", "plots", "save_period"}


def parse_cli_value(raw: str) -> Any:
    """A CLI value string → a Python value. Scalars stay strings (pydantic coerces them against
    the field's type, so ``name=001`` stays ``"001"``); lists/dicts are parsed as YAML."""
    s = raw.strip()
    if s.lower() in ("none", "null"):
        return None
    if s[:1] in "[{(":
        try:
            return yaml.safe_load(s.replace("(", "[").replace(")", "]"))
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse value {raw!r}: {e}") from None
    return s


def parse_cli_args(args: list[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.01"]`` → ``{"epochs": "3", "lr": "0.01"}``; ``cfg=file.yaml`` is expanded."""
    out: dict[str, Any] = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"argument {a!r} is not key=value (e.g. epochs=3)")
        key, value = a.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"argument {a!r} has an empty key")
        out[key] = parse_cli_value(value)
    return out


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cfg: file '{p}' not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cfg: '{p}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cfg: '{p}' must contain a mapping of key: value")
    return data


def build_config(task: str, mode: str, overrides: dict[str, Any] | None = None) -> CommonConfig:
    """Validate ``overrides`` (CLI strings, YAML values or kwargs) into the mode's config model.

    Precedence: explicit overrides > ``cfg=`` YAML file > defaults.
    """
    if mode not in MODE_CONFIGS:
        raise ConfigError(f"unknown mode '{mode}' for {task}; expected one of: {', '.join(MODE_CONFIGS)}")
    cls = TASK_CONFIGS.get((task, mode), MODE_CONFIGS[mode])
    values: dict[str, Any] = {}
    overrides = {ALIASES.get(k, k): v for k, v in (overrides or {}).items()}
    if overrides.get("cfg") is not None:
        values.update({ALIASES.get(k, k): v for k, v in load_yaml_config(overrides.pop("cfg")).items()})
    overrides.pop("cfg", None)
    values.update(overrides)
    if task == "segment" and values.get("task") is not None:
        values.setdefault("subtask", values.pop("task"))  # `task=instance`: the segmentation flavour
    values.pop("task", None)
    values.pop("mode", None)
    fields = set(cls.model_fields)
    for key in values:
        if key not in fields:
            hint = difflib.get_close_matches(key, sorted(fields), n=1)
            did = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"unknown key '{key}' for {task} {mode}{did} (valid keys: {', '.join(sorted(fields - {'task', 'mode'}))})"
            )
    try:
        cfg = cls(task=task, mode=mode, **values)
    except ValidationError as e:
        raise config_error_from(e, values) from None
    if task in ("detect", "segment", "generate"):  # their pipelines move boxes/masks with the image: no classify presets
        changed = [k for k in CLASSIFY_ONLY_KEYS if k in cls.model_fields and getattr(cfg, k) != cls.model_fields[k].default]
        if changed and changed[0] in ("teacher", "distill_alpha", "distill_T"):
            raise ConfigError(f"key '{changed[0]}': knowledge distillation is implemented for classify only")
        if changed:
            raise ConfigError(
                f"key '{changed[0]}' is a classification augmentation; generate augments with hflip (GANs: diffaug)"
                if task == "generate"
                else f"key '{changed[0]}' is a classification augmentation; {task} augments with hflip, scale_jitter"
                f"{', mosaic, iou_crop' if task == 'detect' else ''} and photometric"
            )
    return cfg


def config_error_from(e: ValidationError, values: dict[str, Any]) -> ConfigError:
    """Pydantic's multi-line report → one line naming the first bad key, its value and what is allowed."""
    err = e.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    msg = err["msg"].removeprefix("Value error, ")
    shown = values.get(key, err.get("input"))
    if key == "subtask":  # users type it as task=…
        key = "task"
    return ConfigError(f"bad value for '{key}': {shown!r} ({msg})")


def update_config(cfg: CommonConfig, **changes: Any) -> CommonConfig:
    """Return a validated copy of ``cfg`` with ``changes`` applied."""
    data = cfg.model_dump()
    data.update(changes)
    task, mode = data.pop("task"), data.pop("mode")
    try:
        new = type(cfg)(task=task, mode=mode, **data)
    except ValidationError as e:
        raise config_error_from(e, data) from None
    # What the user set stays distinguishable from defaults (load_trained fills defaults from weights).
    object.__setattr__(new, "__pydantic_fields_set__", set(cfg.model_fields_set) | set(changes))
    return new


def config_to_yaml(cfg: CommonConfig) -> str:
    """YAML for the run directory; non-string data sources (in-memory datasets) are recorded by type."""
    data = cfg.model_dump(mode="json", fallback=lambda v: f"<{type(v).__name__}>")
    return yaml.safe_dump(data, sort_keys=False)
