"""Streaming predict: ``predict(cfg)`` / ``Model.predict(stream=True)`` are generators that write as they go
and keep nothing, so memory stays flat on any source size (peak RSS measured in a child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model
from optik.config import build_config
from optik.engine.inference import predict
from optik.errors import ConfigError

SIZE = 96  # frame / image side: pixels a leak would keep are big enough to show in RSS (27 KB each)


def _frames(n: int, size: int) -> np.ndarray:
    """``n`` distinct smooth RGB images (gradients + a little noise: cheap to encode, unlike pure noise)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    for i in range(n):
        base = ramp[None, :, None] * rng.uniform(0.2, 1, 3) + ramp[:, None, None] * rng.uniform(0, 0.2, 3)
        yield np.clip(base + rng.normal(0, 4, (size, size, 3)), 0, 255).astype(np.uint8)


def make_folder(path: Path, n: int, size: int = SIZE) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(_frames(n, size)):
        Image.fromarray(a).save(path / f"{i:05d}.png", compress_level=1)
    return path


def make_video(path: Path, n: int, size: int = SIZE) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (size, size))
    for a in _frames(n, size):
        writer.write(a)
    writer.release()
    return path


def _cfg(weights: str, source: str, tmp_path: Path, **kw) -> object:
    return build_config("classify", "predict", {"model": weights, "source": source, "project": str(tmp_path / "runs"), **kw})


def test_model_predict_stream_is_a_generator_with_the_same_results(weights, tmp_path):
    folder = make_folder(tmp_path / "imgs", 5, size=40)
    arr = np.random.default_rng(1).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    m = Model(weights)
    listed = m.predict([str(folder), arr])
    gen = m.predict([str(folder), arr], stream=True)
    assert isinstance(listed, list) and isinstance(gen, types.GeneratorType)
    streamed = list(gen)
    assert [r.path for r in streamed] == [r.path for r in listed] and len(listed) == 6
    for a, b in zip(streamed, listed):
        assert torch.equal(a.probs.data, b.probs.data) and a.to_json() == b.to_json()
        assert a.orig_shape == b.orig_shape and a.plot().shape == b.plot().shape
    # two streams of one Model, interleaved: each keeps its own keys (the cached task's cfg is shared)
    one, three = m.predict([arr] * 3, stream=True, topk=1, batch=1), m.predict([arr] * 3, stream=True, topk=3, batch=1)
    assert [(next(one).topk, next(three).topk) for _ in range(3)] == [(1, 3)] * 3
    # save=True streams too; still images keep their pixels (r.plot() works), files are written before each yield
    saved = m.predict(str(folder), stream=True, save=True, project=str(tmp_path / "runs"))
    first = next(saved)
    out = tmp_path / "runs" / "classify" / "predict"
    assert (out / "0000_00000.png").is_file() and len((out / "predictions.jsonl").read_text().splitlines()) == 1
    assert first.orig_img.shape == (40, 40, 3) and first.plot().shape == listed[0].plot().shape
    assert len([first, *saved]) == 5 and len(list(out.glob("*.png"))) == 5
    # stream=False with save: a list as before, still images plottable
    res = m.predict(str(folder), save=True, project=str(tmp_path / "runs"))
    assert isinstance(res, list) and res[0].orig_img.shape == (40, 40, 3) and res[0].plot().shape == listed[0].plot().shape


def test_predict_is_lazy_and_fails_fast_on_config(weights, tmp_path):
    gen = predict(_cfg(str(tmp_path / "missing.safetensors"), "x.png", tmp_path, save=True))
    assert isinstance(gen, types.GeneratorType) and not (tmp_path / "runs").exists()  # nothing loaded yet
    with pytest.raises(Exception, match="missing.safetensors"):
        next(gen)
    with pytest.raises(ConfigError, match="missing key 'source'"):
        next(predict(_cfg(weights, None, tmp_path, save=True)))
    assert not (tmp_path / "runs").exists()  # no empty run dir for a config mistake


