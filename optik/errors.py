"""The error hierarchy. Every failure a user can cause is one of these, with a message that names
the file, key or field at fault; the CLI prints it as one line and exits 2."""

from __future__ import annotations


class OptikError(Exception):
    """Root of every error optik raises on purpose."""


class ConfigError(OptikError, ValueError):
    """A configuration key or value is unknown or invalid."""


class DatasetError(OptikError):
    """A dataset is malformed: names the file, index and field at fault."""


class ImageError(DatasetError):
    """An image file cannot be decoded (missing, truncated, not an image, too large)."""


class ModelError(OptikError):
    """A model name, checkpoint or architecture cannot be resolved or loaded."""


class ExportError(OptikError):
    """Export to TorchScript/ONNX failed or did not match eager outputs."""


__all__ = ["OptikError", "ConfigError", "DatasetError", "ImageError", "ModelError", "ExportError"]
