"""``data=synthetic:captions``: procedural scenes of 1–2 coloured shapes, each with a caption generated from the
exact attributes it was drawn with ("a small red triangle above a blue circle").

A set of (colour, shape) pairs is held out: no training image or caption contains one, and every validation
scene contains one (its first shape), so zero-shot accuracy on validation measures composition — the model
has seen "green" and "star" separately, never together. Item ``i`` of a split depends only on
``(seed, split, i)``.

>>> data = CaptionScenes(4, size=32, split="val")
>>> img, target = data[0]
>>> img.shape, target["caption"].startswith("a ")
(torch.Size([3, 32, 32]), True)
>>> pair_names()[:2]
['red circle', 'red square']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch

from optik.data.synthetic import draw_shape, random_background
from optik.errors import ConfigError

#: Named colours with their RGB; distinct in hue so that a name is a property of the pixels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 70, 235), "yellow": (240, 220, 30), "purple": (150, 40, 200),
}  # fmt: skip
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SIZES = {"small": (0.10, 0.14), "large": (0.19, 0.24)}  # circumradius as a share of the image side
#: Default held-out pairs: one per colour and one per shape (a shifted diagonal), so every colour and every
#: shape still occurs in training — only these combinations never do.
DEFAULT_HOLDOUT: tuple[tuple[str, str], ...] = (
    ("red", "star"), ("green", "triangle"), ("blue", "cross"), ("yellow", "circle"), ("purple", "square"),
)  # fmt: skip
PLACES = {"on the left": (0.28, 0.5), "on the right": (0.72, 0.5), "at the top": (0.5, 0.28),
          "at the bottom": (0.5, 0.72), "in the middle": (0.5, 0.5)}  # fmt: skip
#: Templates a prompt for class ``{}`` is written with for a model trained on this grammar (prompt ensembling
#: averages them): every one is a caption form the model saw.
GRAMMAR_TEMPLATES: tuple[str, ...] = ("a {}", "a small {}", "a large {}")
#: Templates for class names of a classification source (``data=digits``, a folder): the training captions.
CLASS_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a picture of a {}", "an image of a {}", "a {}")


def pair_names(colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES) -> list[str]:
    """Every "colour shape" class name, colour-major (the zero-shot label set of the caption data)."""
    return [f"{c} {s}" for c in colours for s in shapes]


def parse_holdout(spec: str | Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``"green:triangle,blue:circle"`` (or a list of ``colour:shape``) → pairs; None → :data:`DEFAULT_HOLDOUT`.

    >>> parse_holdout("green:triangle, blue:circle")
    (('green', 'triangle'), ('blue', 'circle'))
    """
    if spec is None:
        return DEFAULT_HOLDOUT
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    pairs = []
    for item in filter(None, items):
        colour, sep, shape = item.partition(":")
        if not sep or colour not in COLOURS or shape not in SHAPES:
            raise ConfigError(f"bad value for 'holdout': {item!r} (expected colour:shape with a colour from "
                              f"{', '.join(COLOURS)} and a shape from {', '.join(SHAPES)})")  # fmt: skip
        pairs.append((colour, shape))
    if not pairs:
        raise ConfigError("bad value for 'holdout': no colour:shape pair given")
    if len(set(pairs)) == len(COLOURS) * len(SHAPES):
        raise ConfigError("bad value for 'holdout': every colour:shape pair is held out; nothing is left to train on")
    return tuple(dict.fromkeys(pairs))


def _relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where the first centre lies relative to the second, along the axis they differ most."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