def test_cli_predict_writes_as_it_streams_and_closes_early(weights, tmp_path, capsys):
    """The catalog runner of `optik classify predict … save=true` is a generator: files appear per item,
    closing it early leaves complete files and the summary line."""
    from optik import catalog

    folder = make_folder(tmp_path / "imgs", 8, size=24)
    cfg = _cfg(weights, str(folder), tmp_path, save=True, save_txt=True, batch=2)
    gen = catalog.load(catalog.mode("classify", "predict").runner)(cfg)
    assert isinstance(gen, types.GeneratorType)
    out = tmp_path / "runs" / "classify" / "predict"
    for i in range(3):
        r = next(gen)
        assert (out / f"{i:04d}_{i:05d}.png").is_file() and (out / "labels" / f"{i:05d}.txt").is_file()
        assert len((out / "predictions.jsonl").read_text().splitlines()) == i + 1  # line-buffered
        assert json.loads((out / "predictions.jsonl").read_text().splitlines()[-1])["path"] == r.path
    assert not (out / "0003_00003.png").exists()  # nothing ahead of the consumer
    gen.close()
    assert "3 predictions saved to" in "".join(capsys.readouterr())  # rich's console writes to stderr
    assert len(list(out.glob("*.png"))) == 3

    # a video closed early: the .mp4 is finalised with the frames written so far
    import cv2

    video = make_video(tmp_path / "clip.mp4", 10, size=32)
    gen = predict(_cfg(weights, str(video), tmp_path, save=True, name="vid"))
    frames = [next(gen) for _ in range(4)]
    assert all(f.orig_img.size == 0 and f.orig_shape == (32, 32) for f in frames)  # pixels dropped once written
    gen.close()
    cap = cv2.VideoCapture(str(tmp_path / "runs" / "classify" / "vid" / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()

    # the whole CLI: echoes results, counts the rest, prints the summary when the stream ends
    from optik.cli import main

    assert main(["classify", "predict", f"model={weights}", f"source={folder}", "save=true", f"project={tmp_path / 'cli'}"]) == 0
    out, err = capsys.readouterr()
    assert f"{folder / '00000.png'}: " in out and "8 predictions saved to" in out + err
    assert len((tmp_path / "cli" / "classify" / "predict" / "predictions.jsonl").read_text().splitlines()) == 8


def test_streamed_results_are_not_kept(weights, tmp_path):
    """Nothing holds a yielded Results once the consumer drops it (at most the batch in flight)."""
    folder = make_folder(tmp_path / "imgs", 24, size=24)
    video = make_video(tmp_path / "clip.mp4", 24, size=24)
    cfg = _cfg(weights, [str(folder), str(video)], tmp_path, save=True, batch=4)
    refs = []
    for i, r in enumerate(predict(cfg)):
        refs.append(weakref.ref(r))
        del r  # freed by reference counting alone: no cycles, nothing waits for the garbage collector
        assert sum(ref() is not None for ref in refs) <= cfg.batch, i
    assert len(refs) == 48


CHILD = r"""
import json, resource, sys, threading, time, torch
torch.set_num_threads(1)
from optik.cli import run_mode
from optik.config import build_config

PAGE = resource.getpagesize()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

class Sampler(threading.Thread):  # the run's own peak: the process-wide ru_maxrss is set by start-up
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = rss_mb(), threading.Event()
    def run(self):
        while not self.done.wait(0.005):
            self.peak = max(self.peak, rss_mb())

weights, project, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
peaks = {}
for label, source in runs:
    cfg = build_config("classify", "predict", {"model": weights, "source": source, "save": True, "project": project, "batch": 16})
    sampler = Sampler()
    sampler.start()
    n = run_mode("classify", "predict", cfg)  # the CLI path: the streaming runner consumed by echo_results
    sampler.done.set()
    sampler.join()
    peaks[label] = {"n": n, "peak_mb": max(sampler.peak, rss_mb()), "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print("PEAKS " + json.dumps(peaks))
"""


def _child(weights: str, project: Path, runs: list[tuple[str, str]]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, weights, str(project), json.dumps(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm; ru_maxrss is KiB on Linux")
def test_peak_rss_is_flat_on_a_big_folder_and_a_long_video(weights, tmp_path):
    """Predict M, then 6M images of a folder (and N, then 6N video frames) through the CLI's streaming
    path in a child process; the 6x run must not raise the peak RSS by more than a few MB. Keeping the
    pixels of the extra items would add ≥ 16 MB (150 × 192² × 3 B; 500 × 96² × 3 B). The process starts
    at ~1 GB (torch, OpenCV), so each run's own peak is sampled and compared with the run before it."""
    small_f, large_f = make_folder(tmp_path / "small", 30, size=192), make_folder(tmp_path / "large", 180, size=192)
    small_v, large_v = make_video(tmp_path / "small.mp4", 100), make_video(tmp_path / "large.mp4", 600)
    runs = [("folder warm", small_f), ("folder small", small_f), ("folder large", large_f),
            ("video warm", small_v), ("video small", small_v), ("video large", large_v)]  # fmt: skip
    proc = _child(weights, tmp_path / "runs", [(label, str(src)) for label, src in runs])  # one start-up (~1 GB, seconds)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    peaks = json.loads(out.split("PEAKS ", 1)[1])
    for kind in ("folder", "video"):
        small, large = peaks[f"{kind} small"], peaks[f"{kind} large"]
        assert large["n"] == 6 * small["n"], peaks
        growth = large["peak_mb"] - small["peak_mb"]
        print(kind, small, large, f"growth {growth:.1f} MB")
        assert growth < 12, (kind, peaks)
