"""``optik zeroshot score``: CLIPScore of images against prompts, captions files or their classes, checked against
transformers' CLIPModel features computed by hand (tiny local CLIP, images at its own 32 px size)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from optik.config import build_config
from optik.errors import ConfigError, DatasetError
from optik.zeroshot.score import score

from hf_tiny import write_tiny_hf_clip

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_clip(tmp_path_factory.mktemp("clip") / "model")


def _images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for n in names:
        paths.append(folder / n)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _hf_features(clip_dir: Path, paths: list[Path], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text features straight from transformers (its own processor and tokenizer)."""
    model = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    proc = transformers.CLIPImageProcessor.from_pretrained(clip_dir)
    tok = transformers.AutoTokenizer.from_pretrained(clip_dir)
    pixels = proc(images=[np.array(Image.open(p)) for p in paths], return_tensors="pt")["pixel_values"]
    ids = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        txt = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    img, txt = (getattr(x, "pooler_output", x) for x in (img, txt))
    return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)


def _cfg(tmp_path: Path, **keys) -> object:
    return build_config("zeroshot", "score", {"project": str(tmp_path / "runs"), **keys})


def test_one_text_for_every_image_equals_transformers(clip_dir: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    out = score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs"), text="a red circle"))
    img, txt = _hf_features(clip_dir, paths, ["a red circle"])
    expected = 250.0 * (img @ txt[0]).clamp(min=0)
    torch.testing.assert_close(out["scores"], expected, atol=0.3, rtol=0)  # PIL vs torchvision bicubic at equal size
    assert out["n"] == 3 and abs(out["CLIPScore"] - float(expected.mean())) < 0.3
    rows = list(csv.DictReader(open(Path(out["run_dir"]) / "scores.csv")))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png", "c.png"] and rows[0]["text"] == "a red circle"
    assert json.loads((Path(out["run_dir"]) / "score.json").read_text())["n"] == 3


def test_captions_file_pairs_each_image_with_its_text(clip_dir: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path / "imgs", ["a.png", "b.png"], seed=1)
    texts = {"a.png": "a blue star", "b.png": "two green squares"}
    jsonl = tmp_path / "predictions.jsonl"  # what optik vl caption save=true writes: path + text
    jsonl.write_text("\n".join(json.dumps({"path": str(p), "text": texts[p.name]}) for p in paths))
    out = score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs"), captions=str(jsonl)))
    img, txt = _hf_features(clip_dir, paths, [texts["a.png"], texts["b.png"]])
    torch.testing.assert_close(out["scores"], 250.0 * (img * txt).sum(-1).clamp(min=0), atol=0.3, rtol=0)
    by_name = tmp_path / "captions.csv"  # a csv matched by file name
    by_name.write_text("file,caption\na.png,a blue star\nb.png,two green squares\n")
    again = score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs"), captions=str(by_name)))
    torch.testing.assert_close(again["scores"], out["scores"])


def test_class_conditional_samples_use_the_ensembled_class_embedding(clip_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sample" / "images"
    paths = _images(folder, ["00000_red_circle.png", "00001_blue_star.png", "00002_red_circle.png"], seed=2)
    Image.new("RGB", (64, 64)).save(folder.parent / "samples.png")  # generate's grid: not a sample
    templates = ["a {}", "a photo of a {}"]
    out = score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(folder.parent), templates=templates))
    assert out["n"] == 3 and out["classes"] == ["blue star", "red circle"]
    names = out["classes"]
    img, txt = _hf_features(clip_dir, paths, [t.format(c) for c in names for t in templates])
    weights = F.normalize(txt.reshape(len(names), len(templates), -1).mean(1), dim=-1)  # CLIP's prompt ensembling
    target = torch.tensor([1, 0, 1])
    torch.testing.assert_close(out["scores"], 250.0 * (img * weights[target]).sum(-1).clamp(min=0), atol=0.3, rtol=0)
    assert out["clip_accuracy"] == pytest.approx(float(((img @ weights.T).argmax(1) == target).float().mean()))


def test_stable_diffusion_run_dir_gives_its_prompt(clip_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "txt2img"
    _images(run, ["txt2img_000.png", "txt2img_001.png"], seed=3)
    (run / "generation.json").write_text(json.dumps({"kind": "txt2img", "prompt": "a red car"}))
    out = score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(run)))
    assert out["texts"] == ["a red car", "a red car"]


def test_bad_inputs_name_the_image_or_the_file(clip_dir: Path, tmp_path: Path) -> None:
    _images(tmp_path / "imgs", ["photo.png"])
    with pytest.raises(ConfigError, match="photo.png"):  # no text anywhere
        score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs")))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"path": "elsewhere.png", "text": "x"}))
    with pytest.raises(ConfigError, match="photo.png"):  # captions without this image
        score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs"), captions=str(other)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "photo.png", "text": "x"}\n{not json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2"):
        score(_cfg(tmp_path, model=f"hf:{clip_dir}", source=str(tmp_path / "imgs"), captions=str(bad)))
    with pytest.raises(ConfigError, match="source"):
        score(_cfg(tmp_path, model=f"hf:{clip_dir}"))
