"""`autocompress search` end to end: SIGKILL + resume, workers sharing a study, CLI errors, a real run.

Mechanics tests run the real CLI in subprocesses with the closed-form objective
(``--objective _analytic_objective:factory``); the last test runs the real quickstart objective.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.rundir import read_records, read_run_info

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = sys.executable
AUTOCOMPRESS = str(Path(sys.executable).parent / "autocompress")  # the installed entry point


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _cmd(out: Path, trials: int, *more: str) -> list[str]:
    return [AUTOCOMPRESS, "search", "quickstart", "--out", str(out), "--trials", str(trials),
            "--objective", "_analytic_objective:factory", "--no-progress", *more]


def _study(db: Path, name: str = "quickstart") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def _running(db: Path) -> list[int]:
    """Numbers of the RUNNING trials a worker has tagged (it runs them), read straight from the SQLite
    storage (cheap enough to poll)."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return [n for (n,) in con.execute(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'worker'")]
    except sqlite3.Error:  # tables not created yet, or locked by a commit the stopped process was in
        return []


def _kill_when(proc: subprocess.Popen, pred, timeout: float) -> None:
    """SIGKILL ``proc`` in a state where ``pred()`` holds: checked again while the process is stopped
    (SIGSTOP), so it cannot move on between the check and the kill, however busy the machine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited early ({proc.returncode}):\n{out[-3000:]}")
        if pred():
            proc.send_signal(signal.SIGSTOP)
            if pred():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_sigkill_then_rerun_finishes_exactly(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out, 8), cwd=tmp_path, env=_env(AC_TEST_SLEEP="0.6"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # kill while the 4th trial (or a later one) runs: 3 records written, a tagged trial RUNNING
        # (polled in the database, and checked again with the process stopped)
        _kill_when(proc, lambda: len(list((out / "records").glob("trial-*.json"))) >= 3
                   and bool(_running(out / "study.db")), 240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    study = _study(out / "study.db")
    running = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(running) == 1
    killed = running[0]
    done = subprocess.run(_cmd(out, 8, "--json"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["complete"] == 8
    # after the search the CLI asks reports for the exports and the HTML report
    assert {"trials.csv", "pareto.csv", "report.html"} <= set(summary["exports"])
    assert any(e.startswith("recipes/trial-") for e in summary["exports"]) and (out / "report.html").is_file()
    study = _study(out / "study.db")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 8
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    dead = study.trials[killed.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"].startswith("WorkerDied")
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert killed.params.items() <= retried[0].params.items()  # same values, even if killed mid-suggest
    if "baseline" in killed.user_attrs:
        assert retried[0].user_attrs["baseline"] == killed.user_attrs["baseline"]
    records = read_records(out)
    numbers = [r.trial for r in records]
    assert numbers == sorted(set(numbers)) == [t.number for t in study.trials]  # none lost, none twice
    assert records[killed.number].status == "failed" and "WorkerDied" in records[killed.number].error
    assert sum(r.status == "complete" for r in records) == 8
    assert f"trial {killed.number}: its worker" in done.stderr and "re-queued" in done.stderr  # says what it recovered
    assert read_run_info(out).wall_time_s > 0


def test_two_processes_share_one_sqlite_study(tmp_path):
    db = tmp_path / "shared.db"
    cmds = [_cmd(tmp_path / f"w{i}", 9, "--storage", str(db), "--study", "shared") for i in range(2)]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=_env(AC_TEST_SLEEP="0.3"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    study = _study(db, "shared")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 9
    assert len(study.trials) == 9
    assert sum(1 for t in study.trials if "baseline" in t.user_attrs) == 4  # queued once, not twice
    workers = {t.user_attrs["worker"]["id"] for t in study.trials}
    assert len(workers) == 2  # both processes ran trials
    for i in range(2):  # each run directory holds the whole study: its own trials and the other's
        recs = read_records(tmp_path / f"w{i}")
        assert [r.trial for r in recs] == list(range(9))
        assert {r.worker for r in recs} == workers


def test_workers_flag_runs_local_processes(tmp_path, capfd):
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # spawned workers inherit sys.path and import the factory by name
    from _analytic_objective import factory

    from search.driver import run_search
    from spaces.space import load_space

    os.environ["AC_TEST_SLEEP"] = "1.0"
    try:
        r = run_search(load_space("quickstart"), tmp_path / "run", trials=8, workers=2,
                       objective_factory=factory, progress=False)
    finally:
        os.environ.pop("AC_TEST_SLEEP")
    assert r.complete == 8
    study = _study(tmp_path / "run" / "study.db")
    assert len(study.trials) == 8
    # the spawned worker joins after its start-up (imports); it may or may not get trials on a slow box
    assert 1 <= len({t.user_attrs["worker"]["id"] for t in study.trials}) <= 2
    assert [r.trial for r in read_records(tmp_path / "run")] == list(range(8))
    assert "worker 1 (pid" in capfd.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--trials", "0"], "--trials = 0: must be >= 1"),
    (["--address", "auto"], "--address needs --backend ray"),
    (["--storage", "nonsense"], "not a storage URL"),
    (["--set", "search.sampler=cmaes"], "search.sampler"),
    (["--objective", "nomodule"], "expected MODULE:CALLABLE"),
    (["--objective", "_analytic_objective:nothing"], "has no attribute 'nothing'"),
])
def test_cli_errors_are_one_clear_line(tmp_path, capfd, args, message):
    from search.cli import main

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    argv = ["search", "quickstart", "--out", str(tmp_path / "r"), "--no-progress", *args]
    if "--objective" not in args:
        argv += ["--objective", "_analytic_objective:factory"]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_entry_point_and_unknown_space(tmp_path):
    res = subprocess.run([AUTOCOMPRESS, "search", "no-such-space"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "quickstart" in res.stderr and "resnet20-cifar10" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_real_quickstart_search(tmp_path):
    """The real objective (baseline trained on the fly, proxy fine-tune, int8, latency), tiny budget.

    Slow: minutes on 2 busy cores (training the baseline plus five real trials).
    """
    from search.driver import run_search
    from spaces.space import load_space

    space = load_space("quickstart", overrides=[
        "model.baseline.epochs=1", "budget.finetune.steps=4", "budget.latency.rounds=3",
    ])
    r = run_search(space, tmp_path / "run", trials=5, progress=False)
    assert r.complete == 5
    records = read_records(tmp_path / "run")
    assert [x.baseline for x in records[:4]] == ["original", "uniform-prune-0.25", "uniform-prune-0.5",
                                                  "uniform-int8"]
    info = read_run_info(tmp_path / "run")
    orig, pruned = records[0].metrics, records[2].metrics
    assert orig["flops"] == pytest.approx(info.reference["flops"])
    # half of every channel group, block-inner and residual stream: most convs keep a quarter of their cost
    assert 0.2 * orig["flops"] < pruned["flops"] < 0.3 * orig["flops"]
    assert records[3].policy["quant"]["default"]["w"] == 8 or records[3].policy["quant"]["layers"]
    study = _study(tmp_path / "run" / "study.db")
    started = [t for t in study.trials if t.state != TrialState.WAITING]  # queued seeds wait for a larger budget
    assert [t.values for t in started] == [[x.metrics[m] for m in space.objectives] for x in records]
