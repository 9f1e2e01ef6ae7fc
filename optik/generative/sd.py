"""Stable Diffusion through diffusers: txt2img, img2img, inpainting, LoRA and ControlNet.

Pipelines load with :func:`load_pipeline` (local diffusers folder or ``hf:<repo id>``) and run
with :func:`run_pipeline`, which returns the images and per-step timings. ``make_tiny_*`` build
tiny *random* pipelines locally (no download) for tests and smoke runs: they produce noise, not
pictures, but exercise every code path at 64 px in well under a second per step on CPU.

>>> d = make_tiny_pipeline("/tmp/tiny-sd")
>>> pipe = load_pipeline(str(d), "txt2img", scheduler="ddim")
>>> res = run_pipeline(pipe, prompt="a red square", steps=2, seed=0, progress=False)
>>> res.images[0].size, res.steps
((64, 64), 2)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from optik.errors import ConfigError

KINDS = ("txt2img", "img2img", "inpaint")

# name -> (scheduler class name in diffusers, extra config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "lms": ("LMSDiscreteScheduler", {}),
}

# In-process cache: (model, lora, controlnet, kind, device, dtype) -> pipeline. Kinds of one model share weights
# through ``from_pipe``; a LoRA gets its own weights, since peft injects layers into the UNet itself.
_CACHE: dict[tuple, Any] = {}
_BASE: dict[tuple, Any] = {}  # (model, lora, device, dtype) -> the pipeline as loaded


# ----------------------------------------------------------------------------- tiny random models
def _tiny_tokenizer(path: Path):
    """A byte-level CLIP BPE tokenizer with a 514-token vocab written to ``path`` (no hub)."""
    from transformers import CLIPTokenizer

    # GPT-2's byte -> printable unicode map (every byte gets a visible character).
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in bs] + [chr(256 + i) for i in range(256 - len(bs))]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _tiny_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )


def make_tiny_pipeline(path: str | os.PathLike, *, inpaint: bool = False, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion pipeline (64 px images, 32 px latents) to ``path``.

    ``inpaint=True`` gives the 9-channel UNet of SD inpainting checkpoints (latents + mask + masked image).

    >>> make_tiny_pipeline("/tmp/tiny-sd-inpaint", inpaint=True).name
    'tiny-sd-inpaint'
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    torch.manual_seed(seed)
    unet = _tiny_unet(9 if inpaint else 4)
    vae = AutoencoderKL(  # two blocks -> downsampling factor 2
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D",) * 2,
    )
    # A trained SD VAE's posterior is nearly deterministic; a random one's logvar ~ 0 would make
    # img2img/inpaint latents mostly seed noise. Pin logvar to its floor (-30) like a trained VAE.
    with torch.no_grad():
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-30.0)
        # SD's scaling_factor (0.18215) gives its latents unit variance; do the same for this VAE so
        # that the noise schedule relates to the latents as in the real model.
        probe = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        vae.register_to_config(scaling_factor=float(1.0 / vae.encode(probe).latent_dist.mean.std()))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77, projection_dim=32,
    ))
    tokenizer = _tiny_tokenizer(path / "tokenizer")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def make_tiny_controlnet(path: str | os.PathLike, pipeline_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ControlNet copied from the UNet of a tiny pipeline (control image at 64 px).

    The zero-initialised output convolutions of a fresh ControlNet would make it a no-op; they are
    re-randomised so that the control image visibly changes the output.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_dir) / "unet")
    if unet.config.in_channels != 4:
        raise ConfigError(f"controlnet: needs a 4-channel UNet, {pipeline_dir} has {unet.config.in_channels}")
    torch.manual_seed(seed)
    # (16, 32): one stride-2 stage, matching the tiny VAE's factor 2 (SD uses 4 stages for factor 8).
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32),
                                   conditioning_channels=3)
    with torch.no_grad():
        for m in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
            m.reset_parameters()  # PyTorch's default (kaiming-uniform) conv init
        # The hint encoder must be strong enough that edges move the UNet features as much as the latents do.
        torch.nn.init.normal_(cn.controlnet_cond_embedding.conv_out.weight, std=0.5)
    cn.save_pretrained(Path(path))
    return Path(path)


def make_tiny_lora(path: str | os.PathLike, pipeline_dir: str | os.PathLike, rank: int = 4, seed: int = 0) -> Path:
    """Save a random rank-``rank`` UNet attention LoRA for a tiny pipeline; returns the ``.safetensors`` file."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_dir) / "unet")
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too (the default zero B would make the LoRA a no-op).
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    path = Path(path)
    StableDiffusionPipeline.save_lora_weights(save_directory=path, unet_lora_layers=layers, safe_serialization=True)
    return path / "pytorch_lora_weights.safetensors"


