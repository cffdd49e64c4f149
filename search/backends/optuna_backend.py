"""Optuna backend: an ask/tell loop over ``suggest_policy`` + ``run_trial``.

Semantics (documented for users in ``autocompress search --help``):

- **Exact count, resumable.** The loop stops when the study holds ``trials`` COMPLETE trials.
  While the last ones run in other workers, a worker waits for them when it would notice their
  worker dying (same host, or the RDB heartbeat), so it can run their retries, and every worker
  ends with the whole study in its exports; trials running where no death can be noticed (a
  journal file shared with other hosts) are counted as done. Rerunning the same command therefore
  only runs the remainder; failed trials do not count and are replaced.
- **Baselines** (``original``, ``uniform-prune-*``, ``uniform-int8``) then the sensitivity seeds
  (``seed-flops-0.5``, ...), are enqueued once, when the
  study is new, under the study lock, so neither a resume nor a second worker queues them again.
- **Workers.** ``workers=K`` runs K processes (this one plus K-1 spawned) on one storage; a file
  lock around count-and-ask keeps the total exact. Workers on other machines join by running the
  same command with the same ``--storage``/``--study``.
- **Failures.** A trial whose ``run_trial`` returns a failed record is told FAIL with the reason in
  the user attribute ``error``; the search continues. ``max_consecutive_failures`` failures in a row
  in one worker stop it with :class:`SearchFailedError` (a broken setup, not a bad policy).
- **Ctrl-C** marks the running trial FAIL (``error = "KeyboardInterrupt: ..."``), writes its failed
  record, re-queues its parameters so the rerun evaluates it first, and re-raises: the study is left
  resumable.
- **SIGKILL** loses only the running trial: records are written atomically; on the next start its
  RUNNING trial is recognised as belonging to a dead process on this host (or, for RDB storages on
  other hosts, by the missing heartbeat), marked FAIL and re-queued (see :mod:`search.backends._study`).
  A kill between ``ask`` and tagging the trial leaves no worker to check: that trial is failed and
  re-queued once it is ``ORPHAN_GRACE_S`` old (a rerun started sooner waits for it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from autocompress.errors import UserError
from autocompress.rundir import file_lock, read_run_info, record_path, write_record
from search._logging import setup_logging
from search.backends._context import BackendResult, SearchContext
from search.backends._progress import Progress
from search.backends._records import failed_record, recover_dead_trials
from search.backends._study import (
    ATTR_BASELINE,
    ATTR_ERROR,
    count_states,
    create_study,
    enqueue_baselines,
    is_surplus,
    next_is_retry,
    open_storage,
    parse_storage,
    recoverable,
    requeue,
    tag_worker,
    tell_record,
    trial_worker,
    worker_counts,
)
from search.trial import run_trial
from spaces.space import suggest_policy

log = logging.getLogger("search")

#: seconds between looks at the study while the last trials run in other workers
WAIT_POLL_S = 1.0


class SearchFailedError(UserError, RuntimeError):
    """Too many trials in a row failed: the setup (data, model, space) is probably broken."""


class _Session:
    """One worker's open study, objective and dims."""

    def __init__(self, ctx: SearchContext, storage: optuna.storages.BaseStorage | None = None):
        self.ctx = ctx
        self.spec = parse_storage(ctx.storage, ctx.run_dir)
        self.storage = storage or open_storage(self.spec)
        self.lock = self.spec.lock_path(ctx.run_dir)
        self.study, self.sampler_seed, self.created = create_study(self.storage, ctx.study, ctx.directions, ctx.sampler,
                                                     ctx.seed, self.lock, metric_names=ctx.objectives,
                                                     constraints=ctx.space.constraints)
        self.shared_lock = self.spec.path is not None  # every worker of this study sees this lock file
        self.heartbeat = is_heartbeat_enabled(self.storage)
        self.objective = ctx.objective_factory(ctx.space, ctx.run_dir)
        self.dims = self.objective.dims

    def recover_dead(self) -> list[FrozenTrial]:
        """Fail, re-queue and record the trials of dead local workers (see :func:`recover_dead_trials`)."""
        return recover_dead_trials(self.ctx.run_dir, self.study, self.ctx.space, self.dims, seed=self.ctx.seed)

    def next_trial(self) -> optuna.Trial | str:
        """Under the study lock: a new trial to run, ``"done"`` (the study holds its trials, or only
        trials running elsewhere that nobody could recover are missing) or ``"wait"`` (trials still run
        in other workers whose death would be noticed, a retry past the count included: wait, so the
        exports cover them, and run their retries)."""
        with file_lock(self.lock):
            self.recover_dead()
            counts = count_states(self.study)
            filled = counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] >= self.ctx.trials
            if filled and not next_is_retry(self.study):  # a dead trial's retry runs past the count
                running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                return "wait" if any(recoverable(t) for t in running) else "done"
            with warnings.catch_warnings():  # heartbeat outside Study.optimize: we run optuna's thread
                warnings.simplefilter("ignore", UserWarning)
                trial = self.study.ask()
            try:
                tag_worker(trial, heartbeat=self.heartbeat)
            except optuna.exceptions.UpdateFinishedTrialError:  # taken for an orphan (clocks apart?)
                log.warning("trial %d was failed as orphaned before this worker tagged it; asking again",
                            trial.number)
                return "wait"
        return trial


