"""Magnitude pruning of a trained model with ``torch.nn.utils.prune``, a short fine-tune that keeps the
pruned weights at zero, and a sparsity-vs-accuracy table (the accuracy: the task's ``fitness_key`` on the
val split; ``optik classify prune`` — the catalog lists which tasks offer the mode).

- ``method=unstructured``: ``global_unstructured`` L1 over every conv and linear weight, so layers
  with many small weights give up more (Han et al. 2015, "Learning both Weights and Connections").
- ``method=structured``: ``ln_structured`` (L2 norm, n=2) over each conv's output channels, whole
  filters at a time (Li et al. 2017, "Pruning Filters for Efficient ConvNets").

The masks are made permanent (``prune.remove``) so the weights stay plain tensors that every
loader reads; during the fine-tune :class:`KeepPruned` re-applies them after each optimizer step.
Dense kernels do not run faster on zeros: the gain is the compressed file size (and, for
structured pruning, channels a later export could drop).

>>> rows = prune(build_config("classify", "prune", {"model": "runs/classify/train", "amount": [0.5]}))  # doctest: +SKIP
>>> rows[0]["sparsity"]                                                                                 # doctest: +SKIP
0.5
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as tprune
from torch.utils.data import DataLoader

from optik import catalog
from optik.config import TrainConfig, build_config
from optik.config.classify import PruneConfig
from optik.console import console
from optik.device import resolve_device
from optik.engine.evaluate import evaluate
from optik.engine.rundir import new_run_dir
from optik.errors import ConfigError
from optik.weights import load_state_dict, resolve_model_arg, save_weights

log = logging.getLogger(__name__)

# How a metric key reads in the table, report and plot (default: the key itself).
LABELS = {"top1": "top-1"}


def prunable(model: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` whose ``weight`` the method prunes: conv + linear (unstructured) or conv (structured)."""
    kinds = (nn.Conv2d, nn.Linear) if method == "unstructured" else (nn.Conv2d,)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), Tensor)]


def apply_pruning(model: nn.Module, method: str, amount: float) -> dict[str, Tensor]:
    """Prune ``model`` in place and make it permanent; returns ``{"<module>.weight": 0/1 mask}``.

    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    >>> masks = apply_pruning(m, "unstructured", 0.5)
    >>> sorted(masks), round(sparsity(m, masks), 3)
    (['0.weight', '2.weight'], 0.5)
    >>> masks = apply_pruning(m, "structured", 0.25)   # 2 of the conv's 8 filters, the lowest L2 norms
    >>> int((m[0].weight.flatten(1) == 0).all(1).sum())
    2
    """
    targets = prunable(model, method)
    if not targets:
        raise ConfigError(f"bad value for 'method': {method!r} finds no {'conv' if method == 'structured' else 'conv/linear'} weights to prune in {type(model).__name__}")
    if method == "unstructured":
        tprune.global_unstructured([(m, "weight") for _, m in targets], pruning_method=tprune.L1Unstructured, amount=amount)
    else:
        for _, m in targets:
            tprune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
    masks = {}
    for name, m in targets:
        masks[f"{name}.weight" if name else "weight"] = m.weight_mask.detach().clone()
        tprune.remove(m, "weight")  # weight_orig * mask → a plain Parameter again (same state_dict keys)
    return masks


def sparsity(model: nn.Module, masks: dict[str, Tensor]) -> float:
    """Fraction of zeros among the weights the masks cover (what ``amount`` asks for)."""
    params = dict(model.named_parameters())
    zeros = sum(int((params[k] == 0).sum()) for k in masks)
    return zeros / max(1, sum(params[k].numel() for k in masks))


class KeepPruned:
    """Trainer callback: multiplies the pruned weights by their masks after every batch (so after
    every optimizer step), in the model and in its EMA copy: AdamW's momentum and weight decay would
    otherwise move the zeros away from zero. ``all_ranks``: under torchrun every process masks its
    replica (the trainer runs only such callbacks on ranks other than 0).

    >>> Trainer(train_cfg, callbacks=[KeepPruned(masks)]).fit()      # doctest: +SKIP
    """

    all_ranks = True

    def __init__(self, masks: dict[str, Tensor]) -> None:
        self.masks = masks
        self.pairs: list[tuple[Tensor, Tensor]] = []

    def on_train_start(self, trainer: Any) -> None:
        models = [trainer.model] + ([trainer.ema.module] if getattr(trainer, "ema", None) is not None else [])
        self.pairs = []
        for model in models:
            params = dict(model.named_parameters())
            self.pairs += [(params[k], m.to(params[k].device, params[k].dtype)) for k, m in self.masks.items()]
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for p, mask in self.pairs:
            p.mul_(mask)

    def on_batch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.apply()


