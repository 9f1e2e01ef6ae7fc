"""``optik TASK benchmark``: one table of formats × size / latency / throughput / val metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from optik import Model
from optik.cli import main
from optik.errors import ConfigError, ExportError


def test_benchmark_rows_match_val(tiny_run, tmp_path):
    m = Model(tiny_run["best"])
    rows = m.benchmark(formats=["pytorch", "onnx"], iters=3, warmup=1, batch=4, parity=4, project=str(tmp_path))
    assert [r["format"] for r in rows] == ["pytorch", "onnx"]
    for r in rows:
        assert "error" not in r, r
        assert r["size_mb"] > 0 and 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] and r["throughput_ips"] > 0
    # The eager row's metric is exactly what `val` reports; ONNX reproduces it on the same images.
    val_top1 = m.val(project=str(tmp_path), plots=False)["top1"]
    assert rows[0]["top1"] == pytest.approx(val_top1)
    assert rows[1]["top1"] == pytest.approx(val_top1, abs=1e-9)
    run = Path(rows[1]["file"]).parent
    with open(run / "benchmark.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["format"] for t in table] == ["pytorch", "onnx"]
    saved = json.loads((run / "benchmark.json").read_text())
    assert saved["rows"][1]["top1"] == rows[1]["top1"]
    assert (run / "report.md").read_text().count("| onnx |") == 1
    assert (run / "plots" / "latency.png").stat().st_size > 0


def test_a_failing_format_is_a_row_not_a_crash(tiny_run, tmp_path, monkeypatch):
    import optik.deploy.export as export_mod

    def broken(cfg):
        raise ExportError("exporter exploded on purpose")

    monkeypatch.setattr(export_mod, "export", broken)
    rows = Model(tiny_run["best"]).benchmark(formats=["pytorch", "torchscript"], iters=2, warmup=0, batch=2, project=str(tmp_path))
    assert "error" not in rows[0] and "exploded on purpose" in rows[1]["error"]


def test_bad_formats_name_the_key(tiny_run):
    with pytest.raises(ConfigError, match="formats"):
        Model(tiny_run["best"]).benchmark(formats="onnx,tflite")


def test_cli_benchmark(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "benchmark", f"model={tiny_run['best']}", "formats=pytorch,torchscript", "iters=2", "batch=2"]) == 0
    out = capsys.readouterr().err  # rich tables go to stderr, like the progress bars
    assert "torchscript" in out and "top1" in out
    assert len(list((tmp_path / "runs" / "classify").glob("benchmark*/benchmark.csv"))) == 1
