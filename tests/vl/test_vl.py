"""optik vl caption / vqa on a tiny random BLIP saved locally: optik's text equals transformers' own
processor + generate + decode for the same image and settings; the CLI writes predictions.jsonl; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
from PIL import Image

from optik import Model
from optik.cli import main
from optik.errors import ConfigError
from optik.results import Results
from optik.vl import caption, vqa
from optik.vl.tiny import write_tiny_blip

TOKENS = 6
DOC_TOKENS = 8  # the random Donut closes its answer tag within 8 tokens on some images


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vl")
    images = root / "imgs"
    images.mkdir()
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate([(40, 48), (64, 32), (24, 24)]):  # odd sizes: the processor resizes, not optik
        Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)).save(images / f"{i}.png")
    return {"caption": write_tiny_blip(root / "cap", "caption", seed=0), "vqa": write_tiny_blip(root / "vqa", "vqa", seed=1),
            "images": images}  # fmt: skip


def reference(model_dir: Path, cls: str, image: Path, text: str | None, num_beams: int = 1) -> str:
    """transformers alone, as its model card shows: PIL image → processor → generate → decode."""
    model = getattr(transformers, cls).from_pretrained(model_dir).eval()
    processor = transformers.BlipProcessor.from_pretrained(model_dir)
    pil = Image.open(image).convert("RGB")
    enc = processor(images=pil, text=text, return_tensors="pt") if text is not None else processor(images=pil, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=TOKENS, num_beams=num_beams, do_sample=False)
    return processor.decode(out[0], skip_special_tokens=True)


def files(blip: dict[str, Path]) -> list[Path]:
    return sorted(blip["images"].glob("*.png"))


@pytest.mark.parametrize("prompt, num_beams", [(None, 1), ("a photo of", 1), (None, 2)])
def test_caption_equals_transformers(blip: dict[str, Path], prompt: str | None, num_beams: int) -> None:
    # batch=2 over 3 images: a batch of two and a batch of one, each equal to transformers on that image alone
    results = caption(model=f"hf:{blip['caption']}", source=str(blip["images"]), prompt=prompt, max_new_tokens=TOKENS,
                      num_beams=num_beams, batch=2)  # fmt: skip
    assert [Path(r.path).name for r in results] == [p.name for p in files(blip)]
    for r, path in zip(results, files(blip)):
        expected = reference(blip["caption"], "BlipForConditionalGeneration", path, prompt, num_beams)
        assert r.text == expected and r.answer is None
        assert r.orig_shape == Image.open(path).size[::-1]
    if prompt:
        assert all(r.text.startswith(prompt) for r in results)  # BLIP continues the prompt
    assert len({r.text for r in results}) > 1  # the images differ, so (random) captions do too: the image is used


def test_vqa_equals_transformers(blip: dict[str, Path]) -> None:
    question = "how many shapes are there?"
    results = vqa(model=f"hf:{blip['vqa']}", source=[str(p) for p in files(blip)], question=question, max_new_tokens=TOKENS)
    for r, path in zip(results, files(blip)):
        assert r.answer == reference(blip["vqa"], "BlipForQuestionAnswering", path, question)
        assert r.question == question and r.text is None
    other = vqa(model=f"hf:{blip['vqa']}", source=str(files(blip)[0]), question="what colour is the star?", max_new_tokens=TOKENS)
    assert other[0].answer == reference(blip["vqa"], "BlipForQuestionAnswering", files(blip)[0], "what colour is the star?")


def test_arrays_in_memory(blip: dict[str, Path]) -> None:
    path = files(blip)[1]
    array = np.asarray(Image.open(path).convert("RGB"))
    r = caption(model=f"hf:{blip['caption']}", source=array, max_new_tokens=TOKENS)[0]
    assert r.text == reference(blip["caption"], "BlipForConditionalGeneration", path, None)


def test_cli_saves_predictions_jsonl(blip: dict[str, Path], tmp_path: Path) -> None:
    assert main(["vl", "vqa", f"model=hf:{blip['vqa']}", f"source={blip['images']}", "question=how many shapes?",
                 f"max_new_tokens={TOKENS}", "save=true", f"project={tmp_path}"]) == 0  # fmt: skip
    run = tmp_path / "vl" / "predict"
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == [p.name for p in files(blip)]
    for row, path in zip(rows, files(blip)):
        assert row["question"] == "how many shapes?"
        assert row["answer"] == reference(blip["vqa"], "BlipForQuestionAnswering", path, "how many shapes?")
    assert len(list(run.glob("*.png"))) == 3  # an overlay per image, the answer written on it


def test_results_carry_text() -> None:
    img = np.zeros((8, 10, 3), np.uint8)
    r = Results(img, path="a.png", names=[], question="how many?", answer="two")
    assert json.loads(r.to_json()) == {"path": "a.png", "shape": [8, 10], "question": "how many?", "answer": "two", "predictions": []}
    assert r.verbose() == "Q: how many? | A: two"
    assert Results(img, path="a.png", names=[], text="a red circle").verbose() == "a red circle"
    assert r.plot().shape[2] == 3
    plain = json.loads(Results(img, path="a.png", names=["x"]).to_json())
    assert set(plain) == {"path", "shape", "predictions"}  # other tasks' JSON unchanged


def test_config_errors_name_the_key(blip: dict[str, Path], tmp_path: Path) -> None:
    img = str(files(blip)[0])
    with pytest.raises(ConfigError, match="missing key 'question'"):
        vqa(model=f"hf:{blip['vqa']}", source=img)
    with pytest.raises(ConfigError, match="BlipForQuestionAnswering.*use optik vl vqa"):
        caption(model=f"hf:{blip['vqa']}", source=img)
    with pytest.raises(ConfigError, match="BlipForConditionalGeneration.*use optik vl caption"):
        vqa(model=f"hf:{blip['caption']}", source=img, question="what?")
    with pytest.raises(ConfigError, match="bad value for 'model'.*hf:"):
        caption(model="resnet", source=img)
    with pytest.raises(ConfigError, match="missing key 'model'"):
        caption(source=img)
    with pytest.raises(ConfigError, match=f"bad value for 'model': 'hf:{tmp_path}"):
        caption(model=f"hf:{tmp_path}", source=img)  # a folder without config.json
    with pytest.raises(ConfigError, match="bad value for 'source'.*nope.png"):
        caption(model=f"hf:{blip['caption']}", source=str(tmp_path / "nope.png"))
    with pytest.raises(ConfigError, match="missing key 'source'"):
        caption(model=f"hf:{blip['caption']}")
    with pytest.raises(ConfigError, match="unknown key 'labels'|labels"):
        caption(model=f"hf:{blip['caption']}", source=img, labels="a,b")
    # the CLI turns them into exit code 2 with the message, no traceback
    assert main(["vl", "vqa", f"model=hf:{blip['vqa']}", f"source={img}"]) == 2
    assert main(["vl", "caption", f"model=hf:{blip['vqa']}", f"source={img}", f"project={tmp_path}", "save=true"]) == 2
    assert not list((tmp_path / "vl").glob("*"))  # a failed run leaves no run dir behind


def test_model_facade_points_to_the_vl_functions() -> None:
    with pytest.raises(ConfigError, match="unknown mode 'predict' for vl; vl offers: caption, vqa"):
        Model("hf:some/blip", task="vl").predict("img.png")


def donut_reference(model_dir: Path, image: np.ndarray, question: str) -> str:
    """Donut's DocVQA recipe written out: task prompt as decoder_input_ids → generate → decode → the answer tag."""
    import re

    processor = transformers.DonutProcessor.from_pretrained(model_dir)
    model = transformers.VisionEncoderDecoderModel.from_pretrained(model_dir).eval()
    prompt = f"<s_docvqa><s_question>{question}</s_question><s_answer>"
    ids = processor.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    pixels = processor(Image.fromarray(image), return_tensors="pt").pixel_values
    out = model.generate(pixels, decoder_input_ids=ids, max_new_tokens=DOC_TOKENS, do_sample=False)
    tok = processor.tokenizer
    seq = tok.batch_decode(out)[0].replace(tok.eos_token, "").replace(tok.pad_token, "")
    seq = re.sub(r"<.*?>", "", seq, count=1).strip()  # the task start token
    found = re.search(r"<s_answer>(.*)</s_answer>", seq)
    return found.group(1).strip() if found else ""


def test_docqa_equals_donut_recipe(tmp_path: Path) -> None:
    from optik.vl import docqa
    from optik.vl.tiny import write_tiny_donut

    donut = write_tiny_donut(tmp_path / "donut")
    rng = np.random.RandomState(0)
    images = [np.zeros((32, 32, 3), np.uint8), np.full((40, 30, 3), 255, np.uint8), (rng.rand(48, 36, 3) * 255).astype(np.uint8)]
    question = "what is the total"
    results = docqa(model=f"hf:{donut}", source=images, question=question, max_new_tokens=DOC_TOKENS)
    answers = [r.answer for r in results]
    assert answers == [donut_reference(donut, img, question) for img in images]
    assert any(answers), "the random Donut closes an answer on at least one image (else the comparison is empty)"
    with pytest.raises(ConfigError, match="VisionEncoderDecoderModel.*use optik vl docqa"):
        caption(model=f"hf:{donut}", source=images[0])
    with pytest.raises(ConfigError, match="missing key 'question'"):
        docqa(model=f"hf:{donut}", source=images[0])
