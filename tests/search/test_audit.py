"""`autocompress audit`: which trials, bad inputs, records + summary, resume, kill -9 then rerun, --noise.

Selection and input checks run on run directories written from hand-chosen TrialRecords (no model);
the end-to-end tests audit a 3-trial search of the tiny digits space with 1-step fine-tunes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress.fidelity import kendall_tau
from autocompress.rundir import (
    AuditRecord,
    RunInfo,
    TrialRecord,
    audit_dir,
    audit_path,
    load_run,
    read_audit_noise,
    read_audit_records,
    write_audit_record,
    write_record,
    write_run_info,
)
from search.audit import (
    AuditError,
    audit,
    audit_settings,
    parse_trials,
    plan_audit,
    select_trials,
    stratified_sample,
)
from spaces._schema import write_document
from tests.search._tiny_space import tiny_space

REPO = Path(__file__).resolve().parents[2]

# ----- synthetic runs ------------------------------------------------------------------------------


def _synthetic_run(root: Path, rows: list[tuple], constraints=("accuracy_drop <= 50",)) -> Path:
    """Records of (trial, status, accuracy, flops, feasible, cached_from) and the tiny space's config.yaml."""
    write_run_info(root, RunInfo(space="tiny", model="resnet20", checkpoint=None, dataset="digits",
                                 objectives=[("accuracy", "maximize"), ("flops", "minimize")],
                                 constraints=list(constraints), reference={"accuracy": 95.0, "flops": 100.0}))
    write_document(tiny_space().to_dict(), root / "config.yaml")
    for trial, status, acc, flops, feasible, cached_from in rows:
        metrics = {"accuracy": acc, "flops": flops, "accuracy_drop": 95.0 - acc} if status == "complete" else {}
        write_record(root, TrialRecord(trial=trial, status=status, policy={}, metrics=metrics, feasible=feasible,
                                       policy_hash=f"h{cached_from if cached_from is not None else trial}",
                                       cached_from=cached_from, error=None if status == "complete" else "boom"))
    return root


def _strata_run(root: Path) -> Path:
    # front: trial 0 (flops 1, acc 60) and trial 19 (flops 20, acc 90); trials 1..18 (flops 2..19, acc 55)
    # are feasible and dominated by trial 0. Trial 20 is infeasible, 21 failed, 22 a cached duplicate of 3.
    rows = [(0, "complete", 60.0, 1.0, True, None)]
    rows += [(t, "complete", 55.0, float(t + 1), True, None) for t in range(1, 19)]
    rows += [(19, "complete", 90.0, 20.0, True, None), (20, "complete", 56.0, 4.5, False, None),
             (21, "failed", None, None, False, None), (22, "complete", 55.0, 4.0, True, 3)]
    return _synthetic_run(root, rows)


def test_stratified_sample_takes_the_trial_nearest_each_bins_median(tmp_path):
    run = load_run(_strata_run(tmp_path))
    pool = [r for r in run.records if 1 <= r.trial <= 18]
    # 18 trials (flops 2..19) in 3 bins of 6: medians 4.5, 10.5, 16.5 -> the nearer lower cost: 4, 10, 16
    assert [r.trial for r in stratified_sample(pool, "flops", 3)] == [3, 9, 15]
    assert [r.trial for r in stratified_sample(pool, "flops", 1)] == [9]  # median 10.5 -> flops 10
    assert len(stratified_sample(pool, "flops", 30)) == 18 and stratified_sample(pool, "flops", 0) == []


def test_select_trials_front_plus_strata_and_explicit(tmp_path):
    run = load_run(_strata_run(tmp_path))
    # the front (0, 19) + 3 of the 18 feasible non-Pareto trials; 20 (infeasible), 21 (failed) and 22
    # (a cached duplicate of trial 3) are never sampled
    assert select_trials(run, sample=3) == [0, 3, 9, 15, 19]
    assert select_trials(run, pareto_only=True) == select_trials(run, sample=0) == [0, 19]
    assert len(select_trials(run)) == 2 + 6
    assert select_trials(run, trials=[20, 5]) == [5, 20]  # named trials may be infeasible
    with pytest.raises(AuditError, match="trial 21 is failed"):
        select_trials(run, trials=[21])
    with pytest.raises(AuditError, match="trial 99 does not exist"):
        select_trials(run, trials=[99])


def test_parse_trials():
    assert parse_trials("3, 5,3") == [3, 5]
    for bad in ("3;5", "a", "1,,2", "-1"):
        with pytest.raises(AuditError, match="--trials"):
            parse_trials(bad)


def test_settings_of_another_budget_are_refused_naming_the_flag(tmp_path):
    run_dir = _strata_run(tmp_path)
    settings = audit_settings(tiny_space(), epochs=None, steps=3, seed=None)
    write_audit_record(run_dir, AuditRecord(trial=0, settings=settings, proxy_accuracy=60.0, val_accuracy=61.0,
                                            test_accuracy=60.5))
    plan = plan_audit(run_dir, trials="0,19", steps=3)  # same budget: resumes
    assert plan.done == [0] and plan.todo == [19]
    with pytest.raises(AuditError) as exc:
        plan_audit(run_dir, trials="0,19", steps=5)
    msg = str(exc.value)
    assert "fine-tuned with --steps 3" in msg and "asks for --steps 5" in msg and "\n" not in msg
    with pytest.raises(AuditError, match="fine-tuned with --steps 3.*asks for --epochs 2"):
        plan_audit(run_dir, epochs=2)
    # the space's budget.final of the tiny space is 3 steps: the default budget is the same audit
    assert plan_audit(run_dir, trials="0").done == [0]


