"""Proxy-fidelity audit: does the search's proxy rank candidates the way full fine-tuning does?

``autocompress audit RUN [--trials N,M | --pareto | --sample K] [--epochs E | --steps S] [--seed S] [--noise]``

Every trial of a search is scored after a short proxy fine-tune. The audit fully fine-tunes a set
of the run's complete trials on the one path ``finalize`` takes
(:func:`search.finalize.final_policy` + :func:`search.finalize.finetune_and_measure`: the space's
``budget.final`` schedule, KD from the original model) and compares proxy and final val accuracy.
Latency is measured when the search measured it (the space's ``budget.latency.measure``).

Which trials (:func:`select_trials`): by default every feasible Pareto point plus a stratified
sample of :data:`DEFAULT_SAMPLE` feasible non-Pareto trials, spread over the run's first cost
objective (:func:`stratified_sample`); ``pareto_only`` drops the sample, ``trials`` names them.

Records: one :class:`autocompress.rundir.AuditRecord` per trial in ``RUN/audit/trial-NNNNN.json``,
written atomically when the trial's fine-tune and measurements end, so a rerun skips the trials
already audited and a ``kill -9`` loses at most the trial in flight. Every record of one
``RUN/audit/`` holds the same settings (schedule, seed, KD): a rerun that asks for another budget is
refused with a one-line error naming the flags of the existing audit (results of two budgets are
never silently mixed; move ``RUN/audit`` away to start another audit).

Summary (``RUN/audit/summary.json``, :func:`autocompress.fidelity.audit_summary` over every record
of the directory): Kendall tau and Spearman rho between proxy and final val accuracy with bootstrap
95% intervals, the regret of choosing by proxy at three cost budgets and, with ``noise``, the proxy's
standard deviation: 3 audited trials' proxies re-evaluated with 2 other seeds through
:meth:`search.objective.Objective.evaluate` (the fine-tune seed is part of the cached policy's hash,
so these are fresh evaluations, cached for a rerun), saved in ``RUN/audit/noise.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.errors import UserError
from autocompress.fidelity import audit_summary, cost_metric
from autocompress.rundir import (
    AuditRecord,
    Run,
    TrialRecord,
    atomic_write_json,
    audit_dir,
    load_run,
    pareto_records,
    read_audit_noise,
    read_audit_records,
    write_audit_record,
)
from search.finalize import final_policy, final_schedule, finetune_and_measure
from search.objective import Objective
from search.recipes import run_space, trial_policy
from search.trial import git_sha, now_iso, versions
from spaces._schema import to_dict
from spaces.space import SearchSpace

log = logging.getLogger("search.audit")

#: feasible non-Pareto trials sampled over the cost range by default
DEFAULT_SAMPLE = 6
#: ``--noise``: audited trials whose proxy is re-evaluated, and the other seeds each gets
NOISE_TRIALS = 3
NOISE_SEEDS = 2


class AuditError(UserError, ValueError):
    """Bad audit input (trials, sample size, budget) or a run that cannot be audited."""


@dataclass(frozen=True)
class AuditPlan:
    """What an audit will do, decided (and checked) before any model is loaded."""

    run: Run
    space: SearchSpace
    trials: list[int]  # selected, by trial number
    done: list[int]  # of those, already audited with the same settings
    settings: dict[str, Any]
    epochs: float | None
    steps: int | None
    seed: int | None

    @property
    def todo(self) -> list[int]:
        return [t for t in self.trials if t not in self.done]


# ----- which trials ------------------------------------------------------------------------------


def parse_trials(text: str) -> list[int]:
    """``"3,5, 12"`` -> ``[3, 5, 12]``; one-line :class:`AuditError` for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise AuditError(f"--trials {text!r}: expected trial numbers separated by commas, e.g. --trials 3,7") from None
    if any(n < 0 for n in numbers):
        raise AuditError(f"--trials {text!r}: trial numbers are >= 0")
    return list(dict.fromkeys(numbers))


