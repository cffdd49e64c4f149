"""benchmarks/peer_fastnas.py: FastNAS's subnet as our Policy (no ModelOpt needed), the missing-peer
error, and (with ModelOpt installed) FastNAS end to end on a briefly trained ResNet-20 on digits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from compress.prune import MatchError, list_groups, prune
from spaces.policy import ModelSpec, PruneSpec
from tests.compress.conftest import train_resnet20
from tests.compress.test_prune import make
from tests.compress.test_prune_match import permute_channels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peer_fastnas

SIZE = 16
SPEC = ModelSpec(name="resnet20", input_size=32)
X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def test_policy_from_a_reordered_subnet_replays_it_exactly():
    model = make("resnet20")
    sub, kept = prune(model, PruneSpec(ratios={"layer1.1.conv1": 0.75, "layer2": 0.25, "layer3.0.conv1": 0.5}),
                      input_size=32)
    sub = permute_channels(sub, seed=5)  # as FastNAS leaves it: channels sorted by importance
    policy = peer_fastnas.policy_from_subnet(model, sub, SPEC, provenance={"source": "test"})
    assert policy.prune.kept == kept
    assert policy.prune.ratios == {"layer1.1.conv1": 0.75, "layer2": 0.25, "layer3.0.conv1": 0.5}
    assert policy.provenance == {"source": "test"}
    check = peer_fastnas.check_replay(policy, model, sub, X)
    assert check["replay_max_logit_diff"] < 1e-4
    int8 = peer_fastnas.int8_variant(policy)
    assert int8.prune == policy.prune and int8.quant.backend == "x86" and int8.quant.default.w == 8


def test_check_replay_catches_a_policy_that_keeps_other_channels():
    model = make("resnet20")
    sub, kept = prune(model, PruneSpec(ratios={"layer3.1.conv1": 0.5}), input_size=32)
    policy = peer_fastnas.policy_from_subnet(model, sub, SPEC)
    idx = sorted(set(range(64)) - set(kept["layer3.1.conv1"]))[:32]  # as many channels, the wrong ones
    wrong = policy.replace(prune=PruneSpec(ratios=policy.prune.ratios, kept={"layer3.1.conv1": tuple(idx)}))
    with pytest.raises(MatchError, match="max logit difference"):
        peer_fastnas.check_replay(wrong, model, sub, X)


def test_without_modelopt_import_works_and_calling_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelopt", None)  # `import modelopt...` now raises ImportError
    with pytest.raises(peer_fastnas.PeerUnavailable, match=r"pip install -e '\.\[bench\]'"):
        peer_fastnas.fastnas_policy(make("resnet20"), None, 0.5, spec=SPEC)
    assert peer_fastnas.main(["--out", "/nonexistent/never-written"]) == 2


# ----- with ModelOpt ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(digits16):
    return train_resnet20(digits16, 60)


@pytest.mark.slow
@pytest.mark.parametrize("stage_channels", [False, True])
def test_fastnas_end_to_end_on_digits(trained, digits16, stage_channels, tmp_path):
    pytest.importorskip("modelopt")
    peer_fastnas.require_modelopt()
    settings = peer_fastnas.FastNASSettings(channel_divisor=8, val_limit=128, eval_batch_size=128, bn_batch_size=4,
                                            stage_channels=stage_channels)
    spec = ModelSpec(name="resnet20", input_size=SIZE)
    result = peer_fastnas.fastnas_policy(trained, digits16, 0.5, spec=spec, settings=settings,
                                         search_checkpoint=tmp_path / "sensitivity.pth")
    m = result.metrics
    assert m["flops_ratio"] <= 0.52  # FastNAS's own FLOPs count also includes BN and the fixed shortcuts
    assert m["replay_max_logit_diff"] < 1e-4 and m["replay_flops"] == m["flops"]
    kinds = {g.name: g.kind for g in list_groups(trained, SIZE)}
    pruned = {kinds[g] for g in result.policy.prune.kept}
    assert "block" in pruned
    assert "layer3" not in result.policy.prune.kept  # its channels feed the classifier: never searchable
    if not stage_channels:
        assert pruned == {"block"}  # the zero-padding shortcuts hide the residual coupling
    again = peer_fastnas.fastnas_policy(trained, digits16, 0.5, spec=spec, settings=settings,
                                        search_checkpoint=tmp_path / "sensitivity.pth")
    assert again.policy == result.policy  # deterministic, and the cached sensitivity map gives the same choice
