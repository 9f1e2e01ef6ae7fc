"""Class-activation heatmaps by hand: Grad-CAM, Grad-CAM++ and plain gradient saliency.

- **Grad-CAM** (Selvaraju et al. 2017): the target layer's activations ``A_k`` weighted by the
  spatial mean of ``∂y_c/∂A_k``, summed over channels, ReLU.
- **Grad-CAM++** (Chattopadhay et al. 2018): per-position weights
  ``α = g² / (2g² + Σ_ab A·g³)`` on the positive gradients (closed form for an exponential score),
  better when several instances or a large object carry the class.
- **Saliency** (Simonyan et al. 2014): ``max_channel |∂y_c/∂x|`` at the input.

The target layer's output is captured with a forward hook, its gradient with a tensor hook
registered from that forward hook. CNN layers give ``(B, C, h, w)``; ViT layers give tokens
``(B, N, D)``, which are reshaped to the patch grid after dropping the class/register tokens.
Every heatmap is upsampled (bilinear) to the input size and min-max scaled to [0, 1] per image.

>>> model = create("cnn", num_classes=3).eval()                       # doctest: +SKIP
>>> find_target_layer(model, imgsz=32)[0]                             # doctest: +SKIP
'stages.2.0'
>>> heat, logits = grad_cam(model, torch.rand(2, 3, 32, 32), target=[0, 1])   # doctest: +SKIP
>>> heat.shape, float(heat.min()) >= 0, float(heat.max()) <= 1       # doctest: +SKIP
(torch.Size([2, 32, 32]), True, True)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optik.errors import ConfigError

__all__ = ["METHODS", "explain_batch", "find_target_layer", "get_layer", "grad_cam", "saliency"]

METHODS = ("gradcam", "gradcam++", "saliency")
_EPS = 1e-7


# --- target layer -------------------------------------------------------------------------------
def _in_chans(model: nn.Module) -> int:
    """Input channels: the first Conv2d's, else 3."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _probe_shapes(model: nn.Module, imgsz: int | tuple[int, int]) -> tuple[list[str], dict[str, tuple], dict[str, int]]:
    """One no-grad forward on zeros: module names in the order their forward *finished*, each
    tensor output's shape, and the id of each output tensor (to tell a wrapper from new work)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    order: list[str] = []
    shapes: dict[str, tuple] = {}
    ids: dict[str, int] = {}
    outputs: list[Tensor] = []  # keep tensors alive so ids stay unique during the probe

    def hook(name: str):
        def fn(_m: nn.Module, _i: object, out: object) -> None:
            if torch.is_tensor(out):
                order.append(name)
                shapes[name], ids[name] = tuple(out.shape), id(out)
                outputs.append(out)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    was = model.training
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros(1, _in_chans(model), h, w, device=device))
    finally:
        model.train(was)
        for hd in handles:
            hd.remove()
    return order, shapes, ids


def _vit_layer(model: nn.Module) -> str | None:
    """``blocks.<last>.norm1`` for ViT-style models (timm ViT/DeiT/EVA…, native tiny_vit): the
    pre-attention norm of the last block still holds one token per patch (the final norm's patch
    tokens get no gradient from a class-token head)."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "patch_embed", None) is None or not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or not len(blocks):
        return None
    last = len(blocks) - 1
    return f"blocks.{last}.norm1" if hasattr(blocks[last], "norm1") else None


