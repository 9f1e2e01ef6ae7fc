"""optik: deep-learning computer vision from one CLI and one Python API.

>>> from optik import Model
>>> m = Model("cnn", task="classify")                               # doctest: +SKIP
>>> m.train(data="synthetic:shapes", epochs=1, imgsz=32)           # doctest: +SKIP
"""

from __future__ import annotations

from optik.errors import ConfigError, DatasetError, ExportError, ImageError, ModelError, OptikError

from optik.version import __version__

__all__ = [
    "Model",
    "OptikError",
    "ConfigError",
    "DatasetError",
    "ImageError",
    "ModelError",
    "ExportError",
    "__version__",
]


def __getattr__(name: str):
    # Lazy: `import optik` stays cheap (the CLI's --help must not import torch).
    if name == "Model":
        from optik.model import Model

        return Model
    raise AttributeError(f"module 'optik' has no attribute {name!r}")