def _file_sizes(path: Path) -> tuple[float, float]:
    """``(MB, gzip MB)`` of a weights file; zeros compress, so the second shows what pruning saves."""
    raw = path.read_bytes()
    return len(raw) / 1e6, len(gzip.compress(raw, compresslevel=6)) / 1e6


def _nonzero(model: nn.Module) -> tuple[int, int]:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters()), sum(p.numel() for p in model.parameters())


def _finetune_config(cfg: PruneConfig, vcfg: Any, weights: Path, project: Path, name: str) -> TrainConfig:
    """The prune config as the task's train config on the same data split, starting from ``weights``."""
    train_cls = catalog.load(catalog.mode(cfg.task, "train").config)
    values = {k: getattr(cfg, k) for k in train_cls.model_fields if k not in ("task", "mode") and k in type(cfg).model_fields}
    values.update(
        model=str(weights), data=vcfg.data, imgsz=vcfg.imgsz, val_fraction=vcfg.val_fraction, seed=vcfg.seed,
        project=str(project), name=name, exist_ok=True, resume=False, save_period=-1, plots=False,
    )
    return train_cls(task=cfg.task, mode="train", **values)


def prune(cfg: PruneConfig) -> list[dict[str, Any]]:
    """``optik TASK prune``: one row per ``cfg.amount``. Writes ``runs/<task>/prune*/`` with
    ``table.csv``, ``results.json``, ``sparsity_accuracy.png``, ``report.md`` and
    ``weights/<method>-<amount>.safetensors`` (loadable by ``Model(...)``; fine-tuned when ``epochs > 0``).

    Row keys: ``method, amount, sparsity`` (zeros among the pruned weights), ``model_sparsity``
    (among all parameters), ``nonzero_params, params, size_mb, gzip_mb``, ``<key>_pruned``, ``<key>_finetuned``
    (``<key>``: the task's ``fitness_key``, e.g. ``top1_pruned``).
    """
    from optik.engine.inference import load_trained
    from optik.engine.trainer import Trainer

    if not cfg.model:
        raise ConfigError(f"missing key 'model' for {cfg.task} prune (trained weights, e.g. model=runs/{cfg.task}/train)")
    _, weights, meta = resolve_model_arg(cfg.model)
    if weights is None or weights.suffix != ".safetensors":
        raise ConfigError(f"bad value for 'model': {cfg.model!r} (prune needs trained optik weights: a .safetensors file or a run directory)")
    # Evaluate on the split the weights were trained on, unless the user names other data/size.
    keep = {k: getattr(cfg, k) for k in ("data", "imgsz", "val_fraction", "seed") if k in cfg.model_fields_set}
    vcfg = build_config(cfg.task, "val", {
        "model": str(weights), "batch": cfg.batch, "workers": cfg.workers, "device": cfg.device, "amp": cfg.amp, **keep,
    })
    task, base, vcfg = load_trained(vcfg)
    if vcfg.data is None:
        raise ConfigError("missing key 'data' (the weights do not record the data they were trained on)")
    data = task.datasets()
    if data.val is None or len(data.val) == 0:
        raise ConfigError(f"data: {vcfg.data!r} has no val split to measure pruning on")
    device = resolve_device(cfg.device)
    loader = DataLoader(data.val, batch_size=cfg.batch, num_workers=cfg.workers, collate_fn=task.collate)

    key = task.fitness_key
    run_dir = new_run_dir(cfg.project, cfg.task, cfg.name or "prune", cfg.exist_ok)
    (run_dir / "weights").mkdir(exist_ok=True)
    base_meta = dict(meta)
    dense_mb, dense_gz = _file_sizes(weights)  # the input weights are the dense model
    nz, total = _nonzero(base)
    baseline = {
        "method": "dense", "amount": 0.0, "sparsity": 0.0, "model_sparsity": 1 - nz / total, "nonzero_params": nz,
        "params": total, "size_mb": dense_mb, "gzip_mb": dense_gz, key: float(evaluate(task, base, loader, device, cfg.amp)[key]),
    }

    rows: list[dict[str, Any]] = []
    for amount in cfg.amount:
        tag = f"{cfg.method}-{amount:g}"
        model = copy.deepcopy(base)
        masks = apply_pruning(model, cfg.method, amount)
        pruned_score = float(evaluate(task, model, loader, device, cfg.amp)[key])
        info = {"method": cfg.method, "amount": amount, "source": str(weights), "epochs": cfg.epochs}
        out = run_dir / "weights" / f"{tag}.safetensors"
        save_weights(model.state_dict(), out, {**base_meta, "prune": info})
        tuned_score = None
        if cfg.epochs > 0:
            tcfg = _finetune_config(cfg, vcfg, out, run_dir / "finetune", tag)
            result = Trainer(tcfg, callbacks=[KeepPruned(masks)]).fit()
            model.load_state_dict(load_state_dict(result["best"]))
            tuned_score = float(result["metrics"][key]) if key in result["metrics"] else None
            info[f"{key}_finetuned"] = tuned_score
            save_weights(model.state_dict(), out, {**base_meta, "prune": info})
        size_mb, gzip_mb = _file_sizes(out)
        nz, total = _nonzero(model)
        rows.append({
            "method": cfg.method, "amount": amount, "sparsity": sparsity(model, masks), "model_sparsity": 1 - nz / total,
            "nonzero_params": nz, "params": total, "size_mb": size_mb, "gzip_mb": gzip_mb,
            f"{key}_pruned": pruned_score, f"{key}_finetuned": tuned_score, "weights": str(out),
        })
    _write_artifacts(run_dir, cfg, str(weights), baseline, rows, key)
    _print_table(baseline, rows, key)
    console.print(f"Results saved to [bold]{run_dir}[/bold]")
    return rows


