"""Many workers on a real database: three `autocompress search quickstart` processes share one study on a
throwaway PostgreSQL server (``tests/_postgres.py``); one is killed with SIGKILL in the middle of a trial.

The survivors notice the dead worker (its process is gone from this host), fail its trial, run the
retry, wait for each other's last trials, and end with exports that cover the whole study. Skips,
saying why, where no PostgreSQL server binary or ``psycopg`` can be had (`.ci/run` installs both).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.rundir import read_records
from reports.tables import read_csv
from search.backends._study import ATTR_BASELINE, open_storage, parse_storage
from tests._postgres import postgres_server, skip_reason
from tests.search.test_driver import _kill_when

REPO = Path(__file__).resolve().parents[2]
N = 7  # complete trials: the 4 queued baselines and 3 sampled
#: the real quickstart objective on a tiny budget: a 1-epoch baseline, 2 fine-tune steps, no latency
TINY = ["--set", "model.baseline.epochs=1", "--set", "budget.finetune.steps=2", "--set", "budget.bn_recal_batches=1",
        "--set", "objectives=[accuracy, flops]", "--set", "budget.latency.measure=auto"]

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               AUTOCOMPRESS_LATENCY_LOCK=str(tmp_path / "latency.lock"))
    return env


def _search(out: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", "search", "quickstart", "--out", str(out), "--storage", url,
            "--study", "s1", "--trials", str(N), "--no-progress", *TINY]


def _running_of(study: optuna.Study, worker: str) -> int | None:
    """Number of a RUNNING trial of ``worker`` (``host:pid``), if there is one. Not the ``original``
    baseline: it is not fine-tuned and ends within a second, so a kill could land after it completed."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(ATTR_BASELINE) == "original":
            continue
        tag = t.user_attrs.get("worker")
        if isinstance(tag, dict) and tag.get("id") == worker:
            return t.number
    return None


def _kill_mid_trial(proc: subprocess.Popen, url: str, timeout_s: float = 600) -> int:
    """SIGKILL ``proc`` while it runs a trial (polled in the database, checked again with ``proc``
    stopped, so the trial cannot finish between the check and the kill); return that trial's number."""
    worker = f"{socket.gethostname()}:{proc.pid}"
    storage = open_storage(parse_storage(url, Path(".")), heartbeat=False)
    study: list[optuna.Study] = []

    def running() -> bool:
        if not study:
            try:
                study.append(optuna.load_study(study_name="s1", storage=storage))
            except KeyError:  # not created yet
                return False
        return _running_of(study[0], worker) is not None

    _kill_when(proc, running, timeout_s)
    return _running_of(study[0], worker)


def test_three_workers_one_killed_on_postgresql(tmp_path):
    with postgres_server() as url:
        env = _env(tmp_path)
        outs = [tmp_path / f"worker-{i}" for i in range(3)]
        procs = [subprocess.Popen(_search(out, url), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for out in outs]
        try:
            killed = _kill_mid_trial(procs[2], url)
            logs = [p.communicate(timeout=900)[0] for p in procs[:2]]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs[:2]] == [0, 0], "\n".join(log[-3000:] for log in logs)
        study = optuna.load_study(study_name="s1", storage=url)
        # the killed worker's run directory catches up from the storage through `autocompress report`
        report = subprocess.run([sys.executable, "-m", "search.cli", "report", str(outs[2]), "--no-figures"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert report.returncode == 0, report.stderr[-3000:]
        front = sorted(t.number for t in study.best_trials)
        trials = study.trials  # read while the server runs

    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # no number twice, none skipped
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"].startswith("WorkerDied")
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    # N complete trials, or N + 1 when the worker died after the others had filled the count: then its
    # retry ran past it (never a new proposal)
    fresh = [t for t in trials if t.state == TrialState.COMPLETE and "failed_trial" not in t.system_attrs]
    assert len(fresh) <= N <= states.count(TrialState.COMPLETE) <= N + 1
    assert dead.params.items() <= retry[0].params.items()  # the same values again
    complete = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
    finished = sorted(t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL))
    workers = {f"{socket.gethostname()}:{p.pid}" for p in procs}
    for out in outs:  # every run directory: the whole study, the same front (optuna's, the dashboard's)
        table = read_csv(out / "trials.csv")
        assert sorted(table["trial"]) == finished, out
        assert sorted(table.loc[table["status"] == "complete", "trial"]) == complete, out
        assert sorted(read_csv(out / "pareto.csv")["trial"]) == front, out
        recs = read_records(out)
        assert {r.worker for r in recs} == workers  # each of the 3 processes ran a trial
        assert recs[killed].status == "failed" and "WorkerDied" in recs[killed].error
        html = (out / "report.html").read_text()
        assert "3 workers:" in html and all(w in html for w in workers)
    # every run directory's complete pruned records carry the applied policy, kept channel indices
    # included, also those synced from other workers (whichever worker happened to run the pruned trials)
    synced = 0
    for out, proc in zip(outs, procs):
        pruned = [r for r in read_records(out) if r.status == "complete"
                  and any(v > 0 for v in r.policy.get("prune", {}).get("ratios", {}).values())]
        assert pruned and all(r.policy["prune"].get("kept") for r in pruned), out
        synced += sum(r.worker != f"{socket.gethostname()}:{proc.pid}" for r in pruned)
    assert synced > 0
