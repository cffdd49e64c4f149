"""Ray Tune backend: ``Tuner`` + ``OptunaSearch`` over the same study, records and policies.

- The search space is define-by-run: :class:`_DefineByRun` calls ``suggest_policy`` on the
  Optuna trial that ``OptunaSearch`` hands it, so the params, distributions and baselines are
  exactly those of the Optuna backend; it passes the resulting Policy to the trainable.
- ``OptunaSearch`` is given the run's Optuna storage and study name, so every trial lands in
  the same study as the Optuna backend would write (``--storage``/``--study`` apply); the
  subclass :class:`_Searcher` tells results the way the Optuna backend does (metrics as user
  attributes, constraints as the ``constraints`` system attribute, the record in the storage,
  failed records as FAIL with the reason).
- The trainable builds the objective once per actor process (``reuse_actors=True``) and calls
  ``search.trial.run_trial``, which writes ``RUN/records/trial-N.json`` (N = Optuna trial number);
  the driver writes the same record again from the reported result, so the run directory is
  complete even when actors run on other nodes.
- Resources: ``tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})``,
  concurrency: ``ConcurrencyLimiter(max_concurrent)``.
- Resume: a rerun restores the run's last Ray Tune experiment with ``Tuner.restore(path,
  trainable=..., resume_unfinished=True, resume_errored=False)``: Ray restarts the trials that
  were running when the driver died, with their configs, and the restored searcher (its Optuna
  trial map and sampler state are in Ray's searcher checkpoint) tells their results to the same
  Optuna trials. Running trials of the dead driver that Ray's last checkpoint does not know
  (asked after it) are marked FAIL afterwards, with failed records, and their parameters
  re-queued. Whatever the study still misses then runs in a new experiment ``RUN/ray/<study>-2``,
  ``-3``, ... The searcher refuses to suggest once COMPLETE + RUNNING trials reach the requested
  count (read from ``run.json``, so a restored searcher obeys the rerun's ``--trials``): the
  study ends with exactly the requested number of COMPLETE trials, as with the Optuna backend.
- Ctrl-C: Ray Tune stops its trials; the rerun continues as above.
- Cluster: ``address=None`` starts Ray in this process (``ray.init(num_cpus=...)``);
  ``address="auto"`` or ``"HOST:PORT"`` joins a cluster started with ``ray start --head``.
  ``RAY_AUTH_MODE=disabled`` is set for local clusters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autocompress.rundir import TrialRecord, file_lock, read_run_info, write_record
from search.backends._context import BackendResult, SearchContext
from search.backends._progress import Progress
from search.backends._records import recover_dead_trials
from search.backends._study import (
    ATTR_BASELINE,
    ATTR_ERROR,
    count_states,
    create_study,
    derived_seed,
    enqueue_baselines,
    make_sampler,
    open_storage,
    orphan_wait_s,
    parse_storage,
    started_count,
    tag_worker,
    tell_record,
    worker_counts,
)
from search.trial import run_trial
from spaces.policy import Policy
from spaces.space import suggest_policy

log = logging.getLogger("search")

_RESULT_RECORD = "ac_record"
_RESULT_SECONDS = "ac_seconds"
_CONFIG_KEY = "_autocompress"
#: progress bars of live searchers, by run directory (kept out of the searcher's pickled checkpoint;
#: a searcher restored by ``Tuner.restore`` finds the rerun's bar under the same key)
_PROGRESS: dict[str, Progress] = {}


class _DefineByRun:
    """Define-by-run space for ``OptunaSearch``: suggest every dim, return the policy for the trainable."""

    def __init__(self, space: Any, dims: list[Any]):
        self.space = space
        self.dims = dims

    def __call__(self, trial: Any) -> dict[str, Any]:
        ot = getattr(trial, "ot_trial", trial)  # Ray wraps the optuna trial in a suggest captor
        tag_worker(ot)
        policy = suggest_policy(self.space, self.dims, trial)
        return {_CONFIG_KEY: {"number": ot.number, "baseline": ot.user_attrs.get(ATTR_BASELINE),
                              "policy": policy.to_json()}}


def _searcher_class():
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class _Searcher(OptunaSearch):
        """OptunaSearch that tells trial records like the Optuna backend (see module docstring)."""

        def __init__(self, *args: Any, run_dir: str, objectives: list[str], **kw: Any):
            super().__init__(*args, **kw)
            self._ac_run_dir = run_dir
            self._ac_objectives = objectives

        def suggest(self, trial_id: str) -> dict | None:
            if trial_id not in self._ot_trials and self._ot_study is not None:
                target = int(read_run_info(Path(self._ac_run_dir)).search["trials"])
                busy = self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                if len(busy) >= target:
                    return Searcher.FINISHED
            return super().suggest(trial_id)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials:
                return super().on_trial_complete(trial_id, result, error)
            record = None
            if result and isinstance(result.get(_RESULT_RECORD), str):
                record = TrialRecord.from_dict(json.loads(result[_RESULT_RECORD]), source=f"ray trial {trial_id}")
            if trial_id not in self._ot_trials:
                # a trial resumed by Tuner.restore that the restored searcher checkpoint predates:
                # its config carried the Optuna trial number, so tell that trial
                if record is None or self._ot_study is None:
                    log.warning("Ray trial %s finished without a known Optuna trial; ignored", trial_id)
                    self._completed_trials.add(trial_id)
                    return None
                study = self._ot_study
                tid = study._storage.get_trial_id_from_study_id_trial_number(  # noqa: SLF001
                    study._study_id, record.trial)  # noqa: SLF001
                self._ot_trials[trial_id] = optuna.Trial(study, tid)
            ot_trial = self._ot_trials[trial_id]
            try:
                if record is None:
                    reason = "RayTrialError: the Ray trial errored or was stopped before reporting"
                    ot_trial.set_user_attr(ATTR_ERROR, reason)
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                    state = TrialState.FAIL
                    log.warning("trial %d: %s", ot_trial.number, reason)
                else:
                    path = write_record(Path(self._ac_run_dir), record)
                    state = tell_record(self._ot_study, ot_trial, record, self._ac_objectives, str(path))
                    progress = _PROGRESS.get(self._ac_run_dir)
                    if progress is not None:
                        progress.update(record, self._ot_study, state, float(result.get(_RESULT_SECONDS, 0.0)))
            except optuna.exceptions.UpdateFinishedTrialError:
                log.warning("trial %d was already finished in the study", ot_trial.number)
            self._completed_trials.add(trial_id)

    return _Searcher


# ----- trainable (runs in Ray actors) -----------------------------------------------------

_OBJECTIVES: dict[str, Any] = {}


def _trainable(config: dict[str, Any], ctx: SearchContext) -> None:
    """One Ray trial: build the objective once per actor process, run the trial, report the record."""
    from ray import tune

    key = str(ctx.run_dir)
    if key not in _OBJECTIVES:
        _OBJECTIVES[key] = ctx.objective_factory(ctx.space, ctx.run_dir)
    objective = _OBJECTIVES[key]
    info = config[_CONFIG_KEY]
    policy = Policy.from_dict(json.loads(info["policy"]), source=f"trial {info['number']}")
    t0 = time.perf_counter()
    record = run_trial(objective, policy, trial_number=int(info["number"]), seed=ctx.seed,
                       baseline=info.get("baseline"))
    metrics = {m: _finite(record.metrics.get(m)) if record.status == "complete" else math.nan
               for m in ctx.objectives}
    tune.report({**metrics, _RESULT_RECORD: json.dumps(record.to_dict(), default=str),
                 _RESULT_SECONDS: time.perf_counter() - t0})


def _finite(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ----- driver -----------------------------------------------------------------------------


def _init_ray(ctx: SearchContext) -> bool:
    """Start or join Ray; returns True when this call started it (and should shut it down)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return False
    address = ctx.ray.get("address")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        cpus = ctx.ray.get("num_cpus") or max(1, os.cpu_count() or 1)
        ray.init(num_cpus=cpus, num_gpus=ctx.ray.get("num_gpus"), **kwargs)
    return True


