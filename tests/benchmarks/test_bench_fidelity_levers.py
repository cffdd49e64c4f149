"""benchmarks/bench_fidelity_levers.py: the simulated promotion follows search.promotion's online rule,
the multi-fidelity lever combines the levels, and the whole benchmark re-scores an audited tiny run
(the default lever reproduces the audit's tau; a rerun reuses the result cache)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from autocompress.rundir import RunInfo, TrialRecord, audit_dir, load_run, write_record, write_run_info
from search.audit import audit
from spaces._schema import write_document
from tests.search._tiny_space import tiny_space

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_fidelity_levers as levers  # noqa: E402


def _run(root: Path, rows: list[tuple]) -> Path:
    """Records of (trial, accuracy, flops, baseline label, cached_from) in the tiny space's run layout."""
    write_run_info(root, RunInfo(space="tiny", model="resnet20", checkpoint=None, dataset="digits",
                                 objectives=[("accuracy", "maximize"), ("flops", "minimize")],
                                 constraints=["accuracy_drop <= 100"], reference={"accuracy": 95.0, "flops": 100.0}))
    write_document(tiny_space().to_dict(), root / "config.yaml")
    for trial, acc, flops, label, twin in rows:
        metrics = {"accuracy": acc, "flops": flops, "accuracy_drop": 95.0 - acc}
        params = {"proposal": trial if twin is None else twin}  # a duplicate proposal has its twin's params
        write_record(root, TrialRecord(trial=trial, status="complete", policy={"provenance": {"params": params}},
                                       metrics=metrics, feasible=True,
                                       policy_hash=f"h{trial if twin is None else twin}", baseline=label,
                                       cached_from=twin))
    return root


def test_promotion_is_decided_online_in_trial_order(tmp_path):
    # fraction 0.5: the 2nd result may take the one slot if it is the better; the 4th result is ranked
    # among 4 (2 slots); baselines are always promoted; a cached duplicate follows its twin
    rows = [(0, 95.0, 100.0, "original", None),     # baseline: promoted whatever its rank
            (1, 80.0, 50.0, None, None),            # 2 results -> 1 slot: front {0, 1}, extremes tie, 0 first
            (2, 70.0, 60.0, None, None),            # dominated by 1: rank 2 of 3, 1 slot -> no
            (3, 90.0, 30.0, None, None),            # dominates 1 and 2: best of 4, 2 slots -> yes
            (4, 70.0, 60.0, None, 2)]               # the duplicate of 2: not promoted, like 2
    run = load_run(_run(tmp_path / "run", rows))
    space = tiny_space()
    assert levers.promoted_trials(run, space, 0.5) == {0, 3}
    assert levers.promoted_trials(run, space, 1.0) == {0, 1, 2, 3, 4}
    assert levers.promoted_trials(run, space, 0.0) == {0}


def test_multi_fidelity_takes_the_higher_level_for_promoted_trials_and_costs_both():
    scored = {"values": {"default": {1: 80.0, 2: 70.0}, "steps-9": {1: 85.0, 2: 90.0}},
              "seconds": {"default": {1: 1.0, 2: 1.0}, "steps-9": {1: 3.0, 2: 3.0}}}
    levers.multi_fidelity(scored, {2}, 3, 9)
    assert scored["values"]["multi-fidelity-3-9"] == {1: 80.0, 2: 90.0}
    assert scored["seconds"]["multi-fidelity-3-9"] == {1: 1.0, 2: 4.0}
    # run-wide proxy steps: a quarter of the candidates promoted to 3x the steps cost 1.75x the default
    assert levers.relative_steps(["default", "adaptive-bn", "steps-9", "no-kd", "multi-fidelity-3-9"], 3, 0.25) == {
        "default": 1.0, "adaptive-bn": 0.0, "steps-9": 3.0, "no-kd": 1.0, "multi-fidelity-3-9": 1.75}


@pytest.fixture(scope="module")
def audited_tiny_run(tmp_path_factory) -> Path:
    """A 5-trial search of the tiny space (original, two uniform prunes, two searched) whose baseline is
    trained enough (60 steps) for the trials' accuracies to differ, all audited."""
    from search.driver import run_search

    run_dir = tmp_path_factory.mktemp("levers") / "run"
    space = tiny_space(search={"trials": 5, "seed": 0, "baselines": True}, budget__val_limit=256,
                       model__baseline={"train": True, "epochs": None, "steps": 60, "lr": 0.1, "batch_size": 32})
    run_search(space, run_dir, progress=False)
    audit(run_dir, trials="0,1,2,3,4", steps=6, progress=False)
    return run_dir


def test_levers_rescore_the_audited_trials(audited_tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    run_dir = Path(shutil.copytree(audited_tiny_run, tmp_path / "run"))
    result = levers.run_levers(run_dir, steps=[4], no_kd=True, fraction=0.3)
    saved = json.loads((audit_dir(run_dir) / "levers.json").read_text())
    summary = json.loads((audit_dir(run_dir) / "summary.json").read_text())
    names = ["default", "adaptive-bn", "steps-4", "no-kd", "multi-fidelity-2-4"]
    assert list(saved["correlations"]) == names and saved["final"].keys() == {"0", "1", "2", "3", "4"}
    # the default lever is the audit's own pairing: the same tau
    tau, audit_tau = saved["correlations"]["default"]["tau"]["value"], summary["kendall_tau"]["value"]
    assert tau is not None and tau == pytest.approx(audit_tau)
    run = load_run(run_dir)
    for name in names:  # the original (trial 0) is never fine-tuned: its value is the same under every lever
        assert result["values"][name][0] == run.record(0).metrics["accuracy"]
    for t in (1, 2, 3, 4):
        assert 0.0 <= result["values"]["adaptive-bn"][t] <= 100.0 and result["seconds"]["steps-4"][t] > 0
    # the baselines are always promoted: their multi-fidelity value is the longer proxy's
    assert {1, 2} <= set(result["promoted"])
    assert result["values"]["multi-fidelity-2-4"][1] == result["values"]["steps-4"][1]
    assert "| multi-fidelity-2-4 |" in levers.table(result)
    assert result["relative_steps"]["steps-4"] == 2.0 and result["relative_steps"]["adaptive-bn"] == 0.0
    # a rerun re-scores from the result cache: no new evaluation, the same values
    cache = set((run_dir / "cache").glob("*.json"))
    again = levers.run_levers(run_dir, steps=[4], no_kd=True, fraction=0.3)
    assert set((run_dir / "cache").glob("*.json")) == cache
    assert again["values"]["steps-4"] == result["values"]["steps-4"]
    assert not math.isnan(again["seconds"]["default"][1])


def test_too_few_audited_trials_is_one_line(tmp_path):
    run_dir = _run(tmp_path / "run", [(0, 95.0, 100.0, "original", None)])
    with pytest.raises(SystemExit, match="audited trials; run `autocompress audit"):
        levers.run_levers(run_dir, steps=[4], no_kd=False, fraction=0.3)
