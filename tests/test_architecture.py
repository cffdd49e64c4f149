"""The house's shape, checked statically (AST, nothing imported).

- Layers import one way: ``autocompress`` <- ``spaces`` <- ``compress`` <- ``search`` <- ``reports``;
  the CLI (``search/cli.py``, ``search/commands/``) on top may import everything, and nothing
  else imports the CLI. Every import counts, also one inside a function.
- No import cycle between files of the five packages (every import, also inside functions).
- No function longer than :data:`MAX_FUNCTION_LINES` lines.

See ``docs/ARCHITECTURE.md`` ("Layers").
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("autocompress", "spaces", "compress", "search", "reports")
CLI = ("search.cli", "search.commands")
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "search.driver"
    target: str  # imported module, e.g. "autocompress.rundir"
    path: Path
    line: int
    nested: bool  # inside a function or class body


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(root: Path, name: str) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _targets(root: Path, module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:  # relative: resolve against the importing module's package
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    # `from a.b import c` imports the module a.b.c when there is one, else names of a.b
    subs = [f"{pkg}.{a.name}" for a in node.names if _is_module(root, f"{pkg}.{a.name}")]
    return subs if len(subs) == len(node.names) else [pkg, *subs]


def _import_nodes(node: ast.AST, nested: bool = False):
    """``(import node, nested)`` for every import under ``node``; nested = inside a function or class."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, nested
        inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        yield from _import_nodes(child, inner)


def collect_imports(root: Path, packages: tuple[str, ...] = LAYERS) -> list[Import]:
    """Every first-party import in ``packages`` under ``root``, also those inside functions."""
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            module = module_name(root, path)
            for node, nested in _import_nodes(ast.parse(path.read_text(), str(path))):
                for target in _targets(root, module, path.name == "__init__.py", node):
                    if target.split(".")[0] in packages:
                        out.append(Import(module, target, path, node.lineno, nested))
    return out


def _layer(module: str) -> int:
    if module == CLI[0] or module.startswith(CLI[1]):
        return len(LAYERS)
    return LAYERS.index(module.split(".")[0])


def back_edges(imports: list[Import]) -> list[str]:
    """Imports against the layer order (the CLI excepted), and imports of the CLI from below."""
    bad = []
    for imp in imports:
        if _layer(imp.target) > _layer(imp.source):
            where = " (inside a function)" if imp.nested else ""
            bad.append(f"{imp.path.name}:{imp.line}: {imp.source} imports {imp.target}{where}")
    return sorted(set(bad))


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(root: Path, packages: tuple[str, ...] = LAYERS, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > limit:
                        out.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {n} lines")
    return out


# ----- the checks on this repository ----------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = collect_imports(REPO)
    assert len({i.source for i in found}) > 50  # the walk really saw the packages
    return found


def test_layers_import_one_way(imports):
    assert back_edges(imports) == []


def test_no_import_cycles_between_files(imports):
    assert cycles(imports) == []


def test_no_function_over_80_lines():
    assert long_functions(REPO) == []


def test_the_ground_floor_imports_no_other_package(imports):
    assert not [i for i in imports if i.source.startswith("autocompress") and not i.target.startswith("autocompress")]


# ----- the checker itself can fail ------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_find_back_edges_cycles_and_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    _write(tmp_path, {
        **{f"{p}/__init__.py": "" for p in LAYERS},
        "search/cli.py": "import reports.html\n",  # the CLI may import everything
        "search/commands/__init__.py": "",
        "search/commands/run.py": "from reports import html\n",
        "reports/html.py": "from search import driver\n",
        "search/driver.py": "def f():\n    from reports.html import render\n",  # a back-edge in a function
        "search/backends.py": "from search.cli import main\n",  # the CLI imported from below
        "spaces/a.py": "from . import b\n",
        "spaces/b.py": "def g():\n    import spaces.a\n",  # a file cycle through a function
        "compress/big.py": f"def big():\n{body}\n",
    })
    found = collect_imports(tmp_path)
    bad = back_edges(found)
    assert [b.split(": ", 1)[1] for b in bad] == [
        "search.backends imports search.cli", "search.driver imports reports.html (inside a function)"]
    assert cycles(found) == [["reports.html", "search.driver"], ["spaces.a", "spaces.b"]]
    assert long_functions(tmp_path) == [f"compress/big.py:1 big: {MAX_FUNCTION_LINES + 1} lines"]
