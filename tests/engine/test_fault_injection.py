"""Fault injection (issue 17, item 4): ``kill -9`` at random points of training and inside checkpoint
writing, and a full disk while checkpointing, lose no checkpoint.

Every killed run is a process of its own, ended by SIGKILL: forked from a forkserver that imported torch,
optik and this module once (an import costs seconds on the shared cores, a fork milliseconds). After each
kill the run is resumed (``resume=true``) to the end and must equal a straight, uninterrupted run bit for
bit: every tensor of ``last``/``best.safetensors`` and of ``state.pt`` (model, optimizer, EMA, RNG), and
every ``metrics.csv`` value but wall time. After a kill every ``weights/*.safetensors`` present must be
readable, and no loader of the resumed run may open a temp file.

A full disk is injected (``ENOSPC``) at each seam of ``atomic_write`` — the serializer, fsync, the
rename — for each file of the 2nd epoch's checkpoint, and met for real on a small tmpfs where this
machine lets root mount one. Figures for the README come from these tests (see the report).
"""

from __future__ import annotations

import csv
import errno
import json
import math
import multiprocessing
import os
import random
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import optik.weights
from optik.config import build_config
from optik.engine.trainer import Trainer
from optik.errors import DiskFullError, OptikError

DATA = "synthetic:shapes?n=160&size=16&classes=3&seed=3"  # val top1 improves in epochs 1 and 2 (best is rewritten); ~0.1 s an epoch: room for the timed kills
EPOCHS = 3
CKPT_FILES = ("last.safetensors", "best.safetensors", "state.pt")
LOGGED = (*CKPT_FILES, "metrics.csv")


def overrides(project, name, **kw):
    base = {"data": DATA, "model": "cnn", "epochs": EPOCHS, "imgsz": 16, "batch": 8, "project": str(project),
            "name": name, "plots": False, "ema": True, "warmup_epochs": 1, "hflip": 0.5, "mixup": 0.2}  # fmt: skip
    base.update(kw)
    return base


def resume_overrides(project, name):
    return {"resume": True, "name": name, "project": str(project)}


# -- the child process -----------------------------------------------------------------------------
def _child(job: dict) -> None:
    """Train (or resume) one run; ``job["kill_at"] = (file, n, phase)`` SIGKILLs it inside its n-th write
    of ``file``. Writes a JSON result (timeline, files moved into place, files loaded) unless killed."""
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    out: dict = {"t_start": time.time(), "loaded": [], "writes": []}
    _spy_loads(out["loaded"], job["overrides"]["project"])
    _hook_replace(out["writes"], job.get("kill_at"))

    progress = Path(job["result"] + ".progress")  # batches done: the parent times its kills by them

    class Clock:
        def on_train_start(self, trainer):
            out["t_train"], out["batches"] = time.time(), 0
            progress.write_text("0")

        def on_batch_end(self, trainer, logs):
            out["batches"] += 1
            progress.write_text(str(out["batches"]))

    try:
        Trainer(build_config("classify", "train", job["overrides"]), callbacks=[Clock()]).fit()
        out["status"] = "ok"
    except OptikError as e:
        out["status"] = f"{type(e).__name__}: {e}"
    out["t_end"] = time.time()
    Path(job["result"]).write_text(json.dumps(out))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def _hook_replace(writes: list[str], kill_at) -> None:
    """Record each run file moved into place (``os.replace``: atomic_write and the CSV logger). With
    ``kill_at = (file, n, phase)`` the n-th replace of ``file`` SIGKILLs the process: ``mid`` cuts the
    temp file to half first (what a kill during the serializer leaves), ``before`` kills with the temp file
    complete and not yet renamed, ``after`` right after the rename (before the next file is begun)."""
    real = os.replace

    def replace(src, dst, *a, **kw):
        name = Path(dst).name
        if name not in LOGGED:
            return real(src, dst, *a, **kw)
        writes.append(name)
        if kill_at and name == kill_at[0] and writes.count(name) == kill_at[1]:
            if kill_at[2] == "mid":
                os.truncate(src, os.path.getsize(src) // 2)
            if kill_at[2] in ("mid", "before"):
                _die()
            real(src, dst, *a, **kw)
            _die()
        return real(src, dst, *a, **kw)

    os.replace = replace


def _spy_loads(loaded: list[str], project: str) -> None:
    """Record every file of the project that torch.load, safetensors or open() reads."""
    import builtins

    import safetensors.torch

    def spy(fn, reading=lambda a, kw: True):
        def wrapper(*a, **kw):
            f = a[0] if a else None
            if isinstance(f, (str, os.PathLike)) and str(f).startswith(project) and reading(a, kw):
                loaded.append(os.fspath(f))
            return fn(*a, **kw)

        return wrapper

    made = set()  # temp files this process wrote itself (atomic_write fsyncs them): not loads
    mkstemp = tempfile.mkstemp

    def mkstemp_spy(*a, **kw):
        fd, path = mkstemp(*a, **kw)
        made.add(path)
        return fd, path

    tempfile.mkstemp = mkstemp_spy
    mode = lambda a, kw: a[0] not in made and not set(a[1] if len(a) > 1 else kw.get("mode", "r")) & set("wax+")
    torch.load = spy(torch.load)
    safetensors.torch.load_file = spy(safetensors.torch.load_file)
    optik.weights.safe_open = spy(optik.weights.safe_open)
    builtins.open = spy(builtins.open, mode)


# -- the parent side -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forks():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the forkserver start method (POSIX)")
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    # torch, optik, tensorboard and this module, imported once for every child. Python 3.11's forkserver
    # ignores the parent's sys.path, so this module's folder goes in through PYTHONPATH while it starts.
    ctx.set_forkserver_preload(["torch.utils.tensorboard", "optik.engine.trainer", "optik.tasks.classify", "optik.catalog", __name__])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), old]))
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    warm = ctx.Process(target=time.time)  # returns once the server has imported everything: timings start fair
    warm.start()
    warm.join()
    return ctx


