"""search.sensitivity: RUN/sensitivity.json computed once (locked, atomic), reused across runs by
key; seeds allocated from the map of a tiny objective are valid, labelled and meet their target."""

from __future__ import annotations

import json

import pytest

from compress.sensitivity import SensitivityMap, SensitivitySettings
from search.objective import Objective
from search.sensitivity import (
    FILENAME,
    default_settings,
    load_or_compute,
    objective_map,
    objective_seeds,
    shared_cache_dir,
)
from spaces.space import baseline_params, policy_from_params
from tests.search._tiny_space import tiny_space


def a_map(key: str, reference: float = 90.0) -> SensitivityMap:
    return SensitivityMap(reference=reference, images=10, prune={"layer1": {0.0: reference, 0.5: 80.0}}, key=key)


class Counter:
    def __init__(self, key: str):
        self.key, self.calls = key, 0

    def __call__(self) -> SensitivityMap:
        self.calls += 1
        return a_map(self.key)


def test_computed_once_per_run_and_remeasured_when_the_key_changes(tmp_path):
    compute = Counter("k1")
    first = load_or_compute(tmp_path / "run", "k1", compute, shared_dir=None)
    again = load_or_compute(tmp_path / "run", "k1", compute, shared_dir=None)
    assert first == again and compute.calls == 1
    assert json.loads((tmp_path / "run" / FILENAME).read_text())["key"] == "k1"
    other = Counter("k2")
    assert load_or_compute(tmp_path / "run", "k2", other, shared_dir=None).key == "k2" and other.calls == 1
    with pytest.raises(ValueError, match="expected 'k3'"):
        load_or_compute(tmp_path / "run", "k3", Counter("wrong"), shared_dir=None)


def test_other_runs_reuse_the_shared_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    assert shared_cache_dir() == tmp_path / "cache" / "sensitivity"
    compute = Counter("same")
    load_or_compute(tmp_path / "run-a", "same", compute)
    assert (tmp_path / "cache" / "sensitivity" / "same.json").is_file()
    reused = load_or_compute(tmp_path / "run-b", "same", compute)
    assert compute.calls == 1 and reused.key == "same" and (tmp_path / "run-b" / FILENAME).is_file()
    load_or_compute(tmp_path / "run-c", "same", compute, shared_dir=None)
    assert compute.calls == 2, "without the shared cache every run measures its own map"


def test_a_corrupt_file_is_measured_again(tmp_path):
    (tmp_path / FILENAME).write_text("{not json")
    compute = Counter("k")
    assert load_or_compute(tmp_path, "k", compute, shared_dir=None).key == "k" and compute.calls == 1


def test_default_settings_follow_the_space():
    s = default_settings(tiny_space())
    assert s.ratios == (0.25, 0.5) and s.bits == ((8, 8),) and s.backend == "x86"
    assert s.val_limit == 64 and s.bn_recal_batches == 1 and s.criterion == "l1"


@pytest.fixture(scope="module")
def objective(tmp_path_factory):
    return Objective(tiny_space(), tmp_path_factory.mktemp("run"))


def test_objective_map_and_seeds(objective, tmp_path):
    smap = objective_map(objective, shared_dir=tmp_path / "shared")
    assert set(smap.prune) == {g for g in objective.groups if "." in g}  # block granularity
    assert set(smap.quant) == {"model"} and smap.reference == pytest.approx(objective.reference["accuracy"])
    assert SensitivityMap.from_dict(json.loads((objective.run_dir / FILENAME).read_text())) == smap
    assert objective_map(objective, shared_dir=None) == smap, "a second call reads RUN/sensitivity.json"

    seeds, allocations = objective_seeds(objective, smap, (0.6, 0.8))
    assert [label for label, _ in seeds] == ["seed-flops-0.6", "seed-flops-0.8"]
    baselines = [p for _, p in baseline_params(objective.space, objective.dims)]
    for (_label, params), a in zip(seeds, allocations):
        assert params not in baselines
        policy = policy_from_params(objective.space, objective.dims, params)
        assert policy.prune.ratios == a.ratios and not policy.quant.active
        metrics = objective.evaluate(policy, seed=0)
        assert metrics["flops_ratio"] <= a.target + 1e-6
        assert metrics["flops_ratio"] == pytest.approx(a.fraction, abs=1e-3)


