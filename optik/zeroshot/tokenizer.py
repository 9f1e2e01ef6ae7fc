"""A word-level tokenizer whose vocabulary is built from the captions a model trains on, stored in the weights'
metadata (``model_config["vocab"]``) so a trained tiny CLIP encodes text from its file alone — no download.

Token ids: 0 pad, 1 start, 2 end, 3 unknown, then the words. Each text becomes ``[start, words…, end]``,
padded with 0 to ``context_length`` (cut to it, the end token kept last), as CLIP's tokenizer does.

>>> tok = WordTokenizer.from_texts(["a red circle", "a blue square"])
>>> tok.encode(["a red square", "a green circle"], context_length=6).tolist()
[[1, 4, 7, 8, 2, 0], [1, 4, 3, 6, 2, 0]]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
PAD, START, END, UNK = range(4)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of ``text`` (punctuation dropped)."""
    return _WORD.findall(str(text).lower())


class WordTokenizer:
    """Word → id lookup over a fixed vocabulary (specials first, then words sorted)."""

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        return cls([*SPECIALS, *sorted({w for t in texts for w in words(t)} - set(SPECIALS))])

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary (they encode as ``<unk>``)."""
        return [w for w in words(text) if w not in self.index]

    def encode(self, texts: Sequence[str], context_length: int = 16) -> torch.Tensor:
        """``(len(texts), context_length)`` int64 token ids."""
        out = torch.full((len(texts), context_length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [START, *(self.index.get(w, UNK) for w in words(text))][: context_length - 1] + [END]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