class CaptionScenes(torch.utils.data.Dataset):
    """``n`` captioned scenes of one split. ``__getitem__`` → ``(uint8 (3, S, S) image or its transform,
    {"caption": str, "label": int})``; ``label`` indexes :func:`pair_names` for a one-shape scene (its zero-shot
    class) and is -1 for two shapes (the scene has two classes; retrieval still uses it)."""

    def __init__(self, n: int, size: int = 64, seed: int = 0, split: str = "train",
                 holdout: Sequence[tuple[str, str]] = DEFAULT_HOLDOUT, transform: Callable | None = None) -> None:  # fmt: skip
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {split!r}")
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self.holdout = tuple(holdout)
        self.transform = transform
        self.classes = pair_names()
        allowed = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in self.holdout]
        self._train_pairs = allowed
        self.targets = [self._attributes(i)[1] for i in range(self.n)]

    def with_transform(self, transform: Callable | None) -> CaptionScenes:
        out = CaptionScenes.__new__(CaptionScenes)
        out.__dict__.update(self.__dict__)
        out.transform = transform
        return out

    def __len__(self) -> int:
        return self.n

    def source(self, i: int) -> str:
        return f"synthetic:captions/{self.split}/{i}"

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0 if self.split == "train" else 1, int(i)])

    def _attributes(self, i: int) -> tuple[list[dict[str, Any]], int, str, np.random.Generator]:
        """The scene's shapes (colour, shape, size, centre, radius, angle), its label, caption and the rng
        left for the pixels."""
        rng = self._rng(i)
        s = self.size
        two = rng.random() < 0.5
        pairs = self._train_pairs
        if self.split == "val":  # the first shape is a held-out pair, cycled so each is equally represented
            first = self.holdout[i % len(self.holdout)]
        else:
            first = pairs[rng.integers(len(pairs))]
        chosen = [first] + ([pairs[rng.integers(len(pairs))]] if two else [])
        objs = []
        if two:  # one half each, along a random axis: the relation word is then unambiguous
            horizontal = rng.random() < 0.5
            order = rng.permutation(2)
            for k, (colour, shape) in enumerate(chosen):
                size = ("small", "large")[rng.integers(2)]
                r = rng.uniform(*SIZES[size]) * s
                r = min(r, 0.22 * s)  # two must fit side by side
                slot = (0.27, 0.73)[order[k]]
                jitter = rng.uniform(-0.04, 0.04, 2) * s
                cx, cy = (slot * s, 0.5 * s) if horizontal else (0.5 * s, slot * s)
                objs.append(dict(colour=colour, shape=shape, size=size, centre=(cx + jitter[0], cy + jitter[1]), radius=r))
        else:
            colour, shape = chosen[0]
            size = ("small", "large")[rng.integers(2)]
            place = list(PLACES)[rng.integers(len(PLACES))]
            r = rng.uniform(*SIZES[size]) * s
            px, py = PLACES[place]
            jitter = rng.uniform(-0.05, 0.05, 2) * s
            objs.append(dict(colour=colour, shape=shape, size=size, place=place, centre=(px * s + jitter[0], py * s + jitter[1]), radius=r))
        for o in objs:
            o["angle"] = rng.uniform(-0.3, 0.3)
        label = -1 if two else self.classes.index(f"{objs[0]['colour']} {objs[0]['shape']}")
        caption = self._caption(objs, rng)
        return objs, label, caption, rng

    @staticmethod
    def _caption(objs: list[dict[str, Any]], rng: np.random.Generator) -> str:
        """Drop the size / the place now and then, so short prompts ("a red circle") are in the grammar too."""

        def noun(o: dict[str, Any]) -> str:
            return f"a {o['size']} {o['colour']} {o['shape']}" if rng.random() < 0.6 else f"a {o['colour']} {o['shape']}"

        if len(objs) == 1:
            return f"{noun(objs[0])} {objs[0]['place']}" if rng.random() < 0.7 else noun(objs[0])
        a, b = objs
        return f"{noun(a)} {_relation(a['centre'], b['centre'])} {noun(b)}"

    def caption(self, i: int) -> str:
        return self._attributes(i)[2]

    def load(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The untransformed uint8 (3, S, S) image and its target."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        objs, label, caption, rng = self._attributes(i)
        s = self.size
        # A grey textured background: colour words then name only the shapes.
        bg = random_background(rng, s, 0.3).astype(np.float32).mean(-1, keepdims=True)
        lo, hi = rng.uniform(50, 110), rng.uniform(150, 200)
        bg = lo + (bg - bg.min()) / max(float(np.ptp(bg)), 1e-6) * (hi - lo)
        canvas = np.ascontiguousarray(np.repeat(np.rint(bg), 3, axis=-1).astype(np.uint8))
        for o in objs:
            colour = np.clip(np.asarray(COLOURS[o["colour"]]) + rng.integers(-20, 21, 3), 0, 255)
            draw_shape(canvas, o["shape"], o["centre"], o["radius"], o["angle"], tuple(int(v) for v in colour))
        return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), {"caption": caption, "label": label}

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        img, target = self.load(i)
        return (self.transform(img) if self.transform is not None else img), target


def parse_caption_spec(spec: str) -> dict[str, Any]:
    """``synthetic:captions?n=4000&val=500&seed=1`` → ``{"n": 4000, "val": 500, "seed": 1}`` (defaults filled).

    >>> parse_caption_spec("synthetic:captions?n=100")["val"]
    500
    """
    base, _, query = spec.partition("?")
    if base != "synthetic:captions":
        raise ConfigError(f"bad value for 'data': {spec!r} is not synthetic:captions")
    out: dict[str, Any] = {"n": 4000, "val": 500, "seed": 0}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in out:
            raise ConfigError(f"bad value for 'data': {spec!r} has unknown option {key!r} (expected n, val, seed)")
        try:
            out[key] = int(value)
        except ValueError:
            raise ConfigError(f"bad value for 'data': {spec!r}: {key}={value!r} is not an integer") from None
        if out[key] < (0 if key == "seed" else 1):
            raise ConfigError(f"bad value for 'data': {spec!r}: {key} must be {'>= 0' if key == 'seed' else '>= 1'}")
    return out


class CaptionedView(torch.utils.data.Dataset):
    """A classification dataset seen as captioned images: class ``c`` → ``template.format(name_c)``, the template
    drawn per (seed, index) in training and the first one in validation (so val captions are fixed)."""

    def __init__(self, base: Any, classes: Sequence[str], templates: Sequence[str], seed: int = 0, train: bool = True) -> None:
        self.base, self.classes, self.templates, self.seed, self.train = base, list(classes), list(templates), seed, train
        self.targets = list(base.targets)

    def __len__(self) -> int:
        return len(self.base)

    def source(self, i: int) -> str:
        return self.base.source(i)

    def load(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.base.load(i)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        img, label = self.base[i]
        t = self.templates[np.random.default_rng([self.seed, int(i)]).integers(len(self.templates))] if self.train else self.templates[0]
        return img, {"caption": t.format(self.classes[int(label)]), "label": int(label)}


__all__ = ["CLASS_TEMPLATES", "COLOURS", "CaptionScenes", "CaptionedView", "DEFAULT_HOLDOUT", "GRAMMAR_TEMPLATES",
           "SHAPES", "pair_names", "parse_caption_spec", "parse_holdout"]  # fmt: skip