def _hv_reference(run_dir: Path) -> dict[str, float]:
    try:
        return dict(read_run_info(run_dir).hv_reference)
    except Exception:  # noqa: BLE001 - progress only
        return {}


def run_worker(ctx: SearchContext, *, main: bool = True, storage: optuna.storages.BaseStorage | None = None) -> int:
    """Run trials in this process until the study has ``ctx.trials`` complete ones. Returns trials run."""
    s = _Session(ctx, storage)
    study = s.study
    with file_lock(s.lock):
        s.recover_dead()
        n = enqueue_baselines(study, ctx.initial_trials(s.dims), created=s.created, locked=s.shared_lock)
        if n:
            log.info("queued %d baseline and seed trials", n)
    done = count_states(study)[TrialState.COMPLETE]
    progress = Progress(ctx.trials, done, ctx.space.objective_pairs, _hv_reference(ctx.run_dir),
                        workers=ctx.workers, enabled=ctx.progress and main)
    deadline = time.monotonic() + ctx.timeout_s if ctx.timeout_s else None
    ran = 0
    consecutive = 0
    waiting = False
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                log.warning("search.timeout_s reached; stopping (rerun the same command to continue)")
                break
            trial = s.next_trial()
            if trial == "done":
                break
            if trial == "wait":
                if not waiting:
                    log.info("waiting for the last trials, running in other workers (a trial whose worker dies "
                             "is retried here)")
                waiting = True
                time.sleep(WAIT_POLL_S)
                continue
            waiting = False
            assert isinstance(trial, optuna.Trial)
            if not s.shared_lock and is_surplus(study, trial.number, ctx.trials):
                trial.set_user_attr(ATTR_ERROR, "Surplus: another machine's worker filled the requested count")
                study.tell(trial, state=TrialState.PRUNED)
                continue
            state = _run_one(s, trial, progress)
            ran += 1
            consecutive = consecutive + 1 if state == TrialState.FAIL else 0
            if consecutive >= ctx.max_consecutive_failures:
                last = study.trials[trial.number].user_attrs.get(ATTR_ERROR)
                raise SearchFailedError(
                    f"{consecutive} trials in a row failed (last: {last}); see {ctx.run_dir}/records/. "
                    "Fix the cause and rerun the same command to continue the study."
                )
    finally:
        progress.close()
    return ran


def _run_one(s: _Session, trial: optuna.Trial, progress: Progress) -> TrialState:
    ctx, study = s.ctx, s.study
    baseline = trial.user_attrs.get(ATTR_BASELINE)
    t0 = time.perf_counter()
    with get_heartbeat_thread(trial._trial_id, s.storage):  # noqa: SLF001 - optuna's own heartbeat
        policy = None
        try:
            policy = suggest_policy(ctx.space, s.dims, trial)
            record = run_trial(s.objective, policy, trial_number=trial.number, seed=ctx.seed, baseline=baseline)
        except KeyboardInterrupt:
            _interrupted(s, trial, policy, baseline)
            raise
        except Exception as exc:  # noqa: BLE001 - suggest_policy rejected the params: a failed trial
            record = failed_record(trial.number, policy, f"{type(exc).__name__}: {exc}", seed=ctx.seed,
                                   baseline=baseline, params=trial.params)
            write_record(ctx.run_dir, record)
        path = str(record_path(ctx.run_dir, trial.number))
        try:
            state = tell_record(study, trial, record, ctx.objectives, path)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was finished by another worker (heartbeat timeout?); result kept in %s",
                        trial.number, path)
            state = TrialState.FAIL
    progress.update(record, study, state, time.perf_counter() - t0)
    return state


