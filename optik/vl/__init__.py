"""Vision-language inference: image captioning and visual question answering with transformers BLIP models
(``optik vl caption`` / ``optik vl vqa``; docs/vl.md).

>>> from optik.vl import caption, vqa
>>> caption(model="hf:path/to/blip", source="img.png")[0].text                       # doctest: +SKIP
'a red circle and a blue square'
>>> vqa(model="hf:path/to/blip-vqa", source="img.png", question="how many shapes?")[0].answer  # doctest: +SKIP
'2'
"""

from __future__ import annotations

from typing import Any


def caption(**kwargs: Any) -> list[Any]:
    """:func:`optik.vl.run.caption_images` (keys as on the CLI)."""
    from optik.vl.run import caption_images

    return caption_images(**kwargs)


def vqa(**kwargs: Any) -> list[Any]:
    """:func:`optik.vl.run.answer_questions` (keys as on the CLI)."""
    from optik.vl.run import answer_questions

    return answer_questions(**kwargs)


def docqa(**kwargs: Any) -> list[Any]:
    """:func:`optik.vl.run.answer_document_questions` (keys as on the CLI)."""
    from optik.vl.run import answer_document_questions

    return answer_document_questions(**kwargs)


__all__ = ["caption", "docqa", "vqa"]
