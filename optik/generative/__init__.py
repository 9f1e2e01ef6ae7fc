"""Generative vision, runner side: sampling, artifacts, evaluation, Stable Diffusion, photo editing.

The models optik trains (``optik generate train model=dcgan|cgan|vae|cvae|ae|ddpm``) live in the models
layer, :mod:`optik.models.generative`, behind one protocol (``GenerativeModel``); the task that trains and
validates them is :mod:`optik.tasks.generate`. This package holds what runs them:

* :mod:`~optik.generative.sampling` — seeded image generation from any generative model;
* :mod:`~optik.generative.artifacts` — sample grids, trajectories, interpolations, reconstructions, report lines;
* :mod:`~optik.generative.features` — the FID feature network (``features=``; trains a classifier on first use);
* :mod:`~optik.generative.cas` — the Classification Accuracy Score (trains a classifier on generated images);
* :mod:`~optik.generative.run` — the ``generate sample`` and ``generate eval`` modes;
* :mod:`~optik.generative.sd` — Stable Diffusion through diffusers; :mod:`~optik.generative.edit` — ``optik edit``.

Metrics (FID, KID, IS, precision/recall) are in :mod:`optik.metrics.generative`.

Convention: generated images are float tensors ``(B, C, H, W)`` in ``[-1, 1]`` ("model space");
:func:`optik.generative.utils.to_uint8` converts them for saving and metrics.
"""
