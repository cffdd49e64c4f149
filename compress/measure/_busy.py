"""Detect a busy machine: CPU time used by other processes while we measured."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

#: other processes may use at most this many cores on average before a run is flagged busy
MAX_OTHER_CORES = 0.5
#: a run-to-run spread (IQR / median) above this is flagged busy
MAX_SPREAD = 0.5


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _own_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


@dataclass
class CpuMonitor:
    """Context manager: average cores used by *other* processes during the block."""

    other_cores: float = 0.0
    wall_s: float = 0.0

    def __enter__(self) -> CpuMonitor:
        self._t0 = time.monotonic()
        self._sys0 = _busy_seconds()
        self._own0 = _own_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = max(time.monotonic() - self._t0, 1e-9)
        other = (_busy_seconds() - self._sys0) - (_own_seconds() - self._own0)
        self.other_cores = max(0.0, other / self.wall_s)


def busy_verdict(other_cores: float, spread: float, *, max_other_cores: float = MAX_OTHER_CORES,
                 max_spread: float = MAX_SPREAD) -> tuple[bool, str]:
    """``(busy, reason)`` from other processes' CPU use and the IQR/median spread."""
    reasons = []
    if other_cores > max_other_cores:
        reasons.append(f"other processes used {other_cores:.2f} cores on average "
                       f"(limit {max_other_cores:g}, machine has {psutil.cpu_count()} cores)")
    if spread > max_spread:
        reasons.append(f"run-to-run spread IQR/median = {spread:.2f} (limit {max_spread:g})")
    return bool(reasons), "; ".join(reasons)
