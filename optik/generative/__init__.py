"""Generative vision: GANs, VAEs, diffusion from scratch, Stable Diffusion pipelines, photo editing.

Models trained by optik (``optik generate train model=dcgan|cgan|vae|ddpm``) live in
:mod:`optik.generative.gan`, :mod:`~optik.generative.vae` and :mod:`~optik.generative.diffusion`;
the task that trains, samples and evaluates them is :mod:`optik.tasks.generate`. Stable Diffusion
(txt2img / img2img / inpaint / LoRA / ControlNet) runs through diffusers in :mod:`~optik.generative.sd`,
and ``optik edit`` (SAM mask → SD inpainting) in :mod:`~optik.generative.edit`. Metrics (FID, KID,
IS, precision/recall, CAS) are in :mod:`optik.metrics.generative`.

Convention: generated images are float tensors ``(B, C, H, W)`` in ``[-1, 1]`` ("model space");
:func:`optik.generative.utils.to_uint8` converts them for saving and metrics.
"""