def _print_table(baseline: dict[str, Any], rows: list[dict[str, Any]], key: str) -> None:
    from rich.table import Table

    label = LABELS.get(key, key)
    table = Table(title="pruning: sparsity vs accuracy")
    for c in ("method", "amount", "sparsity", "nonzero", "MB", "gzip MB", f"{label} pruned", f"{label} fine-tuned"):
        table.add_column(c, justify="left" if c == "method" else "right")
    fmt = lambda v: "–" if v is None else f"{v:.4f}"
    table.add_row("dense", "0", "0", f"{baseline['nonzero_params']:,}", f"{baseline['size_mb']:.3f}", f"{baseline['gzip_mb']:.3f}", fmt(baseline[key]), "")
    for r in rows:
        table.add_row(
            r["method"], f"{r['amount']:g}", f"{r['sparsity']:.3f}", f"{r['nonzero_params']:,}", f"{r['size_mb']:.3f}",
            f"{r['gzip_mb']:.3f}", fmt(r[f"{key}_pruned"]), fmt(r[f"{key}_finetuned"]),
        )
    console.print(table)


def _write_artifacts(run_dir: Path, cfg: PruneConfig, source: str, baseline: dict[str, Any], rows: list[dict[str, Any]], key: str) -> None:
    keys = list(rows[0])
    with open(run_dir / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (run_dir / "results.json").write_text(json.dumps({"source": source, "method": cfg.method, "epochs": cfg.epochs, "lr": cfg.lr, "baseline": baseline, "rows": rows}, indent=2))
    plot = _plot(run_dir / "sparsity_accuracy.png", baseline, rows, key)
    label = LABELS.get(key, key)
    lines = [
        f"# {cfg.task} prune of `{source}`",
        "",
        f"- method: {cfg.method} ({'global L1 over conv + linear weights' if cfg.method == 'unstructured' else 'L2 norm of conv output channels'}), "
        f"fine-tune {cfg.epochs} epoch(s) at lr {cfg.lr} with the masks re-applied after every step",
        f"- dense: {label} {baseline[key]:.4f}, {baseline['params']:,} parameters, {baseline['size_mb']:.3f} MB ({baseline['gzip_mb']:.3f} MB gzip)",
        "- safetensors stores zeros densely: the file size stays, the gzip size shows the saving; dense kernels run no faster",
        "",
        f"| amount | sparsity | nonzero params | MB | gzip MB | {label} pruned | {label} fine-tuned | weights |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ft = "–" if r[f"{key}_finetuned"] is None else f"{r[f'{key}_finetuned']:.4f}"
        lines.append(
            f"| {r['amount']:g} | {r['sparsity']:.3f} | {r['nonzero_params']:,} | {r['size_mb']:.3f} | {r['gzip_mb']:.3f} | "
            f"{r[f'{key}_pruned']:.4f} | {ft} | `weights/{Path(r['weights']).name}` |"
        )
    lines += ["", f"![sparsity vs accuracy]({plot.name})", ""]
    (run_dir / "report.md").write_text("\n".join(lines))


def _plot(path: Path, baseline: dict[str, Any], rows: list[dict[str, Any]], key: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    dense = (0.0, baseline[key])  # every curve starts at the unpruned model
    ax.plot(*zip(dense, *[(r["sparsity"], r[f"{key}_pruned"]) for r in rows]), "o-", label="pruned")
    ft = [(r["sparsity"], r[f"{key}_finetuned"]) for r in rows if r[f"{key}_finetuned"] is not None]
    if ft:
        ax.plot(*zip(dense, *ft), "s--", label="pruned + fine-tuned")
    ax.axhline(baseline[key], color="grey", ls=":", label="dense")
    ax.set_xlabel("sparsity (zeros among the pruned weights)")
    ax.set_ylabel(f"val {LABELS.get(key, key)}")
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["KeepPruned", "apply_pruning", "prunable", "prune", "sparsity"]
