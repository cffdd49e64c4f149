"""The ``autocompress`` command line: one entry point, one subcommand per task.

Each subcommand lives in ``search/commands/<name>.py`` and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func(args) -> int``.
The CLI (this module and ``search/commands/``) is the top layer: it may import every package.
Commands import their heavy dependencies (torch, reports, ...) inside ``run`` so that building
the parser (``autocompress --help``, ``autocompress models``) stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from autocompress.errors import USER_ERRORS, UserError
from search._logging import setup_logging

# order = order shown in --help
COMMANDS = (
    "search", "finalize", "audit", "report", "compare", "apply", "finetune", "evaluate",
    "models", "datasets", "spaces", "space",
)

log = logging.getLogger("autocompress")


class CLIError(UserError):
    """A user-facing error: printed as one clear message, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="Search and apply compression policies (pruning, mixed precision, distillation) for ResNets.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"search.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        argv = ["search"]  # `autocompress` alone runs the quickstart search
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    except CLIError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - clear message for user errors, traceback with -vv
        if isinstance(exc, USER_ERRORS) and args.verbose < 2:
            log.error("%s", exc)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
