"""synthetic:captions: deterministic, captions true to the drawing, held-out pairs never in training."""

from __future__ import annotations

import pytest
import torch

from optik.errors import ConfigError
from optik.zeroshot.captions import COLOURS, SHAPES, CaptionScenes, pair_names, parse_caption_spec, parse_holdout
from optik.zeroshot.tokenizer import END, PAD, START, UNK, WordTokenizer


def _pairs_in(caption: str) -> set[tuple[str, str]]:
    words = caption.split()
    return {(a, b) for a, b in zip(words, words[1:]) if a in COLOURS and b in SHAPES}


def test_deterministic_per_seed_and_index() -> None:
    a, b = CaptionScenes(20, 32, seed=3), CaptionScenes(50, 32, seed=3)
    for i in (0, 7, 19):
        ia, ta = a.load(i)
        ib, tb = b.load(i)
        assert torch.equal(ia, ib) and ta == tb
    assert not torch.equal(a.load(0)[0], CaptionScenes(1, 32, seed=4).load(0)[0])


def test_holdout_never_in_training_and_always_in_val() -> None:
    holdout = parse_holdout("green:triangle,blue:circle")
    train = CaptionScenes(300, 32, split="train", holdout=holdout)
    val = CaptionScenes(60, 32, split="val", holdout=holdout)
    for i in range(len(train)):
        objs = train._attributes(i)[0]
        assert not {(o["colour"], o["shape"]) for o in objs} & set(holdout)
        assert not _pairs_in(train.caption(i)) & set(holdout), train.caption(i)
    for i in range(len(val)):
        assert _pairs_in(val.caption(i)) & set(holdout), val.caption(i)


def test_caption_and_label_match_the_pixels() -> None:
    data = CaptionScenes(40, 64, seed=1, split="train")
    singles = [i for i in range(40) if data.targets[i] >= 0]
    assert singles and len(singles) < 40  # both one- and two-shape scenes
    for i in singles:
        objs, label, caption, _ = data._attributes(i)
        img = data.load(i)[0].float()
        name = pair_names()[label]
        assert name in caption and name == f"{objs[0]['colour']} {objs[0]['shape']}"
        # The shape's colour is present: pixels near its RGB at its centre.
        x, y = (int(round(v)) for v in objs[0]["centre"])
        centre = img[:, y, x]
        assert torch.allclose(centre, torch.tensor(COLOURS[objs[0]["colour"]], dtype=torch.float32), atol=25)
        if "left" in caption:
            assert objs[0]["centre"][0] < 32


def test_relation_words_follow_the_geometry() -> None:
    data = CaptionScenes(60, 64, seed=2)
    for i in range(60):
        objs, label, caption, _ = data._attributes(i)
        if len(objs) == 2:
            (ax, ay), (bx, by) = objs[0]["centre"], objs[1]["centre"]
            if " left of " in caption:
                assert ax < bx
            elif " above " in caption:
                assert ay < by


def test_bad_specs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="holdout.*'pink:circle'"):
        parse_holdout("pink:circle")
    with pytest.raises(ConfigError, match="holdout"):
        parse_holdout(",".join(f"{c}:{s}" for c in COLOURS for s in SHAPES))
    with pytest.raises(ConfigError, match="unknown option 'size'"):
        parse_caption_spec("synthetic:captions?size=3")
    with pytest.raises(ConfigError, match="n must be >= 1"):
        parse_caption_spec("synthetic:captions?n=0")


def test_word_tokenizer() -> None:
    tok = WordTokenizer.from_texts(["a red circle", "A blue Square."])
    ids = tok.encode(["a red square!", "a purple circle"], context_length=7)
    v = tok.index
    assert ids[0].tolist() == [START, v["a"], v["red"], v["square"], END, PAD, PAD]
    assert ids[1, 2] == UNK and tok.unknown("a purple circle") == ["purple"]
    cut = tok.encode(["a red red red red red circle"], context_length=4)[0]
    assert cut.tolist() == [START, v["a"], v["red"], END]  # cut to length, the end token kept
