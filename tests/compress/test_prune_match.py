"""compress.prune.match_kept: kept indices recovered from another tool's (reordered) pruned copy."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.prune import MatchError, match_kept, prune, rebuild
from compress.prune._groups import build_graph, discover
from spaces.policy import PruneSpec
from tests.compress.test_prune import make

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
RATIOS = {"layer1": 0.25, "layer1.0.conv1": 0.5, "layer2.1.conv1": 0.25, "layer2": 0.5,
          "layer3.2.conv1": 0.75, "layer3": 0.25}


def permute_channels(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of a (converted) model with every group's channels shuffled: the function is
    unchanged, as when a pruner sorts channels by importance before slicing."""
    model = copy.deepcopy(model)
    mods = dict(model.named_modules())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for info in discover(model, build_graph(model, 32)):
            p = torch.randperm(info.group.channels, generator=g)
            for name in info.group.layers:
                mods[name].weight.data = mods[name].weight.data[p]
            for name in info.bns:
                bn = mods[name]
                for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    t.data = t.data[p]
            for name in info.consumers:
                mods[name].weight.data = mods[name].weight.data[:, p]
    return model


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_match_kept_recovers_our_own_pruning_through_a_reordering(shortcut):
    model = make("resnet20", shortcut=shortcut)
    pruned, kept = prune(model, PruneSpec(ratios=RATIOS), input_size=32)
    shuffled = permute_channels(pruned)
    assert not torch.equal(shuffled.conv1.weight, pruned.conv1.weight)  # the reordering is real
    with torch.no_grad():
        torch.testing.assert_close(shuffled(X), pruned(X), rtol=1e-4, atol=1e-5)
    found = match_kept(model, shuffled)
    assert found == kept
    with torch.no_grad():
        torch.testing.assert_close(rebuild(model, found).eval()(X), shuffled(X), rtol=1e-4, atol=1e-5)


def test_match_kept_ignores_recalibrated_bn_statistics_and_unpruned_groups():
    model = make("resnet20")
    pruned, kept = prune(model, PruneSpec(ratios={"layer2.0.conv1": 0.5}), input_size=32)
    for m in pruned.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(0.3)
    assert list(kept) == ["layer2.0.conv1"]
    assert match_kept(model, permute_channels(pruned, seed=1)) == kept


def test_match_kept_on_an_unconverted_option_a_copy_with_inner_pruning_only():
    # FastNAS on an option-A model keeps the zero-padding shortcuts and prunes block-inner channels
    model = make("resnet20")
    sub = copy.deepcopy(model)
    keep = torch.tensor([1, 4, 6, 9, 12, 15, 20, 31])
    with torch.no_grad():
        sub.layer2[1].conv1.weight.data = model.layer2[1].conv1.weight.data[keep.flip(0)]
        for t in ("weight", "bias", "running_mean", "running_var"):
            getattr(sub.layer2[1].bn1, t).data = getattr(model.layer2[1].bn1, t).data[keep.flip(0)]
        sub.layer2[1].conv2.weight.data = model.layer2[1].conv2.weight.data[:, keep.flip(0)]
    assert match_kept(model, sub) == {"layer2.1.conv1": tuple(keep.tolist())}


def test_match_kept_rejects_a_model_that_is_not_a_channel_subset():
    model = make("resnet20")
    pruned, _ = prune(model, PruneSpec(ratios={"layer3.1.conv1": 0.5}), input_size=32)
    pruned.layer3[1].conv1.weight.data[3, 0, 0, 0] += 0.01
    with pytest.raises(MatchError, match="layer3.1.conv1: channel 3"):
        match_kept(model, pruned)
    pruned, _ = prune(model, PruneSpec(ratios={"layer3.1.conv1": 0.5}), input_size=32)
    pruned.linear.weight.data[0, 0] += 0.01  # a consumer that no row match looks at
    with pytest.raises(MatchError, match="linear.weight"):
        match_kept(model, pruned)