class Child:
    def __init__(self, ctx, logs: Path, over: dict, tag: str, kill_at=None) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.job = {"overrides": over, "kill_at": kill_at, "log": str(logs / f"{tag}.log"), "result": str(logs / f"{tag}.json")}
        self.t0 = time.time()
        self.p = ctx.Process(target=_child, args=(self.job,), daemon=True)
        self.p.start()

    def wait(self, timeout: float = 180) -> tuple[int, dict | None]:
        self.p.join(timeout)
        if self.p.is_alive():
            self.p.kill()
            self.p.join()
            pytest.fail(f"child {self.job['log']} hung")
        res = Path(self.job["result"])
        return self.p.exitcode, json.loads(res.read_text()) if res.is_file() else None

    def log(self) -> str:
        p = Path(self.job["log"])
        return p.read_text()[-3000:] if p.is_file() else ""


def run_child(ctx, logs, over, tag, kill_at=None) -> tuple[int, dict | None, Child]:
    c = Child(ctx, logs, over, tag, kill_at)
    code, res = c.wait()
    return code, res, c


@pytest.fixture(scope="module")
def straight(forks, tmp_path_factory):
    """The uninterrupted run every recovery is compared with; its timeline and write order."""
    root = tmp_path_factory.mktemp("straight")
    code, res, c = run_child(forks, root / "logs", overrides(root, "straight"), "straight")
    assert code == 0 and res and res["status"] == "ok", c.log()
    res["run"] = root / "classify" / "straight"
    res["t_fork"] = c.t0
    return res


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: repr(int(float(v)) if k == "epoch" else float(v or "nan")) for k, v in r.items() if k != "time"}
                for r in csv.DictReader(f)]  # fmt: skip


