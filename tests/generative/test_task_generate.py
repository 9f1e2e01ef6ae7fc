"""optik generate train | sample | eval and optik edit, end to end on tiny procedural data (16 px)."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model
from optik.cli import main
from optik.config import build_config
from optik.engine.checkpoint import load_state_dict, read_meta
from optik.engine.trainer import Trainer
from optik.errors import ConfigError

DATA = "synthetic:shapes?n=120&size=16&classes=3&seed=0"
COMMON = {"data": DATA, "imgsz": 16, "batch": 32}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gen")  # one project: the FID feature classifier trains once and is reused


@pytest.fixture(scope="module")
def cvae_run(project: Path) -> dict:
    cfg = build_config("generate", "train", {**COMMON, "model": "cvae", "epochs": 2, "project": str(project), "name": "cvae"})
    return Trainer(cfg).fit()


def test_cvae_train_writes_metrics_plots_and_metadata(cvae_run: dict) -> None:
    m = cvae_run["metrics"]
    assert np.isfinite(m["FID"]) and m["FID"] > 0 and m["fitness"] == -m["FID"]
    assert m["n_fake"] == m["n_real"] == 24  # the val split of 120 images
    run = Path(cvae_run["run_dir"])
    for name in ("samples.png", "interpolation.png", "reconstructions.png", "training_curves.png"):
        assert (run / "plots" / name).is_file(), name
    meta = read_meta(Path(cvae_run["best"]))
    assert meta["task"] == "generate" and meta["model_kind"] == "vae" and meta["channels"] == 3
    assert meta["model_config"]["num_classes"] == 3  # cvae is conditional by default
    assert "FID" in (run / "report.md").read_text()


def test_sample_is_seeded_and_follows_labels(cvae_run: dict, project: Path) -> None:
    m = Model(cvae_run["best"])
    a = m.sample(n=9, seed=1, project=str(project), name="s", save=True)
    assert a["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # one grid row per class
    assert a["images"].shape == (9, 3, 16, 16) and a["images"].dtype == torch.uint8
    assert len(list(Path(a["run_dir"], "images").glob("*_circle.png"))) == 3
    b = m.sample(n=9, seed=1, project=str(project), name="s", save=False)
    c = m.sample(n=9, seed=2, project=str(project), name="s", save=False)
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])
    only = m.sample(n=4, labels=[2], project=str(project), name="s", save=False)
    assert only["labels"].tolist() == [2, 2, 2, 2]
    with pytest.raises(ConfigError, match="'labels'"):
        m.sample(n=4, labels=[7], project=str(project))
    with pytest.raises(ConfigError, match="'prompt'|Stable Diffusion"):
        m.sample(n=4, negative_prompt="blurry", project=str(project))


def test_eval_reports_metrics_and_cas(cvae_run: dict, project: Path) -> None:
    out = Model(cvae_run["best"]).evaluate(project=str(project), name="ev", cas=True, cas_epochs=1)
    saved = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    assert saved["n_fake"] == saved["n_real"] == 24
    assert abs(saved["FID"] - out["FID"]) < 1e-9 and 0.0 <= saved["CAS"] <= 1.0
    assert (Path(out["run_dir"]) / "samples.png").is_file()


def test_gan_steps_both_networks_through_the_engine(project: Path) -> None:
    class Snapshot:
        def on_train_start(self, trainer) -> None:
            self.before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    snap = Snapshot()
    cfg = build_config("generate", "train", {**COMMON, "model": "cgan", "epochs": 2, "val": False, "width": 16,
                                             "project": str(project), "name": "gan", "label_flip": 0.05,
                                             "diffaug": "translation", "label_smoothing": 0.1})  # fmt: skip
    result = Trainer(cfg, callbacks=[snap]).fit()
    after = load_state_dict(Path(result["last"]))
    moved = {k.split(".")[0] for k, v in after.items() if v.is_floating_point() and not torch.equal(v, snap.before[k])}
    assert moved == {"generator", "discriminator"}
    header = (Path(result["run_dir"]) / "metrics.csv").read_text().splitlines()[0]
    assert all(f"train/{k}" in header for k in ("d_loss", "g_loss", "d_real", "d_fake", "diversity")) and "val/FID" in header
    best, last = load_state_dict(Path(result["best"])), after
    assert all(torch.equal(best[k], last[k]) for k in best)  # GAN: without a quality signal the latest weights are best
    with pytest.raises(ConfigError, match="accumulate"):
        Trainer(build_config("generate", "train", {**COMMON, "model": "dcgan", "accumulate": 2, "project": str(project)})).fit()


def test_ddpm_trains_and_samples_with_guidance_and_schedulers(project: Path) -> None:
    cfg = build_config("generate", "train", {**COMMON, "model": "ddpm", "width": 8, "epochs": 1, "val_steps": 2,
                                             "project": str(project), "name": "ddpm"})  # fmt: skip
    result = Trainer(cfg).fit()
    run = Path(result["run_dir"])
    assert (run / "plots" / "trajectory.png").is_file() and np.isfinite(result["metrics"]["FID"])
    m = Model(result["best"])
    kw = {"n": 3, "steps": 3, "project": str(project), "name": "ds", "save": False, "labels": [1]}
    plain = m.sample(guidance_scale=1.0, **kw)["images"]
    guided = m.sample(guidance_scale=4.0, **kw)["images"]
    assert not torch.equal(plain, guided)
    for name in ("ddpm", "dpm++", "euler"):
        assert m.sample(scheduler=name, **kw)["images"].shape == (3, 3, 16, 16)
    assert Path(m.sample(**{**kw, "save": True})["run_dir"], "trajectory.png").is_file()


def test_cli_generate_errors_are_one_line(capsys: pytest.CaptureFixture, cvae_run: dict, project: Path) -> None:
    assert main(["generate", "sample", f"model={cvae_run['best']}", "n=2", f"project={project}"]) == 0
    assert main(["generate", "train", "model=dcgan", "mixup=0.2"]) == 2
    assert "'mixup' is a classify train key" in capsys.readouterr().err
    assert main(["generate", "sample", "model=runs/nope/weights/best.safetensors"]) == 2
    assert main(["generate", "predict", "model=x"]) == 2
    assert "unknown mode" in capsys.readouterr().err


# --- Stable Diffusion + optik edit on tiny local pipelines -----------------------------------
@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optik.generative.sd import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("sd-inpaint"), inpaint=True)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96×72 'photo': grey background, a red disc at (40, 36)."""
    yy, xx = np.mgrid[:72, :96]
    img = np.full((72, 96, 3), 120, np.uint8)
    img[(xx - 40) ** 2 + (yy - 36) ** 2 < 15**2] = (220, 30, 30)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(img).save(path)
    return path


