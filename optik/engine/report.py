"""End-of-run artifacts: curves, the task's plots, and a short Markdown + HTML report."""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def write_run_artifacts(trainer: Any, model: nn.Module, metrics: dict[str, Any]) -> list[Path]:
    """Plots into ``run_dir/plots`` and ``report.md``/``report.html`` into ``run_dir``."""
    from optik.viz.plots import plot_training_curves

    run_dir: Path = trainer.run_dir
    plots: list[Path] = []
    csv_path = run_dir / "metrics.csv"
    if csv_path.is_file():
        plots.append(plot_training_curves(csv_path, run_dir / "plots" / "training_curves.png"))
    plots += trainer.task.plots(run_dir, metrics, model, trainer.data.val)
    cfg = trainer.cfg
    total, trainable = count_params(model)
    best_epoch = _best_epoch(csv_path, trainer.task.fitness_key)
    lines = [
        f"# {cfg.task} run `{run_dir.name}`",
        "",
        f"- model: `{cfg.model}` — {total / 1e6:.3f} M parameters ({trainable / 1e6:.3f} M trainable)",
        f"- data: {trainer.data.description or cfg.data}",
        f"- epochs completed: {len(_rows(csv_path))} of {trainer.epochs}; best epoch: {best_epoch}",
        f"- imgsz {cfg.imgsz}, batch {cfg.batch}, optimizer {cfg.optimizer}, scheduler {cfg.scheduler}, seed {cfg.seed}",
        precision_line(cfg, getattr(trainer, "resolved", {})),
        "- weights: `weights/best.safetensors`, `weights/last.safetensors`; resume state: `weights/state.pt`",
        "",
        "## Validation (best weights)",
        "",
        *trainer.task.report_lines(metrics),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}](plots/{p.name})" for p in plots],
    ]
    md = "\n".join(lines) + "\n"
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(markdown_to_html(md, title=f"optik {cfg.task} {run_dir.name}"))
    return plots


def precision_line(cfg: Any, resolved: dict[str, str]) -> str:
    """The report's line on how the run computed: ``- precision: bf16 autocast (amp=auto), channels-last memory
    format (channels_last=auto)``; ``resolved`` is the trainer's ``{"amp": "bf16", "channels_last": "on"}``."""
    amp = resolved.get("amp", "fp32")
    if "train" in amp:  # "fp32 train, bf16 val"
        what = amp.replace("bf16", "bf16 autocast").replace("train", "training").replace("val", "validation")
    else:
        what = "fp32" if amp == "fp32" else f"{amp} autocast" + (" with loss scaling" if amp == "fp16" else "")
    layout = "channels-last" if resolved.get("channels_last") == "on" else "contiguous (NCHW)"
    compiled = ", torch.compile" if getattr(cfg, "compile", False) else ""
    return (f"- precision: {what} (amp={str(cfg.amp).lower()}), {layout} memory format "
            f"(channels_last={str(cfg.channels_last).lower()}){compiled}")


def _rows(csv_path: Path) -> list[dict[str, str]]:
    import csv

    if not csv_path.is_file():
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _best_epoch(csv_path: Path, key: str) -> str:
    rows = _rows(csv_path)
    scored = [(float(r[f"val/{key}"]), r["epoch"]) for r in rows if r.get(f"val/{key}") not in (None, "")]
    scored = [(v, e) for v, e in scored if not math.isnan(v)]
    return max(scored)[1] if scored else "n/a"


def markdown_to_html(md: str, title: str) -> str:
    """A tiny Markdown subset → standalone HTML (headings, bullets, code blocks, images)."""
    out, in_code, in_list = [], False, False
    for line in md.splitlines():
        if line.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(line))
            continue
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            item = html.escape(line[2:]).replace("**", "")
            out.append(f"<li>{_code_spans(item)}</li>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f'<figure><img src="{html.escape(src[:-1])}" alt="{html.escape(alt)}" style="max-width:720px"></figure>')
        elif line.strip():
            out.append(f"<p>{_code_spans(html.escape(line))}</p>")
    if in_list:
        out.append("</ul>")
    body = "\n".join(out)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}code{background:#f4f4f4}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _code_spans(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
