"""compress.allocate: the analytic cost model against fvcore, and budgeted allocations that meet
their target without wasting it, on the resnet20, resnet56 and resnet50 prune groups."""

from __future__ import annotations

import functools
import itertools
import random

import numpy as np
import pytest

from compress.allocate import CostModel, allocate, allocate_expressible
from compress.measure import count_flops, count_params
from compress.models import get_model, quantizable_layers
from compress.prune import prune
from compress.seed_allocation import seed_allocations
from compress.sensitivity import SensitivityMap
from spaces.policy import LayerBits, PruneSpec

GRID = tuple(round(0.1 * i, 1) for i in range(8))
MEASURED = (0.2, 0.4, 0.5, 0.7)
# model kwargs, round_to and ratio grid of the built-in spaces; resnet50 with the CIFAR stem at
# 32x32 has the same groups and couplings as at 224, and fvcore stays fast
MODELS = {"resnet20": ({}, 1, GRID), "resnet56": ({}, 1, GRID),
          "resnet50": ({"small_input": True, "num_classes": 10}, 8, GRID[:7])}


@functools.cache
def model_and_cost(name: str, metric: str = "flops"):
    kw, round_to, _ = MODELS[name]
    model = get_model(name, **kw).eval()
    return model, CostModel.from_model(model, 32, metric=metric, round_to=round_to)


@functools.cache
def allocation(name: str, target: float, seed: int = 0):
    _, cost = model_and_cost(name)
    smap = synthetic_map(cost.channels, seed=seed)
    return smap, allocate(smap, cost, target, grid=MODELS[name][2])


def synthetic_map(groups, seed: int = 0, stage_scale: float = 3.0) -> SensitivityMap:
    """Accuracy falling with the ratio at a random, group-specific speed (the allocator's input)."""
    rng = random.Random(seed)
    rows = {}
    for g in groups:
        speed = rng.uniform(0.5, 2.0) * (stage_scale if "." not in g else 1.0)
        rows[g] = {0.0: 90.0, **{r: 90.0 - speed * 10 * r ** rng.uniform(1.0, 2.0) for r in MEASURED}}
    return SensitivityMap(reference=90.0, images=1000, prune=rows)


def grid_below(ratio: float, grid=GRID) -> float | None:
    lower = [r for r in grid if r < ratio - 1e-9]
    return lower[-1] if lower else None


