"""The CLI grammar: `optik TASK MODE key=value`, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optik.cli import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optik", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_bad_key_is_one_line_exit_2(tmp_path):
    p = run_cli("classify", "train", "data=digits", "epoch=3", cwd=tmp_path)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert err.startswith("optik: error:") and "'epoch'" in err and "epochs" in err
    assert "Traceback" not in p.stderr and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_verbose_shows_traceback(tmp_path):
    p = run_cli("classify", "train", "epoch=3", "verbose=true", cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" in p.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["classify", "fly"], "unknown mode 'fly'"),
        (["classify", "train", "data=nowhere/at/all", "epochs=1"], "nowhere/at/all"),
        (["classify", "val", "model=missing.safetensors"], "missing.safetensors"),
        (["classify", "train", "data=digits", "optimizer=lbfgs"], "'optimizer'"),
        (["segmentt", "train"], "segmentt"),
    ],
)
def test_errors_in_process(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("optik: error:")


def test_corrupt_image_names_the_file(image_dir, capsys, tmp_path, monkeypatch):
    bad = image_dir / "train" / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "train", f"data={image_dir}", "epochs=1", "imgsz=16"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err


def test_info_and_help(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "resnet" in out and "synthetic:shapes" in out
    assert main(["--help"]) == 0
    assert "classify" in capsys.readouterr().out


def test_console_script_entry_point_exists():
    from importlib.metadata import entry_points

    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("optik") == "optik.cli:main"
