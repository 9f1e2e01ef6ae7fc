"""Any optik model as a feature extractor: the registry's classifier with its head removed, wrapped in
:class:`~optik.embed.ssl.EmbedModel`.

``model=`` may be a registry name (native zoo, ``timm:<name>`` with ``pretrained=<file>``, ``hf:<dir>``), an
embed run (rebuilt exactly from its ``model_config``), or a classify run / weights file (its backbone: the
layers before the classifier).

>>> model, info = build_embedder("cnn", img_size=32)                     # doctest: +SKIP
>>> model(torch.zeros(2, 3, 32, 32)).shape                               # doctest: +SKIP
torch.Size([2, 64])
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from optik.embed.ssl import EmbedModel
from optik.errors import ConfigError, ModelError

MAE_KEYS = ("mask_ratio", "norm_pix", "decoder_dim", "decoder_depth")


def strip_head(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its classifier replaced by ``nn.Identity`` — timm's ``reset_classifier(0)``
    where the model has it — so its output is the pooled pre-logits feature."""
    if hasattr(model, "reset_classifier") and type(model).__module__.startswith("timm."):
        model.reset_classifier(0)
        return model
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    for name, module in model.named_modules():
        if name and module is head:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
            return model
    raise ModelError(f"{type(model).__name__} has no classifier head to remove (neither get_classifier() nor .head)")


@torch.no_grad()
def feature_dim(backbone: nn.Module, img_size: int) -> int:
    """Width of ``backbone``'s pooled output, measured on a dummy batch (works for any family)."""
    was = backbone.training
    backbone.eval()
    try:
        out = backbone(torch.zeros(2, 3, img_size, img_size))
    finally:
        backbone.train(was)
    if out.ndim == 4 and out.shape[-2:] != (1, 1):
        raise ModelError(f"{type(backbone).__name__} without its head gives a {tuple(out.shape)} map, not pooled features")
    return int(out.flatten(1).shape[1])


def check_local_crops(encoder: nn.Module, dim: int, size: int, name: str = "the backbone") -> None:
    """A :class:`~optik.errors.ConfigError` unless ``encoder`` maps ``size`` px crops to ``dim`` features: DINO's
    local crops go through the same student as the global ones (a fixed-size ViT cannot take them; a CNN can)."""
    try:
        got = feature_dim(encoder, size)
    except (RuntimeError, AssertionError, ValueError, TypeError, IndexError, ModelError) as e:  # the family's own shape error, in the user's terms
        raise ConfigError(f"model '{name}' cannot take DINO's {size}px local crops ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                          "set local_crops=0, a larger local_size=, or a backbone that accepts any input size "
                          "(timm ViT: backbone_args={dynamic_img_size: true, dynamic_img_pad: true})") from None  # fmt: skip
    if got != dim:
        raise ConfigError(f"model '{name}' gives {got} features on {size}px local crops but {dim} on global crops; set local_crops=0")


