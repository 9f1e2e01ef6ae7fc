"""Degenerate cases through every catalog task (issue 17, item 2): train 1 step → val → predict → export →
predict with the exported file, through ``optik.cli.main``.

Generated from the catalog (``degenerate_run.catalog_units``): a new task is covered when its Task declares a
``data_kind`` this suite writes (``degenerate_data.WRITERS``); a new kind fails here asking for a writer.

Every command must exit 0, or exit 2 with one ``optik: error:`` line (a clean refusal: a model that cannot be
exported, a video without frames) — never a traceback; and where output is promised it is there:
``predictions.jsonl`` with one line per image / frame for predict ``save=true``, ``predictions.json`` for a
COCO-style val, a non-empty run folder for a task whose "predict" draws images.

Training cases (:data:`degenerate_data.TRAIN_CASES`) train their own model; predict-input cases
(:data:`degenerate_data.PREDICT_CASES`) share the unit's ``base`` model and its export, trained / exported once
per session by whichever xdist worker gets there first (``degenerate_run.train_case``).
"""

from __future__ import annotations

import json
from pathlib import Path

import degenerate_data as dd
import pytest
from degenerate_run import (
    UNITS,
    Outcome,
    Trained,
    Unit,
    check_clean,
    check_data_accepted,
    export_trained,
    record,
    run_cli,
    train_case,  # fmt: skip
)

CONF_EMPTY = "0.99"  # a 1-step model keeps nothing above it: the empty prediction set
# Inputs predicted with the eager model only: the exported model sees the same letterboxed tensor, and a
# 4000×3000 overlay costs seconds (PNG encoding, full-size maps) per run.
EAGER_ONLY = ("large_4000x3000",)


# Open bugs, (unit id, case) → reason: xfail(strict=True), so the suite stays green until the fix lands and then
# asks for the entry to be removed. Keep each reason to the failing command and its error.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def params(cases: tuple[str, ...]) -> list:
    """(unit, case) for every catalog unit and case; one xdist group per unit (its base model and exports are
    shared); open bugs marked xfail(strict=True)."""
    out = []
    for u in UNITS:
        for c in cases:
            marks = [pytest.mark.xdist_group(f"degenerate-{u.id}")]
            if (u.id, c) in KNOWN_BUGS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(u.id, c)]))
            out.append(pytest.param(u, c, id=f"{u.id}-{c}", marks=marks))
    return out


def _run_dir(t: Trained, name: str) -> Path:
    return t.project / t.unit.task / name


def _check_predictions(o: Outcome, run_dir: Path, expected: int | None, skips: bool = False) -> None:
    """predict ``save=true`` promised ``predictions.jsonl``: one line per image / video frame; a file left out of
    a folder is counted in the log."""
    if o.rc != 0:
        assert expected is None, f"{o.command()} refused an input it should predict on: {o.error}"
        return
    jsonl = run_dir / "predictions.jsonl"
    assert jsonl.is_file(), f"{o.command()} exited 0 without {jsonl}"
    lines = [ln for ln in jsonl.read_text().splitlines() if ln.strip()]
    if expected is not None:
        assert len(lines) == expected, f"{o.command()}: {len(lines)} prediction lines, expected {expected}"
        assert not skips or "skip" in o.stderr.lower(), f"{o.command()} left a file out without saying so"
    else:  # accepted an input with nothing in it: only as a counted skip, never silently
        assert "skip" in o.stderr.lower(), f"{o.command()} gave {len(lines)} results and said nothing of a skip"


def run_predict(t: Trained, case: str, stage: str, model: Path, source: Path | None, expected: int | None, *extra: str,
                skips: bool = False) -> Outcome:  # fmt: skip
    """The predict role on ``source`` (eager weights or the exported file), with ``save=true``."""
    u = t.unit
    mode, keys = u.roles["predict"], u.keys["predict"]
    name = f"{stage}-{case}"  # unique: the base model's project serves every predict-input case
    argv = [u.task, mode, *u.task_args, f"model={model}", f"project={t.project}", f"name={name}", *extra]
    if "source" in keys:
        argv.append(f"source={source}")
    if "save" in keys:
        argv.append("save=true")
    if "save_txt" in keys:  # labels/<image>.txt too: YOLO boxes / polygons / top-k of degenerate predictions
        argv.append("save_txt=true")
    o = check_clean(run_cli(argv))
    record(u, case, stage, o)
    run_dir = _run_dir(t, name)
    if "source" in keys and "save" in keys:
        _check_predictions(o, run_dir, expected, skips)
    elif o.rc == 0:
        assert run_dir.is_dir() and any(run_dir.iterdir()), f"{o.command()} exited 0 and wrote nothing to {run_dir}"
    return o


def run_val(t: Trained, case: str, *extra: str) -> Outcome:
    u = t.unit
    name = f"val-{case}"
    argv = [u.task, u.roles["val"], *u.task_args, f"model={t.run_dir}", f"project={t.project}", f"name={name}", *extra]
    o = check_clean(run_cli(argv))
    record(u, case, "val", o)
    check_data_accepted(u, t.case, o)
    if o.rc == 0:
        run_dir = _run_dir(t, name)
        assert (run_dir / "metrics.json").is_file(), f"{o.command()} exited 0 without metrics.json"
        if u.coco:
            assert (run_dir / "predictions.json").is_file(), f"{o.command()} exited 0 without predictions.json"
    return o


