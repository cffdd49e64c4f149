"""`autocompress space show NAME|PATH [--set k=v]`: the resolved config and its dimensions.

Builds the model (untrained; no data or weights needed) to find its real prune groups and
quantizable layers, then prints the fully resolved space as YAML and the expanded
dimensions (name, kind, range/choices, what each applies to).
"""

from __future__ import annotations

import argparse
import json

import yaml

from search.commands._table import format_table
from spaces.space import expand, load_space


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("space", help="show a search space: resolved config and generated dimensions",
                       description="Inspect a search space (a built-in name or a YAML file).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print the resolved config and the expanded dimensions",
                              description="Print the fully resolved space (YAML) and its dimensions, generated "
                                          "from the model's real prune groups and quantizable layers.")
    show.add_argument("space", metavar="NAME|PATH", help="built-in space name (see `autocompress spaces`) or file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field, e.g. --set prune.granularity=stage (repeatable)")
    show.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    show.add_argument("--all", action="store_true", help="also list fixed (pinned / single-choice) dimensions")
    show.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def space_dims(space):
    """Build the space's model (no weights) and expand its dimensions."""
    from compress.models import build_model, quantizable_layers
    from compress.prune import list_groups

    spec = space.model.spec()
    model = build_model(spec)
    groups = list_groups(model, input_size=spec.input_size)
    return expand(space, groups, quantizable_layers(model))


def _targets(d) -> str:
    t = list(d.targets)
    if len(t) <= 1:
        return "" if not t or d.name.endswith("/" + t[0]) else t[0]
    what = "blocks, the last first" if d.name.startswith("depth/") else "layers"
    return f"{len(t)} {what}: {t[0]} .. {t[-1]}"


def run_show(args: argparse.Namespace) -> int:
    space = load_space(args.space, args.overrides)
    dims = space_dims(space)
    shown = dims if args.all else [d for d in dims if not d.fixed]
    if args.format == "json":
        print(json.dumps({"source": space.source, "config": space.to_dict(),
                          "dims": [{"name": d.name, "kind": d.kind, "low": d.low, "high": d.high, "step": d.step,
                                    "log": d.log, "choices": list(d.choices) if d.choices else None,
                                    "targets": list(d.targets), "fixed": d.fixed} for d in dims]}, indent=2))
        return 0
    print(f"# {space.name}  ({space.source})")
    print(yaml.safe_dump(space.to_dict(), sort_keys=False, default_flow_style=None, width=110).rstrip())
    print()
    fixed = len(dims) - len([d for d in dims if not d.fixed])
    print(f"# {len([d for d in dims if not d.fixed])} searched dimensions"
          + (f" ({fixed} fixed by pins or single choices{'' if args.all else '; --all lists them'})" if fixed else ""))
    rows = [(d.name, d.kind + (" (fixed)" if d.fixed else ""), d.describe(), _targets(d)) for d in shown]
    print(format_table(rows, ("dimension", "kind", "range / choices", "applies to")))
    return 0
