"""The degenerate-case suite's machinery: the units under test, read from the task catalog; the CLI runner
and its verdict; the shared 1-step model of each unit.

A *unit* is a catalog task with a Task class and a ``train`` mode, once per flavour when its train config has
a ``task_key`` (segment: the ``subtask`` choices, read from the config class). What a unit consumes
(``data_kind``), the model it trains (``smallest_model``, else the registry's model with the fewest
parameters) and which of its modes play val / predict / export (``pipeline_modes``) all come from the Task.

``OPTIK_DEGENERATE_MATRIX=path`` appends one JSON line per (unit, case, stage) outcome to ``path``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import traceback
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import degenerate_data as dd
import pytest

TRAIN_KEYS = {"epochs": "1", "batch": "16"}  # one step: every written set has fewer than 16 train images
IMGSZ = 32  # or the config's minimum when that is larger


# --- units, from the catalog ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    task: str  # catalog name
    flavour: str | None  # the train config's task_key value (segment: semantic / instance / panoptic)
    kind: str | None  # Task.data_kind
    model: str
    roles: dict[str, str] = field(hash=False)  # pipeline role → catalog mode the task offers
    keys: dict[str, frozenset[str]] = field(hash=False)  # role → the keys its mode's config takes
    coco: bool = False  # val promises predictions.json (Task.coco_results)
    controls: frozenset[str] = frozenset()  # Task.predict_controls() of the predict role ("conf": a score threshold)
    imgsz: int = IMGSZ

    @property
    def id(self) -> str:
        return f"{self.task}-{self.flavour}" if self.flavour else self.task

    @property
    def task_args(self) -> list[str]:
        return [f"task={self.flavour}"] if self.flavour else []


def flavours(config_cls: type) -> list[str | None]:
    """The values of a config's ``task_key`` field (a ``Literal``), or ``[None]`` for a task without flavours."""
    key = getattr(config_cls, "task_key", None)
    if not key:
        return [None]
    choices = typing.get_args(config_cls.model_fields[key].annotation)
    if not choices:
        raise AssertionError(f"{config_cls.__name__}.{key} is not a Literal: cannot list the flavours to cover")
    return list(choices)


def smallest_registered(model_task: str) -> str:
    """The registry's model for ``model_task`` with the fewest parameters (tasks without a ``smallest_model``)."""
    from optik import models

    sizes = {}
    for name in models.list_models(task=model_task):
        with contextlib.suppress(Exception):
            sizes[name] = sum(p.numel() for p in models.create(name, task=model_task, num_classes=2).parameters())
    if not sizes:
        raise AssertionError(f"no registered model for task {model_task!r} could be built")
    return min(sizes, key=sizes.get)


def min_imgsz(config_cls: type) -> int:
    ge = next((m.ge for m in config_cls.model_fields["imgsz"].metadata if getattr(m, "ge", None) is not None), 0)
    return max(IMGSZ, int(ge))


def catalog_units() -> list[Unit]:
    """Every catalog task with a Task class and a ``train`` mode, once per flavour."""
    from optik import catalog
    from optik.config import build_config

    units = []
    for name, spec in catalog.CATALOG.items():
        if spec.task is None or "train" not in spec.modes:
            continue
        task_cls = catalog.load(spec.task)
        train_cfg = catalog.load(spec.modes["train"].config)
        for flavour in flavours(train_cfg):
            task = task_cls(build_config(name, "train", {"task": flavour} if flavour else {}))
            roles = {role: mode for role, mode in task.pipeline_modes.items() if mode in spec.modes}
            model = task.smallest_model or smallest_registered(task.model_task)
            keys = {role: frozenset(catalog.load(spec.modes[mode].config).model_fields) for role, mode in roles.items()}
            controls: frozenset[str] = frozenset()
            if "predict" in roles:
                predict_task = task_cls(build_config(name, roles["predict"], {"task": flavour} if flavour else {}))
                controls = frozenset(predict_task.predict_controls())
            units.append(Unit(name, flavour, task.data_kind, model, roles, keys, bool(getattr(task, "coco_results", False)),
                              controls, min_imgsz(train_cfg)))  # fmt: skip
    return units


UNITS = catalog_units()


# --- running the CLI --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str | None:
        """The one-line ``optik: error:`` message of a clean refusal."""
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("optik: error:")]
        return lines[-1] if lines else None

    @property
    def verdict(self) -> str:
        return "ok" if self.rc == 0 else f"refused: {self.error}"

    def command(self) -> str:
        return "optik " + " ".join(self.argv)


def run_cli(argv: list[str]) -> Outcome:
    """``optik.cli.main(argv)`` with stdout/stderr captured; an exception escaping it (exit 1, a traceback)
    fails the test with the command and the traceback."""
    from optik.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(argv))
    except BaseException:  # noqa: BLE001 - anything escaping main is what a user sees as a traceback
        pytest.fail(f"traceback (exit 1) from\n  optik {' '.join(argv)}\n{traceback.format_exc()}\n"
                    f"--- stderr ---\n{err.getvalue()[-3000:]}", pytrace=False)  # fmt: skip
    return Outcome(list(argv), rc, out.getvalue(), err.getvalue())