def _cost(record: TrialRecord, metric: str) -> float:
    v = record.metrics.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def stratified_sample(records: list[TrialRecord], metric: str, k: int) -> list[TrialRecord]:
    """``k`` of ``records`` spread over the range of ``metric``: sorted by it (then by trial), split into
    ``k`` bins of equal count (quantile bins), the trial nearest each bin's median taken (ties: the lower
    cost, then the lower trial number). Deterministic; all of them when there are at most ``k``; records
    without a finite ``metric`` are left out."""
    pool = sorted((r for r in records if math.isfinite(_cost(r, metric))), key=lambda r: (_cost(r, metric), r.trial))
    if k <= 0:
        return []
    if len(pool) <= k:
        return pool
    out = []
    for chunk in np.array_split(np.arange(len(pool)), k):
        members = [pool[i] for i in chunk]
        median = float(np.median([_cost(r, metric) for r in members]))
        out.append(min(members, key=lambda r: (abs(_cost(r, metric) - median), _cost(r, metric), r.trial)))
    return out


def select_trials(run: Run, *, trials: list[int] | None = None, pareto_only: bool = False,
                  sample: int = DEFAULT_SAMPLE) -> list[int]:
    """The trials to audit, by trial number (see the module docstring); :class:`AuditError` when an
    explicit trial is missing or not complete, or nothing is left to audit."""
    complete = {r.trial: r for r in run.records if r.status == "complete"}
    if trials is not None:
        for t in trials:
            if t not in complete:
                state = next((f"is {r.status}" for r in run.records if r.trial == t), "does not exist")
                raise AuditError(f"--trials: trial {t} {state} in {run.dir}; complete trials: "
                                 f"{_ranges(sorted(complete))}")
        return sorted(trials)
    front = pareto_records(run)
    chosen = {r.trial for r in front}
    hashes = {r.policy_hash for r in front}
    rest = []
    for r in sorted(complete.values(), key=lambda r: r.trial):  # one trial per policy: duplicates were cached
        if r.feasible and r.trial not in chosen and r.policy_hash not in hashes and r.cached_from is None:
            hashes.add(r.policy_hash)
            rest.append(r)
    metric = cost_metric(run.objectives)
    chosen |= {r.trial for r in stratified_sample(rest, metric, 0 if pareto_only else sample)}
    if not chosen:
        raise AuditError(f"{run.dir}: no feasible complete trial to audit ({len(complete)} complete, all violate "
                         f"the constraints {run.info.constraints}); name trials with --trials N,M")
    return sorted(chosen)


def _ranges(numbers: list[int]) -> str:
    text = ", ".join(map(str, numbers[:20]))
    return text + (f", ... ({len(numbers)} in all)" if len(numbers) > 20 else "")


# ----- settings and the plan ---------------------------------------------------------------------


def audit_settings(space: SearchSpace, *, epochs: float | None, steps: int | None, seed: int | None) -> dict[str, Any]:
    """The audit's budget, stored in every record: the resolved full fine-tune schedule (without its
    seed), ``seed`` (None: each trial's own) and ``kd``."""
    schedule = to_dict(final_schedule(space, epochs=epochs, steps=steps))
    schedule.pop("seed", None)
    return {"schedule": schedule, "seed": seed, "kd": True}


def settings_flags(settings: dict[str, Any]) -> str:
    """The command-line flags that give ``settings``' budget, e.g. ``--steps 3 --seed 1``."""
    s = settings.get("schedule", {})
    text = f"--steps {s['steps']}" if s.get("steps") is not None else f"--epochs {s.get('epochs'):g}"
    return text + (f" --seed {settings['seed']}" if settings.get("seed") is not None else "")


def _check_existing(run_dir: Path, settings: dict[str, Any]) -> list[AuditRecord]:
    existing = read_audit_records(run_dir)
    other = [r for r in existing if r.settings != settings]
    if other:
        d, old = audit_dir(run_dir), settings_flags(other[0].settings)
        raise AuditError(
            f"{d} holds {len(other)} audited trials fine-tuned with {old} (schedule "
            f"{other[0].settings.get('schedule')}); this audit asks for {settings_flags(settings)}. Rerun with "
            f"{old} to resume it, or move {d} away to start another")
    return existing


