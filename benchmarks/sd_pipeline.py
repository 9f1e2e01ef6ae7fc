"""Seconds per denoising step of the tiny random Stable Diffusion pipeline at 64 px (CPU, float32).

A regression guard for optik's diffusers path (pipeline loading, schedulers, callbacks, LoRA,
ControlNet, per-step timing), not a quality figure: the pipeline's weights are random. Each row is
the median over ``--repeats`` runs of ``--steps`` steps, batch 1, guidance 7.5 (two UNet passes
per step). Real SD-1.5 at 512 px costs ~4 orders of magnitude more per step on a CPU.

    python benchmarks/sd_pipeline.py            # ~1 min
    python benchmarks/sd_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from optik.generative import sd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    steps, repeats = (4, 2) if args.quick else (args.steps, args.repeats)
    root = Path(tempfile.mkdtemp(prefix="optik-sdbench-"))
    try:
        pipe_dir = sd.make_tiny_pipeline(root / "sd")
        inpaint_dir = sd.make_tiny_pipeline(root / "sd-inpaint", inpaint=True)
        lora = sd.make_tiny_lora(root / "lora", pipe_dir)
        cn = sd.make_tiny_controlnet(root / "cn", pipe_dir)
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        mask = Image.fromarray((np.arange(64)[None, :].repeat(64, 0) > 32).astype(np.uint8) * 255)
        cases = [
            ("txt2img ddim", dict(model=str(pipe_dir), kind="txt2img", scheduler="ddim"), {}),
            ("txt2img dpm++", dict(model=str(pipe_dir), kind="txt2img", scheduler="dpm++"), {}),
            ("txt2img euler_a", dict(model=str(pipe_dir), kind="txt2img", scheduler="euler_a"), {}),
            ("img2img ddim (strength 1.0)", dict(model=str(pipe_dir), kind="img2img", scheduler="ddim"), {"image": image, "strength": 1.0}),
            ("inpaint ddim (9-ch UNet)", dict(model=str(inpaint_dir), kind="inpaint", scheduler="ddim"),
             {"image": image, "mask": mask, "strength": 1.0}),
            ("txt2img + LoRA", dict(model=str(pipe_dir), kind="txt2img", scheduler="ddim", lora=str(lora)), {}),
            ("txt2img + ControlNet (canny)", dict(model=str(pipe_dir), kind="txt2img", scheduler="ddim", controlnet=str(cn)),
             {"control_image": sd.canny_image(image)}),
        ]  # fmt: skip
        rows = []
        for name, load, run in cases:
            pipe = sd.load_pipeline(load.pop("model"), load.pop("kind"), **load)
            sd.run_pipeline(pipe, prompt="warm-up", steps=2, seed=0, progress=False, **run)
            per_step = []
            for r in range(repeats):
                res = sd.run_pipeline(pipe, prompt="a red square on a blue background", steps=steps, seed=r, progress=False, **run)
                per_step.append(res.seconds_per_step)
            rows.append({"pipeline": name, "steps": res.steps, "ms_per_step": 1e3 * statistics.median(per_step),
                         "ms_per_step_min": 1e3 * min(per_step)})  # fmt: skip
        write_results("sd_pipeline" + ("_quick" if args.quick else ""), rows, size=64, guidance_scale=7.5, batch=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
