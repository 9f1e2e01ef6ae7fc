"""The data layer's import structure: no import cycles, readers below the `data=` resolver, and
the public names other packages import still where they were.

Imports are read from the source with `ast`, module-level and function-level alike (a lazy
import inside a function still ties the two modules together)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import optik

ROOT = Path(optik.__file__).parent  # .../optik


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The optik modules `name` imports anywhere in its source. ``from pkg import x`` counts as
    an import of ``pkg.x`` when that is a module, else of ``pkg``; parents of an imported module
    (whose ``__init__`` runs first) are not counted: they are not a cycle by themselves."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module (each one import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


GRAPH = {m: imported_modules(m) for m in MODULES}


def test_edges_are_read_from_every_kind_of_import():
    sources = GRAPH["optik.data.sources"]
    assert "optik.data.synthetic" in sources  # from optik.data import synthetic
    assert {"optik.data.formats.coco", "optik.data.formats.yolo"} <= sources  # from pkg import a, b
    assert "optik.data.splits" in sources  # from optik.data.splits import DataSplits
    assert "optik.data.image" in GRAPH["optik.data.formats.masks"]


def test_tarjan_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycle_through_the_data_layer():
    cycles = [c for c in strongly_connected(GRAPH) if any(m.startswith("optik.data") for m in c)]
    assert cycles == []


def test_readers_import_only_datasets_image_and_checks():
    allowed = {
        "optik.errors",
        "optik.data.checks",
        "optik.data.image",
        "optik.data.dataset",
        "optik.data.detection_dataset",
        "optik.data.segmentation_dataset",
    }
    for name, deps in GRAPH.items():
        if name.startswith("optik.data.formats."):
            other = {d for d in deps if d not in allowed and not d.startswith("optik.data.formats")}
            assert not other, f"{name} imports {sorted(other)}"


def test_datasets_import_no_reader_and_no_other_task():
    for name in ("optik.data.detection_dataset", "optik.data.segmentation_dataset",
                 "optik.data.dataset", "optik.data.checks", "optik.data.splits",
                 "optik.data.collate"):  # fmt: skip
        deps = GRAPH[name]
        assert not {d for d in deps if d.startswith("optik.data.formats")}, name
        assert "optik.data.sources" not in deps, name
    assert not {d for d in GRAPH["optik.data.segmentation_dataset"] if "detection" in d}
