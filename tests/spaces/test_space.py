"""Search-space format: loading, validation errors, dimension generation, policies, baselines."""

from __future__ import annotations

import dataclasses
import functools
import math
import textwrap
from pathlib import Path

import optuna
import pytest

from compress.models import MODELS, get_model, is_cifar, quantizable_layers
from compress.prune import list_groups
from spaces.policy import Policy
from spaces.space import (
    SearchSpace,
    SpaceError,
    baseline_params,
    expand,
    list_spaces,
    load_space,
    parse_constraint,
    policy_from_params,
    space_from_dict,
    suggest_policy,
    uniform_params,
)

BUILTINS = ("quickstart", "resnet20-cifar10", "resnet56-cifar10", "resnet18-imagenet", "resnet50-imagenet")


@functools.cache
def model_info(name: str) -> tuple[dict[str, int], tuple[str, ...], dict[str, str]]:
    """Real prune groups (name -> channels), quantizable layers and group kinds of a registered model."""
    model = get_model(name)
    groups = list_groups(model, input_size=32)
    return ({g.name: g.channels for g in groups}, tuple(quantizable_layers(model)),
            {g.name: g.kind for g in groups})


def space_dict(model: str = "resnet20", **sections) -> dict:
    d = {
        "name": "t",
        "model": {"name": model, "num_classes": 10, "input_size": 32},
        "data": {"dataset": "digits"},
        "prune": {"granularity": "block", "ratio": {"low": 0.0, "high": 0.5, "step": 0.1}},
        "quant": {"backend": "x86", "weight_bits": [4, 8, 32], "act_bits": [8, 32], "share": "stage"},
        "distill": {"alpha": {"low": 0.0, "high": 0.9}, "temperature": 4.0},
        "objectives": ["accuracy", "flops"],
    }
    d.update(sections)
    return d


