"""The eager inference fast path: one place that makes a loaded model fast for ``val``, ``predict``,
``benchmark`` and ``serve`` on the CPU, without changing what it computes.

Why it exists. Plain eager PyTorch runs mobile convnets (EfficientNet-Lite, MobileNetV3) on the CPU far
slower than ONNX Runtime: EfficientNet-Lite0 at batch 32, 224 px took 6x ORT fp32's CPU time on one thread here
(``benchmarks/eager_vs_ort.py``; the issue measured 18-30x wall time on two shared threads). The profile
(``aten::mkldnn_convolution`` ~70 %, ``native_batch_norm`` ~18-28 %, ``clamp`` ~7 %) has four causes, and each
has a fix here:

- **Layout round trips.** On NCHW tensors every oneDNN convolution reorders its input to a blocked layout,
  its weight to a blocked layout (again on every call: eager never caches it) and its output back — for
  the 1x1 and depthwise convolutions of these nets the reorders cost more than the arithmetic. Below
  ~16 images on one thread the 1x1 convolutions also leave oneDNN for ``_slow_conv2d_forward`` (im2col + GEMM;
  ATen's backend heuristics). Fix: channels_last activations (oneDNN's native NHWC) and weights packed once per
  input shape (``torch.ops.mkldnn._reorder_convolution_weight``), run by ``torch.ops.mkldnn._convolution_pointwise``
  — the kernels ``torch.compile``'s CPU backend lowers convolutions to, without the compile time.
- **BatchNorm as a separate pass** over every activation: folded into the preceding convolution's
  weights and bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`), timm's ``BatchNormAct2d`` included.
- **The activation as a separate pass**: ReLU / ReLU6 / SiLU / Hardswish / GELU … directly after a
  convolution (or inside the folded ``BatchNormAct2d``) become the convolution's fused post-op.
- **Fresh memory for every large activation**: glibc ``mmap``s each block above 32 MB and unmaps it on free,
  so every forward page-faults its big activations in again (:func:`retain_freed_memory`; the reason PyTorch's
  CPU tuning guides recommend jemalloc / tcmalloc, and pytorch/pytorch#115990 added hugepages for >2 MB blocks).

The conv → BatchNorm → activation chains are found with :mod:`torch.fx` (a module whose output feeds
exactly one BatchNorm, called once, …) and rewritten *in place of the modules* on a copy of the module tree
(tensors shared, not copied), so the model keeps its class, methods (``forward_detect``, ``config_dict`` …) and
Python forward. A model that
cannot be traced as a whole is searched sub-module by sub-module; convolutions outside any chain are
still packed. Every :class:`FusedConv2d` falls back to ``F.conv2d`` with the folded weights where the
fast kernel does not apply (not the CPU, gradients needed, float64 / float16) or does not pay (tiny convolutions,
:data:`SMALL_MACS`), and under CPU autocast it runs the bf16 kernel on bf16-packed weights.

What it never touches: the original model (a copy is optimised), weights files (nothing is saved), training
(a model in train mode is refused), ``export`` (traces the unfused model: ONNX Runtime folds on its own) and
``explain`` (Grad-CAM hooks the original BatchNorm / activation layers and needs gradients).

Safety net: given ``check`` (a function model → outputs, e.g. the task's forward on a probe image),
:func:`optimize_for_inference` runs it on both models and returns the *original* when they disagree or the
optimised one raises. Set ``OPTIK_FASTPATH=0`` to switch the fast path off (e.g. to rule it out).

>>> import timm, torch
>>> model = timm.create_model("mobilenetv3_small_050").eval()
>>> fast = optimize_for_inference(model)
>>> fast.optik_fastpath["folded_bn"] > 0
True
>>> x = torch.randn(2, 3, 64, 64)
>>> torch.allclose(model(x), fast(x), atol=1e-4)
True
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

# Below this many multiply-adds per call a convolution runs through F.conv2d (folded weights, activation after):
# the oneDNN post-op kernel has a fixed ~20-30 us setup per call, which dominates tiny convolutions such as the
# 1x1-spatial squeeze-excite convs of MobileNetV3 (measured: 6-12 us F.conv2d vs 28-34 us packed at 1 px; the
# packed kernel is as fast or faster from ~0.5M MACs up, 4x faster on the 112 px 1x1 convs).
SMALL_MACS = 200_000
# How many packed weights one convolution keeps (one per input shape and dtype seen); a model fed many sizes
# reuses the first one beyond this (oneDNN reorders a mismatching packed weight itself: correct, a bit slower).
MAX_PACKED = 4


def _act_post_op(act: nn.Module) -> tuple[str, list[float], str] | None:
    """oneDNN's post-op (name, scalars, algorithm) computing ``act`` exactly as torch does; None if there is none.
    Only these exact classes: a subclass may compute something else in its forward."""
    kind = type(act)
    if kind is nn.ReLU:
        return "relu", [], ""
    if kind is nn.ReLU6:
        return "hardtanh", [0.0, 6.0], ""
    if kind is nn.Hardtanh:
        return "hardtanh", [float(act.min_val), float(act.max_val)], ""
    if kind is nn.SiLU:
        return "swish", [], ""
    if kind is nn.Hardswish:
        return "hardswish", [], ""
    if kind is nn.Hardsigmoid:
        return "hardsigmoid", [], ""
    if kind is nn.Sigmoid:
        return "sigmoid", [], ""
    if kind is nn.Tanh:
        return "tanh", [], ""
    if kind is nn.LeakyReLU:
        return "leaky_relu", [float(act.negative_slope)], ""
    if kind is nn.GELU:
        return "gelu", [], act.approximate  # "none" | "tanh"
    if kind is nn.Identity:
        return "none", [], ""
    return None


@functools.cache
def _ops_available() -> bool:
    """Whether this torch build has oneDNN and the two (private, but what ``torch.compile`` lowers CPU
    convolutions to) ops the fast path calls."""
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"))  # fmt: skip


def _kernel_available() -> bool:
    return torch.backends.mkldnn.enabled and _ops_available()  # the flag: torch.backends.mkldnn.flags(enabled=False)


class FusedConv2d(nn.Module):
    """``act(bn(conv(x)))`` as one oneDNN convolution: BatchNorm folded into the weights, the activation
    a fused post-op, channels_last activations and weights packed once per input shape.

    Inference only: the weights are frozen (``requires_grad=False``; without a BatchNorm they share the conv's
    storage); with gradients needed, on another device or dtype, or for a tiny problem (:data:`SMALL_MACS`) it
    computes the same with ``F.conv2d`` + the activation module.

    >>> conv, bn = nn.Conv2d(3, 8, 3, padding=1).eval(), nn.BatchNorm2d(8).eval()
    >>> fused = FusedConv2d(conv, bn, nn.ReLU())
    >>> x = torch.randn(1, 3, 16, 16)
    >>> torch.allclose(fused(x), torch.relu(bn(conv(x))), atol=1e-5)
    True
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, act: nn.Module | None = None) -> None:
        super().__init__()
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else None
        if bn is not None:
            weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        post = _act_post_op(act) if act is not None else ("none", [], "")
        if post is None:
            raise ValueError(f"no fused post-op for {type(act).__name__}")
        # The caller's conv / bn are not used afterwards (they belong to the copy being rewritten): no clone.
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.act = act if act is not None and type(act) is not nn.Identity else None
        self.post_op, self.post_scalars, self.post_algorithm = post
        self.folded_bn = bn is not None
        self.same_pad = _conv_kind(conv) == "same"  # pad like TensorFlow "SAME" per input size (conv padding is 0)
        self._packed: dict[tuple[torch.dtype, tuple[int, ...]], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, stride={tuple(self.stride)}, "
                f"groups={self.groups}, folded_bn={self.folded_bn}, post_op={self.post_op!r}")  # fmt: skip

    def _packed_weight(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        packed = self._packed.get((dtype, shape))
        if packed is not None:
            return packed
        if len(self._packed) >= MAX_PACKED:  # many input sizes: reuse one packed for this dtype (still exact)
            same = [w for (d, _), w in self._packed.items() if d == dtype]
            if same:
                return same[0]
        packed = self._pack(dtype, shape)
        if len(self._packed) < MAX_PACKED:
            self._packed[(dtype, shape)] = packed  # a race between threads only packs twice
        return packed

    def _pack(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            self.weight.to(dtype).contiguous(), self.padding, self.stride, self.dilation, self.groups, list(shape))

    def _macs(self, shape: torch.Size) -> int:
        """Multiply-adds of one call on an input of ``shape`` (N, C, H, W)."""
        n, _, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return n * max(ho, 0) * max(wo, 0) * self.out_channels * (self.in_channels // self.groups) * kh * kw

    def _fast_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype the oneDNN kernel runs in for ``x``, or None when the reference path must run."""
        if x.device.type != "cpu" or x.dim() != 4 or (x.requires_grad and torch.is_grad_enabled()) or not _kernel_available():
            return None
        if self._macs(x.shape) < SMALL_MACS:
            return None
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16 and x.dtype in (torch.float32, torch.bfloat16):
            return torch.bfloat16  # what autocast would run the convolution in
        return x.dtype if x.dtype in (torch.float32, torch.bfloat16) else None

    def _pad_same(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``pad_same``: TensorFlow's "SAME" padding for this input size, the extra pixel right/bottom."""
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = self._pad_same(x)
        dtype = self._fast_dtype(x)
        if dtype is None:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return self.act(y) if self.act is not None else y
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        bias = self.bias.to(dtype) if self.bias is not None else None
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_weight(dtype, tuple(x.shape)), bias, self.padding, self.stride, self.dilation, self.groups,
            self.post_op, self.post_scalars, self.post_algorithm)  # fmt: skip


def _timm_layers() -> Any:
    """``timm.layers`` if timm is already imported, else None: a model holding timm modules has imported it,
    and importing timm (~2 s) for a model that has none would only cost time."""
    return sys.modules.get("timm.layers")


def _same_conv_class() -> type | None:
    return getattr(_timm_layers(), "Conv2dSame", None)


def _conv_kind(m: nn.Module) -> str | None:
    """``"plain"`` for a 2-D convolution whose forward is exactly ``nn.Conv2d.forward`` with numeric zero
    padding, ``"same"`` for timm's ``Conv2dSame`` (TensorFlow "SAME" padding, asymmetric at stride 2: the
    ``tf_`` EfficientNets), None for anything else (weight-standardised convs … compute something else)."""
    if not isinstance(m, nn.Conv2d) or m.weight.dtype != torch.float32 or m.weight.device.type != "cpu":
        return None
    same = _same_conv_class()
    if same is not None and type(m) is same and type(m).forward is same.forward:
        return "same"
    if type(m).forward is nn.Conv2d.forward and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return "plain"
    return None


def _plain_conv(m: nn.Module) -> bool:
    return _conv_kind(m) is not None


def _bn_act_class() -> type | None:
    return getattr(_timm_layers(), "BatchNormAct2d", None)


def _foldable_bn(bn: nn.Module, conv: nn.Conv2d) -> bool:
    """A BatchNorm2d (or timm's BatchNormAct2d with a no-op dropout) in eval mode that normalises with its
    running statistics — an affine map that can be folded into ``conv``."""
    bn_act = _bn_act_class()
    if type(bn) is nn.BatchNorm2d:
        pass
    elif bn_act is not None and type(bn) is bn_act and type(bn).forward is bn_act.forward:
        if not (isinstance(bn.drop, (nn.Identity, nn.Dropout)) and not bn.drop.training):
            return False
    else:
        return False
    return bool(not bn.training and bn.running_mean is not None and bn.running_var is not None
                and bn.num_features == conv.out_channels)  # fmt: skip


def _tracer() -> torch.fx.Tracer:
    """An fx tracer that stops at BatchNorm layers (timm's BatchNormAct2d would be traced through) and at
    what timm marks untraceable."""
    leaves: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)
    autowrap: tuple[Callable[..., Any], ...] = ()
    timm_layers = _timm_layers()
    if timm_layers is not None and hasattr(timm_layers, "get_notrace_modules"):
        leaves += tuple(timm_layers.get_notrace_modules())
        autowrap = tuple(f for f in timm_layers.get_notrace_functions() if callable(f))

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    return Tracer(autowrap_functions=autowrap)