def _backbone(arch: str, *, num_classes: int, img_size: int, pretrained: Any = None, config: Any = None,
              class_names: list[str] | None = None, backbone_args: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    from optik import models

    try:
        net = models.create(arch, task="classify", num_classes=num_classes, img_size=img_size, pretrained=pretrained, config=config,
                            class_names=class_names, **(backbone_args or {}))  # fmt: skip
    except ModelError as e:
        if not backbone_args:
            raise
        raise ConfigError(f"bad value for 'backbone_args' {backbone_args}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"bad value for 'model': {e}") from None
    norm = models.model_data_config(net)
    info = {"backbone": arch, "backbone_classes": num_classes,
            "backbone_config": net.config_dict() if hasattr(net, "config_dict") else (dict(backbone_args) if backbone_args else None)}  # fmt: skip
    return net, {"mean": list(norm["mean"]), "std": list(norm["std"]), "info": info}


def rebuild(config: dict[str, Any], img_size: int) -> EmbedModel:
    """An :class:`EmbedModel` of the architecture described by ``config`` (its :meth:`~EmbedModel.config_dict`),
    random weights (load the state dict after)."""
    arch = config.get("backbone")
    if not arch:
        raise ModelError("embed weights without 'backbone' in model_config (not an optik embed run?)")
    net, _ = _backbone(arch, num_classes=int(config.get("backbone_classes") or 1), img_size=img_size, config=config.get("backbone_config"))
    info = {k: config.get(k) for k in ("backbone", "backbone_classes", "backbone_config")}
    return EmbedModel(strip_head(net), int(config["feature_dim"]), config.get("method", "none"), proj_dim=config.get("proj_dim", 128),
                      hidden=config.get("hidden", 512), queue=config.get("queue", 1024), info=info,
                      **{k: config[k] for k in MAE_KEYS if k in config})  # fmt: skip


def build_embedder(model: str, *, img_size: int, method: str = "none", pretrained: Any = None, proj_dim: int = 128, hidden: int = 512,
                   queue: int = 1024, mae: dict[str, Any] | None = None,
                   backbone_args: dict[str, Any] | None = None, local_size: int | None = None) -> tuple[EmbedModel, dict[str, Any]]:  # fmt: skip
    """``model=`` → (:class:`EmbedModel`, meta: ``mean``/``std``, ``source_task``). An embed run is rebuilt with its
    own method and weights when ``method="none"`` (evaluation); training (``method`` set) from an embed or classify
    run starts the new method from that run's encoder. ``mae``: MAE's keys (:data:`MAE_KEYS`); ``backbone_args``:
    extra keyword arguments of a fresh architecture (``{"patch_size": 8, "embed_dim": 48, "depth": 2}``);
    ``local_size``: DINO's local crop side, checked to give the same pooled feature as the global crops."""
    from optik.weights import load_state_dict, resolve_model_arg

    arch, weights, wmeta = resolve_model_arg(model)
    if weights is not None and "export" in wmeta:
        raise ConfigError(f"bad value for 'model': '{weights}' is an exported file; embed needs the .safetensors weights")
    kind = wmeta.get("task") if weights is not None else None
    if weights is not None and kind not in ("embed", "classify"):
        raise ConfigError(f"bad value for 'model': '{weights}' was trained for task '{kind}' (embed reads embed and classify runs)")
    if weights is not None and pretrained not in (None, False):
        raise ConfigError(f"key 'pretrained' applies to an architecture name (model=timm:<arch> pretrained=<file>); '{weights}' already holds its weights")
    meta: dict[str, Any] = {"source_task": kind}
    if kind == "embed":
        saved = rebuild(wmeta.get("model_config") or {}, img_size)
        missing, unexpected = saved.load_state_dict(load_state_dict(weights), strict=False)
        if missing or unexpected:
            raise ModelError(f"model: '{weights}' does not fit its own model_config ({len(missing)} missing, {len(unexpected)} unexpected keys)")
        meta.update(mean=wmeta.get("mean"), std=wmeta.get("std"))
        if method == "none":
            return saved, meta
        encoder, info, dim = copy.deepcopy(saved.encoder), saved.info, saved.feature_dim
    else:
        classes = list(wmeta.get("classes") or []) if kind == "classify" else []
        net, norm = _backbone(arch, num_classes=max(1, len(classes)), img_size=img_size, pretrained=None if weights else pretrained,
                              config=wmeta.get("model_config"), class_names=classes or None,
                              backbone_args=None if weights else backbone_args)  # fmt: skip
        if weights is not None:
            from optik import models

            models.load_weights(net, load_state_dict(weights), strict_head=True)
        meta.update(mean=wmeta.get("mean") or norm["mean"], std=wmeta.get("std") or norm["std"])
        info = norm["info"]
        encoder = strip_head(net)
        dim = feature_dim(encoder, img_size)
    for p in encoder.parameters():
        p.requires_grad_(True)
    if local_size:
        check_local_crops(encoder, dim, local_size, str(model))
    return EmbedModel(encoder, dim, method, proj_dim=proj_dim, hidden=hidden, queue=queue, info=info, **(mae or {})), meta
