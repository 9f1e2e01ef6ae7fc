"""Counts the hypothesis cases the fuzz targets ran and prints them after the run (summed over
xdist workers when this conftest is loaded by the controller, e.g. `pytest -n 2 tests/fuzz`).

`OPTIK_FUZZ_CASES_FILE=path.json` also writes the counts (per target and total) to that file.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import fuzzkit` from the test modules

import fuzzkit

_TOTALS: Counter[str] = Counter()


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _is_worker(session.config):
        session.config.workeroutput["optik_fuzz_cases"] = json.dumps(dict(fuzzkit.CASES))
    else:
        _TOTALS.update(fuzzkit.CASES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    out = getattr(node, "workeroutput", {}).get("optik_fuzz_cases")
    if out:
        _TOTALS.update(json.loads(out))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _is_worker(config) or not _TOTALS:
        return
    fuzz = {k: v for k, v in sorted(_TOTALS.items()) if not k.startswith("plain:")}
    plain = sum(v for k, v in _TOTALS.items() if k.startswith("plain:"))
    total = sum(fuzz.values())
    per = ", ".join(f"{k} {v}" for k, v in fuzz.items())
    terminalreporter.write_line(f"optik fuzz: {total} hypothesis cases run ({per}); "
                                f"{plain} fixed regression/edge cases")  # fmt: skip
    path = os.environ.get("OPTIK_FUZZ_CASES_FILE")
    if path:
        Path(path).write_text(json.dumps({"hypothesis_cases": total, "fixed_cases": plain, "targets": fuzz},
                                         indent=1))  # fmt: skip