def write_space(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(textwrap.dedent(text))
    return p


# ----- loading and validation ----------------------------------------------------------


def test_builtins_listed_with_descriptions():
    spaces = list_spaces()
    assert set(BUILTINS) <= set(spaces)
    assert all(spaces[n] for n in BUILTINS), spaces


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_expands_and_round_trips(name):
    space = load_space(name)
    assert space.name == name
    groups, layers, _ = model_info(space.model.name)
    dims = expand(space, groups, layers)
    free = [d for d in dims if not d.fixed]
    assert any(d.name.startswith("prune/") for d in free)
    assert len({d.name for d in dims}) == len(dims)
    again = space_from_dict(space.to_dict())
    assert again == space


def test_overrides_apply_and_are_typed():
    space = load_space("resnet20-cifar10", ["search.trials=7", "data.data_dir=/tmp/x", "prune.granularity=stage"])
    assert space.search.trials == 7 and space.data.data_dir == "/tmp/x" and space.prune.granularity == "stage"
    with pytest.raises(SpaceError, match=r"search\.trials.*expected an integer"):
        load_space("resnet20-cifar10", ["search.trials=many"])


def test_unknown_space_name_lists_builtins():
    with pytest.raises(SpaceError) as exc:
        load_space("no-such-space")
    assert "quickstart" in str(exc.value) and "no-such-space" in str(exc.value)


def test_unknown_key_names_file_field_and_allowed(tmp_path):
    p = write_space(tmp_path, """
        name: x
        model: {name: resnet20}
        data: {dataset: digits}
        prune: {granularity: block, ratios: 0.5}
    """)
    with pytest.raises(SpaceError) as exc:
        load_space(p)
    text = str(exc.value)
    assert str(p) in text and "prune.ratios" in text and "unknown field" in text and "granularity" in text


@pytest.mark.parametrize("section,value,field,allowed", [
    ("search", {"trials": "ten"}, "search.trials", "integer"),
    ("prune", {"granularity": "channel"}, "prune.granularity", "block"),
    ("prune", {"ratio": {"low": 0.0, "high": 1.2}}, "prune.ratio", "ratio < 1"),
    ("quant", {"backend": "x86", "weight_bits": [8, 9]}, "quant.weight_bits[1]", "allowed 2-8"),
    ("quant", {"backend": "x86", "share": "block"}, "quant.share", "stage"),
    ("distill", {"alpha": {"low": 0.5, "high": 0.2}}, "distill.alpha.high", "must be >= low"),
    ("objectives", ["accuracy", "speed"], "objectives[1]", "latency"),
    ("constraints", ["accuracy_drop < = 1"], "constraints[0]", "METRIC OP NUMBER"),
    ("constraints", ["speedup >= 2"], "constraints[0]", "allowed: accuracy"),
    ("prune", {"parametrization": "layerwise"}, "prune.parametrization", "global"),
    ("prune", {"parametrization": "global", "offset": {"low": 0.1, "high": 0.2}}, "prune.offset", "must have 0"),
    ("prune", {"parametrization": "global", "offset": {"low": -0.15, "high": 0.2, "step": 0.1}}, "prune.offset",
     "must have 0"),
    ("prune", {"parametrization": "global", "ratio": 0.3}, "prune.parametrization", "needs a ratio range"),
])
def test_bad_values_are_clear_errors(tmp_path, section, value, field, allowed):
    import yaml

    d = space_dict(**{section: value})
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(SpaceError) as exc:
        load_space(p)
    text = str(exc.value)
    assert str(p) in text and field in text and allowed in text, text


def test_constraint_parsing_and_violation():
    c = parse_constraint("accuracy_drop <= 1.5")
    assert (c.metric, c.op, c.bound) == ("accuracy_drop", "<=", 1.5)
    assert c.violation({"accuracy_drop": 1.0}) == pytest.approx(-0.5)
    assert c.violation({"accuracy_drop": 2.0}) == pytest.approx(0.5)
    assert c.violation({}) == math.inf
    g = parse_constraint("accuracy>=90")
    assert g.violation({"accuracy": 91.0}) == pytest.approx(-1.0)
    assert parse_constraint("flops_ratio < 0.5").violation({"flops_ratio": 0.5}) > 0


def test_directions_and_latency_need():
    space = space_from_dict(space_dict(objectives=["accuracy", "flops", "latency"]))
    assert space.directions == ["maximize", "minimize", "minimize"]
    assert space.needs_latency
    assert not space_from_dict(space_dict()).needs_latency
    assert space_from_dict(space_dict(constraints=["latency_ratio <= 0.8"])).needs_latency


def test_checkpoint_path_resolves_to_repo_root():
    space = load_space("resnet20-cifar10")
    p = space.resolve_path(space.model.checkpoint)
    assert p.is_absolute() and p.name == "resnet20-12fca82f.th" and p.parent.name == "cifar10-resnet"


# ----- dimension generation ------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS.names())
@pytest.mark.parametrize("granularity", ["block", "stage", "both"])
@pytest.mark.parametrize("share", ["layer", "stage", "model"])
def test_expand_every_model(model, granularity, share):
    groups, layers, kinds = model_info(model)
    space = space_from_dict(space_dict(model, prune={"granularity": granularity, "ratio": {"low": 0.0, "high": 0.5,
                                                                                            "step": 0.1}},
                                       quant={"backend": "x86", "weight_bits": [4, 8, 32], "act_bits": [8, 32],
                                              "share": share}))
    dims = expand(space, groups, layers)
    prune = {d.name[len("prune/"):] for d in dims if d.name.startswith("prune/")}
    wanted = {"block": {"block"}, "stage": {"stage"}, "both": {"block", "stage"}}[granularity]
    assert prune == {g for g, k in kinds.items() if k in wanted}
    wdims = [d for d in dims if d.name.startswith("wbits/")]
    adims = [d for d in dims if d.name.startswith("abits/")]
    covered = [t for d in wdims for t in d.targets]
    assert sorted(covered) == sorted(layers)  # every quantizable layer exactly once
    assert len(adims) == len(wdims)
    if share == "model":
        assert [d.name for d in wdims] == ["wbits/model"]
    elif share == "stage":
        stages = {d.name.split("/")[1] for d in wdims}
        assert {"layer1", "layer2", "layer3"} <= stages and "conv1" in stages
        assert ("fc" if not is_cifar(model) else "linear") in stages
    else:
        assert len(wdims) == len(layers)
    assert [d.name for d in dims if d.name.startswith("kd/")] == ["kd/alpha"]

    # a suggested policy validates against the model
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    policy = suggest_policy(space, dims, trial)
    policy.check_against(groups, layers, model_name=model)
    assert set(policy.prune.ratios) <= prune
    assert trial.params.keys() == {d.name for d in dims}


@pytest.mark.parametrize("model", MODELS.names())
@pytest.mark.parametrize("granularity", ["block", "stage", "both"])
def test_global_parametrization_every_model(model, granularity):
    """prune/global + one prune/offset/<group> per free group; ratio = global + offset, clipped and snapped."""
    groups, layers, kinds = model_info(model)
    space = space_from_dict(space_dict(model, prune={
        "granularity": granularity, "ratio": {"low": 0.0, "high": 0.5, "step": 0.1},
        "parametrization": "global", "offset": {"low": -0.2, "high": 0.2, "step": 0.1}}))
    dims = expand(space, groups, layers)
    wanted = {"block": {"block"}, "stage": {"stage"}, "both": {"block", "stage"}}[granularity]
    free = [g for g, k in kinds.items() if k in wanted]
    by_name = {d.name: d for d in dims}
    assert by_name["prune/global"].describe() == "[0, 0.5] step 0.1"
    assert set(by_name["prune/global"].targets) == set(free)
    assert {n[len("prune/offset/"):] for n in by_name if n.startswith("prune/offset/")} == set(free)
    assert not [n for n in by_name if n.startswith("prune/") and n.count("/") == 1 and n != "prune/global"]
    # offsets of 0 are uniform pruning: the uniform baselines equal the independent space's
    indep = space_from_dict(space_dict(model, prune={"granularity": granularity,
                                                      "ratio": {"low": 0.0, "high": 0.5, "step": 0.1}}))
    idims = expand(indep, groups, layers)
    for (label, params), (ilabel, iparams) in zip(baseline_params(space, dims), baseline_params(indep, idims)):
        assert label == ilabel
        assert policy_from_params(space, dims, params).prune == policy_from_params(indep, idims, iparams).prune
    # global + offset; offsets at full size where the range leaves room (0.2 <= global <= 0.3) ...
    params = dict(baseline_params(space, dims))["original"]
    first, last = free[0], free[-1]
    params.update({"prune/global": 0.3, f"prune/offset/{first}": 0.2, f"prune/offset/{last}": -0.2})
    ratios = policy_from_params(space, dims, params).prune.ratios
    assert ratios[first] == 0.5 and ratios[last] == pytest.approx(0.1)
    assert all(ratios[g] == pytest.approx(0.3) for g in free if g not in (first, last))
    # ... scaled down near the ends (global 0.4 of [0, 0.5]: half size), so nothing is clipped
    params["prune/global"] = 0.4
    ratios = policy_from_params(space, dims, params).prune.ratios
    assert ratios[first] == 0.5 and ratios[last] == pytest.approx(0.3)
    # the ends are exact: no pruning at global 0, uniform 0.5 at global 0.5, whatever the offsets
    params["prune/global"] = 0.0
    assert policy_from_params(space, dims, params).prune.ratios == {}
    params["prune/global"] = 0.5
    assert set(policy_from_params(space, dims, params).prune.ratios.values()) == {0.5}
    # what optuna suggests validates against the model
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    suggest_policy(space, dims, trial).check_against(groups, layers, model_name=model)


def test_global_parametrization_keeps_pins():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict(prune={"granularity": "block", "ratio": {"low": 0.0, "high": 0.5, "step": 0.1},
                                              "parametrization": "global", "pin": {"layer1": 0.0}}))
    dims = expand(space, groups, layers)
    names = [d.name for d in dims]
    assert "prune/layer1.0.conv1" in names and "prune/offset/layer1.0.conv1" not in names
    assert "layer1.0.conv1" not in {t for d in dims if d.name == "prune/global" for t in d.targets}
    params = dict(baseline_params(space, dims))["uniform-prune-0.5"]
    ratios = policy_from_params(space, dims, params).prune.ratios
    assert not any(g.startswith("layer1.") for g in ratios) and ratios["layer3.2.conv1"] == 0.5


