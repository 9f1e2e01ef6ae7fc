"""Zero-shot classification and image↔text retrieval (``optik zeroshot``): procedural captioned scenes
(:mod:`.captions`), a word tokenizer and text Transformer, the tiny CLIP trained from scratch (:mod:`.clip`),
the transformers CLIP/SigLIP adapter (:mod:`.hf`) and prompt ensembling (:mod:`.prompts`). Imports nothing heavy.
"""
