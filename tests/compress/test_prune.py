"""compress.prune: option-A conversion, named groups, physical channel removal, rebuild."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from compress.models import MODELS, PadShortcut, get_model, quantizable_layers
from compress.prune import KEPT_ATTR, convert_option_a, list_groups, prune, rebuild
from compress.prune._groups import build_graph, discover
from spaces.policy import PolicyError, PruneSpec, keep_count

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
IMAGENET = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def side(name: str) -> int:
    """Test resolution: 32 for CIFAR ResNets, 16 for small-input ImageNet ResNets (CPU time)."""
    return 16 if name.split("-")[0] in IMAGENET else 32


def xs(name: str) -> torch.Tensor:
    s = side(name)
    return X[..., :s, :s]


def make(name: str, **kw) -> nn.Module:
    """A registry model at 32x32 with randomised BN statistics (so BN is not the identity)."""
    if name in IMAGENET:
        kw.setdefault("small_input", True)
    model = get_model(name, num_classes=10, **kw)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def batches(n: int = 2, bs: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(bs, 3, size, size, generator=g), torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mods(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


# ----- option-A conversion ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_convert_option_a_is_exact(name):
    model = make(name)
    conv = convert_option_a(model).eval()
    assert not any(isinstance(m, PadShortcut) for m in conv.modules())
    assert any(isinstance(m, PadShortcut) for m in model.modules()), "input model must not change"
    with torch.no_grad():
        assert (conv(X) - model(X)).abs().max() < 1e-5
    fixed = [n for n, m in conv.named_modules() if getattr(m, "autocompress_fixed", False)]
    assert fixed == ["layer2.0.shortcut", "layer3.0.shortcut"]
    for n in fixed:
        m = mods(conv)[n]
        assert isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (2, 2)
        assert not m.weight.requires_grad
        assert n not in quantizable_layers(conv)
    # identity placement into the padded channel range
    w = mods(conv)["layer2.0.shortcut"].weight[:, :, 0, 0]
    assert w.shape == (32, 16) and torch.equal(w[8:24], torch.eye(16)) and w[:8].abs().sum() == 0


def test_convert_without_option_a_is_a_plain_copy():
    model = make("resnet20", shortcut="B")
    conv = convert_option_a(model)
    assert conv is not model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), conv.state_dict().values()))


# ----- groups ------------------------------------------------------------------------------
def test_list_groups_cifar_option_a():
    model = make("resnet20")
    groups = list_groups(model)
    assert any(isinstance(m, PadShortcut) for m in model.modules())
    names = [g.name for g in groups]
    assert names == ["layer1", "layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1",
                     "layer2", "layer2.0.conv1", "layer2.1.conv1", "layer2.2.conv1",
                     "layer3", "layer3.0.conv1", "layer3.1.conv1", "layer3.2.conv1"]
    by = {g.name: g for g in groups}
    assert by["layer1"].kind == "stage" and by["layer1"].channels == 16
    assert by["layer1"].layers == ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    assert by["layer2"].layers == ("layer2.0.conv2", "layer2.0.shortcut", "layer2.1.conv2", "layer2.2.conv2")
    assert by["layer3.1.conv1"].kind == "block" and by["layer3.1.conv1"].channels == 64


def test_list_groups_imagenet():
    r18 = {g.name: g for g in list_groups(make("resnet18"))}
    assert r18["layer1"].layers == ("conv1", "layer1.0.conv2", "layer1.1.conv2")  # stem couples with layer1
    assert r18["layer4"].layers == ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")
    assert sum(g.kind == "block" for g in r18.values()) == 8
    r50 = list_groups(make("resnet50"))
    by = {g.name: g for g in r50}
    assert len(r50) == 4 + 2 * 16
    assert by["layer2.3.conv1"].kind == by["layer2.3.conv2"].kind == "block"
    assert by["layer2.3.conv2"].channels == 128 and by["layer2"].channels == 512
    assert "conv1" not in by["layer1"].layers  # Bottleneck: layer1.0 has a downsample conv
    assert [g.name for g in r50][:4] == ["layer1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]


# ----- prune over the registry -------------------------------------------------------------
FULL = ["resnet20", "resnet20-B", "resnet18", "resnet50"]
GRANULARITY = ["block", "stage", "both"]
CRITERIA = ["l1", "bn_scale", "taylor"]
ONE_CASE = {  # every other registry model: one case each, rotating criteria
    "resnet32": ("both", "bn_scale"), "resnet44": ("stage", "taylor"), "resnet56": ("block", "l1"),
    "resnet110": ("both", "l1"), "resnet34": ("both", "taylor"), "resnet101": ("both", "l1"),
    "resnet152": ("block", "bn_scale"),
}


def test_every_registry_model_is_covered():
    covered = {c.split("-")[0] for c in FULL} | set(ONE_CASE)
    assert covered == set(MODELS.names())


def _cases():
    for case in FULL:
        for gran in GRANULARITY:
            for crit in CRITERIA:
                yield pytest.param(case, gran, crit, id=f"{case}-{gran}-{crit}")
    for case, (gran, crit) in ONE_CASE.items():
        yield pytest.param(case, gran, crit, id=f"{case}-{gran}-{crit}")


@functools.lru_cache(maxsize=4)
def _build(case: str) -> nn.Module:
    """Shared read-only model per case (prune never modifies its input; tests assert that)."""
    name, _, shortcut = case.partition("-")
    return make(name, **({"shortcut": shortcut} if shortcut else {}))


@pytest.mark.parametrize("case,granularity,criterion", list(_cases()))
def test_prune_registry(case, granularity, criterion):
    model = _build(case)
    before = copy.deepcopy(model.state_dict())
    groups = list_groups(model)
    kinds = {"block": {"block"}, "stage": {"stage"}, "both": {"block", "stage"}}[granularity]
    ratios = {g.name: (0.5 if g.kind == "block" else 0.25) for g in groups if g.kind in kinds}
    spec = PruneSpec(criterion=criterion, ratios=ratios)
    data = batches(1, bs=2, size=side(case)) if criterion == "taylor" else None
    pruned, kept = prune(model, spec, input_size=side(case), data=data)
    # input untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # records and physical shapes
    assert set(kept) == set(ratios)
    pm = mods(pruned)
    by = {g.name: g for g in groups}
    for name, idx in kept.items():
        g = by[name]
        assert len(idx) == keep_count(g.channels, ratios[name]) < g.channels
        assert list(idx) == sorted(set(idx)) and max(idx) < g.channels
        for layer in g.layers:
            assert pm[layer].out_channels == len(idx), layer
    assert n_params(pruned) < n_params(model)
    with torch.no_grad():
        out = pruned.eval()(xs(case))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert [g.channels for g in list_groups(pruned)] == [len(kept.get(g.name, range(g.channels))) for g in groups]


# ----- correctness against manual references ------------------------------------------------
def _masked_reference(model: nn.Module, kept: dict[str, tuple[int, ...]]) -> nn.Module:
    """The converted model with dropped channels silenced: BN gamma/beta and fixed-shortcut rows zeroed.

    In eval mode a silenced channel is exactly 0 after BN (+ReLU), and a zeroed shortcut row
    adds 0, so consumers see the same numbers as in the physically pruned network.
    """
    ref = convert_option_a(model).eval()
    infos = {i.group.name: i for i in discover(ref, build_graph(ref))}
    m = mods(ref)
    with torch.no_grad():
        for name, idx in kept.items():
            info = infos[name]
            drop = sorted(set(range(info.group.channels)) - set(idx))
            for bn in info.bns:
                m[bn].weight[drop] = 0
                m[bn].bias[drop] = 0
            for layer in info.group.layers:
                if getattr(m[layer], "autocompress_fixed", False):
                    m[layer].weight[drop] = 0
    return ref


@pytest.mark.parametrize("case", ["resnet20", "resnet20-B", "resnet18", "resnet50"])
def test_pruned_outputs_match_masked_reference(case):
    model = _build(case)
    groups = list_groups(model)
    ratios = {g.name: (0.25, 0.5, 0.75)[i % 3] for i, g in enumerate(groups) if i % 2 == 0 or g.kind == "stage"}
    pruned, kept = prune(model, PruneSpec(ratios=ratios), input_size=side(case))
    assert {g.kind for g in groups if g.name in kept} == {"block", "stage"}
    ref = _masked_reference(model, kept)
    with torch.no_grad():
        assert (pruned.eval()(xs(case)) - ref(xs(case))).abs().max() < 1e-4


def test_unconverted_option_a_breaks_torch_pruning():
    """Why convert_option_a exists: torch-pruning alone cannot follow the zero padding."""
    model = make("resnet20")
    kept = {"layer1": tuple(range(0, 16, 2))}
    ref = _masked_reference(model, kept)
    raw = copy.deepcopy(model)
    dg = tp.DependencyGraph().build_dependency(raw, torch.zeros(1, 3, 32, 32))
    dg.get_pruning_group(raw.conv1, tp.prune_conv_out_channels, list(range(1, 16, 2))).prune()
    try:
        with torch.no_grad():
            broken = not torch.allclose(raw.eval()(X), ref(X), atol=1e-4)
    except RuntimeError:  # channel count mismatch in the residual addition
        broken = True
    assert broken
    pruned, _ = prune(model, PruneSpec(kept=kept), input_size=32)
    with torch.no_grad():
        assert (pruned.eval()(X) - ref(X)).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_zero_ratio_changes_nothing(name):
    model = make(name)
    groups = list_groups(model)
    pruned, kept = prune(model, PruneSpec(ratios={g.name: 0.0 for g in groups}), input_size=side(name))
    assert kept == {}
    with torch.no_grad():
        assert (pruned.eval()(xs(name)) - model(xs(name))).abs().max() < 1e-5
    assert n_params(pruned) == n_params(convert_option_a(model))


def test_kept_weights_are_exact_original_slices():
    model = make("resnet20")
    spec = PruneSpec(ratios={"layer1": 0.5, "layer2": 0.25, "layer2.0.conv1": 0.5})
    pruned, kept = prune(model, spec, input_size=32)
    o, p = mods(convert_option_a(model)), mods(pruned)
    k1, k2 = list(kept["layer1"]), list(kept["layer2"])
    kb = list(kept["layer2.0.conv1"])
    assert torch.equal(p["conv1"].weight, o["conv1"].weight[k1])
    assert torch.equal(p["bn1"].running_mean, o["bn1"].running_mean[k1])
    assert torch.equal(p["layer2.0.conv1"].weight, o["layer2.0.conv1"].weight[kb][:, k1])
    assert torch.equal(p["layer2.0.bn1"].weight, o["layer2.0.bn1"].weight[kb])
    assert torch.equal(p["layer2.0.conv2"].weight, o["layer2.0.conv2"].weight[k2][:, kb])
    assert torch.equal(p["layer3.0.conv1"].weight, o["layer3.0.conv1"].weight[:, k2])
    # the fixed shortcut still maps each kept input channel to its own kept output channel
    sc = p["layer2.0.shortcut"]
    assert torch.equal(sc.weight, o["layer2.0.shortcut"].weight[k2][:, k1])
    assert not sc.weight.requires_grad and sc.autocompress_fixed
    for r, i in enumerate(k2):
        src = i - 8  # option A pads 8 channels in front
        expect = torch.zeros(len(k1))
        if src in k1:
            expect[k1.index(src)] = 1.0
        assert torch.equal(sc.weight[r, :, 0, 0], expect)


# ----- criteria pick the right channels ------------------------------------------------------
def test_l1_keeps_largest_norm_channels():
    model = make("resnet20")
    with torch.no_grad():
        w = model.layer2[1].conv1.weight
        w.mul_(0.01)
        w[[3, 7, 11, 20]] *= 1000
    _, kept = prune(model, PruneSpec(criterion="l1", ratios={"layer2.1.conv1": 0.875}), input_size=32)
    assert kept["layer2.1.conv1"] == (3, 7, 11, 20)


def test_l1_sums_over_coupled_stage_convs_skipping_fixed_shortcut():
    model = make("resnet20")
    conv = convert_option_a(model)
    infos = {i.group.name: i for i in discover(conv, build_graph(conv))}
    from compress.prune._criteria import l1_scores
    m = mods(conv)
    expect = sum(m[n].weight.abs().flatten(1).sum(1) for n in ("layer2.0.conv2", "layer2.1.conv2", "layer2.2.conv2"))
    assert torch.allclose(l1_scores(conv, infos["layer2"]), expect)


def test_bn_scale_keeps_largest_gamma():
    model = make("resnet18")
    with torch.no_grad():
        for bn in (model.bn1, model.layer1[0].bn2, model.layer1[1].bn2):
            bn.weight.fill_(0.1)
            bn.weight[[5, 40]] = 3.0
    _, kept = prune(model, PruneSpec(criterion="bn_scale", ratios={"layer1": 62 / 64}), input_size=32)
    assert kept["layer1"] == (5, 40)


def test_taylor_matches_manual_first_order_scores():
    model = make("resnet20")
    data = batches(2)
    ref = convert_option_a(model)
    ref.zero_grad()
    for x, y in data:
        F.cross_entropy(ref(x), y).backward()
    m = mods(ref)
    score = ((m["layer3.1.conv1"].weight * m["layer3.1.conv1"].weight.grad).abs().flatten(1).sum(1)
             + (m["layer3.1.bn1"].weight * m["layer3.1.bn1"].weight.grad).abs()
             + (m["layer3.1.bn1"].bias * m["layer3.1.bn1"].bias.grad).abs()
             + (m["layer3.1.conv2"].weight * m["layer3.1.conv2"].weight.grad).abs().transpose(0, 1).flatten(1).sum(1))
    expect = tuple(sorted(torch.argsort(score, descending=True, stable=True)[:16].tolist()))
    _, kept = prune(model, PruneSpec(criterion="taylor", ratios={"layer3.1.conv1": 0.75}), input_size=32, data=data)
    assert kept["layer3.1.conv1"] == expect


def test_taylor_does_not_touch_bn_statistics_or_leave_grads():
    model = make("resnet20").train()
    before = copy.deepcopy(model.state_dict())
    pruned, _ = prune(model, PruneSpec(criterion="taylor", ratios={"layer2": 0.5}), input_size=32, data=batches(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in pruned.parameters())
    assert pruned.training


# ----- errors --------------------------------------------------------------------------------
def test_taylor_without_data_is_a_clear_error():
    with pytest.raises(PolicyError, match="taylor.*data"):
        prune(make("resnet20"), PruneSpec(criterion="taylor", ratios={"layer2": 0.5}), input_size=32)


def test_unknown_group_lists_known_groups():
    with pytest.raises(PolicyError) as exc:
        prune(make("resnet20"), PruneSpec(ratios={"layer9.0.conv1": 0.5}), input_size=32)
    msg = str(exc.value)
    assert 'prune.ratios["layer9.0.conv1"] = 0.5' in msg
    assert "unknown prune group" in msg and "layer1.0.conv1" in msg and "layer3" in msg


def test_zero_channels_is_an_error_naming_group_and_value():
    with pytest.raises(PolicyError) as exc:
        prune(make("resnet20"), PruneSpec(ratios={"layer1.0.conv1": 0.99}), input_size=32)
    assert 'prune.ratios["layer1.0.conv1"] = 0.99' in str(exc.value)
    assert "0 of 16 channels" in str(exc.value)


def test_round_to_minimum_keeps_round_to_channels():
    _, kept = prune(make("resnet20"), PruneSpec(round_to=8, ratios={"layer1.0.conv1": 0.99}), input_size=32)
    assert len(kept["layer1.0.conv1"]) == 8


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_out_of_range_is_rejected(ratio):
    with pytest.raises(PolicyError, match=r"ratios.*allowed 0 <= ratio < 1"):
        PruneSpec(ratios={"layer1": ratio})


def test_round_to_is_respected():
    model = make("resnet18")
    groups = list_groups(model)
    spec = PruneSpec(round_to=8, ratios={g.name: 0.3 for g in groups})
    pruned, kept = prune(model, spec, input_size=32)
    for g in groups:
        assert len(kept[g.name]) % 8 == 0
        assert len(kept[g.name]) == keep_count(g.channels, 0.3, 8)
    for n, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d):  # every resnet18 conv belongs to a group
            assert m.out_channels % 8 == 0, n
    with torch.no_grad():
        assert pruned.eval()(xs("resnet18")).shape == (2, 10)


def test_bad_kept_indices_are_rejected():
    with pytest.raises(PolicyError, match=r'prune.kept\["layer1.0.conv1"\].*0\.\.15'):
        rebuild(make("resnet20"), {"layer1.0.conv1": (0, 16)})
    with pytest.raises(PolicyError, match="unknown prune group"):
        rebuild(make("resnet20"), {"layer4": (0,)})


# ----- rebuild ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["resnet20", "resnet50"])
def test_rebuild_reproduces_pruned_model(case):
    model = _build(case)
    groups = list_groups(model)
    spec = PruneSpec(criterion="l1", ratios={g.name: 0.5 for g in groups[::2]})
    pruned, kept = prune(model, spec, input_size=side(case))
    assert getattr(pruned, KEPT_ATTR) == kept
    x = xs(case)
    same = rebuild(model, kept)
    assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), same.state_dict().values()))
    fresh = rebuild(get_model(case, num_classes=10, **({"small_input": True} if case == "resnet50" else {})), kept)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned.eval()(x))
    replay, kept2 = prune(model, PruneSpec(kept=kept), input_size=side(case))
    assert kept2 == kept
    with torch.no_grad():
        assert torch.equal(replay.eval()(x), pruned(x))


def test_imagenet_stem_with_maxpool():
    """The default 7x7/stride-2 stem + max-pool: layer1 still couples with the stem (BasicBlock)."""
    model = get_model("resnet18", num_classes=10).eval()
    groups = {g.name: g for g in list_groups(model, input_size=224)}
    assert groups["layer1"].layers[0] == "conv1"
    pruned, kept = prune(model, PruneSpec(ratios={"layer1": 0.5, "layer3.1.conv1": 0.5}), input_size=224)
    assert pruned.conv1.out_channels == pruned.layer2[0].conv1.in_channels == 32
    ref = _masked_reference(model, kept)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (pruned.eval()(x) - ref(x)).abs().max() < 1e-4