Chain = tuple[str, str | None, str | None]  # (conv path, batchnorm path or None, activation path or None)


def find_chains(model: nn.Module) -> list[Chain]:
    """The conv → BatchNorm → activation chains of ``model`` that can become one :class:`FusedConv2d`.

    A link counts only when the earlier module's output feeds nothing but the next one and every module in
    the chain is called once. Traced with :mod:`torch.fx`; a module that cannot be traced (data-dependent
    control flow: detectors, hf models) is searched child by child.
    """
    chains: list[Chain] = []

    def visit(module: nn.Module, prefix: str) -> None:
        # A chain needs a module calling a conv and what follows it: leaves and conv-free subtrees have none.
        if not any(True for _ in module.children()) or not any(_plain_conv(m) for m in module.modules()):
            return
        try:
            graph = _tracer().trace(module)
        except Exception:  # noqa: BLE001 — any tracing failure: look inside instead
            for name, child in module.named_children():
                visit(child, f"{prefix}{name}.")
            return
        mods = dict(module.named_modules())
        calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

        def sole_user(node: torch.fx.Node) -> torch.fx.Node | None:
            users = list(node.users)
            if len(users) != 1:
                return None
            user = users[0]
            if user.op != "call_module" or calls[user.target] != 1 or user.args != (node,) or user.kwargs:
                return None
            return user

        for node in graph.nodes:
            if node.op != "call_module" or calls[node.target] != 1 or not _plain_conv(mods[node.target]):
                continue
            if len(node.args) != 1 or node.kwargs:
                continue
            conv = mods[node.target]
            bn_node = sole_user(node)
            if bn_node is not None and not _foldable_bn(mods[bn_node.target], conv):
                bn_node = None
            bn = mods[bn_node.target] if bn_node is not None else None
            act_node = None
            if bn is None or type(bn) is nn.BatchNorm2d:  # timm's BatchNormAct2d carries its activation inside
                act_node = sole_user(bn_node if bn_node is not None else node)
                if act_node is not None and _act_post_op(mods[act_node.target]) is None:
                    act_node = None
            chains.append((prefix + str(node.target), prefix + str(bn_node.target) if bn_node is not None else None,
                           prefix + str(act_node.target) if act_node is not None else None))  # fmt: skip

    visit(model, "")
    return chains