def test_pins_fix_groups_and_layers():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict(
        prune={"granularity": "block", "ratio": {"low": 0.0, "high": 0.5, "step": 0.1}, "pin": {"layer1": 0.0,
                                                                                                "layer3.2.conv1": 0.3}},
        quant={"backend": "x86", "weight_bits": [4, 8], "act_bits": [8], "share": "stage",
               "pin": {"conv1": {"w": 8, "a": 8}, "linear": {"w": 32, "a": 32}}}))
    dims = {d.name: d for d in expand(space, groups, layers)}
    for name in ("prune/layer1.0.conv1", "prune/layer1.2.conv1"):
        assert dims[name].fixed and dims[name].choices == (0.0,)
    assert dims["prune/layer1"].choices == (0.0,)  # exact stage name pinned too
    assert dims["prune/layer3.2.conv1"].choices == (0.3,)
    assert not dims["prune/layer2.0.conv1"].fixed
    assert dims["wbits/conv1"].choices == (8,) and dims["wbits/linear"].choices == (32,)
    assert "conv1" not in dims["wbits/layer1"].targets
    params = {n: d.choices[0] if d.kind == "categorical" else d.high for n, d in dims.items()}
    policy = policy_from_params(space, list(dims.values()), params)
    assert policy.prune.ratios["layer3.2.conv1"] == 0.3 and "layer1.0.conv1" not in policy.prune.ratios
    assert policy.quant.layers["conv1"].w == 8 and "linear" not in policy.quant.layers
    assert policy.quant.layers["layer2.0.conv1"].w == 4


