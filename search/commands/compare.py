"""`autocompress compare RUN1 RUN2 [...]`: overlay Pareto fronts, hypervolume against a shared reference."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

HELP = "overlay the Pareto fronts of several runs; hypervolume against a shared reference"
DESCRIPTION = ("Compare search runs (different samplers, budgets, devices): one self-contained HTML page "
               "with the fronts overlaid and each run's hypervolume against ONE shared reference point.")

log = logging.getLogger("autocompress.compare")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help=HELP, description=DESCRIPTION)
    p.add_argument("runs", nargs="+", type=Path, help="two or more run directories")
    p.add_argument("--out", "-o", default="compare.html",
                   help="output file: .html page (default compare.html) or .json data; '-' prints JSON")
    p.add_argument("--labels", default=None, help="comma-separated names for the runs (default: directory names)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from reports.compare import compare_data, write_compare_report
    from search.checks import check_out_file

    if args.out != "-":
        check_out_file(args.out)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    data = compare_data(args.runs, labels)
    if args.out == "-":
        sys.stdout.write(json.dumps(data, indent=1, allow_nan=False) + "\n")
        return 0
    out = write_compare_report(args.runs, args.out, labels, data=data)
    for r in data["runs"]:
        log.info("%-24s hypervolume fraction %.5f (%d Pareto points, %d on the joint front); proxy tau %s",
                 r["label"], r["fraction"], r["pareto"], r["contribution"], r["fidelity"]["text"])
    print(out)
    return 0
