"""The error hierarchy. Every failure a user can cause is one of these, with a message that names
the file, key or field at fault; the CLI prints it as one line and exits 2."""

from __future__ import annotations

import errno


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


class DiskFullError(OptikError, OSError):
    """A file could not be written because its disk is full (ENOSPC / EDQUOT). Names the file; the file
    that was there before is left intact (every checkpoint is written to a temp file and renamed).
    An ``OSError`` with ``errno == ENOSPC`` too, for code that handles those."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(errno.ENOSPC, message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.strerror)


__all__ = ["OptikError", "ConfigError", "DatasetError", "ImageError", "ModelError", "ExportError", "DiskFullError"]
