"""Optuna backend mechanics: exact counts, resume, baselines, failures, storages, samplers.

The trials use :class:`AnalyticObjective` (closed-form metrics, no training) through the real
``suggest_policy`` / ``run_trial`` / records / Optuna storage path; the real objective is
exercised in ``test_driver.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _analytic_objective import RESNET20_GROUPS, RESNET20_LAYERS, AnalyticObjective  # noqa: E402

import search.backends._study as _study_module  # noqa: E402
from autocompress.rundir import read_records, read_run_info  # noqa: E402
from search.backends._study import (  # noqa: E402
    ORPHAN_GRACE_S,
    SAMPLERS,
    StorageError,
    is_orphan,
    orphan_wait_s,
    parse_storage,
)
from search.backends.optuna_backend import SearchFailedError  # noqa: E402
from search.driver import SearchConfigError, run_search  # noqa: E402
from spaces.space import load_space  # noqa: E402


class Factory:
    """Picklable objective factory with knobs."""

    def __init__(self, **kw):
        self.kw = kw

    def __call__(self, space, run_dir):
        return AnalyticObjective(space, run_dir, **self.kw)


class Interrupting(AnalyticObjective):
    """Raises KeyboardInterrupt (as Ctrl-C would) on its ``at``-th evaluation."""

    def __init__(self, space, run_dir, at):
        super().__init__(space, run_dir)
        self.at = at

    def evaluate(self, policy, *, seed=0, **kw):
        if self.evaluations + 1 == self.at:
            self.evaluations += 1
            raise KeyboardInterrupt
        return super().evaluate(policy, seed=seed)


@pytest.fixture(scope="module")
def space():
    return load_space("quickstart", overrides=["objectives=[accuracy, flops]"])


def _study(run_dir: Path, name: str = "quickstart", storage: str | None = None) -> optuna.Study:
    spec = parse_storage(storage, run_dir)
    return optuna.load_study(study_name=name, storage=spec.url if spec.kind == "rdb" else _journal(spec.path))


def _journal(path):
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _states(study):
    out = {}
    for t in study.trials:
        out[t.state] = out.get(t.state, 0) + 1
    return out


def test_analytic_objective_matches_real_resnet20():
    from compress.models import get_model, quantizable_layers
    from compress.prune import convert_option_a, list_groups

    model = convert_option_a(get_model("resnet20", num_classes=10, shortcut="A"))
    assert {g.name: g.channels for g in list_groups(model)} == RESNET20_GROUPS
    assert quantizable_layers(model) == RESNET20_LAYERS


@pytest.mark.parametrize("url,kind,suffix", [
    (None, "rdb", "study.db"), ("journal:///tmp/x/s.log", "journal", "s.log"), ("runs/a.log", "journal", "a.log"),
    ("runs/a.db", "rdb", "a.db"), ("sqlite:///runs/b.db", "rdb", "b.db"), ("postgresql://u@h/db", "rdb", None),
])
def test_parse_storage(tmp_path, url, kind, suffix):
    spec = parse_storage(url, tmp_path)
    assert spec.kind == kind
    if suffix is None:
        assert spec.path is None and spec.url == url
        assert spec.lock_path(tmp_path) == tmp_path / ".study.search-lock"
    else:
        assert spec.path.name == suffix and spec.path.is_absolute()
        assert spec.lock_path(tmp_path).name == suffix + ".search-lock"


@pytest.mark.parametrize("url", ["study", "sqlite:///:memory:"])
def test_parse_storage_rejects(tmp_path, url):
    with pytest.raises(StorageError, match="allowed|cannot be shared"):
        parse_storage(url, tmp_path)


def test_exact_count_resume_and_baselines(tmp_path, space):
    run = tmp_path / "run"
    r = run_search(space, run, trials=6, objective_factory=Factory(), progress=False)
    assert (r.complete, r.failed, r.ran) == (6, 0, 6)
    study = _study(run)
    assert _states(study) == {TrialState.COMPLETE: 6}
    records = read_records(run)
    assert [rec.trial for rec in records] == [t.number for t in study.trials] == list(range(6))
    labels = [rec.baseline for rec in records if rec.baseline]
    assert labels == ["original", "uniform-prune-0.25", "uniform-prune-0.5", "uniform-int8"]
    # optuna sees metrics, constraints and record path; objective values match the records
    for t, rec in zip(study.trials, records):
        assert t.values == [rec.metrics[m] for m in space.objectives]
        assert t.user_attrs["metrics"]["accuracy"] == rec.metrics["accuracy"]
        assert t.user_attrs["record"]["path"].endswith(f"trial-{rec.trial:05d}.json")
        # one list in the space's order: what optuna (FrozenTrial.constraints) and optuna-dashboard read
        assert t.system_attrs["constraints"] == [rec.constraints["accuracy_drop <= 5.0"]]
        assert (t.constraints["0"] <= 0) == rec.feasible
    assert study.user_attrs["constraints"] == ["accuracy_drop <= 5.0"]  # the names of the values
    assert study.metric_names == list(space.objectives)  # optuna-dashboard's axis labels
    assert any(not rec.feasible for rec in records)  # uniform-prune-0.5 drops > 5 points
    # rerun with the same count: nothing to do
    r2 = run_search(space, run, trials=6, objective_factory=Factory(), progress=False)
    assert (r2.complete, r2.ran) == (6, 0)
    # more trials: only the remainder runs, baselines are not queued again
    r3 = run_search(space, run, trials=9, objective_factory=Factory(), progress=False)
    assert (r3.complete, r3.ran) == (9, 3)
    records = read_records(run)
    assert [rec.trial for rec in records] == list(range(9))
    assert sum(1 for rec in records if rec.baseline) == 4
    info = read_run_info(run)
    assert info.objectives == [("accuracy", "maximize"), ("flops", "minimize")]
    assert info.hv_reference == {"accuracy": 0.0, "flops": pytest.approx(1.1 * info.reference["flops"])}
    assert info.search["trials"] == 9 and info.groups and info.layers
    assert (run / "config.yaml").is_file()
    assert not (run / "trials.csv").exists() and not (run / "report.html").exists()  # reports are the CLI's


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_resume_does_not_replay_earlier_proposals(tmp_path, space, sampler):
    """A rerun (or a second worker) must not reuse the creator's sampler seed: with it, the random
    start of NSGA-II/TPE proposes exactly the policies the study already holds."""
    run = tmp_path / "run"
    sp = load_space("quickstart", overrides=["objectives=[accuracy, flops]", f"search.sampler={sampler}",
                                             "search.baselines=false"])
    run_search(sp, run, trials=5, objective_factory=Factory(), progress=False)
    run_search(sp, run, trials=10, objective_factory=Factory(), progress=False)
    params = [tuple(sorted(t.params.items())) for t in _study(run).trials]
    assert len(params) == 10
    assert len(set(params)) == 10, "the resumed run replayed proposals of the first run"
    # the creator's seed is the space's seed: a fresh run is reproducible
    other = tmp_path / "other"
    run_search(sp, other, trials=5, objective_factory=Factory(), progress=False)
    assert [tuple(sorted(t.params.items())) for t in _study(other).trials] == params[:5]


def test_failures_are_recorded_and_search_continues(tmp_path):
    # KD searched (the built-in spaces fix it): the failing objective fails every policy with alpha >= 0.4
    space = load_space("quickstart", overrides=["objectives=[accuracy, flops]",
                                                "distill.alpha={low: 0.0, high: 0.9, step: 0.1}"])
    run = tmp_path / "run"
    r = run_search(space, run, trials=8, objective_factory=Factory(fail_alpha=0.4), sampler="random",
                   progress=False)
    assert r.complete == 8 and r.failed >= 1
    study = _study(run)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == r.failed
    records = {rec.trial: rec for rec in read_records(run)}
    assert sorted(records) == [t.number for t in study.trials]
    for t in failed:
        rec = records[t.number]
        assert rec.status == "failed"
        assert rec.error.startswith("FailingPolicy: alpha")
        assert t.user_attrs["error"] == rec.error
        assert t.params["kd/alpha"] >= 0.4
    assert all(t.params["kd/alpha"] < 0.4 for t in study.trials if t.state == TrialState.COMPLETE)


def test_consecutive_failures_stop_with_clear_error(tmp_path, space):
    with pytest.raises(SearchFailedError, match="3 trials in a row failed .*FailingPolicy"):
        run_search(space, tmp_path / "run", trials=5, objective_factory=Factory(fail_alpha=0.0),
                   progress=False, max_consecutive_failures=3)


def test_journal_storage(tmp_path, space):
    log = tmp_path / "shared" / "study.log"
    r = run_search(space, tmp_path / "run", trials=5, storage=str(log), study="j1",
                   objective_factory=Factory(), progress=False)
    assert r.complete == 5 and log.is_file()
    study = _study(tmp_path / "run", "j1", str(log))
    assert _states(study) == {TrialState.COMPLETE: 5}
    r = run_search(space, tmp_path / "run", trials=7, storage=f"journal://{log}", study="j1",
                   objective_factory=Factory(), progress=False)
    assert (r.complete, r.ran) == (7, 2)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers(tmp_path, space, sampler):
    r = run_search(space, tmp_path / "run", trials=6, sampler=sampler, seed=1, objective_factory=Factory(),
                   progress=False)
    assert r.complete == 6
    params = [json.dumps(t.params, sort_keys=True) for t in _study(tmp_path / "run").trials[4:]]
    assert params  # non-baseline trials were sampled


def test_ctrl_c_leaves_resumable_study(tmp_path, space):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(space, run, trials=6, objective_factory=lambda s, d: Interrupting(s, d, at=3), progress=False)
    study = _study(run)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].number == 2
    assert interrupted[0].user_attrs["error"].startswith("KeyboardInterrupt")
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    requeued = [t for t in waiting if t.system_attrs.get("failed_trial") == 2]
    assert len(requeued) == 1 and requeued[0].system_attrs["fixed_params"] == interrupted[0].params
    assert requeued[0].user_attrs.get("baseline") == "uniform-prune-0.5"
    assert read_records(run)[2].status == "failed"
    r = run_search(space, run, trials=6, objective_factory=Factory(), progress=False)
    assert r.complete == 6
    study = _study(run)
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs["baseline"] == "uniform-prune-0.5"


def test_a_retry_runs_when_its_worker_died_after_the_count_filled(tmp_path, space):
    """Another worker's trial and the dead worker's trial fill the count; the dead one's retry still
    runs (it would otherwise stay queued for ever: a lost baseline, seed or proposal)."""
    run = tmp_path / "run"
    run_search(space, run, trials=4, objective_factory=Factory(), progress=False)
    study = _study(run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # a worker on another machine (no heartbeat: nobody here could notice its death) and a dead one here
    for worker in ("elsewhere:1", f"{socket.gethostname()}:{gone.pid}"):
        study.enqueue_trial(study.trials[0].params)
        trial = study.ask()
        trial.set_user_attr("worker", {"id": worker, "start": None})
    live, dead = study.trials[-2:]
    r = run_search(space, run, trials=5, objective_factory=Factory(), progress=False, timeout_s=120)
    assert (r.complete, r.ran) == (5, 1)
    study = _study(run)
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert study.trials[dead.number].state == TrialState.FAIL
    assert study.trials[live.number].state == TrialState.RUNNING  # left to its worker
    assert TrialState.WAITING not in _states(study)


def test_a_trial_its_worker_never_tagged_is_retried_after_the_grace(tmp_path, space, monkeypatch):
    """A worker killed between ``ask`` and tagging the trial leaves it RUNNING with no ``worker``: after
    ORPHAN_GRACE_S it is failed and its parameters run again, so the study still reaches its count."""
    run = tmp_path / "run"
    run_search(space, run, trials=4, objective_factory=Factory(), progress=False)
    study = _study(run)
    study.enqueue_trial(study.trials[1].params, user_attrs={"baseline": study.trials[1].user_attrs["baseline"]})
    orphan = study.ask()  # never tagged: its process "died" right after asking
    monkeypatch.setattr(_study_module, "ORPHAN_GRACE_S", 0.0)
    r = run_search(space, run, trials=5, objective_factory=Factory(), progress=False, timeout_s=120)
    assert (r.complete, r.ran) == (5, 1)
    study = _study(run)
    dead = study.trials[orphan.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"].startswith("WorkerDied: no worker claimed it")
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert dead.system_attrs["fixed_params"].items() <= retry[0].params.items()  # the same values again
    assert retry[0].user_attrs["baseline"] == dead.user_attrs["baseline"]
    assert {r.status for r in read_records(run) if r.trial == orphan.number} == {"failed"}


def test_an_untagged_trial_within_the_grace_is_waited_for_not_failed(tmp_path, space, caplog):
    """Just asked and not yet tagged (its worker tags it within milliseconds): another worker waits."""
    run = tmp_path / "run"
    run_search(space, run, trials=4, objective_factory=Factory(), progress=False)
    study = _study(run)
    fresh = study.ask()
    caplog.set_level("INFO", logger="search")
    r = run_search(space, run, trials=5, objective_factory=Factory(), progress=False, timeout_s=2)
    assert r.ran == 0 and "waiting for the last trials" in caplog.text
    assert _study(run).trials[fresh.number].state == TrialState.RUNNING


def test_is_orphan_counts_from_the_trial_start():
    study = optuna.create_study()
    trial = study.ask()
    frozen = study.trials[trial.number]
    start = frozen.datetime_start
    assert not is_orphan(frozen, now=start + timedelta(seconds=ORPHAN_GRACE_S - 1))
    assert is_orphan(frozen, now=start + timedelta(seconds=ORPHAN_GRACE_S + 1))
    trial.set_user_attr("worker", {"id": "elsewhere:1", "start": None})
    assert not is_orphan(study.trials[trial.number], now=start + timedelta(hours=1))  # tagged: its worker's


def test_orphan_wait_is_the_time_until_the_youngest_untagged_trial_is_orphaned():
    study = optuna.create_study()
    assert orphan_wait_s(study) == 0.0
    first = study.ask()
    start = study.trials[first.number].datetime_start
    assert orphan_wait_s(study, now=start + timedelta(seconds=10)) == pytest.approx(ORPHAN_GRACE_S - 10)
    assert orphan_wait_s(study, now=start + timedelta(seconds=ORPHAN_GRACE_S + 5)) == 0.0
    first.set_user_attr("worker", {"id": "elsewhere:1", "start": None})  # tagged: not waited for
    assert orphan_wait_s(study, now=start) == 0.0


def test_a_worker_waits_for_a_retry_running_past_the_count(tmp_path, space, caplog):
    """The study holds its count, but a retry still runs in a live worker here: the exports must
    cover it, so a worker that finds the count complete waits (here until its timeout)."""
    run = tmp_path / "run"
    run_search(space, run, trials=4, objective_factory=Factory(), progress=False)
    study = _study(run)
    study.enqueue_trial(study.trials[0].params)
    retry = study.ask()
    study._storage.set_trial_system_attr(retry._trial_id, "failed_trial", 0)  # noqa: SLF001
    retry.set_user_attr("worker", {"id": f"{socket.gethostname()}:{os.getpid()}", "start": None})
    caplog.set_level("INFO", logger="search")
    t0 = time.monotonic()
    r = run_search(space, run, trials=4, objective_factory=Factory(), progress=False, timeout_s=2)
    assert time.monotonic() - t0 >= 2 and r.ran == 0
    assert "waiting for the last trials" in caplog.text


def test_resume_refuses_another_space(tmp_path, space):
    run = tmp_path / "run"
    run_search(space, run, trials=1, objective_factory=Factory(), progress=False)
    other = load_space("quickstart", overrides=["budget.finetune.steps=7"])
    with pytest.raises(SearchConfigError, match="differs in: budget"):
        run_search(other, run, trials=2, objective_factory=Factory(), progress=False)
    # changing only search settings (count, sampler) is a resume, not another space
    r = run_search(space, run, trials=2, sampler="random", objective_factory=Factory(), progress=False)
    assert r.complete == 2


def test_study_with_other_directions_is_refused(tmp_path, space):
    db = tmp_path / "s.db"
    run_search(space, tmp_path / "a", trials=1, storage=str(db), study="s", objective_factory=Factory(),
               progress=False)
    other = load_space("quickstart", overrides=["objectives=[flops, accuracy]"])
    with pytest.raises(StorageError, match="directions"):
        run_search(other, tmp_path / "b", trials=2, storage=str(db), study="s", objective_factory=Factory(),
                   progress=False)
