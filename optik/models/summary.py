"""What a model is made of: per-layer output shapes, parameter counts, multiply-accumulates (MACs) and,
for plain conv stacks, the receptive field.

MACs come from torch's own counter (:class:`torch.utils.flop_counter.FlopCounterMode`, per module), which
counts the matrix work — convolutions, linear layers, matmuls, attention — and, like fvcore and
``torchinfo``, ignores element-wise ops (activations, normalisation, pooling, residual adds). One MAC is
two FLOPs; a bias add is not counted. Shapes come from forward hooks on one forward pass of a
``(1, in_chans, imgsz, imgsz)`` zero image in eval mode.

The receptive field is computed analytically (Araujo et al. 2019, "Computing Receptive Fields of
Convolutional Neural Networks", Distill): along the layers in forward order, ``r += (d·(k-1)) · j`` and
``j *= s`` for each convolution / pooling of kernel ``k``, stride ``s`` and dilation ``d`` (``j``, the
product of strides so far, is the effective stride). That is only right for a *plain stack* — each layer
fed exactly the previous layer's untouched output — so anything else (a residual add, a concatenation,
attention, a functional op between layers) is reported as ``n/a (not a plain conv stack: …)`` instead of
a wrong number. The global pooling / flattening into the classifier ends the spatial part: the reported
field is that of one position of the last feature map.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3),
...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
>>> s = summarize(net, imgsz=32)
>>> s.params == sum(p.numel() for p in net.parameters()), s.receptive_field, s.effective_stride
(True, (8, 8), (2, 2))
>>> s.layers[0].name, s.layers[0].output_shape, s.layers[0].macs
('0', [1, 8, 32, 32], 221184)
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LayerInfo", "ModelSummary", "summarize"]

# Layers that act on each position separately (or only through batch statistics): they leave the
# receptive field as it is. BatchNorm in eval mode is a per-channel affine map.
_POINTWISE = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.LocalResponseNorm,
)  # fmt: skip


@dataclass
class LayerInfo:
    """One row of a :class:`ModelSummary`.

    ``name`` is the module's qualified name (``"stages.0.0"``); a container's own work — its direct
    parameters (a ViT's ``cls_token``) or functional ops between its children (attention's
    ``scaled_dot_product_attention``) — is a row named ``"<name> (own)"`` (``"(model)"`` for the root), so
    the rows add up to the totals. ``output_shape`` is of the first call (None: never called); ``macs``
    add up over ``calls``. ``receptive_field`` is after this layer, plain conv stacks only.
    """

    name: str
    type: str
    output_shape: Any
    params: int
    trainable: int
    macs: int
    calls: int
    receptive_field: tuple[int, int] | None = None


@dataclass
class ModelSummary:
    """The result of :func:`summarize`; :meth:`as_dict` is its JSON form, :meth:`table` a rich table."""

    input_shape: tuple[int, ...]
    layers: list[LayerInfo]
    params: int
    trainable_params: int
    param_bytes: int
    macs: int
    receptive_field: tuple[int, int] | None = None
    effective_stride: tuple[int, int] | None = None
    receptive_field_note: str = ""
    title: str = field(default="model summary")

    @property
    def flops(self) -> int:
        """``2 · macs`` (a multiply and an add)."""
        return 2 * self.macs

    def receptive_field_text(self) -> str:
        if self.receptive_field is None:
            return self.receptive_field_note or "n/a"
        (rh, rw), (sh, sw) = self.receptive_field, self.effective_stride or (1, 1)
        larger = ", larger than the input" if rh > self.input_shape[-2] or rw > self.input_shape[-1] else ""
        return f"{_pair(rh, rw)} px (effective stride {_pair(sh, sw)}{larger})"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists), as ``summary.json`` stores it, with ``flops`` added."""
        d = _lists(asdict(self))
        d.pop("title")
        d["flops"] = self.flops
        return d

    def table(self) -> Any:
        """A :class:`rich.table.Table` (one row per layer, totals in the caption)."""
        from rich.table import Table

        plain = self.receptive_field is not None
        t = Table(title=self.title, caption=self._caption(), caption_justify="left")
        for col, just in (("#", "right"), ("layer", "left"), ("type", "left"), ("output shape", "left"),
                          ("params", "right"), ("MACs", "right"), *((("RF", "right"),) if plain else ())):  # fmt: skip
            t.add_column(col, justify=just, no_wrap=col != "layer")
        for i, row in enumerate(self.layers):
            calls = f" ×{row.calls}" if row.calls > 1 else ""
            rf = (_pair(*row.receptive_field) if row.receptive_field else "",) if plain else ()
            shape = "" if row.output_shape is None and row.calls else _shape_text(row.output_shape)  # an "(own)" row has none
            t.add_row(str(i), row.name, row.type + calls, shape, f"{row.params:,}", _human(row.macs), *rf)
        return t

    def _caption(self) -> str:
        frozen = self.params - self.trainable_params
        return "\n".join([
            f"input {'×'.join(map(str, self.input_shape))}",
            f"params {self.params:,} ({self.param_bytes / 2**20:.2f} MiB" + (f"; {frozen:,} frozen)" if frozen else ")"),
            f"MACs {_human(self.macs)} ({self.macs:,}; FLOPs = 2 × MACs)",
            f"receptive field {self.receptive_field_text()}",
        ])  # fmt: skip

    def to_text(self, width: int = 160) -> str:
        """The table as plain text (no colour), as ``summary.txt`` stores it."""
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, legacy_windows=False).print(self.table())
        return buf.getvalue()


