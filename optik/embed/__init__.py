"""Representation learning for ``optik embed``: self-supervised objectives and the model holding their state
(:mod:`~optik.embed.ssl`), the papers' view augmentations (:mod:`~optik.embed.views`), any optik model as a
feature extractor (:mod:`~optik.embed.build`), an exact cosine index (:mod:`~optik.embed.index`), plots and the
val / predict / index / search runners (:mod:`~optik.embed.run`). The task is :mod:`optik.tasks.embed`.
"""
