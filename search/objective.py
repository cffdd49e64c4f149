"""The search objective: Policy -> metrics, shared by every backend.

:class:`Objective` keeps the trial bookkeeping and the result cache; the original model,
data, reference metrics and dimensions are its :class:`search.baseline.Baseline`, and every
measurement goes through ``compress.measure.measure`` (via :meth:`Baseline.measure`).

:meth:`Objective.evaluate` applies a policy with ``compress.apply.apply`` (prune -> BN recal
-> QAT -> proxy fine-tune with KD -> convert), measures accuracy on val (never test), costs on
the float (pruned) structure and, when the space needs it, the latency ratio to the original
(serialised across processes by the latency lock). Results are cached by policy hash in
``RUN/cache/<hash>.json`` with the applied policy (kept channel indices included), shared by all
workers, so a duplicate proposal is answered from the cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.rundir import atomic_write_json
from compress.data import DataBundle
from search.baseline import Baseline
from spaces.policy import Policy
from spaces.space import Dim, SearchSpace

log = logging.getLogger("search.objective")

#: version of the cache entries (2: they hold the applied policy)
CACHE_VERSION = 2


class Metrics(dict):
    """Metrics of one evaluation (a plain ``dict[str, float]``) plus ``times`` per phase,
    ``cached_from`` (trial whose cached result was reused, or -1 for an unnumbered one), notes
    and ``policy``: the applied policy (``Policy.to_dict()``, kept channel indices included)."""

    def __init__(self, metrics: Mapping[str, Any], times: Mapping[str, float] | None = None, *,
                 cached: bool = False, cached_from: int | None = None, notes: list[str] | None = None,
                 policy: dict[str, Any] | None = None):
        super().__init__(metrics)
        self.times = dict(times or {})
        self.cached = cached
        self.cached_from = cached_from
        self.notes = list(notes or [])
        self.policy = policy


class Objective:
    """Evaluate policies of ``space`` in run directory ``run_dir``. See the module docstring.

    ``data``, ``model`` (original, eval mode), ``reference`` (its metrics), ``groups``
    ({group: channels}), ``layers`` and ``dims`` are the :attr:`baseline`'s, prepared on first access.
    ``evaluations`` counts evaluations actually run in this process (cache hits excluded).
    """

    def __init__(self, space: SearchSpace, run_dir: str | Path, *, device: str = "cpu", progress: bool = False):
        self.space = space
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.baseline = Baseline(space, run_dir, device=device, progress=progress)
        self.evaluations = 0
        self.cache_hits = 0

    # ----- the baseline's views, as the backends and the driver use them ------------------
    @property
    def data(self) -> DataBundle:
        return self.baseline.data

    @property
    def model(self) -> nn.Module:
        return self.baseline.model

    @property
    def reference(self) -> dict[str, Any]:
        return self.baseline.reference

    @property
    def groups(self) -> dict[str, int]:
        return self.baseline.groups

    @property
    def layers(self) -> list[str]:
        return self.baseline.layers

    @property
    def dims(self) -> list[Dim]:
        return self.baseline.dims

    # ----- the cache ------------------------------------------------------------------------
    def cache_path(self, policy: Policy) -> Path:
        return self.run_dir / "cache" / f"{policy.hash()}.json"

    def effective_policy(self, policy: Policy, seed: int) -> Policy:
        """The policy actually run: its fine-tune seed is the trial seed."""
        return policy.replace(finetune=dataclasses.replace(policy.finetune, seed=int(seed)))

    def cached(self, policy: Policy) -> dict[str, Any] | None:
        """The cache entry of an effective policy (``metrics``, ``times``, ``trial``, ``policy``), or None."""
        path = self.cache_path(policy)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return entry if entry.get("v") == CACHE_VERSION else None

    # ----- the objective --------------------------------------------------------------------
    def evaluate(self, policy: Policy, *, seed: int = 0, trial: int | None = None, cache: bool = True) -> Metrics:
        """Metrics of ``policy`` (see :data:`autocompress.metrics.METRICS`) with per-phase ``times``
        and the applied policy.

        A policy without pruning or quantization is not fine-tuned (nothing to recover; it is
        the original model). Exceptions from applying the policy (PolicyError, DivergenceError,
        out of memory, ...) propagate; :func:`search.trial.run_trial` turns them into failed
        records. Successful results are cached by policy hash (``trial`` is stored so later
        duplicates can name it in ``cached_from``); ``cache=False`` neither reads nor writes the
        cache (``autocompress apply --verify`` measures again).
        """
        policy = self.effective_policy(policy, seed)
        if not cache:
            return self._run(policy)
        hit = self.cached(policy)
        if hit is not None:
            self.cache_hits += 1
            log.info("policy %s already evaluated (trial %s): reusing its metrics", policy.hash(), hit.get("trial"))
            return Metrics(hit["metrics"], hit.get("times"), cached=True,
                           cached_from=hit.get("trial") if hit.get("trial") is not None else -1,
                           notes=hit.get("notes"), policy=hit["policy"])
        result = self._run(policy)
        self.evaluations += 1
        atomic_write_json(self.cache_path(policy), {"v": CACHE_VERSION, "trial": trial, "hash": policy.hash(),
                                                    "metrics": dict(result), "times": result.times,
                                                    "notes": result.notes, "policy": result.policy})
        return result

    def _run(self, policy: Policy) -> Metrics:
        _ = self.reference  # prepared (and timed) outside the trial's phases
        t_total = time.perf_counter()
        compress_it = policy.prune.active or policy.quant.active
        out = self.baseline.apply_policy(policy, finetune=compress_it)  # seeded: effective_policy's seed
        measured = self.baseline.measure(out)
        times = {**{k: float(v) for k, v in out.timings.items()}, **measured.times}
        times["total"] = round(time.perf_counter() - t_total, 3)
        metrics = measured.to_dict()
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"metric {k} = {v} is not finite")
        return Metrics(metrics, times, notes=list(out.notes), policy=out.policy.to_dict())


__all__ = ["CACHE_VERSION", "Metrics", "Objective"]
