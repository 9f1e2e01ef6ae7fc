"""Shared pieces of the fuzz suite: example budgets, the case counter, memory/time guards, byte and
value mutators, and the invariant every fuzz target checks ("only optik's own errors escape, and they
name the file").

Budgets: every ``@settings(max_examples=examples(n))`` scales with ``OPTIK_FUZZ_SCALE`` (default 1, the
fast default run; e.g. ``OPTIK_FUZZ_SCALE=20 pytest tests/fuzz`` for a long campaign). Each executed
example calls :func:`count`; ``tests/fuzz/conftest.py`` prints the totals at the end of the run.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from optik.errors import OptikError

SCALE = max(float(os.environ.get("OPTIK_FUZZ_SCALE", "1") or 1), 0.01)
CASES: Counter[str] = Counter()  # fuzz target -> examples executed in this process


def examples(n: int) -> int:
    """The example budget of a target: `n` in the default run, times OPTIK_FUZZ_SCALE."""
    return max(1, round(n * SCALE))


def count(target: str, plain: bool = False) -> None:
    """One executed case of `target` (plain=True: a fixed test case, not a hypothesis example)."""
    CASES[f"plain:{target}" if plain else target] += 1


# ---- guards: a fuzz case may not eat the machine ----------------------------------------------------

MEMORY_CAP = 1536 * 2**20  # bytes of heap a single case may add (a bomb then raises MemoryError)


def _vm_data() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def guarded(seconds: float = 20.0) -> Iterator[None]:
    """Run one case under a heap cap (RLIMIT_DATA = current + MEMORY_CAP; restored after) and a
    wall-clock alarm, so a decompression bomb or a runaway loop fails the test instead of the host."""
    old = resource.getrlimit(resource.RLIMIT_DATA)
    used = _vm_data()
    capped = False
    if used:
        limit = used + MEMORY_CAP
        if old[1] == resource.RLIM_INFINITY or limit < old[1]:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_DATA, (limit, old[1]))
                capped = True

    def _alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"fuzz case ran longer than {seconds} s")

    use_alarm = hasattr(signal, "SIGALRM") and _main_thread()
    if use_alarm:
        prev = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, prev)
        if capped:
            resource.setrlimit(resource.RLIMIT_DATA, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def scratch_copy(template: Path) -> Iterator[Path]:
    """A fresh copy of `template` (a small dataset folder) for one example; removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="optik-fuzz-"))
    try:
        root = d / template.name
        shutil.copytree(template, root, symlinks=True)
        yield root
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- the invariant ------------------------------------------------------------------------------------


class Escape(AssertionError):
    """A non-optik exception escaped, or an optik error did not name the file at fault."""


def only_optik_errors(fn: Callable[[], Any], *, names: list[str] | None = None, what: str = "") -> Any:
    """Call `fn`: return its result, or the `OptikError` it raised (whose message must contain one
    of `names`, when given). Any other exception fails with `Escape` chained to it."""
    try:
        return fn()
    except OptikError as e:
        if names is not None and not any(n and n in str(e) for n in names):
            raise Escape(f"{what}: {type(e).__name__} does not name any of {names}: {e}") from e
        return e
    except Exception as e:
        raise Escape(f"{what}: {type(e).__name__} escaped: {e}") from e


# ---- byte mutations ------------------------------------------------------------------------------------

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
               b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00"]  # fmt: skip


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, max_ops: int = 4) -> bytes:
    """`data` after 1..max_ops random edits: flip bits, overwrite with interesting values, insert,
    delete, truncate, duplicate a slice, or replace everything with random bytes."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "random"]))
        n = len(b)
        pos = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            v = draw(st.sampled_from(INTERESTING))
            b[pos : pos + len(v)] = v
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del b[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del b[pos:]
        elif op == "dup" and n:
            b[pos:pos] = b[pos : pos + draw(st.integers(1, 64))]
        elif op == "random":
            return draw(st.binary(max_size=max(64, len(data))))
    return bytes(b)


# ---- nasty values for structured fields -------------------------------------------------------------

NASTY_STRINGS = ["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "0x10", "１２", "None",
                 "null", "true", "a\x00b", "../../../etc/passwd", "/", "ü€😀", "x" * 300, "\n", "\t",
                 "images", "a.png", "[1, 2]", "{}", "1.5", "-0", "1_000", "٣"]  # fmt: skip
NASTY_NUMBERS = [0, -1, 1, 2, -(2**31), 2**31, 2**32, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30,
                 10**400, -(10**400), 0.5, -0.5, 1e-320, 1e308, -1e308, float("nan"), float("inf"),
                 -float("inf"), 3.0, True, False]  # fmt: skip


def nasty_values(depth: int = 1) -> st.SearchStrategy[Any]:
    """JSON-able (and JSON-breaking: NaN, inf, 10**400) values a field should never get."""
    leaf = st.one_of(
        st.sampled_from(NASTY_NUMBERS),
        st.sampled_from(NASTY_STRINGS),
        st.none(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    )
    if depth <= 0:
        return leaf
    inner = nasty_values(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(["id", "name", "counts", "size", "x", "0", "1"]), inner, max_size=3),
    )


def json_paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON document, containers included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += json_paths(v, prefix + (i,))
    return out


def set_path(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    """`doc` with the value at `path` replaced (or deleted: key removed / list item dropped)."""
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def dumps(doc: Any) -> str:
    """json.dumps that writes NaN/Infinity (as Python's json does) and never fails on 10**400."""
    import json

    return json.dumps(doc, allow_nan=True, ensure_ascii=False)


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---- text mutations ---------------------------------------------------------------------------------

TOKENS = ["0", "1", "2", "-1", "0.5", "1.5", "nan", "inf", "-inf", "1e999", "1e-999", "abc", "", "#",
          "0x1", "1,2", "١", "0 0 0 0", "\x00", "ü", "99999999999999999999", "-0.0", "1e308",
          "0.5 0.5 0.5 0.5", "0 0.1 0.1 0.9 0.1 0.9 0.9"]  # fmt: skip


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """`text` after line/token edits: replace, insert or delete lines; replace or add tokens."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace_token", "add_token", "drop_token", "new_line", "del_line",
                                   "garbage_line", "dup_line"]))  # fmt: skip
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        toks = lines[i].split(" ")
        if op == "replace_token":
            j = draw(st.integers(0, len(toks) - 1))
            toks[j] = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)))
            lines[i] = " ".join(toks)
        elif op == "add_token":
            toks.insert(draw(st.integers(0, len(toks))), draw(st.sampled_from(TOKENS)))
            lines[i] = " ".join(toks)
        elif op == "drop_token" and len(toks) > 1:
            del toks[draw(st.integers(0, len(toks) - 1))]
            lines[i] = " ".join(toks)
        elif op == "new_line":
            lines.insert(i, " ".join(draw(st.lists(st.sampled_from(TOKENS), max_size=9))))
        elif op == "del_line":
            del lines[i]
        elif op == "garbage_line":
            lines[i] = draw(st.text(max_size=40))
        elif op == "dup_line":
            lines.insert(i, lines[i])
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))
