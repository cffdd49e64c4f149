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

from compress.registry import Registry
from search.backends._context import BackendResult, ObjectiveFactory, SearchContext
from search.backends.optuna_backend import run_optuna
from search.backends.ray_backend import run_ray

BACKENDS: Registry[Callable[[SearchContext], BackendResult]] = Registry("search backend")
BACKENDS.register("optuna", "Optuna ask/tell loop; --workers K local processes share one study")(run_optuna)
BACKENDS.register("ray", "Ray Tune + OptunaSearch; local or --address of a running Ray cluster")(run_ray)

__all__ = ["BACKENDS", "BackendResult", "ObjectiveFactory", "SearchContext"]