def _assert_same(a, b, where: str) -> None:
    """Equal trees of state: tensors bit for bit (dtype too), floats exactly (NaN == NaN); wall time skipped."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            if k != "time":
                _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_as_straight(run: Path, straight: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        _assert_same(load_file(straight / "weights" / name), load_file(run / "weights" / name), name)
    load = lambda r: torch.load(r / "weights" / "state.pt", map_location="cpu", weights_only=True)
    _assert_same(load(straight), load(run), "state.pt")
    assert _csv_rows(run) == _csv_rows(straight), "metrics.csv"


def assert_readable(run: Path) -> None:
    """What a kill leaves is loadable: every weights file present, and state.pt when there is one."""
    for p in (run / "weights").glob("*.safetensors"):
        assert load_file(p) and optik.weights.read_meta(p)["task"] == "classify", p
    if (run / "weights" / "state.pt").is_file():
        torch.load(run / "weights" / "state.pt", map_location="cpu", weights_only=True)


def recover(ctx, project: Path, name: str, logs: Path) -> str:
    """Resume a killed run to the end, as a user would; returns how ("resumed", "rerun" when nothing had
    been committed yet, "finished" when the kill came after the last epoch's state.pt)."""
    run = project / "classify" / name
    assert_readable(run)
    state = run / "weights" / "state.pt"
    epoch = torch.load(state, weights_only=True)["epoch"] if state.is_file() else 0
    code, res, c = run_child(ctx, logs, resume_overrides(project, name), f"{name}-resume")
    assert code == 0 and res, c.log()
    assert not [p for p in res["loaded"] if p.endswith(".tmp")], res["loaded"]  # no half-written file loaded
    if epoch == 0:  # killed before the first checkpoint: nothing to resume, train again
        assert "no weights/state.pt" in res["status"], res["status"]
        code, res, c = run_child(ctx, logs, overrides(project, name, exist_ok=True), f"{name}-rerun")
        assert code == 0 and res and res["status"] == "ok", c.log()
        assert not [p for p in res["loaded"] if p.endswith(".tmp")], res["loaded"]
        how = "rerun"
    elif epoch == EPOCHS:
        assert "already finished" in res["status"], res["status"]
        how = "finished"
    else:
        assert res["status"] == "ok", res["status"] + c.log()
        how = "resumed"
    if how != "rerun":  # resume removes what the killed run left (a fresh run into the folder does not)
        assert not list((run / "weights").glob(".*.tmp")) and not (run / "metrics.csv.tmp").exists()
    return how


# -- kill -9 -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_at_random_times_during_training(forks, straight, tmp_path):
    """SIGKILL at 6 points drawn (seeded) over the straight run's training, then resume; then a run killed
    twice (the run, then its resumed run)."""
    rng = random.Random(17)
    # Kill points in training progress (batches done, plus a fraction of a batch), read from the child's
    # progress file: wall-clock times from the straight run came late or early as the machine's load changed.
    lo, hi = 0.0, float(straight["batches"])
    per_batch = (straight["t_end"] - straight["t_train"]) / max(straight["batches"], 1)
    logs = tmp_path / "logs"
    outcomes, late = [], 0

    def kill_after(c: Child, at: float) -> bool:
        """SIGKILL ``c`` once it has done ``int(at)`` batches, a fraction ``at % 1`` of a batch later."""
        progress = Path(c.job["result"] + ".progress")
        deadline = time.time() + 120
        while c.p.is_alive() and time.time() < deadline:
            try:
                if int(progress.read_text() or -1) >= int(at):
                    break
            except (FileNotFoundError, ValueError):  # not started yet / caught mid-write
                pass
            time.sleep(0.001)
        time.sleep((at % 1) * per_batch)
        c.p.kill()
        code, _ = c.wait()
        assert code in (0, -signal.SIGKILL), c.log()
        return code == -signal.SIGKILL  # 0: it finished before the kill

    for i, t in enumerate(sorted(rng.uniform(lo, lo + 0.9 * (hi - lo)) for _ in range(6))):
        if not kill_after(Child(forks, logs, overrides(tmp_path, f"t{i}"), f"t{i}"), t):
            late += 1
            continue
        outcomes.append(recover(forks, tmp_path, f"t{i}", logs))
        assert_same_as_straight(tmp_path / "classify" / f"t{i}", straight["run"])
    assert late <= 1, f"{late} of 6 kills came after the run had finished"
    run = tmp_path / "classify" / "twice"
    if kill_after(Child(forks, logs, overrides(tmp_path, "twice"), "twice"), lo + 0.5 * (hi - lo)):
        again = (run / "weights" / "state.pt").is_file() and kill_after(
            Child(forks, logs, resume_overrides(tmp_path, "twice"), "twice-r1"), 0.3 * (hi - lo)
        )
        outcomes.append(recover(forks, tmp_path, "twice", logs) + (" after its resume was killed too" if again else ""))
        assert_same_as_straight(run, straight["run"])
    print(f"\nkill -9 during training: {len(outcomes)} kill points survived ({', '.join(outcomes)})")


# Each leaves a different run folder behind: the file being written old (+ its temp file, half-written or
# complete), or new; the weights of the epoch written but not its state.pt; state.pt written but not the
# epoch's metrics.csv row (at the last epoch: the run is finished, resume only restores the row).
KILL_POINTS = [("last.safetensors", "mid"), ("last.safetensors", "after"), ("best.safetensors", "before"),
               ("best.safetensors", "after"), ("state.pt", "mid"), ("state.pt", "before"), ("state.pt", "after"),
               ("metrics.csv", "mid")]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("file,phase", KILL_POINTS, ids=[f"{f}-{p}" for f, p in KILL_POINTS])
def test_kill_9_inside_checkpoint_writing(forks, straight, tmp_path, file, phase):
    """SIGKILL inside the n-th write of ``file`` (n drawn, seeded, from the epochs that write it, the
    first excluded where there is a choice): mid-write, the temp file complete but not renamed, or just
    renamed."""
    n_total = straight["writes"].count(file)
    n = random.Random(f"{file}-{phase}").randint(2, n_total) if n_total >= 2 else 1
    if (file, phase) == ("state.pt", "after"):  # the run's last commit: resume finds it finished
        n = EPOCHS
    elif file == "metrics.csv":  # a row lost mid-run: resume restores it and goes on
        n = min(n, n_total - 1)
    name = "k"
    code, _, c = run_child(forks, tmp_path / "logs", overrides(tmp_path, name), name, kill_at=(file, n, phase))
    assert code == -signal.SIGKILL, f"the kill point was not reached: {c.log()}"
    run = tmp_path / "classify" / name
    temps = [*(run / "weights").glob(".*.tmp"), *run.glob("metrics.csv.tmp")]
    assert bool(temps) == (phase != "after"), temps  # a half-written / unrenamed file is there to be ignored
    state = torch.load(run / "weights" / "state.pt", weights_only=True) if (run / "weights" / "state.pt").is_file() else {}
    if state:  # killed after state.pt, before the epoch's row: metrics.csv is one row behind
        behind = (file, phase) == ("state.pt", "after") or file == "metrics.csv"
        assert len(_csv_rows(run)) == state["epoch"] - behind
    how = recover(forks, tmp_path, name, tmp_path / "logs")
    assert_same_as_straight(run, straight["run"])
    print(f"\nkill -9 at write {n}/{n_total} of {file} ({phase}): {how}")


# -- a full disk -------------------------------------------------------------------------------------
def _target_of(path: str) -> str:
    """The file an atomic_write temp file (``.<name>.<random>.tmp``) is for; other paths unchanged."""
    base = os.path.basename(path)
    m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", base)
    return m.group(1) if m else base


class FullDisk:
    """The first write of ``target`` after epoch 1 was committed fails with ENOSPC at ``seam``: ``write``
    (the serializer fills the disk halfway through and fails as the library does: safetensors with its
    "os error 28" SafetensorError, torch.save through the file it writes), ``fsync`` or ``rename``."""

    def __init__(self, monkeypatch, target: str, seam: str) -> None:
        self.target, self.seam = target, seam
        self.commits, self.fired, self.before = 0, None, None
        real_replace, real_fsync, real_save_file, real_torch_save = os.replace, os.fsync, optik.weights.save_file, torch.save

        def replace(src, dst, *a, **kw):
            if self.seam == "rename" and self._fire(dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_replace(src, dst, *a, **kw)
            self.commits += Path(dst).name == "state.pt"

        def fsync(fd):
            if self.seam == "fsync" and self._fire(_target_of(os.readlink(f"/proc/self/fd/{fd}"))):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        def save_file(tensors, filename, metadata=None):
            if self.seam == "write" and self._fire(_target_of(filename)):
                from safetensors import SafetensorError
                from safetensors.torch import save

                data = save(tensors, metadata)
                Path(filename).write_bytes(data[: len(data) // 2])
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            return real_save_file(tensors, filename, metadata=metadata)

        def torch_save(obj, f, *a, **kw):
            if self.seam == "write" and self._fire("state.pt"):
                if isinstance(f, (str, os.PathLike)):  # saved to a path: torch opens it itself
                    with open(f, "wb") as fh:
                        return real_torch_save(obj, _FillsUp(fh, 4096), *a, **kw)
                return real_torch_save(obj, _FillsUp(f, 4096), *a, **kw)
            return real_torch_save(obj, f, *a, **kw)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(optik.weights, "save_file", save_file)
        monkeypatch.setattr(torch, "save", torch_save)

    def _fire(self, path) -> bool:
        if self.fired is not None or self.commits < 1 or Path(path).name != self.target:
            return False
        self.fired = self.commits + 1  # the epoch whose checkpoint fails
        return True

    def off(self) -> None:
        self.fired = self.fired or -1


class _FillsUp:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, b) -> int:
        n = len(memoryview(b))
        if n > self.room:
            self.f.write(bytes(memoryview(b)[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def _snapshot(weights: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in weights.iterdir() if p.is_file()}


def assert_disk_full_left_epoch_1(err: BaseException, run: Path, target: str, before: dict[str, bytes]) -> None:
    msg = str(err)
    assert isinstance(err, DiskFullError) and err.errno == errno.ENOSPC
    assert "\n" not in msg and "no space left on device" in msg and str(run / "weights" / target) in msg, msg
    assert "epoch 2 was not checkpointed" in msg and "epoch-1 checkpoint is intact" in msg and "resume=true" in msg, msg
    weights = run / "weights"
    assert not list(weights.glob(".*.tmp")), "temp file left behind"
    assert (weights / target).read_bytes() == before[target]  # the file being written is the previous one
    assert torch.load(weights / "state.pt", weights_only=True)["epoch"] == 1
    assert_readable(run)


class Snapshot:
    """Keeps the weights dir as epoch 1 left it (taken at the end of epoch 1)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            self.files = _snapshot(trainer.weights_dir)


def _epoch_writes(writes: list[str]) -> list[list[str]]:
    """The straight run's writes grouped by epoch (each epoch ends with its metrics.csv)."""
    epochs, cur = [], []
    for w in writes:
        cur.append(w)
        if w == "metrics.csv":
            epochs.append(cur)
            cur = []
    return epochs


ENOSPC_POINTS = [(f, seam) for f in CKPT_FILES for seam in ("write", "fsync", "rename")]


@pytest.mark.slow
@pytest.mark.parametrize("target,seam", ENOSPC_POINTS, ids=[f"{f}-{s}" for f, s in ENOSPC_POINTS])
def test_full_disk_during_checkpoint_keeps_the_previous_one(straight, tmp_path, monkeypatch, target, seam):
    if target not in _epoch_writes(straight["writes"])[1]:
        pytest.skip(f"{target} is not written in epoch 2 of this run")  # best.safetensors: only when it improved
    disk = FullDisk(monkeypatch, target, seam)
    snap = Snapshot()
    with pytest.raises(DiskFullError) as e:
        Trainer(build_config("classify", "train", overrides(tmp_path, "full")), callbacks=[snap]).fit()
    assert disk.fired == 2
    run = tmp_path / "classify" / "full"
    assert_disk_full_left_epoch_1(e.value, run, target, snap.files)
    disk.off()  # space freed
    Trainer(build_config("classify", "train", resume_overrides(tmp_path, "full"))).fit()
    assert_same_as_straight(run, straight["run"])


@pytest.mark.slow
def test_full_disk_on_the_cli_is_one_line_and_exit_2(straight, tmp_path, monkeypatch, capsys):
    from optik.cli import main

    FullDisk(monkeypatch, "state.pt", "write")
    args = [f"{k}={v}".lower() if isinstance(v, bool) else f"{k}={v}" for k, v in overrides(tmp_path, "cli").items()]
    assert main(["classify", "train", *args]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # above it: the progress lines of epochs 1 and 2
    assert "Traceback" not in err and err.count("optik: error") == 1, err
    assert last.startswith("optik: error: epoch 2 was not checkpointed: no space left on device writing") and "state.pt'" in last, err
    monkeypatch.undo()
    assert main(["classify", "train", "resume=true", "name=cli", f"project={tmp_path}"]) == 0
    assert_same_as_straight(tmp_path / "classify" / "cli", straight["run"])


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], check=False, capture_output=True, text=True)


@pytest.fixture()
def tmpfs(tmp_path):
    """A real 64 MiB tmpfs, or a skip saying why there is none."""
    d = tmp_path / "disk"
    d.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = _mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["state.pt", "last.safetensors"])
def test_full_tmpfs_during_checkpoint_keeps_the_previous_one(straight, tmpfs, target):
    """A real full disk: after epoch 1 the tmpfs shrinks to what it holds plus a little room — room for
    the weights files (each replaces its predecessor) but not state.pt, or not even last.safetensors."""
    sizes = {p.name: p.stat().st_size for p in (straight["run"] / "weights").iterdir()}
    room = sizes["last.safetensors"] // 2 if target == "last.safetensors" else sizes["last.safetensors"] + 64 * 1024
    assert room < sizes[target]

    class Shrink(Snapshot):
        def on_epoch_end(self, trainer, epoch, logs):
            super().on_epoch_end(trainer, epoch, logs)
            if epoch == 0:
                st = os.statvfs(tmpfs)
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                r = _mount("-o", f"remount,size={used + room}", str(tmpfs))
                assert r.returncode == 0, r.stderr

    snap = Shrink()
    with pytest.raises(DiskFullError) as e:
        Trainer(build_config("classify", "train", overrides(tmpfs, "full")), callbacks=[snap]).fit()
    run = tmpfs / "classify" / "full"
    assert_disk_full_left_epoch_1(e.value, run, target, snap.files)
    assert _mount("-o", "remount,size=64m", str(tmpfs)).returncode == 0  # space freed
    Trainer(build_config("classify", "train", resume_overrides(tmpfs, "full"))).fit()
    assert_same_as_straight(run, straight["run"])