def test_edit_with_a_mask_keeps_every_pixel_outside_it(photo: Path, inpaint_dir: Path, tmp_path: Path) -> None:
    from optik.generative.edit import edit

    mask = np.zeros((72, 96), np.uint8)
    mask[20:52, 24:56] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    cfg = build_config("edit", "edit", {"image": str(photo), "mask": str(tmp_path / "mask.png"), "prompt": "a blue ball",
                                        "model": f"hf:{inpaint_dir}", "imgsz": 64, "steps": 2, "dilate": 4, "feather": 4,
                                        "project": str(tmp_path)})  # fmt: skip
    out = edit(cfg)
    before, after = np.asarray(Image.open(photo)), np.asarray(Image.open(out["out"]))
    assert after.shape == before.shape
    far = np.ones((72, 96), bool)
    far[20 - 4 - 8 : 52 + 4 + 8, 24 - 4 - 8 : 56 + 4 + 8] = False  # mask + dilation + feather reach
    assert np.array_equal(after[far], before[far])
    assert not np.array_equal(after[20:52, 24:56], before[20:52, 24:56])
    panel = np.asarray(Image.open(out["panel"]))
    assert panel.shape[0] == 256 and panel.shape[1] > 3 * 256  # before | mask | after
    again = edit(cfg.model_copy(update={"name": "again"}))
    assert np.array_equal(np.asarray(Image.open(again["out"])), after)  # seeded


def test_edit_from_a_sam_click(photo: Path, inpaint_dir: Path, sam_dir: Path, tmp_path: Path) -> None:
    from optik.generative.edit import edit

    cfg = build_config("edit", "edit", {"image": str(photo), "point": "40,36", "prompt": "a blue ball", "sam": f"hf:{sam_dir}",
                                        "model": f"hf:{inpaint_dir}", "imgsz": 64, "steps": 2, "project": str(tmp_path)})  # fmt: skip
    out = edit(cfg)
    assert out["object_mask"].shape == (72, 96) and out["object_mask"].any()
    assert np.asarray(Image.open(out["mask"])).shape == (72, 96)
    with pytest.raises(ConfigError, match="'point'"):
        edit(cfg.model_copy(update={"point": [500.0, 10.0]}))
    with pytest.raises(ConfigError, match="'prompt'"):
        edit(build_config("edit", "edit", {"image": str(photo), "point": "40,36"}))
    args = [f"image={photo}", "box=20,16,60,56", "prompt=a blue ball", f"sam=hf:{sam_dir}", f"model=hf:{inpaint_dir}", "imgsz=64",
            "steps=2", f"project={tmp_path}", "name=cli"]  # fmt: skip
    assert main(["edit", *args]) == 0 and (tmp_path / "edit" / "cli" / "panel.png").is_file()
    assert main(["edit", *args[:2], "prompt=x", "point=1,2,3"]) == 2  # a point is x,y


