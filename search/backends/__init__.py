"""Search backends: thin adapters that turn a sampler's proposals into trials.

Every backend gets a :class:`SearchContext` and runs trials through the same two calls,
``spaces.space.suggest_policy`` (params -> Policy) and ``search.trial.run_trial`` (Policy ->
TrialRecord written to ``RUN/records/``), and reports every result to the same Optuna storage,
so records, study and exports look identical whichever backend ran them.

- ``optuna``: ask/tell loop in this process (``--workers K`` starts K such processes sharing
  one study); see :mod:`search.backends.optuna_backend`.
- ``ray``: Ray Tune with ``OptunaSearch`` (local ``ray.init()`` or ``--address``); see
  :mod:`search.backends.ray_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.registry import Registry

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
    ran: int  # trials this invocation ran (all workers)
    storage_url: str
    study: str
    stopped_early: str | None = None  # reason, when the requested count was not reached


BACKENDS: Registry[Callable[[SearchContext], BackendResult]] = Registry("search backend")


@BACKENDS.register("optuna", "Optuna ask/tell loop; --workers K local processes share one study")
def _run_optuna(ctx: SearchContext) -> BackendResult:
    from search.backends.optuna_backend import run_optuna

    return run_optuna(ctx)


@BACKENDS.register("ray", "Ray Tune + OptunaSearch; local or --address of a running Ray cluster")
def _run_ray(ctx: SearchContext) -> BackendResult:
    from search.backends.ray_backend import run_ray

    return run_ray(ctx)


__all__ = ["BACKENDS", "BackendResult", "ObjectiveFactory", "SearchContext"]
