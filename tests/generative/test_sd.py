"""Stable Diffusion wrappers on tiny random local pipelines (64 px, 2–3 steps, no hub access)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from optik.errors import ConfigError
from optik.generative import sd

PROMPT = "a red square"


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Build every tiny model once; keep the hub offline for the whole module."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        root = tmp_path_factory.mktemp("sd")
        txt = sd.make_tiny_pipeline(root / "txt", seed=0)
        m = {
            "txt": str(txt),
            "inpaint9": str(sd.make_tiny_pipeline(root / "inp", inpaint=True, seed=1)),
            "controlnet": str(sd.make_tiny_controlnet(root / "cn", txt, seed=2)),
            "lora": str(sd.make_tiny_lora(root / "lora", txt, seed=3)),
        }
        yield m
        sd.clear_cache()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 64 px picture with hard edges (a bright square on a ramp) for img2img/inpaint/Canny."""
    x = np.indices((64, 64)).sum(0)[..., None].repeat(3, -1) * 2
    x[20:44, 20:44] = 255
    return Image.fromarray(x.astype(np.uint8))


@pytest.fixture(scope="module")
def mask() -> Image.Image:
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    return Image.fromarray(m)


@pytest.fixture(scope="module")
def base_image(models) -> np.ndarray:
    pipe = sd.load_pipeline(models["txt"], "txt2img")
    return arr(sd.run_pipeline(pipe, prompt=PROMPT, steps=2, seed=0, progress=False).images[0])


def test_txt2img_deterministic_and_sensitive(models, base_image):
    pipe = sd.load_pipeline(models["txt"], "txt2img")
    res = sd.run_pipeline(pipe, prompt=PROMPT, steps=2, seed=0, progress=True)
    assert res.images[0].size == (64, 64) and res.steps == 2 and res.seed == 0
    assert res.seconds > 0 and 0 < res.seconds_per_step < res.seconds
    np.testing.assert_array_equal(arr(res.images[0]), base_image)          # same seed → same pixels
    assert base_image.std() > 1                                             # not a blank image
    other_seed = arr(sd.run_pipeline(pipe, prompt=PROMPT, steps=2, seed=1, progress=False).images[0])
    other_prompt = arr(sd.run_pipeline(pipe, prompt="a blue circle", steps=2, seed=0, progress=False).images[0])
    negative = arr(sd.run_pipeline(pipe, prompt=PROMPT, negative_prompt="blurry", steps=2, seed=0,
                                   progress=False).images[0])
    for x in (other_seed, other_prompt, negative):
        assert np.abs(x - base_image).mean() > 0.1
    batch = sd.run_pipeline(pipe, prompt=PROMPT, steps=2, seed=0, batch=2, progress=False)
    assert len(batch.images) == 2 and np.abs(arr(batch.images[0]) - arr(batch.images[1])).mean() > 1


def test_pipeline_cache_shares_weights(models):
    a = sd.load_pipeline(models["txt"], "txt2img")
    assert sd.load_pipeline(models["txt"], "txt2img") is a
    b = sd.load_pipeline(models["txt"], "img2img")
    assert type(b).__name__ == "StableDiffusionImg2ImgPipeline" and b.unet is a.unet   # from_pipe: no copy


def test_img2img_strength(models, photo):
    pipe = sd.load_pipeline(models["txt"], "img2img")
    # diffusers runs only the last int(steps * strength) steps of the schedule.
    assert sd.run_pipeline(pipe, prompt=PROMPT, image=photo, strength=0.5, steps=4, progress=False).steps == 2

    def seed_spread(strength: float) -> float:
        outs = [arr(sd.run_pipeline(pipe, prompt=PROMPT, image=photo, strength=strength, steps=10, seed=s,
                                    progress=False).images[0]) for s in (0, 1)]
        return np.abs(outs[0] - outs[1]).mean()

    # Low strength starts from the lightly noised input: seeds barely matter; at strength 1 they dominate.
    assert seed_spread(0.1) < 0.5 * seed_spread(1.0)
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    a = arr(sd.run_pipeline(pipe, prompt=PROMPT, image=photo, strength=0.3, steps=10, progress=False).images[0])
    b = arr(sd.run_pipeline(pipe, prompt=PROMPT, image=flat, strength=0.3, steps=10, progress=False).images[0])
    assert np.abs(a - b).mean() > 1                                        # the input image matters
    with pytest.raises(ConfigError, match="strength"):
        sd.run_pipeline(pipe, prompt=PROMPT, image=photo, strength=0.0, steps=2, progress=False)
    with pytest.raises(ConfigError, match="image"):
        sd.run_pipeline(pipe, prompt=PROMPT, steps=2, progress=False)