def plan_audit(run_dir: str | Path, *, trials: str | list[int] | None = None, pareto_only: bool = False,
               sample: int = DEFAULT_SAMPLE, epochs: float | None = None, steps: int | None = None,
               seed: int | None = None) -> AuditPlan:
    """Check every input and decide what to audit, before any model or data is loaded."""
    if sample is None or sample < 0:
        raise AuditError(f"--sample {sample}: must be >= 0 (the number of non-Pareto trials to audit)")
    if epochs is not None and steps is not None:
        raise AuditError(f"--epochs {epochs} and --steps {steps}: give one of them")
    if epochs is not None and not epochs > 0:
        raise AuditError(f"--epochs {epochs}: must be > 0")
    if steps is not None and steps <= 0:
        raise AuditError(f"--steps {steps}: must be > 0")
    wanted = parse_trials(trials) if isinstance(trials, str) else trials
    run = load_run(run_dir)
    if not any(r.status == "complete" for r in run.records):
        counts = ", ".join(f"{v} {k}" for k, v in run.counts().items() if v)
        raise AuditError(f"{run.dir}: no complete trial to audit ({counts}); run or resume the search first")
    space = run_space(run.dir)
    selected = select_trials(run, trials=wanted, pareto_only=pareto_only, sample=sample)
    settings = audit_settings(space, epochs=epochs, steps=steps, seed=seed)
    existing = {r.trial for r in _check_existing(run.dir, settings)}
    return AuditPlan(run=run, space=space, trials=selected, done=[t for t in selected if t in existing],
                     settings=settings, epochs=epochs, steps=steps, seed=seed)


# ----- the audit -------------------------------------------------------------------------------


def audit_trial(objective: Objective, plan: AuditPlan, trial: int) -> AuditRecord:
    """Fully fine-tune ``trial`` the way ``finalize`` does and measure it; returns its record (unwritten)."""
    t0 = time.perf_counter()
    record = plan.run.record(trial)
    policy = final_policy(trial_policy(plan.run, trial), plan.space, epochs=plan.epochs, steps=plan.steps)
    if plan.seed is not None:
        policy = policy.replace(finetune=dataclasses.replace(policy.finetune, seed=int(plan.seed)))
    out, metrics, finetune_s = finetune_and_measure(objective.baseline, policy, latency=plan.space.needs_latency)
    return AuditRecord(
        trial=trial, settings=plan.settings, proxy_accuracy=float(record.metrics["accuracy"]),
        val_accuracy=float(metrics["val_accuracy"]), test_accuracy=float(metrics["test_accuracy"]),
        metrics={**metrics, "finetune_seconds": round(finetune_s, 2)}, search_metrics=dict(record.metrics),
        epochs=policy.finetune.epochs, steps=getattr(out.train_result, "steps", None) or policy.finetune.steps,
        seed=policy.finetune.seed, policy_hash=out.policy.hash(), wall_time_s=round(time.perf_counter() - t0, 2),
        finished=now_iso(), versions=versions(), git_sha=git_sha())


def noise_trials(run: Run, records: list[AuditRecord], n: int = NOISE_TRIALS) -> list[int]:
    """``n`` audited trials spread over the cost range (lowest, middle, highest cost) whose proxy
    fine-tunes (pruned or quantized policies; the original model is not fine-tuned, so has no noise)."""
    metric = cost_metric(run.objectives)
    tuned = [r for r in records if _tuned(run, r.trial) and math.isfinite(_cost(run.record(r.trial), metric))]
    tuned.sort(key=lambda r: (_cost(run.record(r.trial), metric), r.trial))
    if len(tuned) <= n:
        return [r.trial for r in tuned]
    return sorted({tuned[int(round(i))].trial for i in np.linspace(0, len(tuned) - 1, n)})


def _tuned(run: Run, trial: int) -> bool:
    policy = trial_policy(run, trial)
    return policy.prune.active or policy.quant.active


