"""trials_frame / pareto_frame / write_exports on run directories in the real record format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from autocompress.errors import RunFormatError
from autocompress.pareto import non_dominated
from autocompress.rundir import record_path
from reports.tables import pareto_frame, read_csv, trials_frame, write_exports
from spaces.policy import Policy

from .conftest import build_run


def test_trials_frame_flattens_policy_and_metrics(run_dir):
    df = trials_frame(run_dir)
    assert df["trial"].tolist() == list(range(15))
    for col in ["status", "feasible", "pareto", "baseline", "summary", "accuracy", "flops", "latency",
                "time.finetune", "time.total", "prune.ratios.layer2.0.conv1", "quant.layers.layer1.0.conv1.w",
                "distill.alpha", "finetune.lr", "model.name", "vs.accuracy_drop", "vs.flops_speedup",
                "vs.latency_speedup", "error", "policy_hash"]:
        assert col in df.columns, col
    assert df.loc[0, "baseline"] == "original"
    assert df.loc[0, "vs.flops_speedup"] == 1.0
    assert set(df["status"]) == {"complete", "failed", "pruned"}
    assert df.loc[df["status"] == "failed", "error"].str.contains("DivergenceError").all()
    # policy fields keep their values
    rec = json.loads(record_path(run_dir, 5).read_text())
    assert df.loc[5, "prune.ratios.layer3.2.conv1"] == rec["policy"]["prune"]["ratios"]["layer3.2.conv1"]
    assert df.loc[5, "summary"] == Policy.from_dict(rec["policy"]).summary()


def test_pareto_is_exactly_the_feasible_nondominated_set(run_dir):
    df = trials_frame(run_dir)
    ok = (df["status"] == "complete") & df["feasible"]
    pts = df.loc[ok, ["accuracy", "flops"]].to_numpy(float)
    expected = set(df.loc[ok, "trial"][non_dominated(pts, ["maximize", "minimize"])])
    front = pareto_frame(run_dir)
    assert set(front["trial"]) == expected
    assert set(df.loc[df["pareto"], "trial"]) == expected
    assert front["accuracy"].is_monotonic_increasing
    assert df["knee"].sum() == 1 and df.loc[df["knee"], "pareto"].all()
    # nothing infeasible, failed or pruned on the front; no feasible trial dominates a front point
    assert front["feasible"].all() and (front["status"] == "complete").all()
    for _, p in front.iterrows():
        better = (df.loc[ok, "accuracy"] >= p["accuracy"]) & (df.loc[ok, "flops"] <= p["flops"])
        strictly = (df.loc[ok, "accuracy"] > p["accuracy"]) | (df.loc[ok, "flops"] < p["flops"])
        assert not (better & strictly).any()


def test_write_exports_roundtrip_and_recipes(run_dir):
    paths = write_exports(run_dir)
    trials, front = trials_frame(run_dir), pareto_frame(run_dir)
    back = read_csv(paths["trials.csv"])
    pd.testing.assert_frame_equal(back[["trial", "accuracy", "flops", "vs.flops_speedup", "time.total"]],
                                  trials[["trial", "accuracy", "flops", "vs.flops_speedup", "time.total"]],
                                  check_dtype=False)
    assert read_csv(paths["pareto.csv"])["trial"].tolist() == front["trial"].tolist()
    recipes = sorted((run_dir / "recipes").glob("*.yaml"))
    assert {p.name for p in recipes} == {f"trial-{t}.yaml" for t in front["trial"]}
    t = int(front["trial"].iloc[-1])
    recipe = Policy.load(run_dir / "recipes" / f"trial-{t}.yaml")
    rec = json.loads(record_path(run_dir, t).read_text())
    assert recipe.hash() == Policy.from_dict(rec["policy"]).hash() == rec["policy_hash"]
    prov = recipe.provenance
    assert prov["trial"] == t and prov["study"] == "test-study" and prov["git_sha"] == "abc1234"
    assert prov["metrics"]["accuracy"] == rec["metrics"]["accuracy"]
    assert prov["versions"]["torch"] == "2.14.1"


def test_write_exports_is_idempotent_and_removes_stale_recipes(run_dir):
    first = write_exports(run_dir)
    stale = run_dir / "recipes" / "trial-999.yaml"
    stale.write_text("old")
    keep = run_dir / "recipes" / "notes.txt"
    keep.write_text("mine")
    second = write_exports(run_dir)
    assert set(first) == set(second)
    assert not stale.exists() and keep.exists()
    assert first["trials.csv"].read_text() == second["trials.csv"].read_text()


def test_three_objectives(run_dir_3d):
    df = trials_frame(run_dir_3d)
    ok = (df["status"] == "complete") & df["feasible"]
    pts = df.loc[ok, ["accuracy", "flops", "latency"]].to_numpy(float)
    mask = non_dominated(pts, ["maximize", "minimize", "minimize"])
    assert set(pareto_frame(run_dir_3d)["trial"]) == set(df.loc[ok, "trial"][mask])


def test_missing_and_empty_and_old_runs(tmp_path, run_dir):
    with pytest.raises(RunFormatError, match="no such run directory"):
        trials_frame(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFormatError, match="no run.json"):
        trials_frame(tmp_path / "empty")
    run = build_run(tmp_path / "norecords", n=0)
    for p in (run / "records").glob("*.json"):
        p.unlink()
    with pytest.raises(RunFormatError, match="no trial records"):
        trials_frame(run)
    p = record_path(run_dir, 4)
    data = json.loads(p.read_text())
    data["schema"] = 0
    p.write_text(json.dumps(data))
    with pytest.raises(RunFormatError, match="schema = 0"):
        trials_frame(run_dir)


def test_only_failed_trials_frame_has_no_front(tmp_path):
    run = build_run(tmp_path / "bad", n=3, all_failed=True)
    df = trials_frame(run)
    assert (df["status"] == "failed").all() and not df["pareto"].any()
    assert pareto_frame(run).empty
