"""SAM automatic mask generation: seconds per image, split into image encoder / mask decoder /
post-processing (mask upscaling, IoU + stability filtering, RLE, NMS, crops).

A tiny random SamModel (ViT 2 layers × 32 wide, 256 px input, 16×16 embedding, 64×64 low-res
masks) so the numbers measure optik's AMG pipeline rather than a big encoder; its weights are
re-drawn at unit fan-in scale so masks pass the filters like a trained model's would. Each
configuration runs ``repeats`` times on seeded synthetic images (shapes on noise) after a warm-up;
the median is reported.

- ``default``: segment-anything's settings (32×32 points, batch 64, IoU 0.88, stability 0.95);
  random weights pass few masks, so post-processing here is mostly upscaling + scoring;
- ``permissive``: IoU filter off, stability 0.1: most masks reach RLE + NMS (worst case);
- ``+crops``: one extra crop layer (4 crops, 16×16 points each).

    python benchmarks/sam_amg_speed.py [size=256] [repeats=3] [device=cpu] [threads=1]

``threads=1`` by default: on a small shared CPU, intra-op threads mostly spin against each other
(``threads=0`` keeps torch's default). The 1-minute load average is recorded with the results.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.sam import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402


def tiny_sam(size: int) -> torch.nn.Module:
    from transformers import SamConfig, SamModel

    vision = dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=size,
                  patch_size=16, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64)  # fmt: skip
    prompt = dict(hidden_size=32, image_size=size, patch_size=16, mask_input_channels=4)
    decoder = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32)
    torch.manual_seed(0)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and "positional_embedding" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:])))
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(8)
    return model


def image(size: int, seed: int) -> np.ndarray:
    """Noise with a few flat rectangles and disks: something for masks to latch on to."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6):
        colour = rng.integers(80, 255, 3)
        x, y, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 16, size // 5))]
        if rng.random() < 0.5:
            img[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = colour
        else:
            img[max(0, y - r) : y + r, max(0, x - r) : x + r] = colour
    return img


CONFIGS = {
    "default": {},
    "permissive": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.1},
    "permissive+crops": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.1, "crop_n_layers": 1,
                         "crop_n_points_downscale_factor": 2},
}  # fmt: skip


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    size, repeats, device = int(args.get("size", 256)), int(args.get("repeats", 3)), args.get("device", "cpu")
    if int(args.get("threads", 1)):
        torch.set_num_threads(int(args.get("threads", 1)))
    predictor = SamPredictor(tiny_sam(size), device=device)
    images = [image(size, seed) for seed in range(repeats)]
    rows = []
    for name, overrides in CONFIGS.items():
        gen = SamAutomaticMaskGenerator(predictor, **overrides)
        gen.generate(images[0])  # warm-up (allocator, lazy imports)
        runs = []
        for img in images:
            r = gen.generate(img)
            runs.append({**gen.timing, "masks": len(r.masks)})
        med = {k: statistics.median(run[k] for run in runs) for k in ("encoder", "decoder", "postprocess", "total")}
        crops = 1 + sum(4**i for i in range(1, gen.crop_n_layers + 1))
        prompts = sum(len(g) * 4**i for i, g in enumerate(gen.point_grids))
        rows.append({"config": name, "crops": crops, "prompts": prompts,
                     "s_per_image": round(med["total"], 4), "encoder_s": round(med["encoder"], 4),
                     "decoder_s": round(med["decoder"], 4), "postprocess_s": round(med["postprocess"], 4),
                     "post_share": round(med["postprocess"] / med["total"], 3),
                     "masks": statistics.median(run["masks"] for run in runs)})  # fmt: skip
        print(f"{name}: {med['total']:.3f} s/image")
    params = sum(p.numel() for p in predictor.model.parameters())
    write_results("sam_amg_speed", rows, image_size=size, repeats=repeats, device=str(predictor.device),
                  model=f"tiny random SamModel ({params} parameters, {size} px input)",
                  points_per_side=32, points_per_batch=64, load_average_1min=round(os.getloadavg()[0], 2))  # fmt: skip


if __name__ == "__main__":
    main()
