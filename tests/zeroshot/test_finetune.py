"""objective=finetune: the zero-shot head, WiSE-FT's interpolation, the run end to end, resume and bad keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from optik import Model
from optik.cli import main
from optik.config import build_config
from optik.errors import ConfigError
from optik.tasks.zeroshot import ZeroshotTask
from optik.weights import load_state_dict, read_meta
from optik.zeroshot.clip import TinyCLIP
from optik.zeroshot.finetune import CLIPClassifier, WiseFT, interpolate_state, zeroshot_logits
from optik.zeroshot.prompts import class_embeddings

VOCAB = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "blue", "circle", "star", "small"]
DATA = "synthetic:shapes?n=48&size=32&classes=3"
SHIFT = "synthetic:shapes?n=24&size=32&classes=3&difficulty=0.95&seed=5"


def tiny_clip() -> TinyCLIP:
    torch.manual_seed(0)
    return TinyCLIP(VOCAB, "cnn", embed_dim=16, text_width=16, text_layers=1, text_heads=2, context_length=8, img_size=32).eval()


def trained_pair() -> WiseFT:
    """A WiseFT whose network took a few SGD steps in train mode (weights and BN statistics moved)."""
    clip = tiny_clip()
    net = CLIPClassifier.from_clip(clip, 2)
    net.init_zeroshot_head(clip, ["red circle", "blue star"], ["a {}", "a small {}"])
    model = WiseFT(net, alpha=0.5)
    opt = torch.optim.SGD(model.net.parameters(), lr=0.5)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 3, 32, 32)), torch.randint(0, 2, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_zeroshot_head_equals_zero_shot_logits_before_any_step() -> None:
    clip = tiny_clip()
    names, templates = ["red circle", "blue star", "small red star"], ["a {}", "a small {}"]
    net = CLIPClassifier.from_clip(clip, 3).eval()
    net.init_zeroshot_head(clip, names, templates)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        got = net(x)
        assert torch.equal(got, zeroshot_logits(clip, x, names, templates))  # the same function, bit for bit
        # ... and the zero-shot classifier as `optik zeroshot predict` computes it (scale · image @ class weights)
        want = clip.scale()[0] * clip.encode_image(x) @ class_embeddings(clip, names, templates).T
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6) and torch.equal(got.argmax(1), want.argmax(1))
    assert torch.equal(net.head.bias, torch.zeros(3))


def test_interpolate_state_by_hand() -> None:
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(7)}
    mid = interpolate_state(a, b, 0.25)
    assert mid["w"].tolist() == [1.0, 3.0] and int(mid["n"]) == 7  # (1−α)·a + α·b; integer buffers: the fine-tuned one
    assert interpolate_state(a, b, 0.0)["w"] is a["w"] and interpolate_state(a, b, 1.0)["w"] is b["w"]


def test_wise_endpoints_are_exact_and_bn_statistics_interpolate() -> None:
    model = trained_pair()
    zs, ft = model.zeroshot.state_dict(), model.net.state_dict()
    bn = next(k for k in ft if k.endswith("running_mean"))
    assert not torch.equal(zs[bn], ft[bn])  # training moved the BN statistics
    for alpha, want in ((0.0, zs), (1.0, ft)):
        got = model.merged(alpha).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in ("head.weight", bn)) and all(
            torch.equal(got[k], want[k]) for k in want if want[k].is_floating_point())
    half = model.merged(0.5).state_dict()
    assert torch.allclose(half[bn], (zs[bn] + ft[bn]) / 2)
    assert torch.allclose(half["head.weight"], (zs["head.weight"] + ft["head.weight"]) / 2)
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.logits_at(x, 0.0), model.zeroshot(x)) and torch.equal(model.logits_at(x, 1.0), model.net(x))
        # the on-the-fly θ_α (functional_call, BN in eval mode with the interpolated statistics) equals the merged copy
        assert torch.allclose(model.logits_at(x, 0.5), model.merged(0.5).eval()(x), atol=1e-6)
        assert torch.equal(model(x), model.logits_at(x, 0.5))  # eval forward: the chosen α


@pytest.fixture(scope="module")
def ft_run(clip_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = Model(str(clip_run), task="zeroshot")
    m.train(objective="finetune", data=DATA, shift_data=SHIFT, epochs=2, batch=16, lr=3e-3, wise=[0, 0.5, 1],
            wise_alpha=0.5, project=str(tmp_path_factory.mktemp("ft")), name="ft")  # fmt: skip
    return Path(m.run_dir)


def test_finetune_run_scores_the_wise_grid(ft_run: Path, clip_run: Path, tmp_path: Path) -> None:
    wise = json.loads((ft_run / "wise.json").read_text())
    assert [r["alpha"] for r in wise["alphas"]] == [0.0, 0.5, 1.0] and wise["wise_alpha"] == 0.5
    assert all(r["shift_top1"] is not None for r in wise["alphas"]) and (ft_run / "plots" / "wise.png").is_file()
    meta = read_meta(ft_run / "weights" / "best.safetensors")
    assert meta["objective"] == "finetune" and meta["classes"] == ["circle", "square", "triangle"] and meta["wise_alpha"] == 0.5
    assert set(meta["wise"]) == {"top1@a0", "top1@a0.5", "top1@a1", "shift_top1@a0", "shift_top1@a0.5", "shift_top1@a1"}
    report = (ft_run / "report.md").read_text()
    assert "WiSE-FT α=0.5" in report and "| 0.5 |" in report
    # α = 0 is the CLIP's own zero-shot classifier: the fine-tuned file at wise_alpha=0 scores what `optik zeroshot val`
    # of the CLIP scores on the same split (an independent code path: text tower, prompt ensembling, ZeroShotMetric).
    at0 = Model(str(ft_run), task="zeroshot").val(wise_alpha=0, project=str(tmp_path))
    clip = Model(str(clip_run), task="zeroshot").val(data=DATA, project=str(tmp_path))
    assert at0["top1"] == pytest.approx(clip["top1"]) and at0["top1"] == pytest.approx(meta["wise"]["top1@a0"])
    # Default α: the training's; its val equals the training's final numbers for the best weights.
    chosen = Model(str(ft_run), task="zeroshot").val(project=str(tmp_path))
    assert chosen["top1"] == pytest.approx(meta["wise"]["top1@a0.5"])


def test_finetuned_predict_answers_over_its_classes(ft_run: Path) -> None:
    import numpy as np

    img = np.full((32, 32, 3), 120, np.uint8)
    (r,) = Model(str(ft_run), task="zeroshot").predict(img)
    assert list(r.names) == ["circle", "square", "triangle"] and float(r.probs.data.sum()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="labels"):
        Model(str(ft_run), task="zeroshot").predict(img, labels=["cat", "dog"])
    # the merged model's logits equal WiseFT's on-the-fly θ_0.5 from the file's two endpoints
    cfg = build_config("zeroshot", "predict", {"model": str(ft_run)})
    task = ZeroshotTask(cfg, meta=read_meta(ft_run / "weights" / "best.safetensors"))
    merged = task.build_model()
    both = WiseFT(CLIPClassifier(task.meta["model_config"]))
    both.load_state_dict(load_state_dict(ft_run / "weights" / "best.safetensors"))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(merged(x), both.eval().logits_at(x, 0.5), atol=1e-5)


def test_resume_equals_a_straight_run(clip_run: Path, tmp_path: Path) -> None:
    keys = dict(objective="finetune", data=DATA, batch=16, lr=3e-3, wise=[0, 1], head="linear", project=str(tmp_path), plots=False)
    Model(str(clip_run), task="zeroshot").train(epochs=2, name="straight", **keys)
    cut = Model(str(clip_run), task="zeroshot")

    def stop(trainer: object, epoch: int, logs: dict) -> None:  # killed after epoch 1 (Ctrl-C keeps the finished epoch)
        raise KeyboardInterrupt

    cut.add_callback("on_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        cut.train(epochs=2, name="cut", **keys)
    Model(str(clip_run), task="zeroshot").train(epochs=2, name="cut", resume=True, **{k: v for k, v in keys.items() if k in ("project", "plots")})
    a = load_state_dict(tmp_path / "zeroshot" / "straight" / "weights" / "last.safetensors")
    b = load_state_dict(tmp_path / "zeroshot" / "cut" / "weights" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_keys_are_config_errors(clip_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["objective=finetune", "model=cnn", f"data={DATA}"], "model"),
        (["objective=finetune", f"model={clip_run}", f"data={DATA}", "wise=[0,2]"], "wise"),
        (["model=cnn", f"data={DATA}", "wise=[0,1]"], "'wise' applies to objective=finetune"),
        (["objective=finetune", f"model={clip_run}", f"data={DATA}", "shift_data=synthetic:shapes?n=8&classes=4"], "shift_data"),
        (["objective=finetune", f"model={clip_run}", "data=synthetic:captions?n=8"], "data"),
    ]
    for argv, needle in cases:
        assert main(["zeroshot", "train", *argv, f"project={tmp_path}", "epochs=1"]) == 2, argv
        assert needle in capsys.readouterr().err.replace("\n", " "), argv
    assert main(["zeroshot", "val", f"model={clip_run}", "wise_alpha=0.5", f"project={tmp_path}"]) == 2
    assert "wise_alpha" in capsys.readouterr().err


def test_hf_clip_fine_tunes_and_its_zero_shot_endpoint_is_the_clip(tmp_path: Path) -> None:
    from hf_tiny import write_tiny_hf_clip

    d = write_tiny_hf_clip(tmp_path / "clip")
    m = Model(f"hf:{d}", task="zeroshot")
    m.train(objective="finetune", data=DATA, epochs=1, batch=16, wise=[0, 1], project=str(tmp_path), plots=False)
    at0 = Model(str(m.run_dir), task="zeroshot").val(wise_alpha=0, project=str(tmp_path))
    clip = Model(f"hf:{d}", task="zeroshot").val(data=DATA, project=str(tmp_path))  # the photo templates, as the head's
    assert at0["top1"] == pytest.approx(clip["top1"]) and at0["images"] == clip["images_classified"]