def _interrupted(s: _Session, trial: optuna.Trial, policy: Any, baseline: str | None) -> None:
    reason = "KeyboardInterrupt: interrupted by the user; parameters re-queued for the next run"
    try:
        write_record(s.ctx.run_dir, failed_record(trial.number, policy, reason, seed=s.ctx.seed,
                                                  baseline=baseline, params=trial.params))
        trial.set_user_attr(ATTR_ERROR, reason)
        s.study.tell(trial, state=TrialState.FAIL)
        requeue(s.study, s.storage.get_trial(trial._trial_id))  # noqa: SLF001
        log.warning("trial %d interrupted: marked FAIL and re-queued; rerun the same command to resume",
                    trial.number)
    except Exception as exc:  # noqa: BLE001 - best effort while shutting down
        log.warning("could not mark interrupted trial %d failed (%s); it will be recovered on the next run",
                    trial.number, exc)


def _worker_main(ctx: SearchContext, index: int) -> None:
    setup_logging(0)
    try:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.workers)))
    except ImportError:  # pragma: no cover
        pass
    log.info("worker %d (pid %d) started", index, os.getpid())
    try:
        run_worker(ctx, main=False)
    except KeyboardInterrupt:
        pass


def run_optuna(ctx: SearchContext) -> BackendResult:
    """Run the search with ``ctx.workers`` local processes; return the study's final counts."""
    spec = parse_storage(ctx.storage, ctx.run_dir)
    storage = open_storage(spec)
    before = _trial_numbers(storage, ctx.study)
    procs = []
    if ctx.workers > 1:
        mp = multiprocessing.get_context("spawn")
        for i in range(1, ctx.workers):
            p = mp.Process(target=_worker_main, args=(ctx, i), name=f"autocompress-worker-{i}")
            p.start()
            procs.append(p)
    try:
        run_worker(ctx, main=True, storage=storage)
    finally:
        for p in procs:
            p.join()
    bad = [p for p in procs if p.exitcode not in (0, None)]
    if bad:
        log.warning("%d worker process(es) exited with errors: %s", len(bad), [p.exitcode for p in bad])
    return _result(spec, storage, ctx, before, {os.getpid(), *(p.pid for p in procs)})


def _trial_numbers(storage: optuna.storages.BaseStorage, study_name: str) -> set[int]:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return set()
    return {t.number for t in study.get_trials(deepcopy=False)}


def _result(spec, storage, ctx: SearchContext, before: set[int], pids: set[int]) -> BackendResult:
    """The study's counts; ``ran`` counts the trials this run's processes ran (not those of the
    other workers of a shared study), ``workers`` the finished trials of every worker."""
    study = optuna.load_study(study_name=ctx.study, storage=storage)
    mine = {f"{socket.gethostname()}:{pid}" for pid in pids}
    ran = sum(1 for t in study.get_trials(deepcopy=False) if t.number not in before
              and t.state not in (TrialState.WAITING, TrialState.PRUNED) and trial_worker(t)[0] in mine)
    counts = count_states(study)
    complete, running = counts[TrialState.COMPLETE], counts[TrialState.RUNNING]
    stopped = None
    if complete + running < ctx.trials:
        stopped = f"{complete} of {ctx.trials} trials complete"
    elif complete < ctx.trials:
        log.info("this worker is done; %d trial(s) still running in other workers finish the study", running)
    return BackendResult(complete=complete, failed=counts[TrialState.FAIL], ran=ran,
                         storage_url=spec.url, study=ctx.study, stopped_early=stopped,
                         workers=worker_counts(study))
