"""A new user's first run: every training command of README.md's quick start, exactly as printed.

Each runnable command (built-in data, no hub weights) runs as its own ``optik`` process (``torchrun`` for the
DDP line) with only ``project=`` / ``name=`` added so its run directory can be found; the table gives the val
metric of its best weights (top-1, or mAP for multi-label data), epochs, the learning rate it used and the
wall time of the whole command (start-up, data, training, plots). Extra rows: the command from issue 14
(digits, ``epochs=4``), the same run with the old photo defaults (AdamW 1e-3, flips, a 0.6-1.0 crop) for
comparison, and ``lr=auto`` on digits (what the range test picks).

Goals: digits ``epochs=4`` ≥ 95 %, digits ``epochs=10`` ≥ 98 %, the shapes example clearly above chance
(4 classes: 25 %; goal ≥ 50 %).

    python benchmarks/first_run.py [only=<substrings of commands, comma-separated>]
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.config import build_config  # noqa: E402
from optik.engine.optim import peak_lr, starts_from_weights  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
DIGITS_4 = "optik classify train data=digits model=cnn epochs=4 imgsz=32"  # issue 14's command
EXTRA = [
    (DIGITS_4, "issue 14"),
    (DIGITS_4 + " lr=1e-3 hflip=0.5 scale=[0.6,1.0]", "old defaults"),
    (DIGITS_4 + " lr=auto", "lr=auto"),
    ("optik classify train data=digits model=cnn epochs=10 imgsz=32 lr=auto", "lr=auto"),
]


def keys(cmd: str) -> dict[str, str]:
    """The ``key=value`` arguments of a command line (shell quoting undone)."""
    return dict(a.split("=", 1) for a in shlex.split(cmd) if "=" in a and not a.startswith("--"))


def goal(cmd: str, source: str) -> tuple[str, float | None]:
    """The accuracy goal of a command (text, threshold) — only where one was set."""
    args = keys(cmd)
    data, epochs = args.get("data", ""), args.get("epochs")
    if source == "old defaults" or "torchrun" in cmd:
        return "", None
    if data == "digits" and epochs in ("4", "10"):
        return (">= 0.95", 0.95) if epochs == "4" else (">= 0.98", 0.98)
    if data.split("?")[0] == "synthetic:shapes":
        return ">= 0.50 (chance 0.25)", 0.50
    return "", None


def quick_start_commands(readme: Path = README) -> list[str]:
    """The ``optik … train`` / ``torchrun … train`` lines of the README's quick start, comments stripped."""
    text = readme.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if re.match(r"^(optik|torchrun .* -m optik) \w+ train\b", line):
                cmds.append(line)
    return cmds


def runnable(cmd: str) -> str | None:
    """Why ``cmd`` cannot run here (placeholder data, hub weights), or None."""
    args = keys(cmd)
    data = args.get("data", "")
    if not (data == "digits" or data.startswith("digits?") or data.startswith("synthetic:")):
        return f"data={data} is a placeholder for your own data"
    if args.get("pretrained") == "true" or args.get("model", "").startswith("hf:"):
        return "needs hub weights (offline here)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv(cmd: str, project: Path, name: str) -> list[str]:
    words = shlex.split(cmd)
    tail = [f"project={project}", f"name={name}"]
    if words[0] == "torchrun":
        m = words.index("-m")
        nproc = [w for w in words[1:m] if w.startswith("--nproc_per_node")]
        return [sys.executable, "-m", "torch.distributed.run", *nproc, "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", "-m", "optik", *words[m + 2 :], *tail]  # fmt: skip
    return [sys.executable, "-m", "optik", *words[1:], *tail]


def run(cmd: str, project: Path, name: str) -> dict:
    t0 = time.time()
    p = subprocess.run(argv(cmd, project, name), capture_output=True, text=True, cwd=project)
    wall = time.time() - t0
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}", "wall_s": round(wall, 1)}
    words = shlex.split(cmd)
    run_dir = project / words[words.index("optik") + 1] / name
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    key = "val/mAP" if "val/mAP" in rows[0] else "val/top1"
    history = [round(float(r[key]), 4) for r in rows]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = {"metric": key.split("/")[1], "value": max(history), "epochs": len(rows), "wall_s": round(wall, 1),
           "history": history, "hflip": cfg.get("hflip"), "scale": cfg.get("scale")}  # fmt: skip
    if cfg.get("lr") is None:  # the default the trainer applied
        c = build_config(cfg["task"], "train", {k: v for k, v in cfg.items() if k not in ("task", "mode")})
        out["lr"] = peak_lr(c, scratch=not starts_from_weights(c))
        out["lr_source"] = "default"
    else:
        out["lr"] = cfg["lr"]
        found = run_dir / "lr_find.json"
        out["lr_source"] = "lr=auto" if found.is_file() else "given"
        if found.is_file():
            f = json.loads(found.read_text())
            out["lr_find"] = {"min_loss_lr": f["min_loss_lr"], "steps": len(f["lrs"]), "stopped": f["stopped"], "seconds": f["seconds"]}
    return out


def table_row(r: dict) -> dict:
    """One short line per command for the printed table (everything is in the JSON's ``details``)."""
    cmd = r["command"].replace("optik classify train ", "").replace("torchrun --nproc_per_node=2 -m", "torchrun×2:")
    if "skipped" in r or "error" in r:
        return {"command": cmd, "result": f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"}
    lr = f"{r['lr']:.3g} ({r['lr_source']})" if r.get("lr") is not None else "?"
    met = {True: " ✓", False: " ✗"}.get(r.get("met"), "")
    return {"command": cmd, "result": f"{r['metric']} {r['value']:.3f}{met}", "goal": r.get("goal", ""),
            "epochs": r["epochs"], "lr": lr, "wall_s": r["wall_s"]}  # fmt: skip


def main() -> None:
    only = dict(a.split("=", 1) for a in sys.argv[1:]).get("only")
    readme = quick_start_commands()
    todo = [(c, "README") for c in readme] + [(c, why) for c, why in EXTRA if c not in readme]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (cmd, source) in enumerate(todo):
            if only and not any(o in cmd for o in only.split(",")):
                continue
            why = runnable(cmd)
            text, threshold = goal(cmd, source)
            row = {"command": cmd, "source": source}
            if why:
                rows.append({**row, "skipped": why})
                continue
            print(f"[{i + 1}/{len(todo)}] {cmd}", flush=True)
            result = run(cmd, Path(tmp), f"r{i}")
            row.update(result)
            row["goal"] = text
            if threshold is not None and "value" in result:
                row["met"] = result["value"] >= threshold
            rows.append(row)
    table = [table_row(r) for r in rows]
    write_results("first_run", table, details=rows,
                  note="wall_s: the whole command on a shared CPU (start-up, data, training, plots); noisy")


if __name__ == "__main__":
    main()
