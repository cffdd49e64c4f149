"""What a search backend gets (:class:`SearchContext`) and returns (:class:`BackendResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spaces.space import baseline_params

#: objective factory: ``(space, run_dir) -> objective`` (``search.objective.Objective`` by default)
ObjectiveFactory = Callable[[Any, Path], Any]


@dataclass
class SearchContext:
    """Everything a backend needs; built by :func:`search.driver.run_search`.

    ``trials`` is the number of COMPLETE trials the study must hold when the search ends
    (baselines included); a rerun only runs the remainder.
    """

    space: Any  # spaces.space.SearchSpace (with the search settings already resolved)
    run_dir: Path
    objective_factory: ObjectiveFactory
    trials: int
    storage: str | None  # None -> sqlite:///RUN/study.db
    study: str
    sampler: str
    seed: int
    baselines: bool = True
    workers: int = 1
    timeout_s: float | None = None
    max_consecutive_failures: int = 10
    progress: bool = True
    ray: dict[str, Any] = field(default_factory=dict)  # address, cpus_per_trial, gpus_per_trial, max_concurrent
    #: labelled seed params (``seed-flops-0.5``, ...), enqueued right after the baselines
    seeds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def initial_trials(self, dims: Any) -> list[tuple[str, dict[str, Any]]]:
        """What a new study queues first: the baselines (when enabled), then the seeds."""
        return (baseline_params(self.space, dims) if self.baselines else []) + list(self.seeds)

    @property
    def objectives(self) -> list[str]:
        return list(self.space.objectives)

    @property
    def directions(self) -> list[str]:
        return list(self.space.directions)


@dataclass
class BackendResult:
    """What a backend reports back to the driver."""

    complete: int  # COMPLETE trials in the study at the end
    failed: int  # FAIL trials in the study at the end
    ran: int  # trials this invocation's processes ran (not other workers of a shared study)
    storage_url: str
    study: str
    stopped_early: str | None = None  # reason, when the requested count was not reached
    workers: dict[str, int] = field(default_factory=dict)  # finished trials per worker (host:pid), whole study


__all__ = ["BackendResult", "ObjectiveFactory", "SearchContext"]
