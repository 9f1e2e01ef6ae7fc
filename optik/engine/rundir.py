"""Run directories: ``<project>/<task>/<name>/`` with Ultralytics' naming rules, created in one place
and removed again when the run that made them dies before writing anything worth keeping.

Every runner creates its directory with :func:`new_run_dir`; a failure to create it (``project`` under a
file, an unwritable folder) is a :class:`ConfigError` naming the key. :func:`cleanup_on_error` wraps a
run: a directory :func:`new_run_dir` created inside it that holds no result when an exception leaves it
is removed, so the next run is not ``train2`` and ``model=runs/<task>/train`` never points at nothing.
The front doors (the CLI's ``run_mode``, :class:`optik.Model`) wrap every runner in it; the trainer
(which writes ``config.yaml`` at once) wraps its own run with "no checkpoint yet" as its test.
"""

from __future__ import annotations

import errno
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from optik.errors import ConfigError

_local = threading.local()  # per thread: the open cleanup_on_error blocks, each a list of the dirs created inside it


def _open_blocks() -> list[list[Path]]:
    blocks = getattr(_local, "blocks", None)
    if blocks is None:
        blocks = _local.blocks = []
    return blocks


def _mkdir(path: Path, key: str, shown: Path) -> None:
    """``path.mkdir``; an OSError → a ConfigError naming ``key`` (``project``; ``name`` when the run's own
    folder name is the problem: a file already has it, or it is too long)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"bad value for '{key}': cannot create run directory '{shown}' ('{path}' is a file)") from None
    except OSError as e:
        if key == "name" and e.errno not in (errno.ENAMETOOLONG, errno.EINVAL):
            key = "project"  # the folder it goes into is unwritable / read-only / full
        why = {errno.ENOTDIR: "a parent is a file, not a folder", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOSPC: "no space left on device", errno.ENAMETOOLONG: "name too long"}.get(e.errno, e.strerror or str(e))  # fmt: skip
        raise ConfigError(f"bad value for '{key}': cannot create run directory '{shown}' ({why})") from None


def make_run_dir(project: str | Path, task: str, name: str, exist_ok: bool = False) -> tuple[Path, bool]:
    """:func:`new_run_dir` without the bookkeeping: ``(path, created)``; ``created`` is false when
    ``exist_ok`` reused a directory that was already there (never remove that one)."""
    root = Path(project) / task
    path = root / name
    if root.exists() and not root.is_dir():
        raise ConfigError(f"bad value for 'project': '{root}' is a file, not a folder")
    if not exist_ok and (path.exists() or path.is_symlink()):
        stem = re.sub(r"\d+$", "", name) or name
        n = 2
        while (root / f"{stem}{n}").exists():
            n += 1
        path = root / f"{stem}{n}"
    _mkdir(root, "project", path)
    existed = path.is_dir()
    _mkdir(path, "name", path)
    return path, not existed


def new_run_dir(project: str | Path, task: str, name: str, exist_ok: bool = False) -> Path:
    """``runs/classify/train``, then ``train2``, ``train3``… unless ``exist_ok``. A directory that cannot be
    created is a :class:`ConfigError` naming ``project`` (its folder) or ``name`` (the run's own folder).
    Inside :func:`cleanup_on_error` a directory created here is removed again if the run dies empty."""
    path, created = make_run_dir(project, task, name, exist_ok)
    if created:
        for block in _open_blocks():
            block.append(path)
    return path


def holds_results(path: Path) -> bool:
    """Whether ``path`` holds any non-empty file (an empty ``predictions.jsonl`` is no result)."""
    return any(f.is_file() and f.stat().st_size > 0 for f in path.rglob("*"))


def remove_unused(path: Path, keep: Callable[[Path], bool] = holds_results) -> None:
    """Remove run dir ``path`` unless ``keep(path)`` (a run that died before writing a result)."""
    if path.is_dir() and not keep(path):
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def cleanup_on_error(keep: Callable[[Path], bool] = holds_results) -> Iterator[None]:
    """Remove the run dirs :func:`new_run_dir` creates inside the block (in this thread) when an exception
    (Ctrl-C included) leaves it and ``keep(dir)`` is false. Directories that existed before
    (``exist_ok=true``) are never removed. Blocks nest: each judges the dirs created inside it with its own
    ``keep`` (the trainer's: "has a checkpoint"; the front doors': "holds any non-empty file")."""
    mine: list[Path] = []
    blocks = _open_blocks()
    blocks.append(mine)
    try:
        yield
    except BaseException:
        for d in reversed(mine):
            remove_unused(d, keep)
        raise
    finally:
        for i, block in enumerate(blocks):
            if block is mine:
                del blocks[i]
                break


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
