"""spaces: seeds as params (params_for_ratios inverts policy_from_params for prune dims), and the
built-in CIFAR spaces can express a FastNAS-like allocation (early stages pruned hard, last kept)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from spaces.policy import LayerBits
from spaces.space import (
    baseline_params,
    depth_orders,
    depth_params,
    expand,
    int8_params,
    load_space,
    params_for_ratios,
    policy_from_params,
    prune_groups,
    quant_units,
    ratio_grid,
    seed_params,
    seed_variants,
    space_from_dict,
)
from tests.search._analytic_objective import RESNET20_GROUPS, RESNET20_LAYERS


@dataclass
class Seed:
    label: str
    ratios: dict[str, float]
    bits: dict[str, LayerBits] = field(default_factory=dict)
    drop: tuple[str, ...] = ()


def space(**prune):
    base = load_space("resnet20-cifar10").to_dict()
    base["prune"] = {**base["prune"], **prune}
    return space_from_dict(base)


def random_params(dims, rng):
    out = {}
    for d in dims:
        values = list(d.choices) if d.kind == "categorical" else \
            [d.snap(d.low + i * (d.step or 0.05)) for i in range(int(round((d.high - d.low) / (d.step or 0.05))) + 1)]
        out[d.name] = rng.choice(values)
    return out


@pytest.mark.parametrize("prune", [
    {"parametrization": "independent", "granularity": "both"},
    {"parametrization": "global", "granularity": "block"},
    {"parametrization": "global", "granularity": "both", "offset": {"low": -0.4, "high": 0.4, "step": 0.1}},
])
def test_params_for_ratios_round_trips_policies_of_the_space(prune):
    sp = space(**prune)
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    rng = random.Random(0)
    for _ in range(20):
        ratios = policy_from_params(sp, dims, random_params(dims, rng)).prune.ratios
        fit = params_for_ratios(sp, dims, ratios)
        assert fit.residual == 0 and fit.achieved == ratios
        assert policy_from_params(sp, dims, fit.params).prune.ratios == ratios


def test_independent_grid_ratios_are_exact_and_others_snap():
    sp = space(parametrization="independent", granularity="both")
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    fit = params_for_ratios(sp, dims, {"layer1": 0.7, "layer3.2.conv1": 0.3})
    assert fit.residual == 0 and fit.achieved == {"layer1": 0.7, "layer3.2.conv1": 0.3}
    off_grid = params_for_ratios(sp, dims, {"layer1": 0.33})
    assert off_grid.achieved == {"layer1": 0.3} and off_grid.residual == pytest.approx(0.03)


def test_narrow_offsets_report_what_they_cannot_express():
    # global ratio, block groups, offsets +-0.2 (the CIFAR spaces before issue 8): a 0.7 vs 0.0 spread is out of reach
    sp = space(granularity="block", offset={"low": -0.2, "high": 0.2, "step": 0.1})
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    want = {f"layer1.{b}.conv1": 0.7 for b in range(3)}
    fit = params_for_ratios(sp, dims, want)
    assert fit.residual >= 0.2
    achieved = policy_from_params(sp, dims, fit.params).prune.ratios
    assert max(abs(achieved.get(g, 0) - want.get(g, 0)) for g in RESNET20_GROUPS) == pytest.approx(fit.residual)


@pytest.mark.parametrize("name", ["resnet20-cifar10", "resnet56-cifar10"])
def test_builtin_cifar_spaces_express_a_fastnas_like_allocation(name):
    """Early stages (residual width and blocks) pruned hard, the last stage kept."""
    from compress.models import get_model
    from compress.prune import list_groups

    sp = load_space(name)
    groups = list_groups(get_model(sp.model.name))
    dims = expand(sp, groups, [])
    free, _ = prune_groups(dims)
    assert {"layer1", "layer2", "layer3"} <= set(free), "stage (residual) widths must be searchable"
    top = max(ratio_grid(sp))
    want = {g.name: (top if g.name.startswith(("layer1", "layer2")) else 0.0) for g in groups}
    fit = params_for_ratios(sp, dims, want)
    assert fit.residual <= 0.1 + 1e-9, fit.achieved  # within one grid step
    assert max(fit.achieved.get(g, 0.0) for g in want if g.startswith("layer3")) <= 0.1 + 1e-9
    assert min(fit.achieved[g] for g in want if want[g] > 0) >= top - 0.1 - 1e-9
    # the space as it was (block groups, offsets +-0.2) cannot: no residual width, spread <= 0.4
    old = space_from_dict({**sp.to_dict(), "prune": {**sp.to_dict()["prune"], "granularity": "block",
                                                      "offset": {"low": -0.2, "high": 0.2, "step": 0.1}}})
    assert params_for_ratios(old, expand(old, groups, []), want).residual >= 0.3


def test_seed_params_are_labelled_valid_and_deduplicated():
    sp = space(granularity="both", offset={"low": -0.4, "high": 0.4, "step": 0.1})
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    seeds = [Seed("seed-flops-0.3", {"layer1": 0.6, "layer2": 0.5, "layer1.0.conv1": 0.6}),
             Seed("seed-flops-0.5", {"layer1": 0.3}, {"layer2": LayerBits(4, 8)}),
             Seed("seed-flops-0.5-again", {"layer1": 0.3}, {"layer2": LayerBits(4, 8)}),
             Seed("seed-nothing", {})]  # equals the 'original' baseline
    out = seed_params(sp, dims, seeds)
    assert [label for label, _ in out] == ["seed-flops-0.3", "seed-flops-0.5"]
    assert all(params not in [p for _, p in baseline_params(sp, dims)] for _, params in out)
    first = policy_from_params(sp, dims, out[0][1])
    assert first.prune.ratios["layer1"] == 0.6 and not first.quant.active
    assert first.distill.alpha == 0.5  # the space's fixed KD, as every candidate has it
    second = policy_from_params(sp, dims, out[1][1])
    assert second.quant.layers["layer2.0.conv1"] == LayerBits(4, 8) and "layer3.0.conv1" not in second.quant.layers


@pytest.mark.parametrize("granularity", ["both", "block"])
def test_seeds_that_drop_blocks_set_the_depth_dims(granularity):
    sp = space(granularity=granularity, depth=2)
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    assert depth_orders(dims) == {s: (f"{s}.2", f"{s}.1") for s in ("layer1", "layer2", "layer3")}
    assert depth_params(dims, ("layer1.2", "layer3.2", "layer3.1")) == {
        "depth/layer1": 1, "depth/layer2": 0, "depth/layer3": 2}
    want = {"layer1.0.conv1": 0.3, "layer2.0.conv1": 0.4, "layer3.0.conv1": 0.3, "layer3.1.conv1": 0.6}
    fit = params_for_ratios(sp, dims, want, drop=("layer3.2", "layer3.1"))
    policy = policy_from_params(sp, dims, fit.params)
    assert policy.prune.drop == ("layer3.1", "layer3.2") and "layer3.1.conv1" not in fit.achieved
    assert fit.residual <= 0.1 + 1e-9, "the dropped block's group does not distort the fit of the others"
    out = seed_params(sp, dims, [Seed("seed-flops-0.5", want, drop=("layer1.2",)), Seed("same-no-drop", want)])
    assert [policy_from_params(sp, dims, p).prune.drop for _, p in out] == [("layer1.2",), ()]
    with pytest.raises(ValueError, match=r"depth/layer1 drops only the last 0..2"):
        depth_params(dims, ("layer1.1",))  # not a tail of the stage
    with pytest.raises(ValueError, match="no depth dim drops"):
        depth_params(dims, ("layer2.0",))


def test_grid_groups_and_units_of_a_space():
    sp = space(granularity="both", pin={"layer1": 0.0})
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    assert ratio_grid(sp) == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    free, fixed = prune_groups(dims)
    assert fixed == {g: 0.0 for g in RESNET20_GROUPS if g.startswith("layer1")}
    assert set(free) == {g for g in RESNET20_GROUPS if not g.startswith("layer1")}
    units = quant_units(dims)
    assert list(units) == ["conv1", "layer1", "layer2", "layer3", "linear"]
    assert units["layer2"] == tuple(f"layer2.{b}.conv{c}" for b in range(3) for c in (1, 2))


def test_int8_seed_variants_quantize_every_searched_layer_and_keep_the_structure():
    sp = space(granularity="both", depth=2)
    dims = expand(sp, RESNET20_GROUPS, RESNET20_LAYERS)
    seeds = seed_params(sp, dims, [Seed("seed-flops-0.5", {"layer1": 0.4, "layer2.0.conv1": 0.3}, drop=("layer3.2",)),
                                   Seed("seed-flops-0.7", {"layer1": 0.2})])
    out = seed_variants(dims, seeds, ("float", "int8"))
    assert [label for label, _ in out] == ["seed-flops-0.5", "seed-flops-0.5-int8", "seed-flops-0.7",
                                           "seed-flops-0.7-int8"]
    assert out[1][1] == int8_params(dims, out[0][1])
    floating, int8 = (policy_from_params(sp, dims, p) for _, p in out[:2])
    assert floating.prune == int8.prune and not floating.quant.active
    assert int8.quant.active and set(int8.quant.layers) == {n for n in RESNET20_LAYERS if not n.startswith("layer3.2.")}
    assert {(b.w, b.a) for b in int8.quant.layers.values()} == {(8, 8)}
    only = seed_variants(dims, seeds, ("int8",))
    assert [label for label, _ in only] == ["seed-flops-0.5-int8", "seed-flops-0.7-int8"]
    no_bits = space_from_dict({**sp.to_dict(), "quant": {"backend": "none"}})
    plain = expand(no_bits, RESNET20_GROUPS, RESNET20_LAYERS)
    assert [label for label, _ in seed_variants(plain, seed_params(no_bits, plain, [Seed("s", {"layer1": 0.4})]),
                                                ("float", "int8"))] == ["s"]


@pytest.mark.parametrize("precisions, message", [
    (["float", "int4"], 'search.seeds.precisions[1] = "int4": allowed float, int8'),
    (["float", "float"], "search.seeds.precisions = ['float', 'float']: each precision at most once"),
    ([], "search.seeds.precisions = []: give at least one of float, int8"),
])
def test_seed_precisions_are_validated(precisions, message):
    import re

    from spaces.space import SpaceError

    d = load_space("resnet20-cifar10").to_dict()
    d["search"]["seeds"] = {**d["search"]["seeds"], "precisions": precisions}
    with pytest.raises(SpaceError, match=re.escape(message)):
        space_from_dict(d)
    d["search"]["seeds"]["precisions"] = ["int8"]
    d["quant"] = {**d["quant"], "weight_bits": [4, 32]}
    with pytest.raises(SpaceError, match=re.escape('precisions[0] = "int8": needs 8 in quant.weight_bits')):
        space_from_dict(d)