def find_target_layer(model: nn.Module, imgsz: int | tuple[int, int] = 224) -> tuple[str, nn.Module]:
    """The layer Grad-CAM should look at, chosen automatically.

    ViTs: the last block's ``norm1`` (tokens → patch grid). CNNs: the last ``Conv2d`` whose output
    at ``imgsz`` is still spatial (more than 1×1 — a 32 px input reaches a ResNet's last stage at
    1×1, where a map says nothing), widened to the outermost enclosing block with the same output
    shape, or else to the siblings that follow it at that shape (BatchNorm, activation), so the map
    sees the block's activation / residual sum, not the raw convolution.
    Raises :class:`ConfigError` when neither applies (pass ``layer=<name>``).

    >>> find_target_layer(create("resnet", num_classes=3), imgsz=32)[0]   # doctest: +SKIP
    'stages.2.1'
    """
    named = dict(model.named_modules())
    vit = _vit_layer(model)
    if vit is not None:
        return vit, named[vit]
    order, shapes, ids = _probe_shapes(model, imgsz)
    convs = [n for n in order if isinstance(named[n], nn.Conv2d) and len(shapes[n]) == 4 and shapes[n][2] * shapes[n][3] > 1]
    if not convs:
        hint = ", ".join(n for n in order if len(shapes[n]) in (3, 4))[-300:]
        raise ConfigError(
            f"layer: cannot choose a Grad-CAM layer automatically for {type(model).__name__} at imgsz={imgsz} "
            f"(no convolution with a spatial output); pass layer=<module name>, e.g. one of: {hint or 'none'}"
        )
    chosen = convs[-1]
    shape = shapes[chosen]
    while True:
        before = chosen
        # Up: the outermost enclosing block with the same output shape. The same tensor object
        # means the parent only passes its last child's output on — keep the deeper (more specific)
        # name; a new tensor (activation, residual sum) moves the choice up.
        parts, cur = chosen.split("."), chosen
        for k in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:k])
            if shapes.get(parent) != shape:
                break
            if ids[parent] != ids[cur]:
                chosen = parent
            cur = parent
        # Sideways: siblings right after it that keep the shape (the conv's BatchNorm/activation
        # when the enclosing block itself ends at 1x1, e.g. MobileNet's last expansion at 32 px).
        prefix = chosen.rsplit(".", 1)[0] + "." if "." in chosen else ""
        for n in order[order.index(chosen) + 1 :]:
            if shapes[n] != shape:
                break
            if n.startswith(prefix) and "." not in n[len(prefix) :]:
                chosen = n
        if chosen == before:
            break
    return chosen, named[chosen]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """``model``'s submodule called ``name``; an unknown name raises :class:`ConfigError` listing
    close matches."""
    named = dict(model.named_modules())
    if name in named and name:
        return named[name]
    names = [n for n in named if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"layers include {', '.join(names[-8:])}"
    raise ConfigError(f"bad value for 'layer': {type(model).__name__} has no module {name!r}; {hint}")


# --- maps ---------------------------------------------------------------------------------------
def _prefix_tokens(model: nn.Module) -> int:
    """Class + register/distillation tokens in front of the patch tokens."""
    n = getattr(model, "num_prefix_tokens", None)  # timm ViT family
    if n is not None:
        return int(n)
    return sum(1 for a in ("cls_token", "dist_token") if isinstance(getattr(model, a, None), Tensor))


def _patch_grid(model: nn.Module, n_tokens: int, input_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(prefix tokens, grid h, grid w) for an ``n_tokens`` sequence of a ``input_hw`` input."""
    prefix = _prefix_tokens(model)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None) or getattr(model, "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        gh, gw = input_hw[0] // ph, input_hw[1] // pw
        if gh * gw == n_tokens - prefix:
            return prefix, gh, gw
    side = math.isqrt(max(n_tokens - prefix, 0))
    if side > 0 and side * side == n_tokens - prefix:
        return prefix, side, side
    raise ConfigError(
        f"layer: cannot lay {n_tokens} tokens ({prefix} prefix) of {type(model).__name__} out on a patch grid "
        f"for a {input_hw[0]}x{input_hw[1]} input; pass layer=<a convolutional layer>"
    )


def _as_map(model: nn.Module, t: Tensor, input_hw: tuple[int, int], layer: str) -> Tensor:
    """A layer output → (B, C, h, w): conv maps as they are, tokens (B, N, D) onto the patch grid."""
    if t.ndim == 4:
        return t
    if t.ndim == 3:
        prefix, gh, gw = _patch_grid(model, t.shape[1], input_hw)
        return t[:, prefix:].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)
    raise ConfigError(
        f"bad value for 'layer': {layer!r} outputs shape {tuple(t.shape)}; Grad-CAM needs a spatial map "
        "(B, C, H, W) or ViT tokens (B, N, D)"
    )


def _normalize(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) ≥ 0 → (B, H, W) in [0, 1]: bilinear upsampling, then per-image min-max."""
    cam = F.interpolate(cam[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values.view(-1, 1, 1)
    hi = cam.flatten(1).max(1).values.view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > _EPS, (cam - lo) / span.clamp_min(_EPS), torch.zeros_like(cam))


def _targets(target: int | Sequence[int] | Tensor | None, logits: Tensor) -> Tensor:
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device).long().flatten()
    if t.numel() == 1:
        t = t.expand(logits.shape[0])
    if t.numel() != logits.shape[0] or (t < 0).any() or (t >= logits.shape[1]).any():
        raise ConfigError(f"bad value for 'target': {target!r} (need class indices 0..{logits.shape[1] - 1}, one per image)")
    return t


def _check_eager(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule) or not any(True for _ in model.parameters()):
        raise ConfigError(
            f"model: {type(model).__name__} is not an eager PyTorch model; explanations need gradients — "
            "use the trained .safetensors weights or run directory, not an exported file"
        )


def grad_cam(
    model: nn.Module,
    x: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    layer: str | nn.Module | None = None,
    plus: bool = False,
) -> tuple[Tensor, Tensor]:
    """Grad-CAM (``plus=True``: Grad-CAM++) heatmaps ``(B, H, W)`` in [0, 1] at ``x``'s size, and
    the logits ``(B, classes)``. ``target``: class index (one, or one per image; default: the
    predicted class). ``layer``: module name or module (default: :func:`find_target_layer`)."""
    _check_eager(model)
    hw = (x.shape[-2], x.shape[-1])
    if layer is None:
        name, module = find_target_layer(model, hw)
    elif isinstance(layer, str):
        name, module = layer, get_layer(model, layer)
    else:
        name, module = type(layer).__name__, layer
    store: dict[str, Tensor] = {}

    def fwd(_m: nn.Module, _i: object, out: object) -> None:
        if not torch.is_tensor(out):
            raise ConfigError(f"bad value for 'layer': {name!r} returns {type(out).__name__}, not a tensor")
        store["act"] = out.detach()
        if out.requires_grad:  # the backward half: the gradient reaching this output
            out.register_hook(lambda g: store.__setitem__("grad", g.detach()))

    handle = module.register_forward_hook(fwd)
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)  # activations need grad even with frozen weights
            logits = model(xg)
            if "act" not in store:
                raise ConfigError(f"bad value for 'layer': {name!r} is not used in the model's forward pass")
            t = _targets(target, logits)
            # Eval mode: images do not interact, so one backward of the summed scores gives each
            # image its own gradient; autograd.grad (not .backward) leaves the weights' .grad alone.
            torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xg)
    finally:
        handle.remove()
    if "grad" not in store:
        raise ConfigError(f"bad value for 'layer': the prediction does not depend on {name!r} (no gradient reached it)")
    a = _as_map(model, store["act"], hw, name).float()
    g = _as_map(model, store["grad"], hw, name).float()
    if plus:
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3
        alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.full_like(denom, _EPS)), torch.zeros_like(g))
        weights = (alpha * g.clamp_min(0)).sum((2, 3), keepdim=True)
    else:
        weights = g.mean((2, 3), keepdim=True)
    cam = (weights * a).sum(1).clamp_min(0)
    return _normalize(cam, hw), logits.detach()


