"""Logging set-up shared by the CLI and the worker processes it starts (``--workers K``)."""

from __future__ import annotations

import logging
import sys

#: third-party loggers kept at WARNING or above (they are chatty at INFO)
NOISY = ("fvcore", "iopath", "ray", "urllib3", "matplotlib", "PIL")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``verbose > 1``, WARNING when ``quiet``."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
