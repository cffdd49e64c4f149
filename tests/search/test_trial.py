"""run_trial: records, failures that do not stop the search, constraints, provenance."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from autocompress.rundir import read_records, record_path
from search.objective import Objective
from search.trial import constraint_values, git_sha, run_trial, versions
from spaces.policy import PruneSpec
from tests.search._tiny_space import baseline_policy, tiny_space


@pytest.fixture(scope="module")
def objective(tmp_path_factory):
    space = tiny_space(constraints=["accuracy_drop <= 100", "flops_ratio <= 0.9"])
    return Objective(space, tmp_path_factory.mktemp("run"))


def test_failures_are_recorded_and_the_search_goes_on(objective):
    good = baseline_policy(objective, "uniform-prune-0.5")
    diverging = good.replace(finetune=dataclasses.replace(good.finetune, lr=1e9, steps=4))
    bad = run_trial(objective, diverging, trial_number=1, seed=0)
    assert bad.status == "failed" and not bad.feasible
    assert bad.error.startswith("DivergenceError: "), bad.error
    on_disk = json.loads(record_path(objective.run_dir, 1).read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == bad.error
    assert not objective.cache_path(objective.effective_policy(diverging, 0)).exists()  # failures not cached

    unfit = good.replace(prune=PruneSpec(ratios={"layer9.0.conv1": 0.5}))
    rec = run_trial(objective, unfit, trial_number=2, seed=0)
    assert rec.status == "failed" and rec.error.startswith("PolicyError: ") and "layer9.0.conv1" in rec.error

    ok = run_trial(objective, good, trial_number=3, seed=0, baseline="uniform-prune-0.5")
    assert ok.status == "complete" and ok.error is None and ok.baseline == "uniform-prune-0.5"
    assert ok.metrics["flops_ratio"] < 0.9 and ok.feasible
    assert set(ok.constraints) == {"accuracy_drop <= 100", "flops_ratio <= 0.9"}
    assert all(v <= 0 for v in ok.constraints.values())
    assert {"prune", "finetune", "total"} <= set(ok.times)
    assert [r.trial for r in read_records(objective.run_dir)] == [1, 2, 3]


def test_infeasible_and_cached_duplicates(objective):
    original = baseline_policy(objective, "original")
    first = run_trial(objective, original, trial_number=10, seed=0, baseline="original")
    assert first.status == "complete" and first.cached_from is None
    assert first.constraints["flops_ratio <= 0.9"] == pytest.approx(0.1)  # violated by 0.1
    assert not first.feasible

    dup = run_trial(objective, original, trial_number=11, seed=0)
    assert dup.cached_from == 10 and dup.metrics == first.metrics and dup.policy_hash == first.policy_hash


def test_record_provenance(objective):
    rec = run_trial(objective, baseline_policy(objective, "original"), trial_number=20, seed=0)
    v = versions()
    assert {"python", "torch", "torchvision", "optuna"} <= set(v) and rec.versions == v
    assert rec.git_sha == git_sha()
    assert rec.git_sha is None or len(rec.git_sha) == 40
    assert rec.started and rec.finished and rec.worker and ":" in rec.worker
    assert rec.policy["finetune"]["seed"] == 0 and rec.policy_hash


def test_constraint_values_convention():
    space = tiny_space(constraints=["accuracy_drop <= 1.0", "accuracy >= 90", "latency_ratio < 0.5"])
    v = constraint_values(space, {"accuracy_drop": 0.5, "accuracy": 95.0})
    assert v["accuracy_drop <= 1.0"] == pytest.approx(-0.5)
    assert v["accuracy >= 90"] == pytest.approx(-5.0)
    assert math.isinf(v["latency_ratio < 0.5"])  # not measured -> infeasible


def test_record_carries_the_applied_policy_with_kept_indices(objective):
    """A complete trial records the applied Policy (kept channels included), in the Policy's own
    serialisation: ``Policy.from_dict`` reads it back; a cached duplicate records the same."""
    from spaces.policy import Policy

    proposed = objective.effective_policy(baseline_policy(objective, "uniform-prune-0.25"), 0)  # not run yet
    rec = run_trial(objective, proposed, trial_number=30, seed=0)
    assert rec.status == "complete" and rec.cached_from is None
    on_disk = read_records(objective.run_dir)
    rec_disk = next(r for r in on_disk if r.trial == 30)
    applied = Policy.from_dict(rec_disk.policy)
    assert applied.to_dict() == rec_disk.policy == rec.policy  # round trip, nothing lost
    assert applied.prune.ratios == proposed.prune.ratios and set(applied.prune.kept) == set(proposed.prune.ratios)
    for group, kept in applied.prune.kept.items():
        channels = objective.groups[group]
        assert len(kept) == channels - round(channels * proposed.prune.ratios[group]) and len(set(kept)) == len(kept)
    assert applied.replace(prune=proposed.prune) == proposed  # only the kept indices were added
    assert rec.policy_hash == proposed.hash()  # the proposed policy's hash: the cache key
    dup = run_trial(objective, proposed, trial_number=31, seed=0)
    assert dup.cached_from == 30 and dup.policy == rec.policy
    failed = run_trial(objective, proposed.replace(prune=PruneSpec(ratios={"layer9.0.conv1": 0.5})),
                       trial_number=32, seed=0)
    assert failed.status == "failed" and Policy.from_dict(failed.policy).prune.kept == {}  # the proposed policy
