"""Ray Tune backend: in-process Ray and a real `ray start --head` cluster on loopback (both in CI);
kill -9 of the driver then a rerun that resumes through ``Tuner.restore`` (slow).

Trials use the closed-form :class:`AnalyticObjective` through the real suggest_policy /
run_trial / records / Optuna-storage path. Ray workers import it by name, so ``PYTHONPATH``
includes this directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from _analytic_objective import factory  # noqa: E402

from autocompress.rundir import read_records  # noqa: E402
from search.driver import run_search  # noqa: E402
from spaces.space import load_space  # noqa: E402

pytest.importorskip("ray.tune")


@pytest.fixture
def worker_path(monkeypatch):
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    return path


def _check_run(run: Path, trials: int) -> optuna.Study:
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == trials
    records = {r.trial: r for r in read_records(run)}
    started = [t.number for t in study.trials if t.state != TrialState.WAITING]  # queued baselines wait
    assert sorted(records) == started  # one record per optuna trial, same numbers
    for t in complete:
        rec = records[t.number]
        assert rec.status == "complete"
        assert t.values == [rec.metrics["accuracy"], rec.metrics["flops"]]
        assert t.user_attrs["metrics"]["flops"] == rec.metrics["flops"]
        assert (t.constraints["0"] <= 0) == rec.feasible  # the space's constraints, in order
    return study


def test_ray_in_process_and_resume(tmp_path, worker_path):
    """Local ray.init(): 3 trials (2 baselines first); a rerun with more trials tops up the same study.
    Multi-fidelity: promotions run inside the Ray trials; the study holds each trial's highest level."""
    space = load_space("quickstart", overrides=["objectives=[accuracy, flops]",
                                                "search.fidelity={levels: [20, 80], promote: 0.5}"])
    run = tmp_path / "run"
    r = run_search(space, run, backend="ray", trials=3, objective_factory=factory, progress=False,
                   ray={"num_cpus": 2, "max_concurrent": 2})
    assert (r.complete, r.ran) == (3, 3)
    study = _check_run(run, 3)
    labels = [t.user_attrs.get("baseline") for t in study.trials]
    assert labels == ["original", "uniform-prune-0.25", "uniform-prune-0.5", "uniform-int8"]
    assert study.trials[3].state == TrialState.WAITING  # the 4th baseline waits for a larger budget
    assert (run / "ray" / "quickstart").is_dir()
    r = run_search(space, run, backend="ray", trials=5, objective_factory=factory, progress=False,
                   ray={"num_cpus": 2, "max_concurrent": 2})
    assert (r.complete, r.ran) == (5, 2)
    study = _check_run(run, 5)
    assert study.trials[3].state == TrialState.COMPLETE
    assert sum(1 for t in study.trials if t.user_attrs.get("baseline")) == 4  # queued once
    records = read_records(run)
    assert [sorted(r.levels, key=int) for r in records[:4]] == [["20", "80"]] * 4  # baselines: every level
    assert all(r.metrics == r.levels[str(r.level_steps)] for r in records)