def random_ratios(groups, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {g: rng.choice(GRID) for g in groups}


@pytest.mark.parametrize("name", list(MODELS))
def test_cost_model_matches_fvcore_on_pruned_models(name):
    model, cost = model_and_cost(name)
    full = count_flops(model, 32)
    assert cost.total == pytest.approx(full, rel=1e-9), "unpruned: the terms sum to fvcore's count"
    round_to = MODELS[name][1]
    for seed in range(2):
        ratios = random_ratios(cost.channels, seed)
        pruned, _ = prune(model, PruneSpec(ratios=ratios, round_to=round_to), input_size=32)
        assert cost.cost(ratios) == pytest.approx(count_flops(pruned, 32), rel=0.01)


def test_params_cost_model_matches_count_params():
    model, cost = model_and_cost("resnet20", "params")
    assert cost.total == count_params(model)
    ratios = random_ratios(cost.channels, 3)
    pruned, _ = prune(model, PruneSpec(ratios=ratios), input_size=32)
    assert cost.cost(ratios) == pytest.approx(count_params(pruned), rel=1e-9)


def test_block_conv_cost_depends_on_its_stage_and_block_ratios():
    _, cost = model_and_cost("resnet20")
    term = next(t for t in cost.terms if t.module == "layer2.1.conv1")
    assert set(term.groups) == {"layer2", "layer2.1.conv1"}
    both = cost.total - cost.cost({"layer2": 0.5, "layer2.1.conv1": 0.5})
    alone = (cost.total - cost.cost({"layer2": 0.5})) + (cost.total - cost.cost({"layer2.1.conv1": 0.5}))
    assert both < alone, "savings of coupled groups overlap: the cost is not a sum over groups"


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_allocation_meets_its_flops_target_without_wasting_it(name, target):
    _, cost = model_and_cost(name)
    grid = MODELS[name][2]
    smap, a = allocation(name, target)
    assert a.label == f"seed-flops-{target:g}" and a.metric == "flops"
    assert set(a.ratios) <= set(cost.channels) and all(r in grid for r in a.ratios.values())
    assert a.fraction <= target and cost.fraction(a.ratios) == pytest.approx(a.fraction, abs=1e-6)
    # not wastefully below: stepping any pruned group back one grid notch breaks the target
    for g, r in a.ratios.items():
        assert cost.fraction({**a.ratios, g: grid_below(r, grid)}) > target, (g, r)
    assert a.loss == pytest.approx(sum(smap.prune_loss(g, r) for g, r in a.ratios.items()), abs=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_allocated_model_meets_the_target_by_fvcore(name):
    model, cost = model_and_cost(name)
    _, a = allocation(name, 0.5)
    pruned, _ = prune(model, PruneSpec(ratios=a.ratios, round_to=MODELS[name][1]), input_size=32)
    measured = count_flops(pruned, 32) / count_flops(model, 32)
    assert measured == pytest.approx(a.fraction, abs=1e-3) and measured <= 0.5 + 1e-3


def test_allocation_follows_sensitivity_prunes_cheap_stages_keeps_sensitive_one():
    """FastNAS-like: equal FLOPs per stage, but the last stage is sensitive, so it is kept."""
    _, cost = model_and_cost("resnet20")
    smap = synthetic_map(cost.channels, stage_scale=1.0)
    rows = {g: dict(row) for g, row in smap.prune.items()}
    for g in rows:
        if g.startswith("layer3"):
            rows[g] = {r: 90.0 - 60.0 * r for r in rows[g]}
    a = allocate(SensitivityMap(reference=90.0, images=1000, prune=rows), cost, 0.5, grid=GRID)
    assert not any(g.startswith("layer3") for g in a.ratios), a.ratios
    assert a.ratios.get("layer1", 0) > 0 and a.fraction <= 0.5


@pytest.mark.parametrize("name, groups, target", [
    ("resnet20", ["layer1", "layer2", "layer3", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"], 0.6),
    # Bottleneck: the two inner groups of a block share conv2, so they form one compound knob
    ("resnet50", ["layer1", "layer2", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2"], 0.85),
])
def test_allocation_is_the_exhaustive_optimum(name, groups, target):
    _, cost = model_and_cost(name)
    grid = (0.0, 0.2, 0.4, 0.6)
    for seed in range(3):
        smap = synthetic_map(groups, seed=seed)
        a = allocate(smap, cost, target, grid=grid, groups=groups)
        best = min(sum(smap.prune_loss(g, r) for g, r in zip(groups, combo))
                   for combo in itertools.product(grid, repeat=len(groups))
                   if cost.fraction(dict(zip(groups, combo))) <= target)
        assert a.loss == pytest.approx(best, abs=1e-3), (seed, a.loss, best)  # optimal up to rounding


def test_pinned_groups_are_counted_but_never_changed():
    _, cost = model_and_cost("resnet20")
    free = [g for g in cost.channels if not g.startswith("layer1")]
    a = allocate(synthetic_map(cost.channels), cost, 0.5, grid=GRID, groups=free, fixed={"layer1": 0.3})
    assert a.ratios["layer1"] == 0.3 and not any(g.startswith("layer1.") for g in a.ratios)
    assert cost.fraction(a.ratios) <= 0.5


def test_unreachable_target_names_the_minimum():
    _, cost = model_and_cost("resnet20")
    with pytest.raises(ValueError, match="out of reach: the most compressed allocation"):
        allocate(synthetic_map(cost.channels), cost, 0.01, grid=GRID)
    seeds = seed_allocations(synthetic_map(cost.channels), cost, (0.01, 0.3, 0.5, 0.7), grid=GRID)
    assert [s.label for s in seeds] == ["seed-flops-0.3", "seed-flops-0.5", "seed-flops-0.7"]
    assert [s.fraction for s in seeds] == sorted(s.fraction for s in seeds)


def test_bops_allocation_chooses_bits_from_the_quant_rows():
    model, _ = model_and_cost("resnet20")
    units = {"layer1": ("layer1.0.conv1", "layer1.0.conv2"), "layer3": ("layer3.2.conv1", "layer3.2.conv2")}
    cost = CostModel.from_model(model, 32, metric="bops", units=units)
    smap = synthetic_map(cost.channels, stage_scale=20.0)  # pruning is expensive, quantizing cheap
    smap = SensitivityMap(reference=90.0, images=1000, prune=smap.prune,
                          quant={"layer1": {"w8a8": 89.9, "w4a8": 88.0}, "layer3": {"w8a8": 89.8, "w4a8": 80.0}},
                          units=units)
    bits = [LayerBits(8, 8), LayerBits(4, 8)]
    a = allocate(smap, cost, 0.9, grid=GRID, bit_choices=bits)
    assert a.label == "seed-bops-0.9" and a.bits and a.fraction <= 0.9
    assert cost.fraction(a.ratios, a.bits) == pytest.approx(a.fraction, abs=1e-6)
    assert np.isclose(cost.fraction({}, {"layer1": LayerBits(8, 8)}), 1 - (1 - 64 / 1024) * sum(
        t.base for t in cost.terms if t.unit == "layer1") / cost.total)


def test_latency_cost_table_scales_like_flops_per_layer():
    model, _ = model_and_cost("resnet20")
    table = {name: 2.0 if name.startswith("layer3") else 1.0 for name in quantizable_layers(model)}
    cost = CostModel.from_model(model, 32, metric="latency", layer_costs=table)
    assert cost.total == pytest.approx(sum(table.values()))
    # layer3.0.conv1 reads layer2 (kept 1/2) and writes its own group (kept 1/4): 2.0 x 1/8 left
    ratios = {"layer2": 0.5, "layer3.0.conv1": 0.75}
    saved = cost.total - cost.cost(ratios)
    expected = sum(table[t.module] * (1 - np.prod([cost.keep_fraction(g, ratios.get(g, 0.0)) for g in t.groups]))
                   for t in cost.terms)
    assert saved == pytest.approx(expected) and saved > 2.0 * (1 - 1 / 8)
    with pytest.raises(ValueError, match="layer_costs has no cost"):
        CostModel.from_model(model, 32, metric="latency", layer_costs={"conv1": 1.0})


def test_expressible_allocation_meets_the_target_with_the_ratios_the_space_applies():
    _, cost = model_and_cost("resnet20")
    smap = synthetic_map(cost.channels)

    def coarse(ratios):  # a space that can only prune in steps of 0.2, rounding towards less pruning
        return {g: round(0.2 * int(r / 0.2 + 1e-9), 1) for g, r in ratios.items()}

    for target in (0.3, 0.5, 0.7):
        a = allocate_expressible(smap, cost, target, express=coarse, grid=GRID)
        assert a.fraction <= target and cost.fraction(a.ratios) == pytest.approx(a.fraction, abs=1e-6)
        assert all(r in (0.2, 0.4, 0.6) for r in a.ratios.values()) and a.label == f"seed-flops-{target:g}"
        assert a.loss == pytest.approx(sum(smap.prune_loss(g, r) for g, r in a.ratios.items()), abs=1e-3)
        assert a.fraction > target - 0.1, "re-allocated towards the target, not far below it"


def test_expressible_allocation_meets_every_target_in_a_space_that_expresses_in_jumps():
    """resnet20-cifar10's global ratio + offsets express requested ratios in jumps: the expressed cost
    is a step function of the allocation's goal, and a round can land a hair above the target. Every
    target still gets a seed the space applies as is, within the target."""
    from spaces.space import expand, load_space, params_for_ratios, prune_groups, ratio_grid
    from tests.search._analytic_objective import RESNET20_GROUPS, RESNET20_LAYERS

    sp = load_space("resnet20-cifar10")
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    free, fixed = prune_groups(dims)
    _, cost = model_and_cost("resnet20")

    def express(ratios):
        return params_for_ratios(sp, dims, ratios).achieved

    smap = synthetic_map(cost.channels, seed=1)
    for target in (0.3, 0.45, 0.5, 0.65, 0.8):  # 0.45: a round lands a hair above it on this map
        a = allocate_expressible(smap, cost, target, express=express, grid=ratio_grid(sp), groups=free, fixed=fixed)
        assert a.fraction <= target * (1 + 1e-6), target
        assert {g: r for g, r in express(a.ratios).items() if r > 0} == a.ratios  # applied as is