def pipeline(t: Trained, case: str, source: Path | None, expected: int | None, *extra: str) -> None:
    """val → predict → export → predict with the export, for the roles the unit offers."""
    u = t.unit
    if "val" in u.roles:
        run_val(t, case, *(e for e in extra if e.split("=")[0] in u.keys["val"]))
    if "predict" in u.roles:
        run_predict(t, case, "predict", t.run_dir, source, expected, *(e for e in extra if e.split("=")[0] in u.keys["predict"]))
    t = export_trained(t)
    if t.exported is not None and "predict" in u.roles:
        run_predict(t, case, "predict_export", t.exported, source, expected, *(e for e in extra if e.split("=")[0] in u.keys["predict"]))


def trained(unit: Unit, case: str, root: Path) -> Trained:
    try:
        return train_case(unit, case, root)
    except dd.NotApplicable as e:
        pytest.skip(f"{unit.kind}: {e}")
    except dd.MissingWriter as e:
        pytest.fail(str(e), pytrace=False)


# --- the tests ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit, case", params(dd.TRAIN_CASES))
def test_training_case(unit: Unit, case: str, degenerate_root: Path) -> None:
    """The case's data, trained 1 step, through every role of the pipeline (predicting on one of its images)."""
    t = trained(unit, case, degenerate_root)
    if t.run_dir is None:  # train refused the data cleanly: nothing further to run
        return
    pipeline(t, case, t.sample, 1)


@pytest.mark.parametrize("unit, case", params(dd.PREDICT_CASES))
def test_predict_input(unit: Unit, case: str, degenerate_root: Path, predict_inputs: dict[str, dd.Input]) -> None:
    """The unit's ``base`` model (and its export) on an awkward input; ``empty_predictions``: val and predict with
    ``conf`` so high that nothing is kept."""
    if "predict" not in unit.roles or "source" not in unit.keys["predict"]:
        pytest.skip(f"{unit.id}: its predict role ({unit.roles.get('predict')}) takes no source")
    t = trained(unit, "base", degenerate_root)
    assert t.run_dir is not None, f"{t.train.command()} refused the base data: {t.train.error}"
    if case == "empty_predictions":
        if "conf" not in unit.controls:
            pytest.skip(f"{unit.id}: no score threshold (predict_controls), every prediction lists something")
        pipeline(t, case, t.sample, 1, f"conf={CONF_EMPTY}")
        for stage in ("predict", "predict_export"):  # the case is only made if nothing was kept
            jsonl = _run_dir(t, f"{stage}-{case}") / "predictions.jsonl"
            if jsonl.is_file():
                rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
                assert all(r["predictions"] == [] for r in rows), f"{unit.id}: conf={CONF_EMPTY} still kept predictions: {rows}"
        if unit.coco:  # an empty predictions.json, not a missing one (issue 17, bug 9)
            assert json.loads((_run_dir(t, f"val-{case}") / "predictions.json").read_text()) == []
        return
    source = predict_inputs[case]
    run_predict(t, case, "predict", t.run_dir, source.path, source.results, skips=source.skips)
    t = export_trained(t)
    if t.exported is not None and case not in EAGER_ONLY:
        run_predict(t, case, "predict_export", t.exported, source.path, source.results, skips=source.skips)


# --- the suite's own guarantees -----------------------------------------------------------------------------------
def test_every_catalog_task_is_a_unit() -> None:
    """Each catalog task with a Task and a train mode is covered, segmentation once per flavour."""
    from optik import catalog

    ids = {u.id for u in UNITS}
    for name, spec in catalog.CATALOG.items():
        if spec.task is not None and "train" in spec.modes:
            assert any(i == name or i.startswith(f"{name}-") for i in ids), name
    assert {"segment-semantic", "segment-instance", "segment-panoptic"} <= ids


def test_every_unit_has_a_writer() -> None:
    for u in UNITS:
        dd.writer_for(u.kind, u.id)


def test_a_new_data_kind_asks_for_a_writer(tmp_path: Path) -> None:
    """A task of a kind without a writer fails every training case (it is not skipped) with what to add."""
    with pytest.raises(dd.MissingWriter, match="add a writer for data kind 'pointcloud'"):
        dd.writer_for("pointcloud", "lidar")
    with pytest.raises(dd.MissingWriter, match="declares no data_kind"):
        dd.writer_for(None, "lidar")
    lidar = Unit("lidar", None, "pointcloud", "pointnet", {"val": "val"}, {"val": frozenset()})
    with pytest.raises(pytest.fail.Exception, match="add a writer for data kind 'pointcloud' \\(task 'lidar'\\)"):
        trained(lidar, "base", tmp_path)


def test_a_new_task_is_covered_without_editing_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog entry added later (here: a copy of classify under a new name) becomes a unit, with the data kind,
    model and roles its Task declares."""
    from dataclasses import replace

    import degenerate_run

    from optik import catalog

    monkeypatch.setitem(catalog.CATALOG, "classify2", replace(catalog.CATALOG["classify"], name="classify2"))
    units = {u.id: u for u in degenerate_run.catalog_units()}
    assert units["classify2"].kind == "classification" and units["classify2"].model == "cnn"
    assert units["classify2"].roles == {"val": "val", "predict": "predict", "export": "export"}


def test_a_task_without_a_smallest_model_hint_gets_the_registry_smallest() -> None:
    from degenerate_run import smallest_registered

    assert smallest_registered("detect") == "house_s"