def measure_noise(objective: Objective, plan: AuditPlan, records: list[AuditRecord],
                  seeds: int = NOISE_SEEDS) -> dict[str, Any]:
    """Re-evaluate the proxy of :func:`noise_trials` with ``seeds`` other seeds (trial seed + 1, + 2, ...);
    ``RUN/audit/noise.json`` is rewritten after each trial (the evaluations are in the result cache)."""
    noise = read_audit_noise(plan.run.dir) or {}
    found: dict[str, dict[str, float]] = dict(noise.get("seeds", {}))
    picked = noise_trials(plan.run, records)
    if not picked:
        log.warning("--noise: no audited trial has a proxy fine-tune (only the original model?); no noise estimate")
    for i, trial in enumerate(picked, 1):
        rec = plan.run.record(trial)
        policy = trial_policy(plan.run, trial)
        values = dict(found.get(str(trial), {}))
        for s in range(rec.seed + 1, rec.seed + 1 + seeds):
            log.info("noise %d/%d: trial %d, proxy with seed %d", i, len(picked), trial, s)
            values[str(s)] = float(objective.evaluate(policy, seed=s)["accuracy"])
        found[str(trial)] = values
        noise = {"seeds": found, "proxy_budget": to_dict(policy.finetune) | {"seed": None}, "finished": now_iso()}
        atomic_write_json(audit_dir(plan.run.dir) / "noise.json", noise)
    return noise


def write_summary(plan: AuditPlan) -> dict[str, Any]:
    """``RUN/audit/summary.json`` over every record of the audit directory (returned)."""
    run_dir = plan.run.dir
    records = read_audit_records(run_dir)
    front = [(r.trial, float(r.metrics["accuracy"])) for r in pareto_records(plan.run)]
    summary = {"settings": plan.settings, "flags": settings_flags(plan.settings), "generated": now_iso(),
               **audit_summary(records, plan.run.objectives, noise=read_audit_noise(run_dir), front=front)}
    atomic_write_json(audit_dir(run_dir) / "summary.json", summary)
    return summary


def audit(run_dir: str | Path, *, trials: str | list[int] | None = None, pareto_only: bool = False,
          sample: int = DEFAULT_SAMPLE, epochs: float | None = None, steps: int | None = None,
          seed: int | None = None, noise: bool = False, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Audit ``run_dir`` (see the module docstring); returns the summary written to ``RUN/audit/summary.json``."""
    plan = plan_audit(run_dir, trials=trials, pareto_only=pareto_only, sample=sample, epochs=epochs, steps=steps,
                      seed=seed)
    log.info("auditing %d trials of %s with %s (%d already audited): %s", len(plan.trials), plan.run.dir,
             settings_flags(plan.settings), len(plan.done), _ranges(plan.trials))
    objective = Objective(plan.space, plan.run.dir, device=device, progress=progress)
    todo = plan.todo
    for i, trial in enumerate(todo, 1):
        log.info("audit %d/%d: trial %d (proxy accuracy %.2f%%)", i, len(todo), trial,
                 plan.run.record(trial).metrics["accuracy"])
        rec = audit_trial(objective, plan, trial)
        write_audit_record(plan.run.dir, rec)
        log.info("trial %d: final val %.2f%% (proxy %.2f%%), test %.2f%%, %.0f s", trial, rec.val_accuracy,
                 rec.proxy_accuracy, rec.test_accuracy, rec.wall_time_s)
    if noise:
        selected = [r for r in read_audit_records(plan.run.dir) if r.trial in plan.trials]
        measure_noise(objective, plan, selected)
    summary = write_summary(plan)
    summary["audited_now"] = todo
    summary["selected"] = plan.trials
    return summary


__all__ = ["DEFAULT_SAMPLE", "NOISE_SEEDS", "NOISE_TRIALS", "AuditError", "AuditPlan", "audit", "audit_settings",
           "audit_trial", "measure_noise", "noise_trials", "parse_trials", "plan_audit", "select_trials",
           "settings_flags", "stratified_sample", "write_summary"]
