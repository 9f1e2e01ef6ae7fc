"""Model registry: name → builder, keyed by task, and the one door in, :func:`create`.

The mechanism only, as timm's registry: this module imports no model. Packages register themselves on
import — ``import optik.models`` imports the zoo, the detectors, the segmenters, the generative models
(each ``@register_model``) and the adapters (``register_adapter`` with lazy ``"module:function"``
strings). The name forms that reach a model:

* a native name registered with :func:`register_model` (``"resnet"``, ``"house"``, ``"ddpm"`` …);
* ``"<prefix>:<rest>"`` routed by :func:`register_adapter` per task — ``"timm:<name>"`` (any timm
  architecture), ``"hf:<hub id or local dir>"`` (transformers classifiers, DETR-family detectors,
  segmenters; diffusers UNets for ``task="generate"``), ``"tv:<name>"`` (torchvision detectors and
  segmenters).

>>> from optik.models import create
>>> model = create("cnn", num_classes=10, in_chans=1)                # doctest: +SKIP
>>> model(torch.randn(2, 1, 32, 32)).shape                           # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optik.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]

_MODELS: dict[tuple[str, str], Builder] = {}  # (task, name) -> builder
# (task, prefix) -> builder or "module:function", imported on first use so that `import optik.models`
# does not pay for `import transformers`.
_ADAPTERS: dict[tuple[str, str], Builder | str] = {}
_HINTS: dict[tuple[str, str], str] = {}  # (task, prefix) -> what `optik info` says the adapter takes


def register_model(name: str, task: str = "classify") -> Callable[[Builder], Builder]:
    """Decorator that registers a builder ``fn(num_classes=…, in_chans=…, img_size=…, **kw) -> nn.Module``.

    >>> @register_model("tiny_cnn")                                  # doctest: +SKIP
    ... def tiny_cnn(**kwargs): return CNN(widths=(8, 16), **kwargs)
    """

    def decorator(fn: Builder) -> Builder:
        key = (task, name)
        if key in _MODELS and _MODELS[key] is not fn:
            raise ModelError(f"model {name!r} is already registered for task {task!r}")
        _MODELS[key] = fn
        return fn

    return decorator


def register_adapter(prefix: str, task: str, builder: Builder | str, hint: str = "") -> None:
    """Route names ``"<prefix>:<rest>"`` for ``task`` to ``builder(rest, num_classes=…, …)``.

    ``builder`` may be a ``"package.module:function"`` string, imported on first use; ``hint`` is the line
    ``optik info`` shows for it (e.g. ``"tv:fasterrcnn, tv:retinanet (torchvision)"``).
    """
    _ADAPTERS[(task, prefix)] = builder
    _HINTS[(task, prefix)] = hint or f"{prefix}:<name>"


def model_tasks() -> list[str]:
    """The registry keys that have models (native or through an adapter), e.g. ``classify``, ``semantic``."""
    return sorted({t for t, _ in _MODELS} | {t for t, _ in _ADAPTERS})


def adapter_hints(task: str) -> list[str]:
    """What each adapter registered for ``task`` accepts, as ``optik info`` lists it."""
    return [_HINTS[k] for k in sorted(_HINTS) if k[0] == task]


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Sorted native model names matching the glob ``pattern`` (all tasks when ``task`` is None).

    Every timm architecture also works as ``"timm:<name>"`` (see ``timm.list_models``) and every
    transformers image classifier as ``"hf:<hub id or local dir>"``; those are not listed here.

    >>> list_models("res*")                                          # doctest: +SKIP
    ['resnet', 'resnet_w32', 'resnet_w64']
    """
    names = {n for (t, n) in _MODELS if task is None or t == task}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _resolve_adapter(task: str, prefix: str, name: str) -> Builder:
    target = _ADAPTERS.get((task, prefix))
    if target is None:
        tasks = sorted(t for (t, p) in _ADAPTERS if p == prefix)
        raise ModelError(f"no {prefix}: model {name!r} for task {task!r}; the {prefix} adapter serves task(s) {tasks}")
    if isinstance(target, str):
        module, _, fn = target.partition(":")
        target = getattr(importlib.import_module(module), fn)
        _ADAPTERS[(task, prefix)] = target
    return target


