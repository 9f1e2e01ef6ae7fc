"""Run directories: ``<project>/<task>/<name>/`` with Ultralytics' naming rules."""

from __future__ import annotations

import re
from pathlib import Path

from optik.errors import ConfigError


def new_run_dir(project: str | Path, task: str, name: str, exist_ok: bool = False) -> Path:
    """``runs/classify/train``, then ``train2``, ``train3``… unless ``exist_ok``."""
    root = Path(project) / task
    path = root / name
    if not exist_ok and path.exists():
        stem = re.sub(r"\d+$", "", name) or name
        n = 2
        while (root / f"{stem}{n}").exists():
            n += 1
        path = root / f"{stem}{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_resume_dir(project: str | Path, task: str, resume: bool | str, name: str | None) -> Path:
    """The run directory to resume: ``resume=<dir|state.pt>``, ``name=X``, or the newest run."""
    if isinstance(resume, str) and resume.lower() not in ("true", "1", "yes"):
        p = Path(resume)
        p = p.parent.parent if p.name == "state.pt" else p
        if not (p / "weights" / "state.pt").is_file():
            raise ConfigError(f"resume: '{resume}' is not a run directory with weights/state.pt")
        return p
    root = Path(project) / task
    if name:
        p = root / name
        if not (p / "weights" / "state.pt").is_file():
            raise ConfigError(f"resume: run '{p}' has no weights/state.pt to resume from")
        return p
    candidates = sorted(root.glob("*/weights/state.pt"), key=lambda f: f.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume: no run with weights/state.pt under '{root}'")
    return candidates[-1].parent.parent
