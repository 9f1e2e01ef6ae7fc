"""The architecture's rules, checked on the source so they stay true (docs/architecture.md):

* no import cycles among optik modules — module-level and function-level imports both count;
* lower layers never import higher ones: tasks, models, metrics and data never import the engine;
  data, models and metrics never import tasks;
* the CLI names no task (it is built from the task catalog), and ``optik --help`` imports no torch;
* every catalog entry resolves: its Task class, config classes and runners import.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "optik"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _targets(mods: dict[str, Path], current: str, node: ast.AST) -> set[str]:
    """optik modules an import statement loads (``from optik.data import synthetic`` → ``optik.data.synthetic``)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = current.split(".") if mods[current].name == "__init__.py" else current.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join([*pkg, base] if base else pkg)
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
        names = subs or [base]  # `from pkg import submodule` is an edge to the submodule, not to pkg/__init__
    out = set()
    for n in names:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if n.startswith("optik") and n != current:
            out.add(n)
    return out


def _imports(tree: ast.AST) -> list[ast.AST]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:`` (never executed)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            graph[name] |= _targets(mods, name, node)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))
    return sccs


def test_cycle_finder_finds_a_cycle():
    """The checker itself can fail: a → b → c → a is reported, a tree is not."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module- and function-level imports):\n" + "\n".join(" ↔ ".join(c) for c in cycles)


@pytest.mark.parametrize(("lower", "higher"), [
    ("optik.tasks", "optik.engine"), ("optik.models", "optik.engine"), ("optik.metrics", "optik.engine"),
    ("optik.data", "optik.engine"), ("optik.data", "optik.tasks"), ("optik.models", "optik.tasks"),
    ("optik.metrics", "optik.tasks"), ("optik.models", "optik.generative"),
])  # fmt: skip
def test_lower_layers_do_not_import_higher_ones(lower, higher):
    bad = sorted(f"{m} → {t}" for m, ts in import_graph().items() if m.startswith(lower) for t in ts if t.startswith(higher))
    assert not bad, "\n".join(bad)


def test_cli_names_no_task():
    from optik.catalog import CATALOG

    source = (ROOT / "cli.py").read_text()
    named = [t for t in CATALOG if f'"{t}"' in source or f"'{t}'" in source]
    assert not named, f"optik/cli.py names task(s) {named}; they belong in optik/catalog.py"


def test_help_is_built_from_the_catalog_without_torch():
    code = ("import sys; from optik.cli import main; rc = main(['--help']); "
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    from optik.catalog import CATALOG

    assert "NOTORCH" in out.stdout, out.stdout + out.stderr
    for name in CATALOG:
        assert name in out.stdout


def test_every_catalog_entry_resolves():
    """Task classes, config classes and runners named by strings all import — a typo fails here, not at run time."""
    from optik import catalog
    from optik.config.base import CommonConfig
    from optik.tasks.base import Task

    for spec in catalog.CATALOG.values():
        if spec.task is not None:
            assert issubclass(catalog.load(spec.task), Task)
        assert spec.default_mode is None or spec.default_mode in spec.modes
        for mode in spec.modes.values():
            assert issubclass(catalog.load(mode.config), CommonConfig)
            assert callable(catalog.load(mode.runner))


def test_edges_are_read_from_every_kind_of_import():
    graph = import_graph()
    sources = graph["optik.data.sources"]
    assert "optik.data.synthetic" in sources  # from optik.data import synthetic
    assert {"optik.data.formats.coco", "optik.data.formats.yolo"} <= sources  # from pkg import a, b
    assert "optik.data.splits" in sources  # from optik.data.splits import DataSplits


def test_data_readers_import_only_datasets_image_and_checks():
    """Readers sit below the `data=` resolver (data/sources.py), so it can import them all at module level."""
    allowed = {"optik.errors", "optik.data.checks", "optik.data.image", "optik.data.dataset",
               "optik.data.detection_dataset", "optik.data.segmentation_dataset"}  # fmt: skip
    for name, deps in import_graph().items():
        if name.startswith("optik.data.formats."):
            other = {d for d in deps if d not in allowed and not d.startswith("optik.data.formats")}
            assert not other, f"{name} imports {sorted(other)}"


def test_datasets_import_no_reader_and_no_other_task():
    graph = import_graph()
    for name in ("optik.data.detection_dataset", "optik.data.segmentation_dataset", "optik.data.dataset",
                 "optik.data.checks", "optik.data.splits", "optik.data.collate"):  # fmt: skip
        assert not {d for d in graph[name] if d.startswith("optik.data.formats")}, name
        assert "optik.data.sources" not in graph[name], name
    assert not {d for d in graph["optik.data.segmentation_dataset"] if "detection" in d}


def test_catalog_examples_are_valid_commands():
    """Every example `optik --help` shows parses into its config, and native model names in it exist."""
    import shlex

    from optik import catalog
    from optik.config import build_config, parse_cli_args
    from optik.models import list_models

    for spec in catalog.CATALOG.values():
        for command in spec.example.split(";"):
            words = shlex.split(command)
            assert words[:2] == ["optik", spec.name], command
            mode = words[2] if "=" not in words[2] else spec.default_mode
            args = parse_cli_args([w for w in words[2:] if "=" in w])
            build_config(spec.name, mode, args)
            name = str(args.get("model", ""))
            if name and ":" not in name and "/" not in name:
                assert name in list_models(), f"{command}: no model {name!r}"
