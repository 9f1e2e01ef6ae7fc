"""A tiny random BLIP (and Donut) written locally (no download): for tests and offline demos of ``optik vl``.

Its words are random — the weights are untrained — but it is a real ``BlipForConditionalGeneration`` /
``BlipForQuestionAnswering`` with a real ``BlipProcessor`` (BERT word-piece tokenizer from a small vocabulary file
+ ``BlipImageProcessor``), saved with ``save_pretrained`` and loaded back through ``from_pretrained``.

>>> import tempfile
>>> d = write_tiny_blip(tempfile.mkdtemp(), kind="caption")
>>> {"config.json", "model.safetensors", "processor_config.json"} <= {p.name for p in d.iterdir()}
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

#: The tiny vocabulary: BERT's special tokens + BLIP's [DEC] (decoder start) + words of synthetic-shape scenes.
_TEXT = ("a photo of an image with the red green blue yellow circle square triangle star shape shapes how many what "
         "colour color is are there one two three four five yes no and on left right")
WORDS = tuple(_TEXT.split())
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def write_tiny_blip(path: str | Path, kind: Literal["caption", "vqa"] = "caption", image_size: int = 32, seed: int = 0) -> Path:
    """Write a random 1-layer BLIP of ``kind`` (caption: ``BlipForConditionalGeneration``, vqa:
    ``BlipForQuestionAnswering``) with its processor into ``path``; returns ``path``."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # transformers 5 builds a BERT word-piece tokenizer from a vocab dict (``vocab_file=`` alone gives an empty one).
    try:
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIAL + list(WORDS))}, do_lower_case=True)
    except TypeError:  # transformers 4.x reads the vocabulary from a file
        (path / "vocab.txt").write_text("\n".join(SPECIAL + list(WORDS)) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    # BLIP's processor puts [DEC] as the decoder's start token (bos) in place of [CLS].
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    vocab = len(SPECIAL) + len(WORDS)
    ids = {"pad_token_id": 0, "bos_token_id": SPECIAL.index("[DEC]"), "sep_token_id": SPECIAL.index("[SEP]"),
           "eos_token_id": SPECIAL.index("[SEP]")}  # fmt: skip
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, encoder_hidden_size=32, initializer_range=0.5, **ids)  # fmt: skip
    # A wide initialisation (BLIP's default is 0.02): the random model's words then depend visibly on the image,
    # so a test can tell that each image reaches the decoder.
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": 8, "initializer_range": 0.5}  # fmt: skip
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(seed)
    model = (BlipForQuestionAnswering if kind == "vqa" else BlipForConditionalGeneration)(config)
    model.save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


#: The tiny Donut's vocabulary: its special tokens (the DocVQA task prompt's tags included) + a few words.
DONUT_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<s_docvqa>", "<s_question>", "</s_question>", "<s_answer>", "</s_answer>"]
_DONUT_TEXT = "what is the total date name invoice 1 2 3 4 5 a b"
DONUT_WORDS = tuple("▁" + w for w in _DONUT_TEXT.split())  # "▁": the Metaspace word-start marker, as SentencePiece writes it


def write_tiny_donut(path: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Write a random Donut (``VisionEncoderDecoderModel``: a 2-stage Donut-Swin encoder + a 1-layer MBart decoder)
    with a ``DonutProcessor`` into ``path`` — the document-QA model of ``optik vl docqa``; returns ``path``.

    Its tokenizer is a word-level one built with the ``tokenizers`` library (Donut's own is a SentencePiece model,
    which cannot be built offline without training one); the processor and the pipeline treat it the same."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = Path(path)
    vocab = {w: i for i, w in enumerate(DONUT_SPECIAL + list(DONUT_WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                                     unk_token="<unk>", additional_special_tokens=DONUT_SPECIAL[4:])  # fmt: skip
    encoder = transformers.DonutSwinConfig(image_size=[image_size, image_size], patch_size=4, embed_dim=16, depths=[1, 1],
                                           num_heads=[1, 2], window_size=2, initializer_range=0.5)  # fmt: skip
    decoder = transformers.MBartConfig(vocab_size=len(vocab), d_model=32, decoder_layers=1, encoder_layers=1, decoder_attention_heads=2,
                                       encoder_attention_heads=2, decoder_ffn_dim=64, encoder_ffn_dim=64, max_position_embeddings=64,
                                       is_decoder=True, add_cross_attention=True, init_std=0.5, pad_token_id=0, bos_token_id=1,
                                       eos_token_id=2, decoder_start_token_id=1)  # fmt: skip
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(seed)
    transformers.VisionEncoderDecoderModel(config).save_pretrained(path)
    image_processor = transformers.DonutImageProcessor(size={"height": image_size, "width": image_size})
    transformers.DonutProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path