def _structural_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the modules that shares the parameter and buffer tensors: rewriting its module tree
    leaves ``model`` as it was, and costs no weight copies (nothing here writes to a tensor)."""
    return copy.deepcopy(model, {id(t): t for t in (*model.parameters(), *model.buffers())})


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def fuse_model(model: nn.Module) -> dict[str, int]:
    """Rewrite ``model`` in place: every chain of :func:`find_chains` → one :class:`FusedConv2d` (the
    BatchNorm / activation modules become ``nn.Identity``; a BatchNormAct2d whose activation has no fused
    post-op keeps that activation), and every other plain convolution → a packed :class:`FusedConv2d`.
    Returns counts: ``convs``, ``folded_bn``, ``fused_act``."""
    bn_act = _bn_act_class()
    counts = {"convs": 0, "folded_bn": 0, "fused_act": 0}
    chained = set()
    # Traced on a throwaway copy: tracing runs forward code, and some caches state on the module as it goes
    # (torchvision's MultiScaleRoIAlign keeps its scales) — proxies there would break the real model.
    for conv_path, bn_path, act_path in find_chains(_structural_copy(model)):
        conv = model.get_submodule(conv_path)
        bn = model.get_submodule(bn_path) if bn_path else None
        act, keep = (model.get_submodule(act_path) if act_path else None), None
        if bn is not None and bn_act is not None and type(bn) is bn_act:
            act, keep = (bn.act, None) if _act_post_op(bn.act) is not None else (None, bn.act)
        _set(model, conv_path, FusedConv2d(conv, bn, act))
        if bn_path:
            _set(model, bn_path, keep if keep is not None else nn.Identity())
        if act_path:
            _set(model, act_path, nn.Identity())
        chained.add(conv_path)
        counts["convs"] += 1
        counts["folded_bn"] += bn is not None
        counts["fused_act"] += act is not None and type(act) is not nn.Identity
    for path, m in list(model.named_modules()):
        if path and path not in chained and _plain_conv(m):
            _set(model, path, FusedConv2d(m))
            counts["convs"] += 1
    return counts


def outputs_match(a: Any, b: Any, rtol: float = 1e-3, atol: float = 1e-3) -> bool:
    """Whether two model outputs (tensors, arrays, and dicts / lists / tuples of them) agree: same structure,
    shapes and dtypes, values within ``rtol`` and ``atol`` x the reference's largest magnitude.

    >>> outputs_match({"x": torch.ones(2)}, {"x": torch.ones(2) + 1e-6})
    True
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return bool(torch.equal(a, b))
        a, b = a.detach().float(), b.detach().float()
        scale = float(a.abs().max()) if a.numel() else 0.0
        return bool(torch.allclose(a, b, rtol=rtol, atol=atol * max(scale, 1.0), equal_nan=True))
    if isinstance(a, np.ndarray):
        return outputs_match(torch.from_numpy(a), torch.from_numpy(np.asarray(b)), rtol, atol)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(outputs_match(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(outputs_match(x, y, rtol, atol) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 — an output type without a truthy ==: do not claim it differs
        return True


_MALLOC_SET = False


def retain_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the OS (once per process;
    Linux/glibc only; skipped when ``MALLOC_*`` variables or an ``LD_PRELOAD``-ed allocator — jemalloc,
    tcmalloc, mimalloc — already decide). Returns whether it is set now.

    Why: glibc serves every block above its mmap threshold (at most 32 MB, dynamically) with a fresh
    ``mmap`` and unmaps it on free, so each large activation of a batch — 154 MB for the 96 x 112 x 112
    maps of EfficientNet-Lite0 at batch 32 — is faulted in page by page on every forward. Measured here
    (shared 2-core VM, one thread): a 154 MB ``clone`` 250-300 ms fresh vs ~60 ms on retained memory; the fused
    Lite0 at batch 32 2.3 s → 1.35 s, the unfused one 5.9 s → 2.8 s. ONNX Runtime avoids this with its own memory arena; Intel's PyTorch CPU tuning guide
    recommends jemalloc/tcmalloc for the same reason. Cost: the process's resident memory stays near
    its peak (as with those allocators).
    """
    global _MALLOC_SET
    if _MALLOC_SET:
        return True
    import platform

    preload = os.environ.get("LD_PRELOAD", "")
    if (not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
            or any(k.startswith("MALLOC_") for k in os.environ) or any(a in preload for a in ("jemalloc", "tcmalloc", "mimalloc"))):  # fmt: skip
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        # 1 GiB: blocks below it come from the heap, and up to that much freed memory stays for reuse.
        _MALLOC_SET = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False
    return _MALLOC_SET


def enabled() -> bool:
    """False when ``OPTIK_FASTPATH=0`` (or ``false`` / ``off``) switches the fast path off."""
    return os.environ.get("OPTIK_FASTPATH", "1").strip().lower() not in ("0", "false", "off", "no")


def optimize_for_inference(model: nn.Module, device: torch.device | str | None = None, *,
                           check: Callable[[nn.Module], Any] | None = None) -> nn.Module:  # fmt: skip
    """A faster copy of an eval-mode ``model`` for CPU inference (see the module docstring for what and why),
    or ``model`` itself where there is nothing to do (not on the CPU, no plain convolutions, an exported /
    TorchScript model, ``OPTIK_FASTPATH=0``) or the copy fails ``check``.

    The returned copy carries ``optik_fastpath`` = ``{"convs", "folded_bn", "fused_act"}`` counts. bf16: run
    it under ``torch.autocast("cpu", torch.bfloat16)`` as the eager model (the fused convolutions follow).

    Args:
        model: the model, in eval mode (a :class:`ValueError` otherwise: never optimise a model that trains).
        device: where it runs (default: where its parameters are).
        check: ``model -> outputs``; when given it runs on both models (under ``torch.inference_mode``) and the
            original is returned if the outputs differ (:func:`outputs_match`) or the copy raises.
    """
    from optik.device import model_device

    if model.training:
        raise ValueError("optimize_for_inference needs a model in eval mode (call .eval(); never optimise one that trains)")
    device = torch.device(device) if device is not None else model_device(model)
    if not enabled() or device.type != "cpu" or not _kernel_available():
        return model
    if isinstance(model, torch.jit.ScriptModule) or any(isinstance(m, (torch.jit.ScriptModule, FusedConv2d)) for m in model.modules()):
        return model  # TorchScript can't be rewritten; an optimised model is not optimised twice
    if not any(_plain_conv(m) for m in model.modules()):
        return model
    with torch.no_grad():
        fast = _structural_copy(model)
        counts = fuse_model(fast)
    fast.optik_fastpath = counts
    retain_freed_memory()
    if check is not None:
        try:
            with torch.inference_mode():
                ref, out = check(model), check(fast)
        except Exception as e:  # noqa: BLE001 — a model the rewrite broke runs unoptimised
            log.info("eager fast path off for %s: the optimised model raised %s: %s", type(model).__name__, type(e).__name__, e)
            return model
        if not outputs_match(ref, out):
            log.warning("eager fast path off for %s: its outputs differ from the original's", type(model).__name__)
            return model
    log.debug("eager fast path for %s: %s", type(model).__name__, counts)
    return fast


def optimize_loaded(task: Any, model: nn.Module, imgsz: int | None = None) -> nn.Module:
    """:func:`optimize_for_inference` for a model loaded by :func:`optik.engine.inference.load_trained`,
    checked on a probe image made by the task's own eval transform (so the probe has the channels, size and
    normalisation the model sees): ``task.forward`` must run on the copy, and the outputs must agree — the
    task's when they are a tensor, else the model's own ``model(x)`` (before NMS-like post-processing).

    >>> task, model, cfg = load_trained(cfg)          # doctest: +SKIP
    >>> model = optimize_loaded(task, model)          # doctest: +SKIP
    """
    from optik.device import model_device

    if not enabled() or model.training or model_device(model).type != "cpu":
        return model
    size = int(imgsz or getattr(task.cfg, "imgsz", 0) or 64)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    try:
        probe = task.transforms(train=False)(image).unsqueeze(0)
    except Exception as e:  # noqa: BLE001 — a task without an image transform: no probe, no fast path
        log.info("eager fast path off: no probe input (%s: %s)", type(e).__name__, e)
        return model

    def check(m: nn.Module) -> Any:
        out = task.forward(m, probe)  # what the runners call: it must run
        if isinstance(out, torch.Tensor):
            return out
        # Post-processed outputs (a detector's NMS, top-k) reorder on near-ties — a random-init detector's scores
        # agree to 1e-8 — so the numbers are compared on the model's own outputs where its forward takes the batch.
        try:
            return "model(x)", m(probe)
        except Exception:  # noqa: BLE001 — e.g. a detector whose forward wants a list: compare the task's outputs
            return "task.forward", out

    return optimize_for_inference(model, check=check)


__all__ = ["FusedConv2d", "enabled", "find_chains", "fuse_model", "optimize_for_inference", "optimize_loaded", "outputs_match",
           "retain_freed_memory"]
