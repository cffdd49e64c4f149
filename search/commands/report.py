"""`autocompress report RUN`: self-contained HTML (default), Markdown or JSON report of a search run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("autocompress.report")

FORMATS = ("html", "md", "json")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="report of a search run: Pareto plots, table, policies, progress (HTML/Markdown/JSON)",
        description="Write a report of a search run directory. HTML is one self-contained file that opens "
                    "offline; Markdown comes with PNG figures beside it; JSON is the data behind every figure. "
                    "Also refreshes RUN/trials.csv, RUN/pareto.csv and RUN/recipes/. When the run's study is "
                    "shared (--storage/--study of several workers) and its storage can be reached, the records "
                    "of the other workers' trials are first rebuilt from it, so the report covers the whole study.")
    p.add_argument("run", type=Path, help="run directory written by `autocompress search`")
    p.add_argument("--out", "-o", default=None,
                   help="output file (default RUN/report.html, RUN/report.md or RUN/report.json; '-' = stdout "
                        "for json/md)")
    p.add_argument("--format", "-f", choices=FORMATS, default=None,
                   help="html, md or json (default: from --out's suffix, else html)")
    p.add_argument("--no-sync", action="store_true",
                   help="do not first read the records of other workers of a shared study from its storage")
    p.add_argument("--no-figures", action="store_true",
                   help="html: do not also write the static PNG/SVG figures into RUN/figures/")
    p.set_defaults(func=run)
    return p


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out and args.out != "-" else ""
    return {"htm": "html", "html": "html", "md": "md", "markdown": "md", "json": "json"}.get(suffix, "html")


def run(args: argparse.Namespace) -> int:
    from reports.data import report_data
    from search.checks import check_out_file

    if args.out not in (None, "-"):
        check_out_file(args.out)
    fmt = _format(args)
    if not args.no_sync:
        from search.study_records import sync_records

        sync_records(args.run)
    data = report_data(args.run)
    if fmt == "json":
        text = json.dumps(data, indent=1, allow_nan=False)
        if args.out == "-":
            sys.stdout.write(text + "\n")
            return 0
        out = Path(args.out) if args.out else args.run / "report.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    elif fmt == "md":
        from reports.markdown import render_markdown, write_markdown_report

        if args.out == "-":
            sys.stdout.write(render_markdown(data, args.run, args.run / "report.md", []) + "\n")
            return 0
        out = write_markdown_report(args.run, args.out, data=data)
    else:
        from reports.html import render_html

        out = Path(args.out) if args.out and args.out != "-" else args.run / "report.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(data, args.run, out), encoding="utf-8")
        if not args.no_figures:
            from reports.figures import write_figures

            figs = write_figures(args.run, data=data)
            log.info("wrote %d static figures to %s", len(figs), args.run / "figures")
    c = data["run"]["counts"]
    log.info("%s report of %s: %d trials, %d on the Pareto front", fmt, args.run, c["total"], c["pareto"])
    print(out)
    return 0
