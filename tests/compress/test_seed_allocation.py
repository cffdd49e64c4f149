"""compress.seed_allocation: blocks dropped together with channel ratios. The cost model without
blocks matches fvcore on the dropped model, free drops are taken, costly ones are not, and on small
problems the result is the exhaustive optimum over drops x ratios."""

from __future__ import annotations

import itertools

import pytest

from compress.allocate import allocate
from compress.measure import count_flops
from compress.prune import drop_blocks, prune
from compress.seed_allocation import MAX_OPTIONS, allocate_depth, drop_options, seed_allocations
from compress.sensitivity import SensitivityMap
from spaces.policy import PruneSpec
from tests.compress.test_allocate import GRID, model_and_cost, random_ratios, synthetic_map

ORDER = {"layer1": ("layer1.2", "layer1.1"), "layer3": ("layer3.2", "layer3.1")}  # resnet20, last block first


def with_depth(smap: SensitivityMap, per_block: float | dict[str, float]) -> SensitivityMap:
    """``smap`` with depth rows losing ``per_block`` points per dropped block (per stage when a dict)."""
    loss = per_block if isinstance(per_block, dict) else dict.fromkeys(ORDER, per_block)
    depth = {s: {k: smap.reference - loss[s] * k for k in range(1, len(o) + 1)} for s, o in ORDER.items()}
    return SensitivityMap(reference=smap.reference, images=smap.images, prune=smap.prune, depth=depth)


@pytest.mark.parametrize("drop", [("layer1.2",), ("layer1.2", "layer1.1", "layer3.2"), ("layer2.2", "layer3.1")])
def test_cost_without_blocks_matches_fvcore_on_the_dropped_model(drop):
    model, cost = model_and_cost("resnet20")
    reduced = cost.without(drop)
    dropped = drop_blocks(model, list(drop))
    assert reduced.total == pytest.approx(count_flops(dropped, 32), rel=2e-3), "BN and conv terms of the blocks gone"
    assert not any(g.startswith(drop) for g in reduced.channels) and cost.without(()) is cost
    ratios = {g: r for g, r in random_ratios(reduced.channels, 0).items()}
    pruned, _ = prune(dropped, PruneSpec(ratios=ratios), input_size=32)
    assert reduced.cost(ratios) == pytest.approx(count_flops(pruned, 32), rel=0.01)


def test_drop_options_are_every_prefix_per_stage_least_loss_first():
    smap = with_depth(synthetic_map(model_and_cost("resnet20")[1].channels), {"layer1": 1.0, "layer3": 3.0})
    options = drop_options(smap, ORDER)
    assert len(options) == 9 and options[0] == (0.0, ())
    assert (4.0, ("layer1.2", "layer3.2")) in options and (8.0, ORDER["layer1"] + ORDER["layer3"]) == options[-1]
    assert [o[0] for o in options] == sorted(o[0] for o in options)
    wide = {f"s{i}": tuple(f"s{i}.{j}" for j in range(9)) for i in range(5)}
    many = SensitivityMap(reference=90.0, images=1, prune={}, depth={s: {k: 90.0 for k in range(1, 10)} for s in wide})
    with pytest.raises(ValueError, match=f"at most {MAX_OPTIONS}"):
        drop_options(many, wide)


def test_free_drops_are_taken_and_costly_ones_are_not():
    _, cost = model_and_cost("resnet20")
    base = synthetic_map(cost.channels)
    plain = allocate(base, cost, 0.5, grid=GRID)
    free = allocate_depth(with_depth(base, 0.0), cost, 0.5, depth=ORDER, grid=GRID)
    assert set(free.drop) == set(ORDER["layer1"] + ORDER["layer3"]) and free.loss < plain.loss
    assert free.fraction <= 0.5 and cost.without(free.drop).cost(free.ratios) / cost.total == pytest.approx(
        free.fraction, abs=1e-6)
    costly = allocate_depth(with_depth(base, 100.0), cost, 0.5, depth=ORDER, grid=GRID)
    assert costly.drop == () and (costly.ratios, costly.loss) == (plain.ratios, plain.loss)


@pytest.mark.parametrize("seed", range(3))
def test_depth_allocation_is_the_exhaustive_optimum(seed):
    _, cost = model_and_cost("resnet20")
    groups = ["layer1", "layer2", "layer3", "layer1.0.conv1", "layer2.1.conv1", "layer3.1.conv1"]
    grid = (0.0, 0.2, 0.4, 0.6)
    smap = with_depth(synthetic_map(groups, seed=seed), {"layer1": 0.8 + seed, "layer3": 2.5 - seed})
    a = allocate_depth(smap, cost, 0.55, depth=ORDER, grid=grid, groups=groups)
    best = float("inf")
    for loss, drop in drop_options(smap, ORDER):
        reduced = cost.without(drop)
        free = [g for g in groups if g in reduced.channels]
        for combo in itertools.product(grid, repeat=len(free)):
            ratios = dict(zip(free, combo))
            if reduced.cost(ratios) <= 0.55 * cost.total:
                best = min(best, loss + sum(smap.prune_loss(g, r) for g, r in ratios.items()))
    assert a.loss == pytest.approx(best, abs=1e-3) and a.fraction <= 0.55


def test_seeds_carry_their_drop_and_express_sees_it():
    _, cost = model_and_cost("resnet20")
    smap = with_depth(synthetic_map(cost.channels), 0.5)
    seen = []

    def express(ratios, drop):
        seen.append(drop)
        assert not any(g.startswith(drop) for g in ratios) if drop else True
        return ratios

    seeds = seed_allocations(smap, cost, (0.3, 0.5), grid=GRID, depth=ORDER, express=express)
    assert [s.label for s in seeds] == ["seed-flops-0.3", "seed-flops-0.5"] and any(s.drop for s in seeds)
    assert {s.drop for s in seeds} <= set(seen)
    assert all(s.fraction <= s.target for s in seeds)