def _experiments(ray_dir: Path, name: str) -> list[Path]:
    found = [p for p in ray_dir.glob(f"{name}*") if p.is_dir() and
             (p.name == name or (p.name[len(name):].startswith("-") and p.name[len(name) + 1:].isdigit()))]
    return sorted(found, key=lambda p: 1 if p.name == name else int(p.name[len(name) + 1:]))


def _progress(ctx: SearchContext, study: optuna.Study, max_concurrent: int) -> Progress:
    try:
        hv_ref = dict(read_run_info(ctx.run_dir).hv_reference)
    except Exception:  # noqa: BLE001
        hv_ref = {}
    return Progress(ctx.trials, count_states(study)[TrialState.COMPLETE], ctx.space.objective_pairs, hv_ref,
                    workers=max_concurrent, enabled=ctx.progress)


def _new_tuner(ctx: SearchContext, trainable: Any, storage: Any, dims: Any, sampler_seed: int | None,
               ray_dir: Path, remaining: int, max_concurrent: int) -> tuple[Any, str]:
    """A fresh Tune experiment of ``remaining`` trials (``STUDY``, then ``STUDY-2``, ...): (tuner, name)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    n = len(_experiments(ray_dir, ctx.study))
    name = ctx.study if n == 0 else f"{ctx.study}-{n + 1}"
    # a further experiment must not replay the previous one's proposals
    seed = sampler_seed if n == 0 else derived_seed(sampler_seed, "experiment", n)
    searcher = _searcher_class()(
        space=_DefineByRun(ctx.space, dims), metric=list(ctx.objectives),
        mode=["max" if d == "maximize" else "min" for d in ctx.directions],
        sampler=make_sampler(ctx.sampler, seed, len(ctx.objectives)),
        study_name=ctx.study, storage=storage, seed=seed,
        run_dir=str(ctx.run_dir), objectives=list(ctx.objectives),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(num_samples=remaining,
                                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
                                    reuse_actors=True, time_budget_s=ctx.timeout_s),
        run_config=tune.RunConfig(storage_path=str(ray_dir), name=name, verbose=0, log_to_file=True),
    )
    return tuner, name


def _wait_out_orphans(study: optuna.Study) -> None:
    """A RUNNING trial nobody tagged belongs to a driver killed between asking and starting it (this
    driver has asked nothing yet): wait until it counts as orphaned, so the recovery below fails and
    re-queues it rather than counting it as running (the study would end one trial short)."""
    wait = orphan_wait_s(study)
    if wait > 0:
        log.info("a trial was asked for but never started (its driver died); retrying it in %.0f s", wait)
        time.sleep(wait + 0.1)


def run_ray(ctx: SearchContext) -> BackendResult:
    """Run the search as Ray Tune trials; return the study's final counts."""
    import ray
    from ray import tune

    spec = parse_storage(ctx.storage, ctx.run_dir)
    # no heartbeat: OptunaSearch asks in this driver process, which runs no heartbeat thread; trials
    # orphaned by a dead driver are recovered by the pid check (fail_dead_local_trials) instead
    storage = open_storage(spec, heartbeat=False)
    lock = spec.lock_path(ctx.run_dir)
    study, sampler_seed, created = create_study(storage, ctx.study, ctx.directions, ctx.sampler, ctx.seed, lock,
                                       metric_names=ctx.objectives, constraints=ctx.space.constraints)
    dims = ctx.objective_factory(ctx.space, ctx.run_dir).dims
    with file_lock(lock):
        enqueue_baselines(study, ctx.initial_trials(dims), created=created, locked=spec.path is not None)
    before = started_count(study)
    cpus = float(ctx.ray.get("cpus_per_trial") or 1)
    gpus = float(ctx.ray.get("gpus_per_trial") or 0)
    max_concurrent = int(ctx.ray.get("max_concurrent") or ctx.workers or 1)
    trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": cpus, "gpu": gpus})
    ray_dir = Path(ctx.run_dir) / "ray"
    ray_dir.mkdir(parents=True, exist_ok=True)
    progress = _PROGRESS[str(ctx.run_dir)] = _progress(ctx, study, max_concurrent)
    started = _init_ray(ctx)
    previous = _experiments(ray_dir, ctx.study)
    restore = previous[-1] if previous and tune.Tuner.can_restore(str(previous[-1])) else None
    _wait_out_orphans(study)
    try:
        for attempt in range(ctx.max_consecutive_failures):
            restoring = attempt == 0 and restore is not None
            with file_lock(lock):
                if not restoring:  # Tuner.restore resumes the dead driver's running trials itself
                    recover_dead_trials(ctx.run_dir, study, ctx.space, dims, seed=ctx.seed)
                counts = count_states(study)
            if counts[TrialState.COMPLETE] >= ctx.trials:
                break
            if restoring:
                log.info("resuming Ray Tune experiment %s (Tuner.restore): %d of %d trials complete",
                         restore, counts[TrialState.COMPLETE], ctx.trials)
                tuner = tune.Tuner.restore(str(restore), trainable=trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
                name = restore.name
            else:
                remaining = ctx.trials - counts[TrialState.COMPLETE] - counts[TrialState.RUNNING]
                if remaining <= 0:
                    break
                tuner, name = _new_tuner(ctx, trainable, storage, dims, sampler_seed, ray_dir, remaining,
                                         max_concurrent)
                log.info("Ray Tune experiment %s: %d trials, %d at once, %g CPU / %g GPU each",
                         ray_dir / name, remaining, max_concurrent, cpus, gpus)
            grid = tuner.fit()
            if grid.num_errors:
                log.warning("%d Ray trials errored; see %s", grid.num_errors, ray_dir / name)
            if not restoring and count_states(study)[TrialState.COMPLETE] == counts[TrialState.COMPLETE]:
                break  # nothing completed in a whole experiment: stop instead of looping
    finally:
        _PROGRESS.pop(str(ctx.run_dir), None)
        progress.close()
        if started:
            ray.shutdown()
    counts = count_states(study)
    complete = counts[TrialState.COMPLETE]
    short = None if complete >= ctx.trials else f"{complete} of {ctx.trials} trials complete"
    return BackendResult(complete=complete, failed=counts[TrialState.FAIL], ran=started_count(study) - before,
                         storage_url=spec.url, study=ctx.study, stopped_early=short, workers=worker_counts(study))


__all__ = ["run_ray"]