@pytest.mark.parametrize("section,pin,word", [
    ("prune", {"layer9": 0.5}, "prune group"),
    ("quant", {"head": {"w": 8, "a": 8}}, "quantizable layer"),
])
def test_unknown_pin_lists_known_names(section, pin, word):
    groups, layers, _ = model_info("resnet20")
    d = space_dict()
    d[section] = {**d[section], "pin": pin}
    space = space_from_dict(d)
    with pytest.raises(SpaceError) as exc:
        expand(space, groups, layers)
    text = str(exc.value)
    assert next(iter(pin)) in text and word in text and "layer2.0.conv1" in text


def test_follow_act_bits_and_criterion_choice():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict(
        prune={"granularity": "stage", "ratio": 0.25, "criterion": ["l1", "taylor"]},
        quant={"backend": "x86", "weight_bits": [8, 32], "act_bits": "follow", "share": "model"},
        distill={"alpha": 0.5, "temperature": {"low": 1.0, "high": 8.0, "log": True}}))
    dims = {d.name: d for d in expand(space, groups, layers)}
    assert "abits/model" not in dims and dims["wbits/model"].choices == (8, 32)
    assert dims["prune/criterion"].choices == ("l1", "taylor")
    assert dims["prune/layer2"].fixed  # fixed ratio -> single value
    assert dims["kd/temperature"].log
    params = {"prune/criterion": "taylor", "wbits/model": 8, "kd/temperature": 2.0,
              **{n: 0.25 for n in dims if n.startswith("prune/layer")}}
    policy = policy_from_params(space, list(dims.values()), params)
    assert policy.prune.criterion == "taylor" and policy.prune.ratios == {g: 0.25 for g in ("layer1", "layer2",
                                                                                            "layer3")}
    assert {(b.w, b.a) for b in policy.quant.layers.values()} == {(8, 8)}
    assert set(policy.quant.layers) == set(layers)
    assert policy.distill.alpha == 0.5 and policy.distill.temperature == 2.0
    params["wbits/model"] = 32
    assert not policy_from_params(space, list(dims.values()), params).quant.active


def test_policy_from_params_rejects_missing_unknown_and_out_of_range():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict())
    dims = expand(space, groups, layers)
    params = dict(baseline_params(space, dims)[0][1])
    params.pop("kd/alpha")
    params["prune/nothing"] = 0.1
    params["prune/layer2.0.conv1"] = 0.55
    with pytest.raises(SpaceError) as exc:
        policy_from_params(space, dims, params)
    text = str(exc.value)
    assert "kd/alpha" in text and "prune/nothing" in text and "prune/layer2.0.conv1" in text and "0.55" in text


def test_policy_carries_budget_finetune_and_provenance():
    groups, layers, _ = model_info("resnet20")
    space = load_space("quickstart")
    dims = expand(space, groups, layers)
    label, params = baseline_params(space, dims)[1]
    policy = policy_from_params(space, dims, params)
    assert policy.finetune == space.budget.finetune
    assert policy.provenance["space"] == "quickstart" and policy.provenance["params"] == params
    assert Policy.from_dict(policy.to_dict()) == policy


# ----- baselines -----------------------------------------------------------------------


