"""Issue 17 regressions in the front doors: CLI values, config validation, run directories, predict sources.

Each test reproduces a bug a new user hit (see the issue's list: 2, 5, 7, 8, 10, 11, 12) and fails
without its fix.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optik import Model, catalog
from optik.cli import main
from optik.config import build_config, parse_cli_args, parse_cli_value
from optik.errors import ConfigError

DATA = "synthetic:shapes?n=24&size=16&classes=2"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("optik: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --- bug 2: `bool | str` keys read true/false from the CLI -----------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("YES", True), ("no", False), ("1", True), ("0", False)])
def test_bool_or_str_keys_read_cli_booleans(text, value):
    cfg = build_config("classify", "train", parse_cli_args([f"pretrained={text}", f"resume={text}"]))
    assert cfg.pretrained is value and cfg.resume is value


def test_bool_or_str_keys_keep_other_strings():
    cfg = build_config("classify", "train", parse_cli_args(["pretrained=w/false.safetensors", "resume=runs/classify/train"]))
    assert (cfg.pretrained, cfg.resume) == ("w/false.safetensors", "runs/classify/train")
    assert build_config("classify", "train", {"pretrained": None}).pretrained is None


def _bool_or_str_fields() -> list[tuple[str, str, str]]:
    out = []
    for task, spec in catalog.CATALOG.items():
        for mode in spec.modes:
            cls = catalog.load(spec.modes[mode].config)
            for key, field in cls.model_fields.items():
                args = typing.get_args(field.annotation)
                if bool in args and str in args:
                    out.append((task, mode, key))
    return out


@pytest.mark.parametrize(("task", "mode", "key"), _bool_or_str_fields())
def test_every_bool_or_str_key_of_every_task_reads_false(task, mode, key):
    assert getattr(build_config(task, mode, parse_cli_args([f"{key}=false"])), key) is False


def test_cli_pretrained_false_and_resume_false_train(tmp_path, monkeypatch):
    """`pretrained=false resume=false` used to be read as the weights file 'false'."""
    monkeypatch.chdir(tmp_path)
    args = ["classify", "train", f"data={DATA}", "model=mlp", "pretrained=false", "resume=false", "epochs=1", "imgsz=16", "plots=false"]
    assert main(args) == 0
    assert (tmp_path / "runs" / "classify" / "train" / "weights" / "best.safetensors").is_file()


# --- bug 5: seed, unusable project paths, empty run dirs ---------------------------------------------------


def test_negative_seed_is_a_config_error(capsys, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"'seed': '-1' .*greater than or equal to 0"):
        build_config("classify", "train", {"seed": "-1"})
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "train", f"data={DATA}", "model=mlp", "epochs=1", "imgsz=16", "seed=-1"]) == 2
    assert "'seed'" in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_project_under_a_file_is_a_config_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["classify", "train", f"data={DATA}", "model=mlp", "epochs=1", "imgsz=16", "project=afile/x"]) == 2
    err = one_line_error(capsys)
    assert "'project'" in err and "afile/x" in err


def test_unwritable_project_is_a_config_error(tmp_path, monkeypatch):
    from optik.engine.rundir import new_run_dir

    real = Path.mkdir

    def mkdir(self, *a, **kw):
        if str(self).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(ConfigError, match=r"'project'.*ro.*ermission"):
        new_run_dir(tmp_path / "ro", "classify", "train")


def test_a_file_in_place_of_the_run_dir_names_name(tmp_path):
    from optik.engine.rundir import new_run_dir

    (tmp_path / "classify").mkdir()
    (tmp_path / "classify" / "train").write_text("not a dir")
    with pytest.raises(ConfigError, match=r"'name'.*train"):
        new_run_dir(tmp_path, "classify", "train", exist_ok=True)


def test_predict_that_fails_leaves_no_empty_run_dir(weights, tmp_path):
    cfg = build_config("classify", "predict", {"model": weights, "source": str(tmp_path / "missing.png"), "save": True, "project": str(tmp_path)})
    from optik.engine.inference import predict

    with pytest.raises(ConfigError, match="missing.png"):
        list(predict(cfg))
    assert not (tmp_path / "classify").exists() or list((tmp_path / "classify").iterdir()) == []


def _failing_runner(cfg):
    from optik.engine.rundir import new_run_dir

    new_run_dir(cfg.project, cfg.task, cfg.name or "benchmark", cfg.exist_ok)
    raise RuntimeError("died before writing anything")


def test_any_runner_that_dies_leaves_no_empty_run_dir(weights, tmp_path, monkeypatch):
    """Runners outside the engine (benchmark, explain, prune, generate …) are covered by the front doors."""
    monkeypatch.setattr("optik.deploy.benchmark.benchmark", _failing_runner)
    with pytest.raises(RuntimeError, match="died"):
        main(["classify", "benchmark", f"model={weights}", f"project={tmp_path}"])
    with pytest.raises(RuntimeError, match="died"):
        Model(weights).benchmark(project=str(tmp_path))
    assert list((tmp_path / "classify").iterdir()) == []


def test_cleanup_keeps_dirs_with_results_and_dirs_it_did_not_create(tmp_path):
    from optik.engine.rundir import cleanup_on_error, new_run_dir

    (tmp_path / "classify" / "old").mkdir(parents=True)
    with pytest.raises(KeyError), cleanup_on_error():
        new_run_dir(tmp_path, "classify", "old", exist_ok=True)  # existed before: never removed
        done = new_run_dir(tmp_path, "classify", "done")
        (done / "metrics.json").write_text("{}")  # holds a result: kept
        new_run_dir(tmp_path, "classify", "empty")
        raise KeyError
    assert sorted(p.name for p in (tmp_path / "classify").iterdir()) == ["done", "old"]
    with cleanup_on_error():  # no error: nothing removed
        new_run_dir(tmp_path, "classify", "empty")
    assert (tmp_path / "classify" / "empty").is_dir()


# --- bug 7: values beginning with ( [ { ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["(3).png", "(v2) run", "[draft] run", "{x}.png", "[abc", "(a", "[1, 2] x"])
def test_bracketed_strings_stay_strings(text):
    assert parse_cli_value(text) == text


@pytest.mark.parametrize(("text", "value"), [
    ("[1,2]", [1, 2]), ("(0.5, 1)", [0.5, 1]), ("{a: 1}", {"a": 1}), ("[[1,2],[3,4]]", [[1, 2], [3, 4]]),
    ("[(1,2),(3,4)]", [[1, 2], [3, 4]]), ("[a(1).png, b.png]", ["a(1).png", "b.png"]),
])  # fmt: skip
def test_lists_and_dicts_are_parsed(text, value):
    assert parse_cli_value(text) == value


def test_bracketed_names_and_sources_reach_the_config():
    assert build_config("classify", "train", parse_cli_args(["name=(v2) run"])).name == "(v2) run"
    assert build_config("classify", "train", parse_cli_args(["name=[v2]"])).name == "[v2]"  # a str key keeps the text
    assert build_config("classify", "predict", parse_cli_args(["source=(3).png"])).source == "(3).png"
    assert build_config("classify", "train", parse_cli_args(["scale=(0.5,1)"])).scale == (0.5, 1.0)


def test_cli_predicts_a_file_named_with_parentheses(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "(3).png")
    assert main(["classify", "predict", f"model={weights}", "source=(3).png", "name=(v2) run", "save=true"]) == 0
    assert (tmp_path / "runs" / "classify" / "(v2) run" / "predictions.jsonl").is_file()


# --- bug 8: an empty source ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["", "   ", [""]])
def test_empty_source_is_a_config_error(weights, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "would_be_found.png")
    with pytest.raises(ConfigError, match="'source'"):
        Model(weights).predict(source)


# --- bug 10: videos in folders ------------------------------------------------------------------------------


def test_folder_and_glob_sources_both_include_videos(tmp_path):
    import cv2

    from optik.engine.inference import iter_sources

    d = tmp_path / "media"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.png")
    writer = cv2.VideoWriter(str(d / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for i in range(3):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    from_folder = [name for name, _ in iter_sources(str(d))]
    from_glob = [name for name, _ in iter_sources(str(d / "*"))]
    assert from_folder == from_glob
    assert str(d / "a.png") in from_folder and sum("clip.mp4#frame" in n for n in from_folder) == 3


# --- bug 11: misleading text --------------------------------------------------------------------------------


def test_help_shows_the_catalog_examples_and_serve_keys(capsys):
    assert main(["detect", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert catalog.CATALOG["detect"].example in out
    build_config("detect", "train", parse_cli_args(catalog.CATALOG["detect"].example.split()[3:]))  # it parses
    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "port=8000" in out and "host=127.0.0.1" in out  # was eaten as rich markup


def test_demo_summary_names_the_predict_dirs(tmp_path, monkeypatch, capsys):
    from optik import demo

    monkeypatch.setenv("COLUMNS", "400")

    class FakeResult:
        probs = type("P", (), {"top1": 0})()

        def verbose(self):
            return "ok"

    class FakeModel:
        def __init__(self, model, task=None):
            self.task, self.run_dir = task, None

        def train(self, project, name, **kw):
            self.run_dir = Path(project) / self.task / name
            self.run_dir.mkdir(parents=True)
            return {"top1": 1.0, "mIoU": 1.0, "pixel_acc": 1.0}

        def val(self, project, name):
            return {"top1": 1.0, "run_dir": str(Path(project) / self.task / name)}

        def predict(self, source, **kw):
            return [FakeResult() for _ in range(len(source))]

        def export(self, **kw):
            return tmp_path / "m.onnx"

        def explain(self, *a, **kw):
            return []

    monkeypatch.setattr("optik.model.Model", FakeModel)
    project = str(tmp_path / "p")
    c = demo.classify_demo(project)
    s = demo.segment_demo(project)
    out = " ".join(capsys.readouterr().out.split())
    assert c["predict_dir"] == str(Path(project) / "classify" / "demo_predict") and c["predict_dir"] in out
    assert c["explain_dir"] == str(Path(project) / "classify" / "demo_explain") and c["explain_dir"] in out
    assert s["predict_dir"] == str(Path(project) / "segment" / "demo_segment_predict") and s["predict_dir"] in out


# --- bug 12: run names stay inside the project ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "a/b", "a\\b", "..", ".", "  ", "/abs"])
def test_run_names_with_path_parts_are_refused(name):
    for mode in ("train", "val", "predict", "export", "explain"):
        with pytest.raises(ConfigError, match="'name'"):
            build_config("classify", mode, {"name": name})


def test_cli_refuses_an_escaping_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "train", f"data={DATA}", "model=mlp", "epochs=1", "imgsz=16", "project=p", "name=../../escape"]) == 2
    assert "'name'" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_project_may_be_any_path(tmp_path):
    assert build_config("classify", "train", parse_cli_args(["name="])).name is None  # `name=`: the default
    cfg = build_config("classify", "train", {"project": str(tmp_path / ".." / "elsewhere"), "name": "(v2) run.1"})
    assert cfg.project.endswith("elsewhere") and cfg.name == "(v2) run.1"