def test_settings_changes_the_key(objective, tmp_path):
    base = objective_map(objective, shared_dir=None)
    other = objective_map(objective, SensitivitySettings(ratios=(0.5,), val_limit=32, bn_recal_batches=1),
                          shared_dir=None)
    assert other.key != base.key and set(next(iter(other.prune.values()))) == {0.0, 0.5}


def test_seeds_as_the_builtin_cifar_space_applies_them_meet_their_targets():
    """The widened resnet20-cifar10 space reproduces seeds within a grid step; re-allocation makes
    the ratios it really applies meet each FLOPs target."""
    from compress.allocate import CostModel
    from compress.models import get_model
    from compress.prune import list_groups
    from compress.seed_allocation import seed_allocations
    from spaces.space import expand, load_space, params_for_ratios, prune_groups, ratio_grid, seed_params
    from tests.compress.test_allocate import synthetic_map

    space = load_space("resnet20-cifar10")
    model = get_model("resnet20")
    dims = expand(space, list_groups(model), [])
    cost = CostModel.from_model(model, 32)
    free, fixed = prune_groups(dims)
    allocations = seed_allocations(synthetic_map(cost.channels), cost, (0.3, 0.5, 0.7), grid=ratio_grid(space),
                                   groups=free, fixed=fixed,
                                   express=lambda r: params_for_ratios(space, dims, r).achieved)
    seeds = seed_params(space, dims, allocations)
    assert [label for label, _ in seeds] == ["seed-flops-0.3", "seed-flops-0.5", "seed-flops-0.7"]
    for (label, params), a in zip(seeds, allocations):
        applied = policy_from_params(space, dims, params).prune.ratios
        assert applied == a.ratios
        assert cost.fraction(applied) <= a.target and cost.fraction(applied) > a.target - 0.05, label


def test_depth_spaces_measure_depth_and_seeds_may_drop_blocks(tmp_path):
    import dataclasses

    objective = Objective(tiny_space(prune__depth=1), tmp_path / "run")
    smap = objective_map(objective, shared_dir=None)
    assert {s: sorted(row) for s, row in smap.depth.items()} == {"layer1": [1], "layer2": [1], "layer3": [1]}
    assert smap.key != objective_map(Objective(tiny_space(), tmp_path / "run0"), shared_dir=None).key
    free = dataclasses.replace(smap, depth={s: {1: smap.reference} for s in smap.depth})  # drops cost nothing
    seeds, allocations = objective_seeds(objective, free, (0.6,))
    assert [label for label, _ in seeds] == ["seed-flops-0.6"] and allocations[0].drop
    policy = policy_from_params(objective.space, objective.dims, seeds[0][1])
    assert policy.prune.drop == tuple(sorted(allocations[0].drop)) and policy.prune.ratios == allocations[0].ratios
    metrics = objective.evaluate(policy, seed=0)
    assert metrics["flops_ratio"] <= 0.6 + 1e-6
    assert metrics["flops_ratio"] == pytest.approx(allocations[0].fraction, abs=3e-3)


def test_search_seeds_come_once_per_precision(objective, tmp_path):
    from search.sensitivity import search_seeds
    from spaces.space import SeedSettings

    objective_map(objective, shared_dir=None)  # RUN/sensitivity.json: search_seeds reads it
    seeds, info = search_seeds(objective, SeedSettings(targets=(0.6,), precisions=("float", "int8")))
    assert [label for label, _ in seeds] == ["seed-flops-0.6", "seed-flops-0.6-int8"] == info["seeds"]
    floating, int8 = (policy_from_params(objective.space, objective.dims, p) for _, p in seeds)
    assert floating.prune == int8.prune and not floating.quant.active and int8.quant.active
    assert objective.evaluate(int8, seed=0)["flops_ratio"] <= 0.6 + 1e-6