def test_generate_sample_runs_stable_diffusion(photo: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    from optik.generative.run import sample
    from optik.generative.sd import make_tiny_controlnet, make_tiny_lora, make_tiny_pipeline

    root = tmp_path_factory.mktemp("sd")
    sd_dir = make_tiny_pipeline(root / "pipe")
    base = {"model": f"hf:{sd_dir}", "prompt": "a red disc", "steps": 2, "imgsz": 64, "project": str(root / "runs")}
    t = sample(build_config("generate", "sample", {**base, "n": 2}))
    info = json.loads((Path(t["run_dir"]) / "generation.json").read_text())
    assert info["kind"] == "txt2img" and info["steps"] == 2 and info["seconds_per_step"] > 0
    assert t["images"].shape == (2, 3, 64, 64) and len(t["paths"]) == 2
    assert not torch.equal(t["images"][0], t["images"][1])  # a batch: different latents
    i = sample(build_config("generate", "sample", {**base, "n": 1, "image": str(photo), "strength": 0.5, "steps": 4}))
    assert i["kind"] == "img2img"
    lora = make_tiny_lora(root / "lora", sd_dir)
    with_lora = sample(build_config("generate", "sample", {**base, "n": 1, "lora": str(lora)}))
    assert not torch.equal(with_lora["images"][0], t["images"][0])
    cn = make_tiny_controlnet(root / "cn", sd_dir)
    c = sample(build_config("generate", "sample", {**base, "n": 1, "controlnet": f"hf:{cn}", "image": str(photo)}))
    assert c["kind"] == "txt2img" and c["controlnet"] == f"hf:{cn}"
    with pytest.raises(ConfigError, match="'controlnet' needs 'image'"):
        sample(build_config("generate", "sample", {**base, "controlnet": f"hf:{cn}"}))
    assert main(["generate", "sample", f"model=hf:{sd_dir}", "prompt=a cat", "steps=2", "imgsz=64", "n=1", f"project={root}/cli"]) == 0
    assert main(["generate", "sample", f"model=hf:{root}/missing", "prompt=a cat"]) == 2
    assert "'model': local directory" in capsys.readouterr().err


def test_data_is_model_space_and_grayscale_is_detected(image_dir: Path, project: Path) -> None:
    from optik.tasks.generate import GenerateTask

    digits = GenerateTask(build_config("generate", "eval", {"data": "digits", "imgsz": 16, "model": "x"}))
    data = digits.datasets()
    x, label = data.train[0]
    assert digits.meta["channels"] == 1 and x.shape == (1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9  # digits: black background → -1
    assert len(digits.meta["classes"]) == 10 and 0 <= label < 10
    folder = build_config("generate", "train", {"data": str(image_dir), "model": "ae", "imgsz": 16, "epochs": 1, "batch": 4,
                                                "project": str(project), "name": "folder"})  # fmt: skip
    result = Trainer(folder).fit()
    meta = read_meta(Path(result["best"]))
    assert meta["channels"] == 3 and meta["classes"] == ["blue", "red"] and meta["model_config"]["num_classes"] == 0
    assert Model(result["best"]).sample(n=2, project=str(project), save=False)["images"].shape == (2, 3, 16, 16)


def test_sample_from_a_diffusers_ddpm_pipeline_dir(tmp_path: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from optik.generative.run import sample

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(tmp_path / "ddpm")
    out = sample(build_config("generate", "sample", {"model": f"hf:{tmp_path / 'ddpm'}", "n": 2, "steps": 3, "project": str(tmp_path)}))
    assert out["images"].shape == (2, 3, 8, 8) and out["labels"] is None
    assert Path(out["run_dir"], "trajectory.png").is_file()


def test_gan_resume_is_exact(project: Path) -> None:
    """2 epochs + resume 1 == 3 epochs straight, bit for bit: the manual D/G step, its RNG (z, label flips,
    DiffAugment) and the EMA resume like any other task's step."""

    class StopAfter:
        def on_epoch_end(self, trainer, epoch, logs) -> None:
            if epoch + 1 == 2:
                raise KeyboardInterrupt

    base = {**COMMON, "model": "cgan", "epochs": 3, "val": False, "width": 8, "ema": True, "diffaug": "color,translation",
            "label_flip": 0.1, "plots": False}  # fmt: skip
    # One project: the first run trains the feature classifier, the second finds it cached — same result either way.
    a = Trainer(build_config("generate", "train", {**base, "project": str(project / "r"), "name": "straight"})).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(build_config("generate", "train", {**base, "project": str(project / "r"), "name": "split"}), callbacks=[StopAfter()]).fit()
    b = Trainer(build_config("generate", "train", {"resume": True, "name": "split", "project": str(project / "r")})).fit()
    wa, wb = load_state_dict(Path(a["last"])), load_state_dict(Path(b["last"]))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
