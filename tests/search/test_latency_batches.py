"""Latency at several batches (``budget.latency.batch: [1, 8]``) through objective, study, exports, picks, finalize.

The study, exports and report run on the closed-form objective (``_analytic_objective``, fast); one real
objective evaluation times both batches; the real search + finalize end to end is marked slow.
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from autocompress.rundir import (
    RunInfo,
    TrialRecord,
    load_run,
    read_records,
    read_run_info,
    write_record,
    write_run_info,
)
from search.picking import FinalizeError, choose_trial, parse_pick
from tests.search._analytic_objective import AnalyticObjective
from tests.search._tiny_space import baseline_policy, tiny_space

BATCHES = {"measure": "auto", "batch": [1, 8], "rounds": 3, "warmup_s": 0.05, "threads": 1}
OBJECTIVES = ["accuracy", "latency", "latency@8"]


def _study(run_dir) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.fixture(scope="module")
def analytic_run(tmp_path_factory):
    """Six trials of the optuna backend on the tiny space with objectives latency and latency@8."""
    from search.driver import run_search

    space = tiny_space(objectives=OBJECTIVES, budget__latency=BATCHES, constraints=["latency@8 <= 0.9"])
    run_dir = tmp_path_factory.mktemp("analytic") / "run"
    run_search(space, run_dir, trials=6, objective_factory=AnalyticObjective, progress=False)
    return run_dir


def test_the_study_optimises_both_batches(analytic_run):
    records = read_records(analytic_run)
    study = _study(analytic_run)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] + [optuna.study.StudyDirection.MINIMIZE] * 2
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.values for t in done] == [[r.metrics[m] for m in OBJECTIVES] for r in records]
    assert all("latency@8 <= 0.9" in r.constraints for r in records)
    info = read_run_info(analytic_run)
    assert info.objectives == [("accuracy", "maximize"), ("latency", "minimize"), ("latency@8", "minimize")]
    assert info.hv_reference == {"accuracy": 0.0, "latency": pytest.approx(1.1), "latency@8": pytest.approx(1.1)}


def test_exports_and_report_show_the_other_batch(analytic_run, tmp_path):
    from reports.data import report_data
    from reports.html import pareto_table_columns, write_html_report
    from reports.markdown import write_markdown_report
    from reports.tables import read_csv, write_exports

    paths = write_exports(analytic_run)
    trials = read_csv(paths["trials.csv"])
    assert list(trials.columns[7:10]) == OBJECTIVES  # objectives right after the head columns
    for col in ("latency_ci_low@8", "latency_ci_high@8", "latency_busy@8", "vs.latency_speedup",
                "vs.latency_speedup@8"):
        assert col in trials.columns
    assert trials["vs.latency_speedup@8"].tolist() == pytest.approx((1 / trials["latency@8"]).tolist())
    assert "latency@8" in read_csv(paths["pareto.csv"]).columns
    data = report_data(analytic_run, refresh_exports=False)
    plot = next(p for p in data["scatter"] if p["x"] == "latency@8")
    assert plot["y"] == "accuracy" and "batch 8" in plot["x_label"] and plot["x_direction"] == "minimize"
    assert "hv_reference" not in data["hypervolume"].get("error", "") and data["hypervolume"]["fraction"] > 0
    assert {"latency@8", "vs.latency_speedup@8"} <= set(pareto_table_columns(data))
    html = write_html_report(analytic_run, tmp_path / "r.html").read_text()
    assert "latency speed-up b8" in html and "latency_ci_low@8" not in pareto_table_columns(data)
    assert "latency speed-up b8" in write_markdown_report(analytic_run, tmp_path / "r.md").read_text()


def test_objective_times_every_batch(tmp_path):
    """The real objective: one pruned policy measured at batches 1 and 8 against the original."""
    from search.objective import Objective

    obj = Objective(tiny_space(objectives=OBJECTIVES, budget__latency=BATCHES), tmp_path)
    assert obj.reference["latency"] == obj.reference["latency@8"] == 1.0
    m = obj.evaluate(baseline_policy(obj, "uniform-prune-0.5"), seed=0)
    assert m["latency"] == m["latency_ratio"] > 0 and m["latency@8"] > 0 and "latency@1" not in m
    assert m["latency_ci_low@8"] <= m["latency@8"] <= m["latency_ci_high@8"] and isinstance(m["latency_busy@8"], bool)
    assert "latency" in m.times


@pytest.mark.slow  # ~35 s of CPU on an idle machine (baseline, two trials, finalize); minutes on a shared one
def test_search_and_finalize_measure_both_batches(tmp_path):
    from search.driver import run_search
    from search.finalize import finalize

    space = tiny_space(objectives=OBJECTIVES, budget__latency=BATCHES, search={"trials": 2, "seed": 0})
    run_dir = tmp_path / "run"
    run_search(space, run_dir, progress=False)
    records = read_records(run_dir)
    assert [r.status for r in records] == ["complete", "complete"]
    assert all(r.metrics["latency@8"] > 0 and r.metrics["latency"] > 0 for r in records)
    assert [t.values for t in _study(run_dir).trials if t.state == TrialState.COMPLETE] == [
        [r.metrics[m] for m in OBJECTIVES] for r in records]
    m = finalize(run_dir, trial=1, onnx=False, progress=False)
    saved = json.loads((run_dir / "final" / "metrics.json").read_text())
    assert saved["latency@8"] == m["latency@8"] > 0 and saved["latency_ratio"] > 0
    assert m["speedup@8"] == pytest.approx(1 / m["latency@8"]) and m["speedup"] == pytest.approx(1 / m["latency_ratio"])
    assert m["latency_ci_low@8"] <= m["latency@8"] <= m["latency_ci_high@8"] and isinstance(m["latency_busy@8"], bool)


# ----- picks on recorded metrics (no model) ----------------------------------------------------


def _run_with_batches(tmp_path):
    info = RunInfo(space="tiny", model="resnet20", checkpoint=None, dataset="digits",
                   objectives=[("accuracy", "maximize"), ("latency", "minimize"), ("latency@128", "minimize")],
                   constraints=["latency@128 <= 0.9"], reference={"accuracy": 90.0})
    write_run_info(tmp_path, info)
    rows = [(90.0, 1.0, 1.0), (89.0, 0.5, 0.8), (88.0, 0.9, 0.3), (85.0, 0.4, 0.25)]
    for i, (acc, lat, lat128) in enumerate(rows):
        write_record(tmp_path, TrialRecord(trial=i, status="complete", policy={}, policy_hash=f"h{i}", feasible=True,
                                           metrics={"accuracy": acc, "latency": lat, "latency_ratio": lat,
                                                    "latency@128": lat128}))
    return load_run(tmp_path)


def test_pick_by_latency_at_another_batch(tmp_path):
    run = _run_with_batches(tmp_path)
    p = parse_pick("max accuracy where latency@128 <= 0.3")
    assert [(c.metric, c.op, c.bound) for c in p.conditions] == [("latency@128", "<=", 0.3)]
    assert choose_trial(run, "max accuracy where latency@128 <= 0.3")[0] == 2
    assert choose_trial(run, "max accuracy where latency_ratio <= 0.5")[0] == 1
    assert choose_trial(run, "min latency@128")[0] == 3
    with pytest.raises(FinalizeError, match="best latency@128 among them is 0.25"):
        choose_trial(run, "max accuracy where latency@128 <= 0.1")
    with pytest.raises(FinalizeError, match="no trial has 'latency@64'"):
        choose_trial(run, "max accuracy where latency@64 <= 0.5")
