"""compress.sensitivity on a resnet20 briefly trained on digits: rows hold the unpruned accuracy,
losses grow with the ratio where they must, the map round-trips and keys change with inputs."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from compress.apply import apply
from compress.measure import evaluate
from compress.sensitivity import (
    SensitivityMap,
    SensitivitySettings,
    bits_label,
    compute_map,
    depth_sensitivity,
    parse_bits_label,
    sensitivity_key,
)
from spaces.policy import LayerBits, ModelSpec, Policy, PruneSpec
from tests.compress.conftest import train_resnet20

SIZE = 16
GROUPS = ["layer1", "layer2.0.conv1", "layer3"]
UNITS = {"layer1": ("layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2", "layer1.2.conv1",
                    "layer1.2.conv2"), "linear": ("linear",)}
SETTINGS = SensitivitySettings(ratios=(0.25, 0.5, 0.75), bits=((2, 8), (8, 8)), val_limit=160,
                               bn_recal_batches=2, calib_batches=2, eval_batch_size=80)


@pytest.fixture(scope="module")
def trained(digits16):
    return train_resnet20(digits16, 80)


@pytest.fixture(scope="module")
def smap(trained, digits16):
    return compute_map(trained, GROUPS, UNITS, digits16, SETTINGS, input_size=SIZE, key="k")


def test_rows_hold_the_unpruned_accuracy_of_the_fixed_subset(smap, trained, digits16):
    loader = digits16.loader("val", 80, shuffle=False, limit=SETTINGS.val_limit)
    ref = evaluate(trained, loader, topk=(1,), progress=False)
    assert smap.reference == pytest.approx(ref["top1"]) and smap.images == ref["n"] == 160
    assert smap.reference > 50, "the fixture model should have learned digits"
    assert list(smap.prune) == GROUPS
    for row in smap.prune.values():
        assert row[0.0] == smap.reference and set(row) == {0.0, *SETTINGS.ratios}
    assert set(smap.seconds) == {"prune", "quant", "total"} and smap.seconds["total"] > 0


def test_a_cell_is_the_apply_path_without_finetune(smap, trained, digits16):
    policy = Policy(model=ModelSpec("resnet20", input_size=SIZE), prune=PruneSpec(ratios={"layer3": 0.5}))
    out = apply(policy, trained, data=digits16, finetune=False, progress=False, calib_batches=1,
                bn_recal_batches=SETTINGS.bn_recal_batches)
    acc = evaluate(out.model, digits16.loader("val", 80, shuffle=False, limit=SETTINGS.val_limit), topk=(1,),
                   progress=False)["top1"]
    assert smap.prune["layer3"][0.5] == pytest.approx(acc)


def test_pruning_more_of_the_residual_width_loses_more(smap):
    # three quarters of a stage's residual channels gone is clearly worse than a quarter
    for stage in ("layer1", "layer3"):
        assert smap.prune[stage][0.75] < smap.prune[stage][0.25] - 5, smap.prune[stage]
    # the interpolated loss is 0 at 0, grows with the ratio and matches the measured points
    for g in GROUPS:
        losses = [smap.prune_loss(g, r / 20) for r in range(0, 17)]
        assert losses[0] == 0 and all(b >= a - 1e-12 for a, b in zip(losses, losses[1:]))
        assert smap.prune_loss(g, 0.75) >= smap.reference - smap.prune[g][0.75] - 1e-9


def test_quant_rows_two_bits_lose_more_than_eight(smap):
    assert set(smap.quant) == set(UNITS) and smap.units == UNITS
    for unit, row in smap.quant.items():
        assert set(row) == {"w2a8", "w8a8"}
        assert row["w8a8"] >= smap.reference - 3, (unit, row)  # int8 is close to float
    assert smap.quant["layer1"]["w2a8"] < smap.quant["layer1"]["w8a8"]
    assert smap.quant_loss("layer1", LayerBits(2, 8)) >= smap.quant_loss("layer1", LayerBits(8, 8)) >= 0
    assert smap.quant_loss("layer1", LayerBits(8, 8)) == max(0.0, smap.reference - smap.quant["layer1"]["w8a8"])
    # fewer bits never lose less: a noisy 2-bit row better than 8 bits reads as the 8-bit loss
    noisy = SensitivityMap(reference=90.0, images=10, prune={}, quant={"u": {"w8a8": 85.0, "w2a8": 88.0}})
    assert noisy.quant_loss("u", LayerBits(2, 8)) == noisy.quant_loss("u", LayerBits(8, 8)) == 5.0
    assert smap.quant_loss("layer1", LayerBits(32, 32)) == 0 and smap.quant_loss("layer1", LayerBits(4, 8)) is None


def test_map_round_trips_through_json(smap):
    again = SensitivityMap.from_dict(json.loads(json.dumps(smap.to_dict())))
    assert again == smap
    with pytest.raises(ValueError, match="version"):
        SensitivityMap.from_dict({**smap.to_dict(), "version": 99})


def test_matrix_is_groups_by_ratios(smap):
    m = smap.matrix()
    assert m["rows"] == GROUPS and m["columns"] == [0.0, 0.25, 0.5, 0.75]
    assert m["top1"][2] == [smap.prune["layer3"][c] for c in m["columns"]]
    assert m["loss"][0][0] == 0 and m["reference"] == smap.reference
    q = smap.matrix("quant")
    assert q["columns"] == ["w8a8", "w2a8"] and q["rows"] == list(UNITS)


def test_key_changes_with_weights_data_and_settings(trained):
    key = sensitivity_key(trained, {"dataset": "digits"}, SETTINGS, GROUPS, UNITS)
    assert key == sensitivity_key(copy.deepcopy(trained), {"dataset": "digits"}, SETTINGS, GROUPS, UNITS)
    changed = copy.deepcopy(trained)
    with torch.no_grad():
        changed.linear.bias[0] += 1e-3
    assert key != sensitivity_key(changed, {"dataset": "digits"}, SETTINGS, GROUPS, UNITS)
    assert key != sensitivity_key(trained, {"dataset": "cifar10"}, SETTINGS, GROUPS, UNITS)
    other = SensitivitySettings(ratios=(0.5,), bits=SETTINGS.bits, val_limit=160)
    assert key != sensitivity_key(trained, {"dataset": "digits"}, other, GROUPS, UNITS)


DEPTH = {"layer2": ("layer2.2", "layer2.1"), "layer3": ("layer3.2",)}  # drop order: last block first


@pytest.fixture(scope="module")
def depth_rows(trained, digits16):
    return depth_sensitivity(trained, DEPTH, digits16, SETTINGS, input_size=SIZE)


def test_depth_rows_drop_each_stages_first_k_blocks_through_apply(depth_rows, trained, digits16):
    assert {s: sorted(row) for s, row in depth_rows.items()} == {"layer2": [1, 2], "layer3": [1]}
    policy = Policy(model=ModelSpec("resnet20", input_size=SIZE), prune=PruneSpec(drop=("layer2.2", "layer2.1")))
    out = apply(policy, trained, data=digits16, finetune=False, progress=False, calib_batches=1,
                bn_recal_batches=SETTINGS.bn_recal_batches)
    acc = evaluate(out.model, digits16.loader("val", 80, shuffle=False, limit=SETTINGS.val_limit), topk=(1,),
                   progress=False)["top1"]
    assert depth_rows["layer2"][2] == pytest.approx(acc)


def test_depth_loss_is_zero_without_drops_and_never_shrinks(smap, depth_rows):
    m = SensitivityMap(reference=smap.reference, images=smap.images, prune=smap.prune, depth=depth_rows)
    assert m.depth_loss("layer2", 0) == 0.0
    assert m.depth_loss("layer2", 2) >= m.depth_loss("layer2", 1) >= 0
    assert m.depth_loss("layer2", 1) == max(0.0, m.reference - depth_rows["layer2"][1])
    noisy = SensitivityMap(reference=90.0, images=1, prune={}, depth={"s": {1: 80.0, 2: 85.0}})
    assert noisy.depth_loss("s", 2) == 10.0  # dropping more never loses less
    with pytest.raises(KeyError, match="k = 3 not measured"):
        noisy.depth_loss("s", 3)
    again = SensitivityMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m and "depth" not in smap.to_dict(), "maps without depth rows are written as before"


def test_depth_changes_the_key_only_when_measured(trained):
    key = sensitivity_key(trained, {"dataset": "digits"}, SETTINGS, GROUPS, UNITS)
    assert sensitivity_key(trained, {"dataset": "digits"}, SETTINGS, GROUPS, UNITS, {}) == key
    assert sensitivity_key(trained, {"dataset": "digits"}, SETTINGS, GROUPS, UNITS, DEPTH) != key


def test_bits_labels_and_bad_settings():
    assert bits_label(LayerBits(4, 8)) == "w4a8" and parse_bits_label("w4a8") == LayerBits(4, 8)
    with pytest.raises(ValueError, match="wNaM"):
        parse_bits_label("int8")
    with pytest.raises(ValueError, match="ratios"):
        SensitivitySettings(ratios=(0.0, 1.0))
    assert SensitivitySettings.from_dict(SETTINGS.to_dict()) == SETTINGS