# ----------------------------------------------------------------------------- loading
def _resolve(arg: str, key: str) -> str:
    """``hf:<id or dir>`` or a plain local dir -> what ``from_pretrained`` takes."""
    if arg.startswith("hf:"):
        target = arg[3:]
        if not target:
            raise ConfigError(f"{key}: empty after 'hf:'")
        if target.startswith(("/", "./", "../", "~")) and not Path(target).expanduser().exists():
            raise ConfigError(f"bad value for '{key}': local directory '{target}' not found")
        return target
    p = Path(arg).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}: {arg} does not exist (use hf:<repo id> for the Hugging Face hub)")
    return str(p)


def make_scheduler(name: str, config: Any):
    """A diffusers scheduler by short name (see :data:`SCHEDULERS`) from another scheduler's config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ConfigError(f"scheduler: unknown {name!r}, expected one of {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(config, **extra)


def _load_base(model: str, lora: str | None, device: str, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    src = _resolve(model, "model")
    if Path(src).is_dir() and not (Path(src) / "model_index.json").is_file():
        raise ConfigError(f"model: {model} is not a diffusers pipeline folder (no model_index.json)")
    try:
        pipe = DiffusionPipeline.from_pretrained(src, dtype=dtype, safety_checker=None,
                                                 requires_safety_checker=False)
    except Exception as e:  # noqa: BLE001 - hub offline/unknown id/corrupt files all mean a bad 'model'
        raise ConfigError(f"model: cannot load {model!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if lora is not None:
        src_l = _resolve(lora, "lora")
        kw = {}
        if Path(src_l).is_file():
            src_l, kw = str(Path(src_l).parent), {"weight_name": Path(src_l).name}
        try:
            pipe.load_lora_weights(src_l, adapter_name="optik", **kw)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"lora: cannot load {lora!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    return pipe if device == "cpu" else pipe.to(device)


def load_pipeline(model: str, kind: str = "txt2img", *, scheduler: str | None = None, controlnet: str | None = None,
                  lora: str | None = None, lora_scale: float = 1.0, device: str = "cpu", dtype: str = "float32"):
    """A diffusers pipeline for ``kind`` (``txt2img`` | ``img2img`` | ``inpaint``), cached in-process.

    ``model`` is a local diffusers folder or ``hf:<repo id or folder>``. ``controlnet`` (same forms)
    selects the StableDiffusionControlNet{,Img2Img,Inpaint}Pipeline; ``lora`` a LoRA file/folder,
    applied at ``lora_scale`` (0 = base model). The returned pipeline is shared with later calls of the
    same model/kind/controlnet/lora/device/dtype: each call (re)sets its scheduler (``None`` = the
    model's own) and LoRA scale.

    >>> sd15 = "hf:stable-diffusion-v1-5/stable-diffusion-v1-5"
    >>> pipe = load_pipeline(sd15, "inpaint", scheduler="dpm++", lora="style.safetensors")  # doctest: +SKIP
    """
    from diffusers import (AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image,
                           ControlNetModel, StableDiffusionControlNetImg2ImgPipeline,
                           StableDiffusionControlNetInpaintPipeline, StableDiffusionControlNetPipeline)
    from diffusers.utils import logging as dlogging

    if kind not in KINDS:
        raise ConfigError(f"kind: unknown {kind!r}, expected one of {', '.join(KINDS)}")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler: unknown {scheduler!r}, expected one of {', '.join(SCHEDULERS)}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"dtype: unknown {dtype!r}, expected float32, float16 or bfloat16")
    if dtype == "float16" and str(device).startswith("cpu"):
        raise ConfigError("dtype: float16 is not supported on cpu (use float32)")
    torch_dtype = getattr(torch, dtype)
    key = (model, lora, controlnet, kind, str(device), dtype)
    pipe = _CACHE.get(key)
    if pipe is None:
        base_key = (model, lora, str(device), dtype)
        base = _BASE.get(base_key)
        if base is None:
            base = _BASE[base_key] = _load_base(model, lora, device, torch_dtype)
        unet = getattr(base, "unet", None)
        if unet is not None and unet.config.in_channels == 9 and kind != "inpaint":
            raise ConfigError(f"model: {model} is an inpainting model (9-channel UNet); use it for kind=inpaint only")
        if controlnet is not None:
            try:
                cn = ControlNetModel.from_pretrained(_resolve(controlnet, "controlnet"), dtype=torch_dtype)
                cn = cn if device == "cpu" else cn.to(device)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"controlnet: cannot load {controlnet!r} ({type(e).__name__})") from e
            cls = {"txt2img": StableDiffusionControlNetPipeline, "img2img": StableDiffusionControlNetImg2ImgPipeline,
                   "inpaint": StableDiffusionControlNetInpaintPipeline}[kind]
        else:
            cls = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                   "inpaint": AutoPipelineForInpainting}[kind]
        # from_pipe re-casts the shared modules to their own dtype, which makes diffusers warn once per module.
        level = dlogging.get_verbosity()
        dlogging.set_verbosity_error()
        try:
            pipe = cls.from_pipe(base, controlnet=cn) if controlnet is not None else cls.from_pipe(base)
        finally:
            dlogging.set_verbosity(level)
        pipe.set_progress_bar_config(disable=True)  # run_pipeline draws its own bar
        _CACHE[key] = pipe
    # A fresh scheduler per call (from_pipe shares the object between kinds); None = the model's own.
    base_sched = _BASE[(model, lora, str(device), dtype)].scheduler
    if scheduler is None:
        pipe.scheduler = type(base_sched).from_config(base_sched.config)
    else:
        pipe.scheduler = make_scheduler(scheduler, base_sched.config)
    if lora is not None:
        pipe.set_adapters(["optik"], adapter_weights=[float(lora_scale)])
    return pipe


def clear_cache() -> None:
    """Forget every cached pipeline (frees their memory once no one else holds them)."""
    _CACHE.clear()
    _BASE.clear()


# ----------------------------------------------------------------------------- running
def canny_image(image: Image.Image | np.ndarray, low: int = 100, high: int = 200) -> Image.Image:
    """OpenCV Canny edges of ``image`` as a 3-channel (white edges on black) ControlNet control image.

    >>> canny_image(Image.new("RGB", (32, 32))).mode
    'RGB'
    """
    import cv2

    arr = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(arr.astype(np.uint8), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


@dataclass
class SDResult:
    """Images of one :func:`run_pipeline` call; ``steps`` = denoising steps actually run (img2img: ×strength)."""

    images: list[Image.Image]
    seconds: float
    seconds_per_step: float
    steps: int
    seed: int
    step_times: list[float] = field(default_factory=list, repr=False)


def _to_pil(x: Any, mode: str = "RGB") -> Image.Image:
    if isinstance(x, Image.Image):
        return x.convert(mode)
    if isinstance(x, torch.Tensor):  # model space (C, H, W) or (1, C, H, W) in [-1, 1]
        x = x.detach().float().squeeze(0).clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr.astype(np.uint8)).convert(mode)


def _paste_back(out: Image.Image, image: Image.Image, mask: Image.Image) -> Image.Image:
    """Keep the original pixels where the mask is black (the VAE round trip blurs/shifts them otherwise)."""
    m = np.asarray(mask.convert("L").resize(out.size, Image.BILINEAR), dtype=np.float32)[..., None] / 255.0
    src = np.asarray(image.convert("RGB").resize(out.size, Image.BICUBIC), dtype=np.float32)
    res = m * np.asarray(out, dtype=np.float32) + (1 - m) * src
    return Image.fromarray(res.round().clip(0, 255).astype(np.uint8))


def run_pipeline(pipe: Any, *, prompt: str | list[str], negative_prompt: str | list[str] | None = None,
                 image: Any = None, mask: Any = None, control_image: Any = None, strength: float = 0.8,
                 steps: int = 30, guidance_scale: float = 7.5, seed: int = 0, batch: int = 1,
                 height: int | None = None, width: int | None = None, progress: bool = True,
                 paste_back: bool = True) -> SDResult:
    """Run ``pipe`` (from :func:`load_pipeline`) once with a seeded generator; time every denoising step.

    Which inputs are needed follows the pipeline: img2img needs ``image`` (and uses ``strength``),
    inpaint ``image`` + ``mask`` (white = repaint), ControlNet ``control_image``. For inpainting,
    ``paste_back`` copies the input pixels outside the mask into the result.

    >>> res = run_pipeline(pipe, prompt="a cat", steps=20, seed=1)     # doctest: +SKIP
    >>> res.images[0].save("cat.png"); print(f"{res.seconds_per_step:.2f} s/step")  # doctest: +SKIP
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from optik.console import console

    name = type(pipe).__name__
    is_inpaint, is_img2img, is_cn = "Inpaint" in name, "Img2Img" in name, "ControlNet" in name
    kw: dict[str, Any] = {}
    if is_inpaint or is_img2img:
        if image is None:
            raise ConfigError(f"image: {name} needs an input image")
        image = _to_pil(image)
        kw.update(image=image, strength=strength)
    if is_inpaint:
        if mask is None:
            raise ConfigError(f"mask: {name} needs a mask (white = repaint)")
        mask = _to_pil(mask, "L")
        kw["mask_image"] = mask
    if is_cn:
        if control_image is None:
            raise ConfigError(f"control_image: {name} needs a control image (e.g. canny_image(photo))")
        kw["control_image" if (is_inpaint or is_img2img) else "image"] = _to_pil(control_image)
    if height is None and image is not None and not is_cn:
        # img2img/inpaint default: the input's size, rounded down to what the UNet/VAE strides allow.
        width, height = (max(8, v // 8 * 8) for v in image.size)

    # Denoising steps as the pipeline will count them (PNDM adds one; img2img/inpaint skip the first
    # (1 - strength) share of the schedule, as in diffusers' get_timesteps).
    pipe.scheduler.set_timesteps(steps)
    n_steps = len(pipe.scheduler.timesteps)
    if is_inpaint or is_img2img:
        t_start = steps - min(int(steps * strength), steps)
        n_steps = len(pipe.scheduler.timesteps[t_start * pipe.scheduler.order:])
    if n_steps < 1 or (is_inpaint or is_img2img) and int(steps * strength) < 1:
        raise ConfigError(f"strength: {strength} x steps {steps} leaves no denoising step")
    stamps: list[float] = []
    bar = Progress(TextColumn("[bold]denoise"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True, disable=not progress, auto_refresh=console.is_terminal)
    task = bar.add_task("denoise", total=n_steps)

    def on_step(_pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        stamps.append(time.perf_counter())
        bar.update(task, advance=1)
        return {}

    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    t0 = time.perf_counter()
    with bar, torch.inference_mode():
        out = pipe(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                   guidance_scale=guidance_scale, generator=generator, num_images_per_prompt=batch,
                   height=height, width=width, callback_on_step_end=on_step, output_type="pil", **kw)
    seconds = time.perf_counter() - t0
    images = list(out.images)
    if is_inpaint and paste_back:
        images = [_paste_back(im, image, mask) for im in images]
    # Step i's duration = gap between consecutive callbacks; the first step's start is unknown
    # (text encoding and VAE encoding precede it), so it is estimated from the others when possible.
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    per_step = sum(gaps) / len(gaps) if gaps else (stamps[0] - t0 if stamps else 0.0)
    return SDResult(images=images, seconds=seconds, seconds_per_step=per_step, steps=len(stamps), seed=int(seed),
                    step_times=gaps)


__all__ = ["SCHEDULERS", "SDResult", "canny_image", "clear_cache", "load_pipeline", "make_scheduler",
           "make_tiny_controlnet", "make_tiny_lora", "make_tiny_pipeline", "run_pipeline"]
