"""A machine-wide lock so that concurrent trials never time models at the same moment.

The lock file is ``$AUTOCOMPRESS_LATENCY_LOCK`` or ``<tempdir>/autocompress-latency.lock``.
It is re-entrant within a process (``compare_latency`` holds it while calling helpers that
would take it again; other threads wait); between processes it is an exclusive file lock
(:func:`autocompress.rundir.file_lock`, ``filelock``). A forked child starts without it.

Audit trail: with ``$AUTOCOMPRESS_LATENCY_LOG`` set, every release of the outermost hold appends
one JSON line ``{"pid", "acquired", "released"}`` (``time.time()`` seconds) to that file, while the
lock is still held, so the lines of all processes never interleave. ``benchmarks/gpu_check.py``
reads it to show that concurrent Ray trials measured one after another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from autocompress.rundir import file_lock

log = logging.getLogger(__name__)

ENV = "AUTOCOMPRESS_LATENCY_LOCK"
LOG_ENV = "AUTOCOMPRESS_LATENCY_LOG"

_guard = threading.RLock()
_held: contextlib.ExitStack | None = None
_depth = 0


def _reset_in_child() -> None:
    """A forked child does not hold its parent's lock: start from a clean state."""
    global _guard, _held, _depth
    _guard = threading.RLock()
    _held = None  # the inherited descriptor still locks for the parent; leave it alone
    _depth = 0


os.register_at_fork(after_in_child=_reset_in_child)


def lock_path() -> Path:
    """Where the lock file lives (env ``AUTOCOMPRESS_LATENCY_LOCK`` overrides the default)."""
    return Path(os.environ.get(ENV) or Path(tempfile.gettempdir()) / "autocompress-latency.lock")


@contextlib.contextmanager
def latency_lock(timeout_s: float | None = None) -> Iterator[float]:
    """Hold the machine-wide latency lock; yields the seconds spent waiting for it.

    ``timeout_s=None`` waits as long as needed; otherwise raises :class:`TimeoutError`.
    """
    global _held, _depth
    with _guard:
        waited = 0.0
        if _depth == 0:
            stack = contextlib.ExitStack()
            waited = stack.enter_context(file_lock(lock_path(), timeout_s, what="latency lock"))
            _held = stack
        acquired = time.time()
        _depth += 1
        try:
            yield waited
        finally:
            _depth -= 1
            if _depth == 0 and _held is not None:
                _log_hold(acquired)
                _held.close()
                _held = None


def _log_hold(acquired: float) -> None:
    """Append this hold to ``$AUTOCOMPRESS_LATENCY_LOG`` (when set); never fails the measurement."""
    target = os.environ.get(LOG_ENV)
    if not target:
        return
    line = json.dumps({"pid": os.getpid(), "acquired": acquired, "released": time.time()})
    try:
        with open(target, "a") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        log.warning("cannot append to the latency lock log %s: %s", target, exc)


def read_lock_log(path: str | Path) -> list[dict]:
    """The holds recorded in a lock log (see the module docstring), in file order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def overlapping_holds(holds: list[dict]) -> list[tuple[dict, dict]]:
    """Holds, consecutive by acquisition time, whose intervals overlap: empty exactly when no two holds
    overlap (the lock serialised them)."""
    ordered = sorted(holds, key=lambda h: h["acquired"])
    return [(a, b) for a, b in zip(ordered, ordered[1:]) if b["acquired"] < a["released"]]