def _unknown_name_error(name: str, task: str) -> ModelError:
    available = list_models(task=task)
    msg = f"no model {name!r} for task {task!r}; native {task} models: {', '.join(available) or 'none'}"
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    if close:
        msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
    other_tasks = sorted(t for (t, n) in _MODELS if n == name)
    if other_tasks:
        msg += f"; {name!r} exists for task(s) {other_tasks}"
    if task == "classify" and ":" not in name:
        try:
            import timm

            if timm.is_model(name):
                msg += f"; timm has it: use 'timm:{name}'"
        except ImportError:  # timm is a dependency, but the hint is optional
            pass
    return ModelError(msg)


def _config_kwargs(builder: Builder, config: dict[str, Any] | None) -> dict[str, Any]:
    """How ``builder`` takes a saved config: spread when its keys are already the builder's keyword arguments
    (``{"hf_config": …}``), whole as ``config=`` / ``hf_config=`` when the builder takes one, else spread
    (house widths, torchvision builder options…)."""
    if not config:
        return {}
    params = inspect.signature(builder).parameters
    if set(config) <= set(params):
        return dict(config)
    for key in ("config", "hf_config"):
        if key in params:
            return {key: config}
    return dict(config)


def create(
    name: str,
    task: str = "classify",
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool | str | None = None,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name (train mode, float32).

    Args:
        name: native name (``"resnet"``), or ``"<prefix>:<rest>"`` for an adapter (``"timm:<name>"``,
            ``"hf:<hub id or local dir>"``, ``"tv:<name>"``).
        task: registry key: ``classify``, ``detect``, ``semantic`` / ``instance`` / ``panoptic``, ``generate``.
        num_classes: size of the classifier head; the output is ``(B, num_classes)`` logits.
        in_chans: input channels; the model takes ``(B, in_chans, H, W)`` float images.
        img_size: input side in pixels; required by ``mlp``, fixes ``tiny_vit``'s positional grid and
            timm ViT-family models (ignored where the architecture is size-agnostic).
        pretrained: ``None``/``False`` random init; ``True`` the library's hub weights (timm/hf only);
            a path to ``.safetensors``/``.pt``/``.pth`` weights, loaded with a mismatched head skipped.
        config: a trained model's saved ``config_dict()`` (the ``model_config`` of its weights file), to
            rebuild exactly that architecture: passed as ``config=`` / ``hf_config=`` to a builder that takes
            one, else spread into its keyword arguments (house widths, torchvision builder options…).
        **kwargs: passed to the builder (e.g. ``drop_rate``, ``patch_size``; ``class_names`` for ``hf:``).

    Raises:
        ModelError: unknown name (with close matches), no model for ``task``, unloadable weights.

    >>> create("resnet", num_classes=5, in_chans=1)(torch.zeros(2, 1, 32, 32)).shape   # doctest: +SKIP
    torch.Size([2, 5])
    """
    if not isinstance(name, str) or not name:
        raise ModelError(f"model name must be a non-empty string, got {name!r}")
    if num_classes < 0 or in_chans < 1:
        raise ModelError(f"model {name!r}: need num_classes >= 0 and in_chans >= 1, got {num_classes}, {in_chans}")
    prefix, sep, rest = name.partition(":")
    if sep and any(p == prefix for (_, p) in _ADAPTERS):
        builder = _resolve_adapter(task, prefix, name)
        kwargs.update(_config_kwargs(builder, config))
        return builder(
            rest, num_classes=num_classes, in_chans=in_chans, img_size=img_size, pretrained=pretrained, **kwargs
        )

    kwargs.pop("class_names", None)  # accepted by every name form; only hf: stores label names
    builder = _MODELS.get((task, name))
    if builder is None:
        raise _unknown_name_error(name, task)
    kwargs.update(_config_kwargs(builder, config))
    # A builder that takes `pretrained` itself (e.g. fpn: through timm, for its backbone) handles it.
    own = "pretrained" in inspect.signature(builder).parameters
    if own:
        kwargs["pretrained"] = pretrained
    try:
        model = builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError as e:  # an unknown kwarg: name it instead of a bare traceback
        raise ModelError(f"model {name!r}: {e}") from e
    if own:
        return model
    if pretrained is True:
        raise ModelError(f"native model {name!r} has no hub weights; pass pretrained=<path to .safetensors/.pt>")
    if isinstance(pretrained, str) and pretrained:
        from optik.models.transfer import load_weights, read_state_dict

        load_weights(model, read_state_dict(pretrained))
    return model


__all__ = ["adapter_hints", "create", "list_models", "model_tasks", "register_model", "register_adapter"]