def test_no_feasible_trial_to_sample(tmp_path):
    run_dir = _synthetic_run(tmp_path, [(0, "complete", 50.0, 1.0, False, None)])
    with pytest.raises(AuditError, match="no feasible complete trial to audit"):
        plan_audit(run_dir)
    assert plan_audit(run_dir, trials="0").trials == [0]


@pytest.mark.parametrize("args,message", [
    (["--sample", "-1"], "--sample -1: must be >= 0"),
    (["--trials", "1,x"], "--trials '1,x': expected trial numbers"),
    (["--steps", "0"], "--steps 0: must be > 0"),
    (["--epochs", "-2"], "--epochs -2.0: must be > 0"),
    (["--trials", "21"], "trial 21 is failed"),
])
def test_cli_bad_inputs_are_one_line_before_any_work(tmp_path, capsys, args, message):
    from search.cli import main

    run_dir = _strata_run(tmp_path / "run")
    assert main(["audit", str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not audit_dir(run_dir).exists() and not (run_dir / "baseline").exists()


def test_cli_run_without_complete_trials_is_one_line(tmp_path, capsys):
    from search.cli import main

    run_dir = _synthetic_run(tmp_path, [(0, "failed", None, None, False, None), (1, "failed", None, None, False, None)])
    assert main(["audit", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no complete trial to audit (2 failed)" in err and len(err.splitlines()) == 1
    assert main(["audit", str(tmp_path / "nope"), "--sample", "-1"]) == 2  # checked before the run is read
    assert "--sample -1" in capsys.readouterr().err
    assert not audit_dir(run_dir).exists()


# ----- a real tiny run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 3-trial search (baselines original, uniform-prune-0.25, uniform-prune-0.5) of the tiny space."""
    from search.driver import run_search

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    run_search(tiny_space(search={"trials": 3, "seed": 0, "baselines": True}), run_dir, progress=False)
    return run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_audit_records_summary_resume_and_noise(run_copy, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    s1 = audit(run_copy, trials="1", steps=1, progress=False)
    assert s1["audited_now"] == [1] and [r.trial for r in read_audit_records(run_copy)] == [1]
    first = json.loads(audit_path(run_copy, 1).read_text())
    cache_before = set((run_copy / "cache").glob("*.json"))

    s2 = audit(run_copy, trials="0,1,2", steps=1, noise=True, progress=False)
    assert s2["audited_now"] == [0, 2]  # trial 1 resumed from its record, not fine-tuned again
    assert json.loads(audit_path(run_copy, 1).read_text()) == first
    records = read_audit_records(run_copy)
    run = load_run(run_copy)
    assert [r.trial for r in records] == [0, 1, 2]
    for r in records:
        assert r.proxy_accuracy == run.record(r.trial).metrics["accuracy"]
        assert r.metrics["val_accuracy"] == r.val_accuracy and r.metrics["test_images"] > 200
        assert r.steps == 1 and r.settings["schedule"]["steps"] == 1 and r.settings["kd"] is True
        assert r.metrics["flops"] == pytest.approx(run.record(r.trial).metrics["flops"])
        assert r.metrics["latency_ratio"] is None  # the tiny space never measures latency
        assert r.seed == run.record(r.trial).seed and r.versions["torch"]
    # the summary: every record once, tau over (proxy, final val) pairs, regret at 3 cost budgets at most
    summary = json.loads((audit_dir(run_copy) / "summary.json").read_text())
    assert [row["trial"] for row in summary["rows"]] == [0, 1, 2]
    expected = kendall_tau([r.proxy_accuracy for r in records], [r.val_accuracy for r in records]).value
    # JSON has no NaN: an undefined tau (ties everywhere on this tiny run) is stored as null
    assert summary["kendall_tau"]["value"] == (None if math.isnan(expected) else pytest.approx(expected))
    assert 1 <= len(summary["regret"]) <= 3 and summary["cost_metric"] == "flops"
    # --noise: the two pruned trials' proxies under 2 other seeds (the original is never fine-tuned),
    # fresh evaluations (new cache entries), not the trials' cached results
    noise = read_audit_noise(run_copy)
    assert sorted(noise["seeds"]) == ["1", "2"] and all(sorted(v) == ["1", "2"] for v in noise["seeds"].values())
    assert len(set((run_copy / "cache").glob("*.json")) - cache_before) == 4
    assert summary["noise"]["trials"] == [1, 2] and len(summary["noise"]["groups"]["1"]) == 3
    assert summary["noise"]["sigma"] is None or summary["noise"]["sigma"] >= 0


def test_sigkill_during_second_trial_then_rerun_audits_each_once(run_copy):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "search.cli", "audit", str(run_copy), "--trials", "0,1,2", "--steps", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 600
        while not audit_path(run_copy, 0).exists():  # the first trial is written: the second is in flight
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < end, "timed out"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert [r.trial for r in read_audit_records(run_copy)] == [0]  # the trial in flight left no record
    first = audit_path(run_copy, 0).read_text()
    done = subprocess.run(cmd + ["--format", "json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["audited_now"] == [1, 2] and [row["trial"] for row in summary["rows"]] == [0, 1, 2]
    assert audit_path(run_copy, 0).read_text() == first
    assert sorted(p.name for p in audit_dir(run_copy).glob("trial-*.json")) == [
        "trial-00000.json", "trial-00001.json", "trial-00002.json"]
