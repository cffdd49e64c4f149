"""Per-trial progress: one log line (metrics, Pareto size, hypervolume, ETA) and a tqdm bar.

The Pareto front and hypervolume are computed over every COMPLETE, feasible trial in the study
(all workers), with the run's hypervolume reference point (``run.json`` ``hv_reference``) and
shown as the fraction of the reference-to-ideal box (:func:`autocompress.pareto.hypervolume_fraction`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from autocompress.pareto import hypervolume_fraction, ideal_point, non_dominated

log = logging.getLogger("search")


def front_stats(study: optuna.Study, objectives: Sequence[tuple[str, str]],
                hv_reference: Mapping[str, float] | None) -> tuple[int, float | None]:
    """(Pareto size, hypervolume fraction) of the feasible complete trials of ``study``."""
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.values is None or any(v > 0 for v in t.constraints.values()):
            continue
        points.append(list(t.values))
    if not points:
        return 0, None
    directions = [d for _, d in objectives]
    size = int(non_dominated(points, directions).sum())
    if not hv_reference or any(m not in hv_reference for m, _ in objectives):
        return size, None
    ref = [float(hv_reference[m]) for m, _ in objectives]
    try:
        hv = float(hypervolume_fraction(points, directions, ref, ideal_point(objectives)))
    except Exception as exc:  # noqa: BLE001 - progress display must not stop a search
        log.debug("hypervolume failed: %s", exc)
        hv = None
    return size, hv


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        v = float(v)
        if abs(v) >= 1e5:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def _fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Logs one line per finished trial and drives a tqdm bar over the requested trial count."""

    def __init__(self, total: int, done: int, objectives: Sequence[tuple[str, str]],
                 hv_reference: Mapping[str, float] | None, *, workers: int = 1, enabled: bool = True,
                 desc: str = "search"):
        self.total = total
        self.objectives = list(objectives)
        self.hv_reference = dict(hv_reference or {})
        self.workers = max(1, workers)
        self.start_done = done
        self.t0 = time.perf_counter()
        self.durations: list[float] = []
        self.bar = tqdm(total=total, initial=min(done, total), desc=desc, unit="trial",
                        disable=not enabled, dynamic_ncols=True)

    def eta_s(self, done: int) -> float:
        remaining = max(0, self.total - done)
        if not remaining:
            return 0.0
        if not self.durations:
            return math.inf
        mean = sum(self.durations) / len(self.durations)
        return mean * remaining / self.workers

    def update(self, record: Any, study: optuna.Study, state: TrialState, seconds: float) -> None:
        """Report one finished trial (``record`` is a :class:`autocompress.rundir.TrialRecord`)."""
        self.durations.append(seconds)
        done = sum(1 for _ in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        size, hv = front_stats(study, self.objectives, self.hv_reference)
        label = f" [{record.baseline}]" if getattr(record, "baseline", None) else ""
        if state == TrialState.COMPLETE:
            shown = {m: record.metrics.get(m) for m, _ in self.objectives}
            if "accuracy_drop" in record.metrics and "accuracy_drop" not in shown:
                shown["drop"] = record.metrics["accuracy_drop"]
            what = " ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
            what += "" if record.feasible else " (infeasible)"
            if getattr(record, "levels", None):
                what += f" ({record.level_steps}-step proxy, level {len(record.levels)})"
            if record.cached_from is not None:
                what += f" (cached from trial {record.cached_from})"
        else:
            what = f"FAILED: {record.error}"
        hv_text = "-" if hv is None else f"{hv:.4f}"
        log.info("trial %d%s %.1fs: %s | pareto %d | HV %s | %d/%d complete | ETA %s",
                 record.trial, label, seconds, what, size, hv_text, done, self.total,
                 _fmt_duration(self.eta_s(done)))
        self.bar.n = min(done, self.total)
        self.bar.set_postfix(pareto=size, hv=hv_text, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
