"""README.md's headline tables agree with the committed ``benchmarks/results/*/headline.json``.

Every Markdown table whose first column is ``point`` is checked against the results folder the text
before it last cites (``benchmarks/results/<folder>/``; a table citing another file of a folder, e.g.
``runtimes.json``, has its own format and is not a headline table). Each row names a point of that
folder's ``headline.json``, or ``<sub>: <point>`` for the point in ``<folder>/<sub>/headline.json`` (a
second timing session). Every non-empty cell must be what the benchmark's own table renders for that
point; the ``(a)``/``(b)``/``(c)`` lines right after a table must be the ones its summary renders.
And every committed point's recipe is committed beside its ``headline.json``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _headline import report  # noqa: E402

CITE = re.compile(r"benchmarks/results/([\w.-]+)/([\w./-]*)")
SPEED = {"speed-up": "torch", "eager": "torch", "TorchScript": "torchscript", "TorchScript CL": "torchscript-cl",
         "ORT": "onnxruntime"}
#: descriptive columns the JSON does not carry as one value (the recipe holds it)
UNCHECKED = {"blocks dropped"}


def expected(header: str, p: dict[str, Any]) -> str | None:
    """What the benchmark renders for ``p`` under ``header`` (None: a column this test does not know)."""
    fixed = {**report.fixed_cells(p), "E": f"{p['epochs']:g}"}  # E: the README's, where tables mix budgets
    if header in fixed:
        return fixed[header]
    m = re.fullmatch(r"(.+) b(1|128)", header)
    if m and m.group(1) in SPEED:
        return report._cell(p, int(m.group(2)), SPEED[m.group(1)])
    return None


def _clean(cell: str) -> str:
    return cell.replace("**", "").strip()


def _cells(line: str) -> list[str]:
    return [_clean(c) for c in line.strip().strip("|").split("|")]


def readme_tables(text: str) -> list[tuple[int, tuple[str, str] | None, list[str], list[list[str]], list[str]]]:
    """(line number, last citation before it, header, rows, the (a)/(b)/(c) lines after it) per table."""
    lines, out, cite, i = text.splitlines(), [], None, 0
    while i < len(lines):
        for m in CITE.finditer(lines[i]):
            cite = (m.group(1), m.group(2))
        if not lines[i].startswith("| point |"):
            i += 1
            continue
        start, header = i + 1, _cells(lines[i])
        i += 2  # the header and its |---| line
        rows = []
        while i < len(lines) and lines[i].startswith("|"):
            rows.append(_cells(lines[i]))
            i += 1
        j = i + 1 if i < len(lines) and not lines[i].strip() else i
        summary = []
        while j < len(lines) and re.match(r"\([abc]\) ", lines[j]):
            summary.append(lines[j])
            j += 1
        out.append((start, cite, header, rows, summary))
    return out


TABLES = [t for t in readme_tables((ROOT / "README.md").read_text()) if t[1] and t[1][1] in ("", "headline.json")]


def _result(folder: Path) -> dict[str, Any]:
    path = folder / "headline.json"
    assert path.is_file(), f"{path} is cited by README.md but not committed"
    return json.loads(path.read_text())


def test_the_readme_has_headline_tables_to_check():
    folders = {t[1][0] for t in TABLES}
    assert {"headline-r20b", "headline-r56-e10"} <= folders, folders


@pytest.mark.parametrize("table", TABLES, ids=[f"README:{t[0]}:{t[1][0]}" for t in TABLES])
def test_readme_table_matches_its_headline_json(table):
    line, (folder, _), header, rows, summary = table
    base = ROOT / "benchmarks" / "results" / folder
    result = _result(base)
    assert rows, f"README.md:{line}: an empty table"
    unknown = [h for h in header[1:] if h not in UNCHECKED and expected(h, result["points"][0]) is None]
    assert not unknown, f"README.md:{line}: columns this check does not know: {unknown}"
    sessions = {"": result}  # each cited session's headline.json, read once
    for row in rows:
        sub, _, label = row[0].rpartition(": ")
        src = f"{folder}/{sub}" if sub else folder
        if sub not in sessions:
            sessions[sub] = _result(base / sub)
        points = {p["label"]: p for p in sessions[sub]["points"]}
        assert label in points, f"README.md:{line}: {row[0]!r} is no point of {src}"
        for h, cell in zip(header[1:], row[1:]):
            if cell and h not in UNCHECKED:
                want = expected(h, points[label])
                ok = cell.startswith(want + " (") if h == "FLOPs" and "(" in cell else cell == want
                assert ok, f"README.md:{line}: {row[0]} / {h}: README {cell!r}, {src} {want!r}"
    if summary:
        want = report._headline_text(result["headline"]).splitlines()
        wrong = [(have, w) for have, w in zip(summary, want) if have != w]
        assert len(summary) == len(want) and not wrong, f"README.md:{line}: (a)-(c) lines differ: {wrong}"


RESULTS = sorted((ROOT / "benchmarks" / "results").rglob("headline.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[str(p.parent.relative_to(ROOT / "benchmarks" / "results"))
                                                for p in RESULTS])
def test_every_committed_point_has_its_recipe(path):
    """A finalized point's recipe lies beside its ``headline.json``; a timing session of a folder's points
    (``<folder>/<sub>/headline.json``) re-times the folder's own points, so their recipes are the folder's
    and their results must be the folder's too."""
    points = json.loads(path.read_text())["points"]
    assert points, f"{path}: no points"
    parent = path.parent.parent / "headline.json"
    timed_again = {p["label"]: p for p in json.loads(parent.read_text())["points"]} if parent.is_file() else {}
    for p in points:
        if (path.parent / p["recipe"]).is_file():
            continue
        assert p["label"] in timed_again, f"{path}: {p['label']}'s recipe {p['recipe']} is not committed"
        same = timed_again[p["label"]]
        assert (same["final"], same["recipe"]) == (p["final"], p["recipe"]), \
            f"{path}: {p['label']} differs from the point of {parent} whose recipe it names"
        assert (parent.parent / p["recipe"]).is_file(), f"{parent}: {p['recipe']} is not committed"
