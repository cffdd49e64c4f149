"""A machine-wide lock so that concurrent trials never time models at the same moment.

The lock file is ``$AUTOCOMPRESS_LATENCY_LOCK`` or ``<tempdir>/autocompress-latency.lock``.
It is re-entrant within a process (``compare_latency`` holds it while calling helpers that
would take it again; other threads wait); between processes it is an exclusive file lock
(:func:`autocompress.rundir.file_lock`, ``filelock``). A forked child starts without it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from autocompress.rundir import file_lock

ENV = "AUTOCOMPRESS_LATENCY_LOCK"

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
        _depth += 1
        try:
            yield waited
        finally:
            _depth -= 1
            if _depth == 0 and _held is not None:
                _held.close()
                _held = None