@pytest.mark.parametrize("which", ["txt", "inpaint9"])
def test_inpaint_keeps_unmasked_pixels(models, photo, mask, which):
    pipe = sd.load_pipeline(models[which], "inpaint")
    assert pipe.unet.config.in_channels == (9 if which == "inpaint9" else 4)
    outside = np.asarray(mask) == 0

    def run(seed: int, paste_back: bool) -> np.ndarray:
        return arr(sd.run_pipeline(pipe, prompt=PROMPT, image=photo, mask=mask, strength=1.0, steps=2, seed=seed,
                                   paste_back=paste_back, progress=False).images[0])

    a, b = run(0, True), run(1, True)
    np.testing.assert_array_equal(a[outside], arr(photo)[outside])          # pasted back exactly
    assert np.abs(a - b)[~outside].mean() > 1                               # the hole is regenerated
    if which == "txt":
        # Legacy 4-channel inpainting: diffusers re-imposes the input latents outside the mask at every
        # step, so even without paste-back the seeds only change the masked area (up to VAE bleed).
        a, b = run(0, False), run(1, False)
        assert np.abs(a - b)[outside].mean() < 0.3 * np.abs(a - b)[~outside].mean()


def test_inpaint_model_refuses_txt2img(models):
    with pytest.raises(ConfigError, match="model"):
        sd.load_pipeline(models["inpaint9"], "txt2img")


def test_lora_changes_output_and_scale_zero_is_base(models, base_image):
    kw = dict(prompt=PROMPT, steps=2, seed=0, progress=False)
    on = sd.load_pipeline(models["txt"], "txt2img", lora=models["lora"], lora_scale=1.0)
    with_lora = arr(sd.run_pipeline(on, **kw).images[0])
    assert np.abs(with_lora - base_image).mean() > 0.5
    off = sd.load_pipeline(models["txt"], "txt2img", lora=models["lora"], lora_scale=0.0)
    assert off is on                                                        # cached; only the scale changed
    np.testing.assert_allclose(arr(sd.run_pipeline(off, **kw).images[0]), base_image, atol=1)
    # The LoRA lives in its own UNet copy: the plain pipeline is untouched.
    base = sd.load_pipeline(models["txt"], "txt2img")
    assert base.unet is not on.unet
    np.testing.assert_array_equal(arr(sd.run_pipeline(base, **kw).images[0]), base_image)


def test_controlnet_depends_on_control_image(models, photo):
    pipe = sd.load_pipeline(models["txt"], "txt2img", controlnet=models["controlnet"])
    assert type(pipe).__name__ == "StableDiffusionControlNetPipeline"
    edges = sd.canny_image(photo)
    e = np.asarray(edges)
    assert edges.mode == "RGB" and edges.size == photo.size and set(np.unique(e)) == {0, 255}
    rows = np.flatnonzero(e[:, 32, 0])
    assert rows.min() in (19, 20) and rows.max() in (43, 44) and not e[5:15, 5:15].any()  # square border only
    kw = dict(prompt=PROMPT, steps=2, seed=0, progress=False)
    a = arr(sd.run_pipeline(pipe, control_image=edges, **kw).images[0])
    b = arr(sd.run_pipeline(pipe, control_image=Image.fromarray(255 - e), **kw).images[0])  # inverted edges
    assert np.abs(a - b).mean() > 1
    with pytest.raises(ConfigError, match="control_image"):
        sd.run_pipeline(pipe, **kw)
    # img2img + ControlNet shares the same weights and runs too.
    p2 = sd.load_pipeline(models["txt"], "img2img", controlnet=models["controlnet"])
    assert type(p2).__name__ == "StableDiffusionControlNetImg2ImgPipeline" and p2.controlnet is not None
    assert sd.run_pipeline(p2, image=photo, control_image=edges, strength=1.0, **kw).images[0].size == (64, 64)


def test_schedulers(models, base_image):
    outs = {}
    for name in ("ddim", "euler", "dpm++", "pndm"):
        pipe = sd.load_pipeline(models["txt"], "txt2img", scheduler=name)
        assert type(pipe.scheduler).__name__ == sd.SCHEDULERS[name][0]
        res = sd.run_pipeline(pipe, prompt=PROMPT, steps=2, seed=0, progress=False)
        assert res.steps == (3 if name == "pndm" else 2)                    # PLMS warm-up adds a step
        outs[name] = arr(res.images[0])
    np.testing.assert_array_equal(outs["ddim"], base_image)                 # the tiny model's own scheduler
    assert np.abs(outs["dpm++"] - outs["ddim"]).mean() > 0.1
    assert sd.SCHEDULERS["dpm++"][1]["algorithm_type"] == "dpmsolver++"
    # scheduler=None goes back to the model's own scheduler.
    assert type(sd.load_pipeline(models["txt"], "txt2img").scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ConfigError, match="scheduler"):
        sd.load_pipeline(models["txt"], "txt2img", scheduler="heun2000")


def test_bad_arguments(models, tmp_path):
    for bad in (str(tmp_path / "missing"), str(tmp_path), "hf:optik-test/does-not-exist"):
        with pytest.raises(ConfigError, match="^model"):
            sd.load_pipeline(bad, "txt2img")
    with pytest.raises(ConfigError, match="dtype"):
        sd.load_pipeline(models["txt"], "txt2img", dtype="float16")
    with pytest.raises(ConfigError, match="kind"):
        sd.load_pipeline(models["txt"], "video")
    with pytest.raises(ConfigError, match="lora"):
        sd.load_pipeline(models["txt"], "txt2img", lora=str(tmp_path / "nope.safetensors"))