def _lists(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _lists(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_lists(x) for x in v]
    return v


def _pair(h: int, w: int) -> str:
    return str(h) if h == w else f"{h}×{w}"


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _shape_of(out: Any) -> Any:
    """A JSON-able description of a module's output: a tensor's shape as a list, nested for tuples / dicts."""
    if isinstance(out, Tensor):
        return list(out.shape)
    if isinstance(out, dict):  # also transformers' ModelOutput
        return {str(k): _shape_of(v) for k, v in out.items() if v is not None}
    if isinstance(out, (list, tuple)):
        return [_shape_of(v) for v in out]
    return type(out).__name__


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "(not called)"
    if isinstance(shape, list) and all(isinstance(v, int) for v in shape):
        return "×".join(map(str, shape))
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items())
    if isinstance(shape, list):
        return "(" + ", ".join(_shape_text(v) for v in shape) + ")"
    return str(shape)


def _first_tensor(args: tuple) -> Tensor | None:
    return args[0] if args and isinstance(args[0], Tensor) else None


@dataclass
class _Call:
    """One leaf-module call: what the receptive-field walk needs."""

    name: str
    module: nn.Module
    inp: Tensor | None
    inp_version: int
    out: Any
    out_version: int


def summarize(model: nn.Module, imgsz: int | tuple[int, int], in_chans: int | None = None, depth: int | None = None) -> ModelSummary:
    """Per-layer output shapes, parameters and MACs of ``model`` on a ``(1, in_chans, H, W)`` input, and its
    receptive field when it is a plain conv stack.

    Args:
        model: any ``nn.Module`` whose ``forward`` takes one image batch (run once, in eval mode, without
            gradients; its train/eval mode is restored).
        imgsz: input size, ``H = W = imgsz`` or an ``(H, W)`` pair.
        in_chans: input channels (default: the first ``Conv2d``'s ``in_channels``, else 3).
        depth: one row per module at this nesting depth (1 = the model's children) and per shallower leaf;
            default every leaf layer.

    Returns:
        A :class:`ModelSummary`; its rows' ``params`` and ``macs`` add up to the totals (every parameter
        counted once, shared ones at their first row).

    >>> from optik.models import create
    >>> s = summarize(create("cnn", num_classes=10), imgsz=32)
    >>> s.receptive_field, s.macs == sum(row.macs for row in s.layers)
    ((22, 22), True)
    >>> print(s.to_text())                                      # doctest: +SKIP
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    if in_chans is None:
        in_chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    try:
        device = next(iter(model.parameters())).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(1, in_chans, h, w, device=device)

    modules = dict(model.named_modules())
    has_children = {name: any(True for _ in m.children()) for name, m in modules.items()}
    names = {id(m): name for name, m in modules.items()}  # named_modules() lists a shared module once
    order: dict[str, int] = {}
    calls: dict[str, int] = {}
    shapes: dict[str, Any] = {}
    leaf_calls: list[_Call] = []
    pending: dict[int, list[tuple[Tensor | None, int]]] = {}
    alive: list[Any] = []  # keep every tensor seen alive, so the identity checks below stay valid

    def pre_hook(m: nn.Module, args: tuple) -> None:
        name = names.get(id(m))
        if name is None:
            return
        order.setdefault(name, len(order))
        if not has_children[name]:
            inp = _first_tensor(args)
            alive.append(inp)
            pending.setdefault(id(m), []).append((inp, inp._version if inp is not None else -1))

    def post_hook(m: nn.Module, args: tuple, out: Any) -> None:
        name = names.get(id(m))
        if name is None:
            return
        calls[name] = calls.get(name, 0) + 1
        shapes.setdefault(name, _shape_of(out))
        if not has_children[name]:
            inp, ver = pending[id(m)].pop()
            alive.append(out)
            leaf_calls.append(_Call(name, m, inp, ver, out, out._version if isinstance(out, Tensor) else -1))

    handles = []
    for m in modules.values():
        handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook)]
    modes = {m: m.training for m in modules.values()}
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            out = model(x)
    except Exception as e:  # a model that cannot take this input: say which input, not a deep traceback
        raise ValueError(f"model failed on a {tuple(x.shape)} input: {type(e).__name__}: {e}") from e
    finally:
        for hd in handles:
            hd.remove()
        for m, mode in modes.items():  # per module: a frozen BatchNorm stays in eval mode
            m.training = mode

    prefix = type(model).__name__
    flop_counts = counter.get_flop_counts()

    def macs_of(name: str) -> int:
        key = prefix if name == "" else f"{prefix}.{name}"
        return sum(flop_counts.get(key, {}).values()) // 2

    total_macs = counter.get_total_flops() // 2
    rf, why = _walk(x, out, leaf_calls)

    # Rows: modules at `depth` and shallower leaves; a container above the cut gets an "(own)" row
    # when it holds parameters itself or does matrix work between its children.
    def level(name: str) -> int:
        return 0 if name == "" else name.count(".") + 1

    cut = depth if depth is not None else 10**9
    rows: list[tuple[str, str, bool]] = []  # (module name, shown name, own-only)
    for name, m in modules.items():
        if name == "" and not has_children[name]:
            rows.append((name, "(model)", False))
        elif name != "" and (level(name) == cut or (level(name) < cut and not has_children[name])):
            rows.append((name, name, False))
        elif has_children[name] and level(name) < cut:
            child_macs = sum(macs_of(f"{name}.{c}" if name else c) for c, _ in m.named_children())
            if any(True for _ in m.parameters(recurse=False)) or macs_of(name) > child_macs:
                rows.append((name, f"{name} (own)" if name else "(model)", True))
    never = len(order)
    rows.sort(key=lambda r: (order.get(r[0], never), not r[2]))  # a container's own row before its children

    seen: set[int] = set()
    layers = []
    for name, shown, own in rows:
        m = modules[name]
        params = [p for p in m.parameters(recurse=not own) if id(p) not in seen]
        seen.update(id(p) for p in params)
        macs = macs_of(name)
        if own:
            macs -= sum(macs_of(f"{name}.{c}" if name else c) for c, _ in m.named_children())
        layers.append(LayerInfo(
            name=shown, type=type(m).__name__, output_shape=None if own else shapes.get(name),
            params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad),
            macs=macs, calls=calls.get(name, 0), receptive_field=None if own or rf is None else rf.of(name),
        ))  # fmt: skip

    unique = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(
        input_shape=tuple(x.shape), layers=layers,
        params=sum(p.numel() for p in unique), trainable_params=sum(p.numel() for p in unique if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in unique), macs=total_macs,
        receptive_field=rf.field if rf else None, effective_stride=rf.stride if rf else None,
        receptive_field_note="" if rf else f"n/a (not a plain conv stack: {why})",
        title=f"{type(model).__name__} summary",
    )  # fmt: skip


@dataclass
class _RF:
    field: tuple[int, int]
    stride: tuple[int, int]
    after: list[tuple[str, tuple[int, int]]]  # (leaf name, field after it) along the spatial part

    def of(self, row: str) -> tuple[int, int] | None:
        """The field after the last leaf call inside module ``row``."""
        hits = [f for name, f in self.after if name == row or name.startswith(row + ".")]
        return hits[-1] if hits else None


def _pair_of(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _no_space(t: Any) -> bool:
    """A vector per image: (B, F), or a (B, C, 1, 1) map — nothing left to mix across positions."""
    return isinstance(t, Tensor) and (t.ndim <= 2 or (t.ndim == 4 and tuple(t.shape[-2:]) == (1, 1)))


def _walk(x: Tensor, out: Any, leaf_calls: list[_Call]) -> tuple[_RF | None, str]:
    """Follow the leaf calls in forward order: ``(field, "")`` for a plain conv stack, else ``(None, why)``."""
    r, j = (1, 1), (1, 1)
    after: list[tuple[str, tuple[int, int]]] = []
    prev, prev_version = x, x._version
    spatial, convs = True, 0
    for call in leaf_calls:
        inp, m = call.inp, call.module
        if inp is None:
            return None, f"'{call.name}' takes no tensor"
        fed = inp is prev and call.inp_version == prev_version  # the previous layer's untouched output
        if not fed:
            # The one gap allowed: global pooling / flattening of the last feature map into the head.
            pooled = (spatial and isinstance(prev, Tensor) and prev.ndim == 4 and _no_space(inp)
                      and inp[0].numel() in (prev.shape[1], prev[0].numel()))  # fmt: skip
            if not pooled:
                return None, f"the input of '{call.name}' is not the previous layer's output"
            spatial = False
        if not spatial:
            if not (_no_space(inp) and _no_space(call.out)) and not isinstance(m, nn.Flatten):
                return None, f"'{call.name}' works on a feature map after global pooling"
        elif isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            (kh, kw), (sh, sw) = _pair_of(m.kernel_size), _pair_of(m.stride or m.kernel_size)
            dh, dw = _pair_of(getattr(m, "dilation", 1))
            r = (r[0] + dh * (kh - 1) * j[0], r[1] + dw * (kw - 1) * j[1])
            j = (j[0] * sh, j[1] * sw)
            convs += isinstance(m, nn.Conv2d)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            (ih, iw), (oh, ow) = inp.shape[-2:], call.out.shape[-2:]
            if (oh, ow) == (1, 1):
                spatial = False  # global pooling: the answer is the field of one position of its input
            elif ih % oh or iw % ow:
                return None, f"'{call.name}' pools {ih}×{iw} to {oh}×{ow} with uneven windows"
            else:  # an even adaptive pool is a plain pool with kernel = stride = in / out
                r = (r[0] + (ih // oh - 1) * j[0], r[1] + (iw // ow - 1) * j[1])
                j = (j[0] * (ih // oh), j[1] * (iw // ow))
        elif isinstance(m, nn.Flatten):
            spatial = False
        elif isinstance(m, _POINTWISE):
            if not isinstance(call.out, Tensor) or call.out.shape[-2:] != inp.shape[-2:]:
                return None, f"'{call.name}' changes the spatial size"
        else:
            return None, f"'{call.name}' ({type(m).__name__}) is not a conv, pooling or pointwise layer"
        if spatial:
            after.append((call.name, r))
        prev, prev_version = call.out, call.out_version
    if convs == 0:
        return None, "no convolution"
    if not (out is prev and isinstance(out, Tensor) and out._version == prev_version):
        return None, "the model's output is not its last layer's output"
    return _RF(r, j, after), ""
