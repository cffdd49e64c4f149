"""Multi-fidelity search (search.promotion): promotion order on synthetic results and on a closed-form
objective, records holding every level, the study told the highest level, resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.rundir import read_records
from search.promotion import LevelResult, always_promoted, is_promoted, promotion_order, slots
from spaces.space import load_space

HERE = Path(__file__).resolve().parent
MAX_MIN = ["maximize", "minimize"]
FIDELITY = "search.fidelity={levels: [20, 80], promote: 0.5, min_results: 2}"


def test_order_is_feasible_first_then_rank_then_crowding():
    results = [
        LevelResult(0, (90.0, 0.50)),  # front 0, extreme
        LevelResult(1, (85.0, 0.30)),  # front 0, middle: finite crowding distance
        LevelResult(2, (80.0, 0.20)),  # front 0, extreme
        LevelResult(3, (88.0, 0.60)),  # dominated by 0: front 1
        LevelResult(4, (99.0, 0.10), feasible=False, violation=2.0),
        LevelResult(5, (95.0, 0.90), feasible=False, violation=0.5),
        LevelResult(6, (70.0, 0.25)),  # dominated by 2: front 1
    ]
    assert promotion_order(results, MAX_MIN) == [0, 2, 1, 3, 6, 5, 4]
    # within one front the sparser point goes first, whatever the trial numbers say
    crowd = [LevelResult(0, (90.0, 0.9)), LevelResult(1, (89.9, 0.89)), LevelResult(2, (80.0, 0.5)),
             LevelResult(3, (70.0, 0.1))]
    assert promotion_order(crowd, MAX_MIN) == [0, 3, 2, 1]


def test_slots_floor_the_fraction_and_wait_for_enough_results():
    assert [slots(n, 0.3) for n in range(1, 11)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert [slots(n, 0.5, min_results=4) for n in range(1, 7)] == [0, 0, 0, 2, 2, 3]
    assert slots(5, 1.0) == 5
    results = [LevelResult(i, (90.0 - i, 1.0 - 0.1 * i)) for i in range(4)]  # one front of four
    assert [is_promoted(results, t, MAX_MIN, 0.5) for t in range(4)] == [True, False, False, True]
    with pytest.raises(ValueError, match="trial 9"):
        is_promoted(results, 9, MAX_MIN, 0.5)


def test_baselines_are_scored_at_every_level_seeds_compete():
    assert always_promoted("original") and always_promoted("uniform-prune-0.5") and always_promoted("uniform-int8")
    assert not always_promoted("seed-flops-0.5") and not always_promoted(None)


def _expected_promotions(records, steps: int, space) -> dict[int, bool]:
    """Re-decide every searched trial's promotion from the level results of the trials before it."""
    objectives = list(space.objectives)
    out = {}
    for r in records:
        if r.baseline:
            continue
        before = [LevelResult(x.trial, tuple(x.levels[str(steps)][m] for m in objectives))  # no constraints
                  for x in records if x.trial <= r.trial]
        out[r.trial] = is_promoted(before, r.trial, space.directions, 0.5, 2)
    return out


def test_promotion_on_a_closed_form_objective_with_resume(tmp_path, monkeypatch):
    sys.path.insert(0, str(HERE))
    from _analytic_objective import factory

    import search.backends._study as study_mod
    from search.driver import run_search

    # the resumed run's sampler seed derives from the worker id (host:pid); a fixed one makes its proposals,
    # and so which of them are promoted, the same on every machine
    monkeypatch.setattr(study_mod, "worker_id", lambda: "test-host:1")

    space = load_space("quickstart", overrides=[FIDELITY, "search.seeds=null", "search.sampler=random",
                                                "constraints=[]"])
    out = tmp_path / "run"
    assert run_search(space, out, trials=6, objective_factory=factory, progress=False).complete == 6
    r = run_search(space, out, trials=12, objective_factory=factory, progress=False)  # resumed
    assert r.complete == 12
    records = read_records(out)
    assert [x.status for x in records] == ["complete"] * 12
    assert all("20" in x.levels for x in records)
    for x in records:
        top = str(max(int(k) for k in x.levels))
        assert x.metrics == x.levels[top] and x.level_steps == int(top)
        assert x.policy["finetune"]["steps"] == int(top)
    baselines = [x for x in records if x.baseline]
    assert baselines and all(set(x.levels) == {"20", "80"} for x in baselines)
    pruned = next(x for x in baselines if x.baseline.startswith("uniform-prune"))
    assert pruned.levels["80"]["accuracy"] > pruned.levels["20"]["accuracy"]  # the longer proxy recovers more
    promoted = {x.trial: "80" in x.levels for x in records if not x.baseline}
    assert promoted == _expected_promotions(records, 20, space)
    assert 0 < sum(promoted.values()) < len(promoted)
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.values for t in complete] == [[x.metrics[m] for m in space.objectives] for x in records]
    assert [t.user_attrs["record"]["steps"] for t in complete] == [x.level_steps for x in records]


def test_a_different_fidelity_cannot_resume_a_run(tmp_path):
    sys.path.insert(0, str(HERE))
    from _analytic_objective import factory

    from search.driver import SearchConfigError, run_search

    space = load_space("quickstart", overrides=[FIDELITY, "search.seeds=null"])
    run_search(space, tmp_path / "run", trials=1, objective_factory=factory, progress=False)
    other = load_space("quickstart", overrides=["search.fidelity={levels: [20, 40]}", "search.seeds=null"])
    with pytest.raises(SearchConfigError, match="search.fidelity"):
        run_search(other, tmp_path / "run", trials=2, objective_factory=factory, progress=False)


def test_killed_during_a_promotion_then_rerun_finishes_exactly(tmp_path):
    from tests.search.test_driver import _cmd, _env, _kill_when, _study

    out = tmp_path / "run"
    args = ["--set", FIDELITY, "--set", "search.seeds=null"]

    def promoting() -> bool:  # a record written after its first level, its promotion under way
        for p in (out / "records").glob("trial-*.json"):
            data = json.loads(p.read_text())
            if data["status"] == "running" and data.get("levels"):
                return True
        return False

    proc = subprocess.Popen(_cmd(out, 6, *args), cwd=tmp_path, env=_env(AC_TEST_SLEEP="1.0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _kill_when(proc, promoting, 240)  # checked again with the worker stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    killed = [t for t in _study(out / "study.db").trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    done = subprocess.run(_cmd(out, 6, *args), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _study(out / "study.db")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 6
    records = read_records(out)
    assert [x.trial for x in records] == [t.number for t in study.trials]
    assert records[killed[0].number].status == "failed" and "WorkerDied" in records[killed[0].number].error
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert records[retried[0].number].levels and sum(x.status == "complete" for x in records) == 6
