"""`autocompress datasets`: the dataset registry with classes, input size and data needs."""

from __future__ import annotations

import argparse

from search.commands._table import add_listing, print_rows


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_listing(sub, "datasets", help="list the registered datasets", func=run,
                       description="List the dataset registry: description, classes, input size and whether "
                                   "--data-dir is needed. Normalization presets: imagenet, cifar.")


def dataset_rows() -> list[dict]:
    """One dict per registered dataset: name, description, classes, input_size, needs_data_dir."""
    from compress.data import DATASET_FACTS, DATASETS

    rows = []
    for name in DATASETS.names():
        classes, size, needs = DATASET_FACTS.get(name, ("?", "?", "?"))
        rows.append({"name": name, "description": DATASETS.describe(name), "classes": classes,
                     "input_size": size, "needs_data_dir": needs})
    return rows


def run(args: argparse.Namespace) -> int:
    print_rows(dataset_rows(), args.format, [
        ("dataset", lambda r: r["name"]), ("classes", lambda r: r["classes"]), ("input", lambda r: r["input_size"]),
        ("needs --data-dir", lambda r: r["needs_data_dir"]), ("description", lambda r: r["description"])])
    return 0