@pytest.mark.slow
def test_ray_retries_a_trial_a_killed_driver_asked_for_but_never_started(tmp_path, worker_path, monkeypatch):
    """A driver killed between ``ask`` and tagging leaves an untagged RUNNING trial; the rerun waits until
    it counts as orphaned, then fails and re-queues it, and still reaches the count."""
    import search.backends._study as study_module

    space = load_space("quickstart", overrides=["objectives=[accuracy, flops]"])
    run = tmp_path / "run"
    kw = {"backend": "ray", "objective_factory": factory, "progress": False,
          "ray": {"num_cpus": 2, "max_concurrent": 1}}
    run_search(space, run, trials=3, **kw)
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{run / 'study.db'}")
    orphan = study.ask()  # the queued 4th baseline, popped and never tagged
    monkeypatch.setattr(study_module, "ORPHAN_GRACE_S", 2.0)
    r = run_search(space, run, trials=4, **kw)
    assert r.complete == 4
    study = _check_run(run, 4)
    dead = study.trials[orphan.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"].startswith("WorkerDied: no worker claimed it")
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["baseline"] == dead.user_attrs["baseline"] == "uniform-int8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_against_local_cluster(tmp_path, worker_path):
    """`ray start --head` on 127.0.0.1 (its own temp dir and process group), joined via address."""
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("ray CLI not installed")
    port = _free_port()
    temp = Path("/tmp") / f"acray{port}"  # short: Ray's socket paths must stay under 107 bytes
    env = dict(os.environ)
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp), "--block"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if head.poll() is not None:
                pytest.fail(f"ray start exited: {head.stdout.read()[-2000:]}")
            time.sleep(1)
        time.sleep(3)
        space = load_space("quickstart", overrides=["objectives=[accuracy, flops]"])
        run = tmp_path / "run"
        r = run_search(space, run, backend="ray", trials=3, objective_factory=factory, progress=False,
                       ray={"address": f"127.0.0.1:{port}", "max_concurrent": 2})
        assert r.complete == 3
        study = _check_run(run, 3)
        # trials ran in the cluster's worker processes, not in this driver
        assert all(rec.worker and not rec.worker.endswith(f":{os.getpid()}") for rec in read_records(run))
        assert study.trials[0].user_attrs["worker"]["id"].endswith(f":{os.getpid()}")  # the driver asked
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the process group this test started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        head.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_driver_sigkill_then_rerun(tmp_path, worker_path):
    """Kill -9 the Ray driver mid-search; the rerun tops the study up to exactly N complete trials."""
    autocompress = str(Path(sys.executable).parent / "autocompress")
    out = tmp_path / "run"
    cmd = [autocompress, "search", "quickstart", "--out", str(out), "--trials", "7", "--backend", "ray",
           "--objective", "_analytic_objective:factory", "--no-progress"]
    env = {**os.environ, "AC_TEST_SLEEP": "2"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: Ray's helpers included
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "records").glob("trial-*.json"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "search exited before it could be killed"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, nothing else
        proc.wait()
    res = subprocess.run(cmd, cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, timeout=600,
                         start_new_session=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(Tuner.restore)" in res.stderr, res.stderr[-3000:]  # the killed experiment was resumed
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{out / 'study.db'}")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 7
    assert not any(t.state == TrialState.RUNNING for t in study.trials)
    records = {r.trial: r for r in read_records(out)}
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert records[t.number].status == "complete"
        elif t.state == TrialState.FAIL:  # killed trials: FAIL in the study and in the records
            assert records[t.number].status == "failed"


def test_searcher_tells_a_resumed_trial_it_has_no_map_for(tmp_path, worker_path):
    """After Tuner.restore, Ray may finish a trial that the restored searcher checkpoint predates:
    the searcher finds its Optuna trial by the number in the trial's record and tells that one."""
    import json

    from search.backends._study import create_study, open_storage, parse_storage
    from search.backends.ray_backend import (
        _RESULT_RECORD,
        _DefineByRun,
        _searcher_class,
    )
    from search.trial import run_trial
    from spaces.space import suggest_policy

    space = load_space("quickstart", overrides=["objectives=[accuracy, flops]"])
    run = tmp_path / "run"
    run.mkdir()
    objective = factory(space, run)
    spec = parse_storage(None, run)
    storage = open_storage(spec, heartbeat=False)
    study, _, _ = create_study(storage, "quickstart", space.directions, "random", 0)
    orphan = study.ask()  # RUNNING, as a trial of a killed driver is
    policy = suggest_policy(space, objective.dims, orphan)
    record = run_trial(objective, policy, trial_number=orphan.number, seed=0)
    searcher = _searcher_class()(
        space=_DefineByRun(space, objective.dims), metric=["accuracy", "flops"], mode=["max", "min"],
        sampler=optuna.samplers.RandomSampler(seed=0), study_name="quickstart", storage=storage, seed=0,
        run_dir=str(run), objectives=["accuracy", "flops"])
    result = {"accuracy": record.metrics["accuracy"], "flops": record.metrics["flops"],
              _RESULT_RECORD: json.dumps(record.to_dict(), default=str)}
    searcher.on_trial_complete("unknown_trial_id", result)
    done = optuna.load_study(study_name="quickstart", storage=spec.url).trials[orphan.number]
    assert done.state == TrialState.COMPLETE
    assert done.values == [record.metrics["accuracy"], record.metrics["flops"]]
    assert (run / "records" / f"trial-{orphan.number:05d}.json").is_file()


@pytest.mark.slow
def test_ray_restore_restarts_the_running_trial(tmp_path, worker_path):
    """Kill -9 the driver while a 12 s trial runs (past Ray's 10 s experiment snapshot period): the rerun's
    Tuner.restore restarts that very trial, which completes under its Optuna number; nothing fails."""
    autocompress = str(Path(sys.executable).parent / "autocompress")
    out = tmp_path / "run"
    cmd = [autocompress, "search", "quickstart", "--out", str(out), "--trials", "5", "--backend", "ray",
           "--objective", "_analytic_objective:factory", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "AC_TEST_SLEEP": "12"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "records").glob("trial-*.json"))) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "search exited before it could be killed"
            time.sleep(0.5)
        time.sleep(11)  # trial 2 has run ~11 s: Ray's experiment snapshot knows it
        running = [t.number for t in optuna.load_study(study_name="quickstart",
                                                       storage=f"sqlite:///{out / 'study.db'}").trials
                   if t.state == TrialState.RUNNING]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert running == [2]
    res = subprocess.run(cmd, cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, timeout=600,
                         start_new_session=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(Tuner.restore)" in res.stderr
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5  # trial 2 resumed, not failed
    records = {r.trial: r for r in read_records(out)}
    assert sorted(records) == [0, 1, 2, 3, 4] and all(r.status == "complete" for r in records.values())
