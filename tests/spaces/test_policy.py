"""The Policy (= recipe file): round-trips, validation errors, hashing."""

from __future__ import annotations

import json

import pytest
import yaml

from spaces import LayerBits, ModelSpec, Policy, PolicyError, PruneSpec, QuantSpec, keep_count
from spaces.policy import DistillSpec, FinetuneSpec


def full_policy() -> Policy:
    return Policy(
        model=ModelSpec(name="resnet20", num_classes=10, input_size=32, shortcut="A"),
        prune=PruneSpec(criterion="taylor", round_to=4, ratios={"layer1.0.conv1": 0.5, "layer2": 0.25},
                        kept={"layer1.0.conv1": (0, 3, 5, 7)}),
        quant=QuantSpec(backend="x86", default=LayerBits(8, 8),
                        layers={"conv1": LayerBits(32, 32), "layer3.0.conv1": LayerBits(4, 8)}),
        distill=DistillSpec(alpha=0.7, temperature=4.0, feature_weight=0.5, feature_layers=("layer2", "layer3")),
        finetune=FinetuneSpec(epochs=None, steps=100, optimizer="adamw", lr=1e-3, schedule="onecycle",
                              warmup_steps=10, grad_clip=5.0, label_smoothing=0.1, seed=3),
        provenance={"study": "s", "trial": 4, "metrics": {"accuracy": 91.5}},
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_is_lossless(tmp_path, suffix):
    p = full_policy()
    path = p.save(tmp_path / f"recipe{suffix}")
    q = Policy.load(path)
    assert q == p
    assert q.to_dict() == p.to_dict()
    assert q.hash() == p.hash()
    # the file is plain data a person can read
    text = path.read_text()
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert data["version"] == 1
    assert data["quant"]["layers"]["layer3.0.conv1"] == {"w": 4, "a": 8}


def test_hash_ignores_provenance_but_not_content():
    p = full_policy()
    assert p.replace(provenance={}).hash() == p.hash()
    assert p.replace(prune=PruneSpec(ratios={"layer2": 0.5})).hash() != p.hash()


def test_bits_error_names_file_field_value_and_allowed(tmp_path):
    d = full_policy().to_dict()
    d["quant"]["layers"]["layer3.0.conv1"]["w"] = 9
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(PolicyError) as err:
        Policy.load(f)
    assert f'{f}: quant.layers["layer3.0.conv1"].w = 9: allowed 2-8, 16, 32' in str(err.value)


def test_every_error_is_reported_at_once(tmp_path):
    d = {"model": {"name": "resnet20", "bogus": 1}, "prune": {"ratios": {"layer2": 1.0, "layer3": -0.1}},
         "quant": {"default": {"w": 1, "a": 3}}, "finetune": {"lr": "fast"}}
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(d, source="r.yaml")
    msg = str(err.value)
    for needle in ('model.bogus = 1: unknown field', 'prune.ratios.layer2 = 1.0: allowed 0 <= ratio < 1',
                   'prune.ratios.layer3 = -0.1', 'quant.default.w = 1: allowed 2-8, 16, 32',
                   'quant.default.a = 3: allowed 4-8, 16, 32', 'finetune.lr = "fast": expected a number'):
        assert needle in msg, (needle, msg)
    assert all(line.startswith("r.yaml: ") for line in msg.splitlines())


def test_missing_required_field():
    with pytest.raises(PolicyError, match=r"model: missing required field"):
        Policy.from_dict({"prune": {}})


def test_wrong_version_is_refused():
    d = full_policy().to_dict()
    d["version"] = 99
    with pytest.raises(PolicyError, match="version = 99: this autocompress reads policy version 1"):
        Policy.from_dict(d)


def test_check_against_reports_unknown_names_and_model_mismatch():
    p = full_policy().replace(prune=PruneSpec(ratios={"layer4.0.conv1": 0.5, "layer1.0.conv1": 0.99}, round_to=1))
    groups = {"layer1.0.conv1": 16, "layer1": 16, "layer2": 32}
    layers = ["conv1", "layer1.0.conv1", "linear"]
    with pytest.raises(PolicyError) as err:
        p.check_against(groups, layers, model_name="resnet56", source="x.yaml")
    msg = str(err.value)
    assert "model.name = \"resnet20\": this recipe is for 'resnet20'; the model is 'resnet56'" in msg
    assert 'prune.ratios["layer4.0.conv1"] = 0.5: unknown prune group' in msg
    assert 'prune.ratios["layer1.0.conv1"] = 0.99: would leave 0 of 16 channels' in msg
    assert 'quant.layers["layer3.0.conv1"]' in msg and "unknown layer" in msg


def test_sub_float_bits_need_a_backend():
    p = Policy(model=ModelSpec("resnet20"), quant=QuantSpec(backend="none", default=LayerBits(8, 8)))
    with pytest.raises(PolicyError, match="quant.backend"):
        p.check_against({}, ["conv1"])


@pytest.mark.parametrize("n,r,m,expected", [(16, 0.5, 1, 8), (16, 0.3, 1, 11), (64, 0.3, 8, 48),
                                            (16, 0.9, 8, 8), (16, 0.97, 1, 0), (10, 0.0, 4, 8)])
def test_keep_count(n, r, m, expected):
    assert keep_count(n, r, m) == expected


def test_finetune_needs_a_budget():
    with pytest.raises(PolicyError, match="give epochs or steps"):
        FinetuneSpec(epochs=None, steps=None)


def test_teacher_bn_recal_must_be_non_negative():
    with pytest.raises(PolicyError, match="teacher_bn_recal = -1: must be >= 0"):
        DistillSpec(alpha=0.5, teacher_bn_recal=-1)
