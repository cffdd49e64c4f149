"""`autocompress spaces`: the built-in search spaces with a one-line description."""

from __future__ import annotations

import argparse

from search.commands._table import print_rows


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("spaces", help="list the built-in search spaces",
                       description="List the built-in search spaces (spaces/builtin/*.yaml). Show one in full "
                                   "with `autocompress space show NAME`.")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)
    return p


def space_rows() -> list[dict]:
    """One dict per built-in space: name, model, dataset, objectives, trials, description."""
    from spaces.space import list_spaces, load_space

    rows = []
    for name, description in list_spaces().items():
        s = load_space(name)
        rows.append({"name": name, "model": s.model.name, "dataset": s.data.dataset,
                     "objectives": list(s.objectives), "trials": s.search.trials, "description": description})
    return rows


def run(args: argparse.Namespace) -> int:
    print_rows(space_rows(), args.format, [
        ("space", lambda r: r["name"]), ("model", lambda r: r["model"]), ("dataset", lambda r: r["dataset"]),
        ("objectives", lambda r: ",".join(r["objectives"])), ("trials", lambda r: r["trials"]),
        ("description", lambda r: r["description"])])
    return 0
