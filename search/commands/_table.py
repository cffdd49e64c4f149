"""Plain-text tables for CLI output (stdout), and the registry listing commands' parser."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned text columns separated by two spaces, with a dashed rule under the header."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_listing(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The parser of a listing command (``models``, ``datasets``, ``spaces``): ``--format table|json``."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=func)
    return p


def print_rows(rows: list[dict], fmt: str, columns: Sequence[tuple[str, Callable[[dict], Any]]]) -> None:
    """Print registry-style rows as JSON (``fmt == "json"``: the dicts as they are) or as a table
    with one column per ``(header, cell function)``."""
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    print(format_table([[cell(r) for _, cell in columns] for r in rows], [h for h, _ in columns]))


def si(value: float | int | None, unit: str = "") -> str:
    """``41_200_000 -> '41.20 M'``."""
    if value is None:
        return "n/a"
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.2f} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()
