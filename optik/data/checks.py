"""Validation the format readers share: box checks (clip or raise), missing files, skip-or-raise
bookkeeping for `skip_bad`, integer fields, class-name lists.

Every problem is a `DatasetError` naming the file, the entry and the field; with `skip_bad` the
readers record `(source, reason)` pairs instead (the `data=` resolver logs them once).

>>> skipped = []
>>> skip_or_raise("a.png: mask file not found", True, skipped, "a.png"); skipped
[('a.png', 'a.png: mask file not found')]
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optik.errors import DatasetError

log = logging.getLogger(__name__)

BOX_TOLERANCE = 0.01  # px: boxes this little past the border are clipped silently (float noise)


class BoxChecker:
    """Validates boxes while a reader reads (set `file` to the file at hand): clips (strict=False,
    counted, logged once by `finish`) or raises for boxes past the image border; raises for
    degenerate boxes, or skips them (recorded in `skipped`) with skip_bad.

    >>> chk = BoxChecker("a.json", strict=False, skip_bad=False)
    >>> chk.check([-2, 0, 5, 5], (10, 10), "image 'x.png' field 'bbox'").tolist()
    [0.0, 0.0, 5.0, 5.0]
    """

    def __init__(self, file: str | Path, *, strict: bool, skip_bad: bool) -> None:
        self.file, self.strict, self.skip_bad = str(file), strict, skip_bad
        self.clipped = 0
        self.skipped: list[tuple[str, str]] = []

    def bad(self, where: str, problem: str) -> None:
        """Raise for a bad box/line, or record it when skip_bad."""
        msg = f"{self.file}: {where}: {problem}"
        if not self.skip_bad:
            raise DatasetError(msg)
        self.skipped.append((f"{self.file}: {where}", problem))

    def check(
        self, xyxy: Sequence[float], size_hw: tuple[int, int], where: str
    ) -> np.ndarray | None:
        """-> the (clipped) float32 box, or None when it was skipped."""
        b = np.asarray(xyxy, np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            self.bad(where, f"box {list(xyxy)} is not 4 finite numbers")
            return None
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            w, h = b[2] - b[0], b[3] - b[1]
            what = "width" if w <= 0 else "height"
            self.bad(where, f"zero or negative {what} (w={w:.4g}, h={h:.4g})")
            return None
        h, w = size_hw
        lo = np.zeros(4)
        hi = np.array([w, h, w, h], np.float64)
        if (b < lo - BOX_TOLERANCE).any() or (b > hi + BOX_TOLERANCE).any():
            if self.strict:
                raise DatasetError(
                    f"{self.file}: {where}: box xyxy {np.round(b, 3).tolist()} lies outside the "
                    f"{w}x{h} image (strict=True; strict=False clips it)"
                )
            self.clipped += 1
        b = np.clip(b, lo, hi)
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            self.bad(where, f"box lies outside the {w}x{h} image")
            return None
        return b.astype(np.float32)

    def finish(self, what: str | None = None) -> None:
        """Log the clip count once (`what` names the file set when `file` changed per file)."""
        if self.clipped:
            log.warning("%s: clipped %d boxes to the image border", what or self.file, self.clipped)


def skip_or_raise(msg: str, skip_bad: bool, skipped: list, source: str | Path) -> None:
    """Raise DatasetError(msg), or record (source, msg) in `skipped` with skip_bad."""
    if not skip_bad:
        raise DatasetError(msg)
    skipped.append((str(source), msg))


def missing_image(
    file: str | Path, where: str, path: str | Path, skip_bad: bool, skipped: list
) -> None:
    """Raise DatasetError for a missing image file (named by the annotation `file` and `where` in
    it), or record it in `skipped` with skip_bad."""
    msg = f"image file not found: {path}"
    skip_or_raise(f"{file}: {where}: {msg}", skip_bad, skipped, path)


INT64_MAX = 2**63 - 1


def int_field(value: Any, file: str | Path, where: str, key: str) -> int:
    """`value` of field `key` as an int (integral floats pass: JSON writers emit 3.0); anything
    else, bools included, and integers outside int64 (ids end up in int64 arrays) are a
    DatasetError naming the file, the entry and the field."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise DatasetError(f"{file}: {where}: field {key!r} must be an integer, "
                               f"got {_short(value)}")  # fmt: skip
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise DatasetError(f"{file}: {where}: field {key!r}: {_short(value)} is outside the 64-bit "
                           "integer range")  # fmt: skip
    return int(value)


def real_field(value: Any) -> float | None:
    """A JSON number as a finite float, or None (not a number, bool, NaN, inf, or an integer
    too large for a float such as 10**400)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        v = float(value)
    except (OverflowError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _short(value: Any, n: int = 60) -> str:
    """repr(value), cut to `n` characters (a field may hold a 10**400 or a whole list)."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def is_file(path: str | Path) -> bool:
    """Path.is_file() that answers False instead of raising for names the file system refuses
    (too long: ENAMETOOLONG, a permission error on a parent, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    """Path.is_dir(), False instead of an OSError (see `is_file`)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; unreadable or non-UTF-8 files are a DatasetError naming the
    file (and the byte offset of the first bad byte)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: {what} is not UTF-8 text (byte {e.start}: "
                           f"{e.object[e.start:e.start + 1]!r})") from None  # fmt: skip
    except OSError as e:
        raise DatasetError(f"{path}: cannot read {what} ({e.strerror or type(e).__name__})") from None


def declared_size(w: int, h: int, file: str | Path, where: str) -> tuple[int, int]:
    """A width/height an annotation file declares -> (H, W); under 1 px, or more pixels than any
    image the decoder would open (PIL's hard limit, 2x `Image.MAX_IMAGE_PIXELS`), is a
    DatasetError naming the file and the entry (a bogus size would size masks and rasterised
    polygons before any image is read)."""
    if w < 1 or h < 1:
        raise DatasetError(f"{file}: {where}: field 'width'/'height' must be >= 1")
    from PIL import Image

    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
    if limit is not None and w * h > limit:
        raise DatasetError(f"{file}: {where}: field 'width'/'height': {w}x{h} is more pixels than "
                           f"any image optik decodes ({limit:,})")  # fmt: skip
    return h, w


def yaml_problem(e: Exception) -> str:
    """A YAML parse error on one line: "at line 4: could not find expected ':'" (PyYAML's own
    message spans several lines; the CLI prints errors as one)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    return f"at line {mark.line + 1}: {problem}" if mark is not None else f"({type(e).__name__}: {problem})"


def read_class_names(path: Path) -> list[str]:
    """A classes.txt: one name per line in index order (blank lines ignored), names distinct."""
    names = [n.strip() for n in read_text(path, "class list").splitlines() if n.strip()]
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"{path}: expected distinct class names, one per line")
    return names


__all__ = [
    "BOX_TOLERANCE",
    "BoxChecker",
    "declared_size",
    "int_field",
    "is_dir",
    "is_file",
    "missing_image",
    "read_class_names",
    "read_text",
    "real_field",
    "skip_or_raise",
    "yaml_problem",
]