def saliency(model: nn.Module, x: Tensor, target: int | Sequence[int] | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Gradient saliency ``max_c |∂y_t/∂x_c|`` ``(B, H, W)`` in [0, 1], and the logits."""
    _check_eager(model)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        t = _targets(target, logits)
        (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xg)
    cam = grad.abs().amax(1)
    return _normalize(cam, (x.shape[-2], x.shape[-1])), logits.detach()


def explain_batch(
    model: nn.Module,
    x: Tensor,
    method: str = "gradcam",
    target: int | Sequence[int] | Tensor | None = None,
    layer: str | None = None,
) -> tuple[Tensor, Tensor, str]:
    """Dispatch on ``method`` (one of :data:`METHODS`): ``(heatmaps (B, H, W), logits, layer name)``;
    the layer name is ``"input"`` for saliency."""
    if method == "saliency":
        heat, logits = saliency(model, x, target)
        return heat, logits, "input"
    if method not in ("gradcam", "gradcam++"):
        raise ConfigError(f"bad value for 'method': {method!r}; expected one of {', '.join(METHODS)}")
    name = layer if layer is not None else find_target_layer(model, (x.shape[-2], x.shape[-1]))[0]
    heat, logits = grad_cam(model, x, target, name, plus=method == "gradcam++")
    return heat, logits, name
