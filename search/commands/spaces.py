"""`autocompress spaces`: the built-in search spaces with a one-line description."""

from __future__ import annotations

import argparse

from search.commands._table import add_listing, print_rows
from spaces.space import list_spaces, load_space


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_listing(sub, "spaces", help="list the built-in search spaces", func=run,
                       description="List the built-in search spaces (spaces/builtin/*.yaml). Show one in full "
                                   "with `autocompress space show NAME`.")


def _space_row(name: str, description: str) -> dict:
    s = load_space(name)
    return {"name": name, "model": s.model.name, "dataset": s.data.dataset, "objectives": list(s.objectives),
            "trials": s.search.trials, "description": description}


def space_rows() -> list[dict]:
    """One dict per built-in space: name, model, dataset, objectives, trials, description."""
    return [_space_row(name, description) for name, description in list_spaces().items()]


def run(args: argparse.Namespace) -> int:
    print_rows(space_rows(), args.format, [
        ("space", lambda r: r["name"]), ("model", lambda r: r["model"]), ("dataset", lambda r: r["dataset"]),
        ("objectives", lambda r: ",".join(r["objectives"])), ("trials", lambda r: r["trials"]),
        ("description", lambda r: r["description"])])
    return 0
