"""Depth pruning (``prune.drop``): whole identity-shortcut residual blocks removed, replayed and saved."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.apply import apply, rebuild_compressed
from compress.artifact import load_compressed, save_compressed
from compress.measure import count_flops
from compress.models import MODELS, get_model, quantizable_layers
from compress.prune import DroppedBlock, drop_blocks, droppable_blocks, list_groups
from compress.torchscript import freeze_torchscript
from spaces.policy import LayerBits, ModelSpec, Policy, PolicyError, PruneSpec, QuantSpec
from tests.compress.test_prune import make, side, xs


def _skip_with_hooks(model: nn.Module, names: list[str]) -> list:
    """Make each named block return its input (what dropping it means), via forward hooks."""
    return [model.get_submodule(n).register_forward_hook(lambda m, inp, out: inp[0]) for n in names]


@pytest.mark.parametrize("name", MODELS.names())
def test_droppable_blocks_are_the_identity_shortcut_blocks(name):
    model = make(name)
    blocks = droppable_blocks(model)
    assert blocks, name
    for b in blocks:
        stage, index = b.split(".")
        assert stage.startswith("layer") and index.isdigit()
    # a stage's later blocks always qualify; a block that changes width or resolution never does
    assert "layer2.1" in blocks and "layer2.0" not in blocks
    assert ("layer1.0" in blocks) == (name != "resnet50" and not name.startswith(("resnet101", "resnet152")))


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet50"])
def test_drop_equals_skipping_the_blocks(name):
    model = make(name)
    names = droppable_blocks(model)[-2:] + droppable_blocks(model)[:1]
    dropped = drop_blocks(model, names)
    assert all(isinstance(dropped.get_submodule(n), DroppedBlock) for n in names)
    assert not any(isinstance(m, DroppedBlock) for m in model.modules())  # the input is untouched
    hooks = _skip_with_hooks(model, names)
    with torch.no_grad():
        want = model(xs(name))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        assert torch.allclose(dropped(xs(name)), want, atol=1e-5)
        assert not torch.allclose(model(xs(name)), want, atol=1e-5)  # the blocks did something
    removed = sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
    assert sum(p.numel() for p in dropped.parameters()) == sum(p.numel() for p in model.parameters()) - removed
    groups = {g.name for g in list_groups(dropped, input_size=side(name))}
    assert not any(g.startswith(tuple(n + "." for n in names)) for g in groups)


def test_drop_errors_name_every_bad_block():
    model = make("resnet20")
    with pytest.raises(PolicyError) as e:
        drop_blocks(model, ["layer2.0", "layer9.1", "layer1.1", "conv1"])
    text = str(e.value)
    assert 'prune.drop[0] = "layer2.0": its shortcut changes the shape' in text
    assert 'prune.drop[1] = "layer9.1": not a residual block' in text
    assert 'prune.drop[3] = "conv1": not a residual block' in text
    assert "layer1.1" not in text.split("droppable blocks:")[0]
    assert "droppable blocks: layer1.0, layer1.1, layer1.2, layer2.1" in text


def test_policy_refuses_names_inside_dropped_blocks():
    with pytest.raises(PolicyError, match=r'ratios\["layer1.1.conv1"\].*dropped block .layer1.1.'):
        PruneSpec(drop=("layer1.1",), ratios={"layer1.1.conv1": 0.5})
    with pytest.raises(PolicyError, match="must be distinct"):
        PruneSpec(drop=("layer1.1", "layer1.1"))
    with pytest.raises(PolicyError, match=r'quant.layers\["layer3.2.conv2"\].*dropped block'):
        Policy(model=ModelSpec("resnet20"), prune=PruneSpec(drop=("layer3.2",)),
               quant=QuantSpec(backend="x86", layers={"layer3.2.conv2": LayerBits(8, 8)}))


def test_recipes_without_drop_are_unchanged():
    p = Policy(model=ModelSpec("resnet20"), prune=PruneSpec(ratios={"layer2": 0.5}))
    assert "drop" not in p.to_dict()["prune"]  # old recipes (and their hashes) stay as they were
    d = p.replace(prune=PruneSpec(ratios={"layer2": 0.5}, drop=("layer1.2",)))
    assert d.to_dict()["prune"]["drop"] == ["layer1.2"]
    assert Policy.from_dict(d.to_dict()) == d and d.hash() != p.hash()
    assert "drop 1 blocks" in d.summary()


def test_apply_drop_prune_int8_replays_and_saves(digits16, tmp_path):
    model = get_model("resnet20").eval()
    layers = [n for n in quantizable_layers(model) if not n.startswith(("layer1.2.", "layer3.2."))]
    policy = Policy(model=ModelSpec("resnet20", input_size=16),
                    prune=PruneSpec(drop=("layer1.2", "layer3.2"), ratios={"layer2": 0.5, "layer3.1.conv1": 0.5}),
                    quant=QuantSpec(backend="x86", layers={n: LayerBits(8, 8) for n in layers}))
    out = apply(policy, model, data=digits16, finetune=False, progress=False)
    assert set(out.policy.prune.kept) == {"layer2", "layer3.1.conv1"}
    assert out.policy.prune.drop == ("layer1.2", "layer3.2")
    x = next(iter(digits16.loader("val", 8)))[0]
    with torch.no_grad():
        assert out.deploy(x).shape == (8, 10)
        # the deployable forms trace through the dropped blocks
        assert torch.allclose(freeze_torchscript(out.deploy, x)(x), out.deploy(x))
    flops = count_flops(out.model.eval(), 16)
    base = count_flops(model, 16)
    assert flops < 0.75 * base
    # the trainable model round-trips from its policy and weights, and through an artifact
    again = rebuild_compressed(out.policy, out.model.state_dict(), calib_loader=digits16.loader("calib", 32))
    loaded_policy, loaded = load_compressed(save_compressed(tmp_path / "c", out.policy, out.model),
                                            rebuild_fn=lambda p, sd: rebuild_compressed(p, sd))
    assert loaded_policy == out.policy
    for m in (again, loaded):
        assert isinstance(m.get_submodule("layer1.2"), DroppedBlock)
        assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in out.model.parameters())


def test_apply_refuses_a_block_that_changes_shape():
    with pytest.raises(PolicyError, match=r"prune.drop\[0\] = \"layer3.0\""):
        apply(Policy(model=ModelSpec("resnet20"), prune=PruneSpec(drop=("layer3.0",))), get_model("resnet20"),
              finetune=False)
