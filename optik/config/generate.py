"""``optik generate`` (train | sample | eval) and ``optik edit`` keys: GAN / VAE / DDPM training, diffusion
sampling, Stable Diffusion prompts, the SAM → inpainting edit.

>>> GenerateSampleConfig(sampler="euler").steps
25
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from optik.config.base import CommonConfig, TrainConfig, ValConfig
from optik.config.parse import coordinate_rows, parse_cli_value


GENERATE_MODELS = ("dcgan", "cgan", "vae", "cvae", "ae", "ddpm")
DIFFUSION_SAMPLERS = ("ddim", "ddpm", "dpm++", "euler", "euler_a", "pndm", "lms")


class GenerateOptions(BaseModel):
    """Sampling keys shared by generate sample and eval (``scheduler=``, the old spelling of ``sampler=``,
    still works). Listed first in the bases below so its ``renamed`` wins over :class:`CommonConfig`'s."""

    renamed: ClassVar[dict[str, str]] = {"scheduler": "sampler"}

    channels: int | None = Field(None, ge=1, le=4, description="image channels (default: 1 when the data is grayscale, else 3)")
    steps: int = Field(25, ge=1, le=1000, description="diffusion: denoising steps (num_inference_steps)")
    guidance_scale: float = Field(2.0, ge=0, description="diffusion: classifier-free guidance scale (1 = off; SD default 7.5)")
    sampler: str = Field("ddim", description=f"diffusion sampler: {' | '.join(DIFFUSION_SAMPLERS)}")
    labels: list[int] | None = Field(None, description="conditional models: class indices to generate (default: every class in turn)")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        if v not in DIFFUSION_SAMPLERS:
            raise ValueError(f"expected one of {', '.join(DIFFUSION_SAMPLERS)}")
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
    """``optik generate train``: GANs, VAEs and DDPMs on image data (``scheduler`` is the LR schedule, as in
    every train config; validation sampling uses ``val_steps`` / ``val_sampler`` / ``guidance_scale``)."""

    renamed: ClassVar[dict[str, str]] = {"val_scheduler": "val_sampler"}

    model: str | None = Field("ddpm", description=f"{' | '.join(GENERATE_MODELS)} | hf:<diffusers UNet2DModel dir> | weights")
    imgsz: int = Field(32, ge=8, le=1024, description="square image size in pixels")
    batch: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: 2e-4 GANs, 1e-3 VAE, 5e-4 DDPM)")
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["cosine", "step", "onecycle", "constant"] = "constant"
    hflip: float = Field(0.0, ge=0, le=1, description="horizontal flip probability (off: digits are not symmetric)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="GAN: one-sided label smoothing of D's real targets")
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
    val_sampler: str = Field("ddim", description="DDPM: sampler of validation samples")
    guidance_scale: float = Field(2.0, ge=0, description="DDPM: guidance scale of validation samples")
    features: str = Field("auto", description="FID features: auto (an optik classifier trained on this data) | classifier weights / run dir | inception:<weights file>")


class GenerateSampleConfig(GenerateOptions, CommonConfig):
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


class GenerateEvalConfig(GenerateOptions, ValConfig):
    """``optik generate eval``: FID / KID / IS / precision-recall of generated vs real val images; CAS optionally."""

    n: int | None = Field(None, ge=10, description="images to generate (default: as many as real val images)")
    batch: int = Field(100, ge=1)
    features: str = Field("auto", description="auto (an optik classifier trained on this data) | classifier weights / run dir | inception:<weights file>")
    cas: bool = Field(False, description="also the Classification Accuracy Score (train on generated, test on real)")
    cas_epochs: int = Field(10, ge=1, description="CAS classifier epochs")
    kid_subset_size: int = Field(100, ge=2)


class EditConfig(CommonConfig):
    """``optik edit``: SAM mask from a click or box → dilate/feather → Stable Diffusion inpainting → panel."""

    renamed: ClassVar[dict[str, str]] = {"scheduler": "sampler"}

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
    sampler: str | None = Field(None, description=f"{' | '.join(DIFFUSION_SAMPLERS)} (default: the pipeline's)")
    n: int = Field(1, ge=1, le=16, description="variants to generate")
    out: str | None = Field(None, description="output file (default: <run dir>/edited.png)")

    @field_validator("point", "box", mode="before")
    @classmethod
    def _coords(cls, v: Any, info: ValidationInfo) -> Any:
        width = 2 if info.field_name == "point" else 4
        if isinstance(v, str) and v.strip()[:1] not in "[(":
            v = [s for s in v.replace(" ", "").split(",") if s]
        rows = coordinate_rows(v, width, "x,y" if width == 2 else "x1,y1,x2,y2")
        if rows is None:
            return None
        if len(rows) != 1:
            raise ValueError(f"one {info.field_name} (x,y)" if width == 2 else "one box x1,y1,x2,y2")
        return rows[0]