def test_baselines_snap_to_grid_and_are_valid():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict())  # ratio grid 0..0.5 step 0.1, bits {4, 8, 32}
    dims = expand(space, groups, layers)
    base = dict(baseline_params(space, dims))
    assert list(base) == ["original", "uniform-prune-0.3", "uniform-prune-0.5", "uniform-int8"]  # labels: applied
    for params in base.values():
        assert set(params) == {d.name for d in dims}
        policy = policy_from_params(space, dims, params)
        policy.check_against(groups, layers)
        assert policy.distill.alpha == 0.45  # a searched kd/alpha (0-0.9): its midpoint, for every baseline
    original = policy_from_params(space, dims, base["original"])
    assert not original.prune.active and not original.quant.active
    quarter = policy_from_params(space, dims, base["uniform-prune-0.3"])
    assert set(quarter.prune.ratios.values()) == {0.3}  # 0.25 snapped to the 0.1 grid
    half = policy_from_params(space, dims, base["uniform-prune-0.5"])
    assert set(half.prune.ratios.values()) == {0.5} and len(half.prune.ratios) == 9
    int8 = policy_from_params(space, dims, base["uniform-int8"])
    assert not int8.prune.active and {(b.w, b.a) for b in int8.quant.layers.values()} == {(8, 8)}


@pytest.mark.parametrize("name", ["quickstart", "resnet20-cifar10", "resnet56-cifar10"])
def test_builtin_baselines_are_distilled_like_every_candidate(name):
    """Like for like: the built-in spaces fix KD, so baselines and searched points share one recipe."""
    groups, layers, _ = model_info("resnet20")
    space = load_space(name)
    dims = expand(space, groups, layers)
    assert not [d.name for d in dims if d.name.startswith("kd/") and not d.fixed]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    searched = suggest_policy(space, dims, trial).distill
    assert searched.alpha > 0
    for _, params in baseline_params(space, dims):
        assert policy_from_params(space, dims, params).distill == searched


def test_baselines_only_for_existing_dims():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict(prune={"granularity": "none"}, quant={"backend": "none"}))
    dims = expand(space, groups, layers)
    assert [d.name for d in dims] == ["kd/alpha"]
    assert [label for label, _ in baseline_params(space, dims)] == ["original"]


def test_enqueued_baselines_are_replayed_by_optuna():
    groups, layers, _ = model_info("resnet20")
    space = load_space("quickstart")
    dims = expand(space, groups, layers)
    study = optuna.create_study(directions=space.directions)
    base = baseline_params(space, dims)
    for _, params in base:
        study.enqueue_trial(params)
    for _, params in base:
        trial = study.ask()
        policy = suggest_policy(space, dims, trial)
        assert policy == policy_from_params(space, dims, params)
        study.tell(trial, [0.0] * len(space.directions))


def test_search_space_is_frozen():
    space = load_space("quickstart")
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.name = "other"  # type: ignore[misc]
    assert isinstance(space, SearchSpace)


def test_x86_couples_weight_and_activation_bits():
    groups, layers, _ = model_info("resnet20")
    space = space_from_dict(space_dict(quant={"backend": "x86", "weight_bits": [4, 32], "act_bits": [8, 32],
                                              "share": "model"}))
    dims = expand(space, groups, layers)
    base = dict(baseline_params(space, dims))["original"]
    mixed = {**base, "wbits/model": 4, "abits/model": 32}  # int weights, float activations
    policy = policy_from_params(space, dims, mixed)
    assert {(b.w, b.a) for b in policy.quant.layers.values()} == {(4, 8)}
    floaty = {**base, "wbits/model": 32, "abits/model": 8}  # float weights: the layer stays float
    assert not policy_from_params(space, dims, floaty).quant.active
    from compress.quantize import check_bits

    check_bits(policy.quant)  # what the x86 backend accepts


def test_budget_final_schedule():
    space = load_space("resnet20-cifar10")
    assert space.budget.final.epochs and space.budget.final.steps is None
    assert space.budget.finetune.steps and space.budget.finetune.epochs is None


def test_cli_spaces_and_space_show(capsys):
    from search.cli import main

    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BUILTINS)
    assert main(["space", "show", "resnet20-cifar10", "--set", "prune.granularity=stage", "--format", "json"]) == 0
    shown = __import__("json").loads(capsys.readouterr().out)
    assert shown["config"]["prune"]["granularity"] == "stage"
    names = {d["name"] for d in shown["dims"]}
    assert {"prune/global", "prune/offset/layer1", "prune/offset/layer2", "prune/offset/layer3",
            "wbits/layer2"} <= names
    assert not any(n.startswith("kd/") for n in names)  # KD is fixed during the proxy in the built-in spaces
    assert main(["space", "show", "quickstart"]) == 0
    text = capsys.readouterr().out
    assert "prune/offset/layer3.2.conv1" in text and "wbits/model" in text and "{8, 32}" in text
    assert main(["space", "show", "resnet56-cifar10"]) == 0
    assert "8 blocks, the last first: layer3.1 .. layer3.8" in capsys.readouterr().out
    assert main(["space", "show", "quickstart", "--set", "prune.pin.layer9=0.1"]) == 2
    assert main(["space", "show", "no-such-space"]) == 2


