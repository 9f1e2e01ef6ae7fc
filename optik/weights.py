"""Weights files and the ``model=`` argument: self-describing ``.safetensors`` (optik metadata under
the ``"optik"`` key), exported ``.onnx`` / ``.torchscript`` files (the same metadata embedded), and the
one resolver every layer uses to turn ``model=`` into (architecture, weights file, metadata).

A neutral module: tasks, deploy and the engine all read weights through it; it imports nothing of
theirs (only :func:`optik.models.transfer.read_state_dict`, lazily).

>>> resolve_model_arg("resnet")
('resnet', None, {})
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from optik.errors import DiskFullError, ModelError

META_KEY = "optik"  # safetensors metadata key and ONNX metadata_props key
TS_META_FILE = "optik.json"  # TorchScript: the extra file holding the metadata


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then atomically move the temp file to ``path``.

    The temp file (``.<name>.<random>.tmp``, next to ``path`` so the rename stays on one filesystem) is
    fsynced before ``os.replace`` and the directory after it: a reader — or a process killed at any
    point, even ``kill -9`` — sees either the old file or the complete new one, never a half-written
    one. On any failure the temp file is removed and ``path`` is left as it was; a full disk
    (ENOSPC / EDQUOT, however the writer reports it) raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:  # mkstemp makes 0600; the finished file gets open()'s usual mode (where the filesystem has modes)
            os.fchmod(fd, 0o666 & ~_UMASK)
        except (OSError, AttributeError):
            pass
        finally:
            os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, path.parent)  # asked before the temp file that filled the disk is removed
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFullError(f"no space left on device writing '{path}' ({_free(path.parent)} free; "
                                f"{'the file there before is unchanged' if path.exists() else 'nothing was written'})",
                                str(path)) from e  # fmt: skip
        raise
    _fsync_dir(path.parent)
    return path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# How writers that do not raise OSError word it: safetensors (Rust) "No space left on device (os error 28)".
_FULL_TEXT = ("no space left on device", "disk quota exceeded", f"os error {errno.ENOSPC})")


def _disk_full(e: BaseException, directory: Path) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk. Writers that lose the errno
    (torch.save's zip writer reports "unexpected pos …") are judged by the filesystem: no space left."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if any(t in str(cur).lower() for t in _FULL_TEXT):
            return True
        cur = cur.__cause__ or cur.__context__
    if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: not a write failure
        return False
    try:
        return os.statvfs(directory).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs (Windows) or the directory is gone
        return False


def _free(directory: Path) -> str:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return "unknown space"
    n = float(st.f_bavail * st.f_frsize)
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a state dict as safetensors with optik's metadata (model name, classes, imgsz…).

    Tensors sharing storage (tied weights) are cloned, which safetensors requires.
    """
    seen: set[int] = set()
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        tensors[k] = v.clone().contiguous() if ptr in seen else v.contiguous()
        seen.add(ptr)
    metadata = {META_KEY: json.dumps(meta or {}, default=str)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The optik metadata of a ``.safetensors`` file ({} if it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelError(f"'{path}' is not a readable safetensors file: {e}") from None
    return json.loads(raw) if raw else {}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors`` or a torch file (``weights_only=True``); see
    :func:`optik.models.transfer.read_state_dict`, which this is."""
    from optik.models.transfer import read_state_dict

    return read_state_dict(path)


def read_exported_meta(path: str | Path) -> dict[str, Any]:
    """The optik metadata embedded in an exported file; :class:`ModelError` naming the file when it is
    missing, unreadable or has none.

    >>> read_exported_meta("weights/best.onnx")["export"]["format"]      # doctest: +SKIP
    'onnx'
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model: exported file '{p}' not found")
    raw: str | None = None
    if p.suffix.lower() == ".onnx":
        import onnx

        try:  # metadata only: external tensor data is not needed
            proto = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError / its own types for a corrupt file
            raise ModelError(f"model: '{p}' is not a readable ONNX file ({type(e).__name__}: {e})") from None
        raw = next((kv.value for kv in proto.metadata_props if kv.key == META_KEY), None)
    else:
        # A TorchScript file is a zip; reading the extra file directly avoids deserialising the model.
        try:
            with zipfile.ZipFile(p) as z:
                name = next((n for n in z.namelist() if n.endswith(f"/extra/{TS_META_FILE}")), None)
                raw = z.read(name).decode() if name else None
        except zipfile.BadZipFile:
            raise ModelError(f"model: '{p}' is not a readable TorchScript file (not a zip archive)") from None
    if not raw:
        raise ModelError(f"model: '{p}' has no optik metadata (not exported by optik; re-export with `optik TASK export`)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(f"model: '{p}' has unreadable optik metadata ({e})") from None
    if not isinstance(meta, dict) or not meta.get("model") or "export" not in meta:
        raise ModelError(f"model: '{p}' has incomplete optik metadata (no 'model' or 'export' entry)")
    return meta


def resolve_model_arg(model: str) -> tuple[str, Path | None, dict[str, Any]]:
    """``model=`` value → (architecture name, optik weights file or None, its metadata).

    Accepts a registry/timm/hf name, an optik ``.safetensors`` file, a run directory
    (its ``weights/best.safetensors``), or an exported ``.onnx`` / ``.torchscript`` file (its embedded
    metadata, which has an ``"export"`` block).
    """
    p = Path(model)
    if p.suffix.lower() in (".onnx", ".torchscript"):
        meta = read_exported_meta(p)  # ModelError naming the file when missing / not optik's
        return str(meta["model"]), p, meta
    if p.is_dir() and (p / "weights" / "best.safetensors").is_file():
        p = p / "weights" / "best.safetensors"
    if p.suffix == ".safetensors":
        if not p.is_file():
            raise ModelError(f"model: weights file '{p}' not found")
        meta = read_meta(p)
        if not meta.get("model"):
            raise ModelError(f"model: '{p}' has no optik metadata (architecture unknown); use pretrained={p} with model=<arch>")
        return str(meta["model"]), p, meta
    if p.suffix in (".pt", ".pth") and p.is_file():
        raise ModelError(f"model: '{p}' is a torch file without architecture info; use model=<arch> pretrained={p}")
    return model, None, {}
