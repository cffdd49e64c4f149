"""The ``autocompress`` command line: one entry point, one subcommand per task.

Each subcommand lives in ``search/commands/<name>.py`` and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# order = order shown in --help
COMMANDS = (
    "search", "finalize", "report", "compare", "apply", "finetune", "evaluate",
    "models", "datasets", "spaces", "space",
)

log = logging.getLogger("autocompress")


class CLIError(Exception):
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


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    # third-party chatter
    for noisy in ("fvcore", "iopath", "ray", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


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
        from search._errors import USER_ERRORS

        if isinstance(exc, USER_ERRORS) and args.verbose < 2:
            log.error("%s", exc)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