# ----- depth (prune.depth -> depth/<stage> dims -> prune.drop) ------------------------------------------
@pytest.mark.parametrize("model", ["resnet20", "resnet56", "resnet18", "resnet50"])
def test_depth_dims_drop_the_last_blocks_of_each_stage(model):
    groups, layers, _ = model_info(model)
    space = space_from_dict(space_dict(model, prune={"granularity": "both", "depth": 2,
                                                     "ratio": {"low": 0.0, "high": 0.5, "step": 0.1}}))
    dims = expand(space, groups, layers)
    depth = {d.name: d for d in dims if d.name.startswith("depth/")}
    stages = sorted({g.split(".")[0] for g in groups if g.startswith("layer")})
    assert sorted(depth) == [f"depth/{s}" for s in stages]
    last = {s: max(int(g.split(".")[1]) for g in groups if g.startswith(s + ".")) for s in stages}
    for s in stages:
        d = depth[f"depth/{s}"]
        assert (d.kind, d.low, d.high) == ("int", 0, min(2, last[s]))
        assert f"{s}.0" not in d.targets and d.targets[0] == f"{s}.1"  # never a stage's first block
    params = {d.name: d.snap(0.3) for d in dims if not d.name.startswith("depth/")}
    params.update({d: 0 for d in depth} | {"depth/layer2": 2 if last["layer2"] >= 2 else 1, "depth/layer3": 1})
    policy = policy_from_params(space, dims, params)
    want = [f"layer2.{last['layer2'] - 1}"] if last["layer2"] >= 2 else []
    assert policy.prune.drop == (*want, f"layer2.{last['layer2']}", f"layer3.{last['layer3']}")
    inside = tuple(b + "." for b in policy.prune.drop)
    assert policy.prune.ratios and not any(g.startswith(inside) for g in policy.prune.ratios)
    assert policy.quant.layers and not any(n.startswith(inside) for n in policy.quant.layers)
    policy.check_against(groups, layers, model_name=model)
    # uniform params drop the same number of blocks per stage; of the baselines, only uniform-drop-1 drops
    uniform = policy_from_params(space, dims, uniform_params(dims, 0.2, 8, 1))
    assert len(uniform.prune.drop) == len(stages)
    dropping = {label: policy_from_params(space, dims, p).prune.drop for label, p in baseline_params(space, dims)}
    assert {label for label, d in dropping.items() if d} == {"uniform-drop-1"}
    assert dropping["uniform-drop-1"] == tuple(f"{s}.{last[s]}" for s in stages)


def test_depth_off_by_default_and_validated():
    groups, layers, _ = model_info("resnet20")
    assert not [d for d in expand(space_from_dict(space_dict()), groups, layers) if d.name.startswith("depth/")]
    with pytest.raises(SpaceError, match=r"prune.depth = -1: must be an integer >= 0"):
        space_from_dict(space_dict(prune={"granularity": "block", "depth": -1}))
    # depth alone (no channel pruning) still searches depth
    dims = expand(space_from_dict(space_dict(prune={"granularity": "none", "depth": 5})), groups, layers)
    assert [(d.name, d.high) for d in dims if d.name.startswith(("depth/", "prune/"))] == [
        ("depth/layer1", 2), ("depth/layer2", 2), ("depth/layer3", 2)]


def test_depth_spaces_get_a_block_drop_baseline():
    groups, layers, _ = model_info("resnet56")
    space = load_space("resnet56-cifar10", overrides=["model.adapt=null"])
    dims = expand(space, groups, layers)
    labelled = dict(baseline_params(space, dims))
    assert list(labelled) == ["original", "uniform-prune-0.3", "uniform-prune-0.5", "uniform-drop-2", "uniform-int8"]
    drop = policy_from_params(space, dims, labelled["uniform-drop-2"])
    assert drop.prune.drop == tuple(f"layer{s}.{i}" for s in (1, 2, 3) for i in (7, 8))
    assert not drop.prune.ratios and not drop.quant.active
