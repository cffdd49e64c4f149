"""Seconds per phase, accumulated into a dict (``apply``'s timings, a measurement's times)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def phase(times: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``times[name]`` (rounded to milliseconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)