def check_clean(o: Outcome) -> Outcome:
    """Exit 0, or exit 2 with exactly one ``optik: error:`` line, the last thing written."""
    if o.rc == 0:
        return o
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("optik: error:")]
    assert o.rc == 2, f"{o.command()} exited {o.rc}\n{o.stderr[-3000:]}"
    assert len(errors) == 1 and lines[-1] == errors[0], f"{o.command()}: exit 2 without one final 'optik: error:' line\n{o.stderr[-3000:]}"
    return o


def check_data_accepted(unit: Unit, case: str, o: Outcome) -> None:
    """train / val refuse a case's data only where :data:`degenerate_data.EXPECTED_REFUSALS` says so."""
    expected = dd.EXPECTED_REFUSALS.get((unit.kind, case)) if unit.kind else None
    if o.rc != 0:
        assert expected and expected in (o.error or ""), f"{o.command()} refused valid '{case}' data: {o.error}"


def record(unit: Unit, case: str, stage: str, o: Outcome | str) -> None:
    path = os.environ.get("OPTIK_DEGENERATE_MATRIX")
    if path:
        verdict = o if isinstance(o, str) else o.verdict
        with open(path, "a") as f:
            f.write(json.dumps({"unit": unit.id, "case": case, "stage": stage, "verdict": verdict}) + "\n")


# --- the 1-step model of each (unit, training case), trained once per session --------------------------------
# Shared between xdist workers through the file system under a lock: `--dist loadgroup` cannot be relied on to
# keep a unit's tests on one worker (pytest-xdist 3.8 sets `item._nodeid`, which pytest 9.2 no longer reads).
@dataclass
class Trained:
    unit: Unit
    case: str
    project: Path
    sample: Path  # one image of the training set
    train: Outcome
    run_dir: Path | None  # None when train refused the data
    export: Outcome | None = None
    exported: Path | None = None  # the exported file when export succeeded

    def state(self) -> dict[str, Any]:
        return {"project": str(self.project), "sample": str(self.sample), "train": asdict(self.train),
                "run_dir": self.run_dir and str(self.run_dir), "export": self.export and asdict(self.export),
                "exported": self.exported and str(self.exported)}  # fmt: skip

    @classmethod
    def from_state(cls, unit: Unit, case: str, st: dict[str, Any]) -> Trained:
        path = lambda v: v and Path(v)
        return cls(unit, case, Path(st["project"]), Path(st["sample"]), Outcome(**st["train"]), path(st["run_dir"]),
                   st["export"] and Outcome(**st["export"]), path(st["exported"]))  # fmt: skip


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this session shares (the session's temp root), else the session's own."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "degenerate"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def locked_state(folder: Path) -> Iterator[Path]:
    """Hold ``folder/.lock`` (one worker at a time); yields ``folder/state.json``."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder / "state.json"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def train_case(unit: Unit, case: str, root: Path) -> Trained:
    """Write ``case`` for the unit's data kind and train 1 step, once per session (the ``base`` model serves
    every predict-input case). :class:`degenerate_data.NotApplicable` / :class:`~degenerate_data.MissingWriter`
    propagate."""
    write = dd.writer_for(unit.kind, unit.id)
    base = root / unit.id / case
    with locked_state(base) as state:
        if state.is_file():
            return Trained.from_state(unit, case, json.loads(state.read_text()))
        data_dir = base / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        data, sample = write(case, data_dir)
        project = base / "runs"
        argv = [unit.task, "train", *unit.task_args, f"data={data}", f"model={unit.model}", f"imgsz={unit.imgsz}",
                *(f"{k}={v}" for k, v in {**TRAIN_KEYS, **dd.CASE_TRAIN_KEYS.get(case, {})}.items()), f"project={project}",
            "name=train"]  # fmt: skip
        if case != "base":  # training curves (~1–6 s of matplotlib) once per unit; val draws the task's plots on every case
            argv.append("plots=false")
        o = check_clean(run_cli(argv))
        record(unit, case, "train", o)
        check_data_accepted(unit, case, o)
        run_dir = project / unit.task / "train"
        if o.rc == 0:
            assert (run_dir / "weights").is_dir(), f"{o.command()} exited 0 but wrote no weights in {run_dir}"
        t = Trained(unit, case, project, sample, o, run_dir if o.rc == 0 else None)
        state.write_text(json.dumps(t.state()))
        return t


def export_trained(t: Trained) -> Trained:
    """Export the trained model once per session (the export role, when the task offers it); a clean refusal
    is kept as the outcome."""
    if t.run_dir is None or "export" not in t.unit.roles:
        return t
    with locked_state(t.project.parent) as state:
        t = Trained.from_state(t.unit, t.case, json.loads(state.read_text()))
        if t.export is not None:
            return t
        out = t.project / "exported.onnx"
        argv = [t.unit.task, t.unit.roles["export"], *t.unit.task_args, f"model={t.run_dir}", "format=onnx",
                f"out={out}", f"project={t.project}"]  # fmt: skip
        t.export = check_clean(run_cli(argv))
        record(t.unit, t.case, "export", t.export)
        if t.export.rc == 0:
            assert out.is_file(), f"{t.export.command()} exited 0 but {out} is missing"
            t.exported = out
        state.write_text(json.dumps(t.state()))
        return t
