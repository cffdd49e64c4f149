"""compress.artifact: policy.yaml + weights-only model.pt round-trips without pickled modules."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from torch import nn

from compress.artifact import POLICY_FILE, WEIGHTS_FILE, load_compressed, save_compressed
from compress.models import CheckpointError, PadShortcut, build_model
from compress.prune import list_groups, prune
from spaces.policy import LayerBits, ModelSpec, Policy, PolicyError, PruneSpec, QuantSpec

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _trained_like(spec: ModelSpec) -> nn.Module:
    model = build_model(spec)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    return model.eval()


def _pruned(spec: ModelSpec, criterion: str = "l1"):
    model = _trained_like(spec)
    ratios = {g.name: 0.5 for g in list_groups(model)}
    policy = Policy(model=spec, prune=PruneSpec(criterion=criterion, ratios=ratios))
    pruned, kept = prune(model, policy.prune, input_size=spec.input_size)
    return policy, pruned.eval(), kept


@pytest.mark.parametrize("spec", [ModelSpec("resnet20"), ModelSpec("resnet20", shortcut="B"),
                                  ModelSpec("resnet18", small_input=True, input_size=16)],
                         ids=["resnet20-A", "resnet20-B", "resnet18-small"])
def test_round_trip_identical_outputs(tmp_path, spec):
    policy, pruned, kept = _pruned(spec)
    out = save_compressed(tmp_path / "c", policy, pruned)
    assert sorted(p.name for p in out.iterdir()) == sorted([POLICY_FILE, WEIGHTS_FILE])
    # model.pt holds tensors only and loads with weights_only=True
    sd = torch.load(out / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    doc = yaml.safe_load((out / POLICY_FILE).read_text())
    assert {k: tuple(v) for k, v in doc["prune"]["kept"].items()} == kept
    loaded_policy, model = load_compressed(out)
    assert loaded_policy == policy.replace(prune=dataclasses.replace(policy.prune, kept=kept))
    assert not model.training
    x = X[..., :spec.input_size, :spec.input_size]
    with torch.no_grad():
        assert torch.equal(model(x), pruned(x))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_unpruned_option_a_model_round_trips(tmp_path):
    spec = ModelSpec("resnet20")
    model = _trained_like(spec)
    save_compressed(tmp_path, Policy(model=spec), model)
    assert any(isinstance(m, PadShortcut) for m in model.modules()), "input model must not change"
    _, loaded = load_compressed(tmp_path)
    with torch.no_grad():
        assert (loaded(X) - model(X)).abs().max() < 1e-5


def test_explicit_kept_and_policy_kept(tmp_path):
    policy, pruned, kept = _pruned(ModelSpec("resnet20"))
    delattr(pruned, "autocompress_kept")
    with pytest.raises(PolicyError, match="prune.kept.*kept channel indices"):
        save_compressed(tmp_path, policy, pruned)
    save_compressed(tmp_path, policy, pruned, kept=kept)
    with_kept = policy.replace(prune=dataclasses.replace(policy.prune, kept=kept))
    save_compressed(tmp_path / "b", with_kept, pruned)
    assert load_compressed(tmp_path)[0] == load_compressed(tmp_path / "b")[0]


def test_disagreeing_kept_is_an_error(tmp_path):
    policy, pruned, kept = _pruned(ModelSpec("resnet20"))
    other = dict(kept)
    other["layer2"] = tuple(range(len(kept["layer2"])))
    if other["layer2"] == kept["layer2"]:
        other["layer2"] = tuple(range(1, len(kept["layer2"]) + 1))
    with pytest.raises(PolicyError, match="disagree"):
        save_compressed(tmp_path, policy, pruned, kept=other)


def test_fake_quant_model_round_trips(tmp_path):
    from compress.quantize import fake_quantize

    policy, pruned, kept = _pruned(ModelSpec("resnet20"))
    policy = policy.replace(quant=QuantSpec(backend="x86", default=LayerBits(8, 8),
                                            layers={"layer3.2.conv2": LayerBits(4, 8)}))
    fq = fake_quantize(pruned, policy.quant).eval()
    save_compressed(tmp_path, policy, fq)
    loaded_policy, model = load_compressed(tmp_path)
    assert loaded_policy.quant == policy.quant
    assert type(model.get_submodule("layer3.2.conv2")) is type(fq.get_submodule("layer3.2.conv2"))
    with torch.no_grad():
        assert torch.equal(model(X), fq(X))


def test_rebuild_fn_callback(tmp_path):
    policy, pruned, _ = _pruned(ModelSpec("resnet20"))
    save_compressed(tmp_path, policy, pruned)
    seen = {}

    def rebuild_fn(p, sd):
        seen["keys"] = set(sd)
        from compress.artifact import rebuild_float
        return rebuild_float(p, sd)

    _, model = load_compressed(tmp_path, rebuild_fn=rebuild_fn)
    assert seen["keys"] == set(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(model(X), pruned(X))


def test_missing_files_and_mismatched_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not a compressed-model directory.*policy.yaml"):
        load_compressed(tmp_path)
    policy, pruned, kept = _pruned(ModelSpec("resnet20"))
    save_compressed(tmp_path, policy, pruned)
    # weights of the unpruned model under a pruned policy: shape mismatches are listed
    torch.save(build_model(policy.model).state_dict(), tmp_path / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="shape mismatches.*layer1.0.conv1.weight"):
        load_compressed(tmp_path)


def test_pickled_module_is_refused(tmp_path):
    policy, pruned, _ = _pruned(ModelSpec("resnet20"))
    save_compressed(tmp_path, policy, pruned)
    torch.save(pruned, tmp_path / WEIGHTS_FILE)  # a whole pickled module, never accepted
    with pytest.raises(CheckpointError, match="weights-only"):
        load_compressed(tmp_path)
