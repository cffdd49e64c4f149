"""compress.apply end to end on digits, every bad input's error, shipped recipes, the apply CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from compress._apply_recipes import RECIPES_DIR, shipped, uniform_block_inner
from compress.apply import Compressed, apply, validate
from compress.models import build_model, get_model
from spaces.policy import DistillSpec, FinetuneSpec, LayerBits, Policy, PolicyError, PruneSpec, QuantSpec
from tests.compress.conftest import SIZE

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
TINY = FinetuneSpec(steps=3, batch_size=32, lr=0.01)
FAST = dict(calib_batches=2, bn_recal_batches=2, progress=False)


# ----- recipes ------------------------------------------------------------------------------------
def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= set(shipped())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates_against_its_model(path):
    policy = Policy.load(path)
    assert path.read_text().startswith("#"), "recipes start with a comment header"
    validate(policy, build_model(policy.model))
    if path.name in shipped():
        assert policy == shipped()[path.name][0], "regenerate with `python -m compress._apply_recipes`"


def test_resnet56_recipe_on_resnet20_names_the_fields():
    policy = Policy.load(RECIPES_DIR / "resnet56-prune50.yaml")
    with pytest.raises(PolicyError) as exc:
        validate(policy, get_model("resnet20"))
    text = str(exc.value)
    assert 'model.name = "resnet56"' in text and "resnet20" in text
    assert 'prune.ratios["layer1.3.conv1"]' in text and "unknown prune group" in text


# ----- bad inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_range_is_rejected_with_file_and_field(tmp_path, ratio):
    policy = uniform_block_inner("resnet20", 0.3)
    path = policy.save(tmp_path / "bad.yaml")
    path.write_text(path.read_text().replace("layer2.1.conv1: 0.3", f"layer2.1.conv1: {ratio}"))
    with pytest.raises(PolicyError) as exc:
        Policy.load(path)
    text = str(exc.value)
    assert str(path) in text and 'prune.ratios["layer2.1.conv1"]' in text and "0 <= ratio < 1" in text


@pytest.mark.parametrize("policy, field, allowed", [
    (Policy(model=uniform_block_inner("resnet20", 0).model, prune=PruneSpec(ratios={"layer4.0.conv1": 0.5})),
     'prune.ratios["layer4.0.conv1"]', "unknown prune group"),
    (Policy(model=uniform_block_inner("resnet20", 0).model,
            quant=QuantSpec(backend="x86", layers={"layer9.conv": LayerBits(8, 8)})),
     'quant.layers["layer9.conv"]', "unknown layer"),
    (Policy(model=uniform_block_inner("resnet20", 0).model, quant=QuantSpec(backend="x86", default=LayerBits(4, 32))),
     "quant.default", "x86 int8 kernels"),
    (Policy(model=uniform_block_inner("resnet20", 0).model, quant=QuantSpec(backend="none", default=LayerBits(8, 8))),
     "quant.backend", "allowed x86, cuda"),
    (Policy(model=uniform_block_inner("resnet20", 0, num_classes=100).model),
     "model.num_classes", "10 output classes"),
    (Policy(model=uniform_block_inner("resnet20", 0).model,
            distill=DistillSpec(alpha=0.5, feature_weight=1.0, feature_layers=("layer7",))),
     "distill.feature_layers[0]", "unknown layer"),
])
def test_validate_names_field_value_and_allowed(policy, field, allowed):
    with pytest.raises(PolicyError) as exc:
        validate(policy, get_model("resnet20"))
    assert field in str(exc.value) and allowed in str(exc.value)


def test_bad_policy_fails_before_any_work_and_apply_raises_it():
    policy = Policy.load(RECIPES_DIR / "resnet56-prune50-int8.yaml")
    with pytest.raises(PolicyError, match="model.name"):
        apply(policy, get_model("resnet20"), data=None, finetune=False)


def test_data_is_required_for_finetune_and_quantization():
    policy = uniform_block_inner("resnet20", 0.3, quant=QuantSpec(backend="x86", default=LayerBits(8, 8)))
    with pytest.raises(ValueError, match="fine-tuning .* quantization calibration"):
        apply(policy, get_model("resnet20"), data=None)


# ----- end to end on digits ----------------------------------------------------------------------------
def _accuracy(model, digits16) -> float:
    from compress.measure import evaluate

    return evaluate(model, digits16.loader("val", 256, shuffle=False), progress=False)["top1"]


def test_apply_prune_kd_int8_end_to_end(trained, digits16):
    base_acc = _accuracy(trained, digits16)
    assert base_acc > 50, "fixture model should have learned digits"
    before = copy.deepcopy(trained.state_dict())
    policy = uniform_block_inner("resnet20", 0.3, quant=QuantSpec(backend="x86", default=LayerBits(8, 8)),
                                 distill=DistillSpec(alpha=0.7, temperature=4.0, feature_weight=0.5,
                                                     feature_layers=("layer2", "layer3")),
                                 finetune=TINY, input_size=SIZE)
    out = apply(policy, trained, data=digits16, **FAST)
    assert isinstance(out, Compressed)
    # pure: the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    # kept indices recorded for every pruned group, with the right counts
    assert set(out.policy.prune.kept) == set(policy.prune.ratios)
    assert len(out.policy.prune.kept["layer3.0.conv1"]) == 45
    assert out.model.layer3[0].conv1.out_channels == 45
    # smaller and quantized
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(out.model) < 0.8 * params(trained)
    assert out.precision and all("int8" in p for p in out.precision.values()), out.precision
    assert out.train_result is not None
    assert {"prune", "recalibrate", "quantize", "finetune", "convert"} <= set(out.timings)
    # working: deploy model runs and agrees with its fake-quant source, accuracy survives
    x = next(iter(digits16.loader("val", 64, shuffle=False)))[0]
    with torch.no_grad():
        agree = (out.deploy(x).argmax(1) == out.model.eval()(x).argmax(1)).float().mean().item()
    assert agree >= 0.85
    assert _accuracy(out.deploy, digits16) > base_acc - 25


def test_apply_replays_recorded_kept_indices(trained, digits16):
    policy = uniform_block_inner("resnet20", 0.5, finetune=TINY, input_size=SIZE)
    first = apply(policy, trained, data=digits16, finetune=False, **FAST)
    again = apply(first.policy, trained, data=digits16, finetune=False, **FAST)
    assert again.policy.prune.kept == first.policy.prune.kept
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(again.deploy.eval()(x), first.deploy.eval()(x))


def test_nan_loss_raises_divergence_error(trained, digits16):
    from compress.train import DivergenceError

    broken = copy.deepcopy(trained)
    with torch.no_grad():
        broken.linear.weight[0, 0] = float("nan")
    policy = uniform_block_inner("resnet20", 0.3, finetune=TINY, input_size=SIZE)
    with pytest.raises(DivergenceError) as exc:
        apply(policy, broken, data=digits16, **FAST)
    assert math.isnan(exc.value.loss) or math.isinf(exc.value.loss)


# ----- CLI ---------------------------------------------------------------------------------------------
def _cli(tmp_path: Path, trained, policy: Policy, *extra: str) -> Path:
    from search.cli import main

    ckpt = tmp_path / "base" / "model.pt"
    ckpt.parent.mkdir()
    torch.save(trained.state_dict(), ckpt)
    recipe = policy.save(tmp_path / "recipe.yaml")
    out = tmp_path / "out"
    rc = main(["apply", str(recipe), "--checkpoint", str(ckpt.parent), "--dataset", "digits", "--out", str(out),
               *extra])
    assert rc == 0
    return out


def _check_outputs(out: Path, quantized: bool) -> dict:
    from compress.artifact import load_compressed

    for name in ("policy.yaml", "model.pt", "model.onnx", "model.torchscript.pt", "metrics.json", "summary.txt",
                 "apply.log"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["torchscript"]["path"] == "model.torchscript.pt" and m["torchscript"]["top1_agreement"] == 1.0
    assert "torchscript: model.torchscript.pt verified" in (out / "summary.txt").read_text()
    for split in ("val", "test"):
        assert {"top1", "top5"} <= set(m["accuracy"]["before"][split]) and "top1" in m["accuracy"]["after"][split]
    for key in ("flops", "params", "size", "bops"):
        assert m["after"][key] < m["before"][key], key
    assert m["ratios"]["flops"] < 1
    assert set(m["timings"]) >= {"prune", "convert", "export", "total"}
    assert m["precision"] and (("int8" in " ".join(m["precision"].values())) == quantized)
    policy, model = load_compressed(out)
    assert policy.prune.kept
    assert "top1" in (out / "summary.txt").read_text()
    return m


def test_cli_apply_no_finetune_writes_everything(tmp_path, trained):
    policy = uniform_block_inner("resnet20", 0.3, quant=QuantSpec(backend="x86", default=LayerBits(8, 8)),
                                 input_size=SIZE)
    out = _cli(tmp_path, trained, policy, "--no-finetune", "--eval-limit", "128", "--threads", "1",
               "--latency-backend", "onnxruntime", "--onnx-tolerance", "2")
    m = _check_outputs(out, quantized=True)
    after = m["after"]  # the compressed model's Measurement, by metric name
    assert after["latency_ci_low"] <= after["latency_ratio"] <= after["latency_ci_high"]
    assert after["latency"] == after["latency_ratio"] and m["latency_timing"]["batch"] == 1
    assert after["flops_ratio"] == pytest.approx(after["flops"] / m["before"]["flops"])
    assert m["latency_timing"]["backend"] == "onnxruntime"
    assert m["train"] is None
    # model.onnx is the ORT-native INT8 artefact, verified by its own accuracy on the (limited) val split
    onnx_m = m["onnx"]
    assert onnx_m["verified"] and onnx_m["quantized"] and onnx_m["verified_samples"] == 128
    assert abs(onnx_m["ort_accuracy"] - onnx_m["torch_accuracy"]) <= onnx_m["accuracy_tolerance"] == 2.0
    assert 0 < onnx_m["ort_test_accuracy"] <= 100 and "ORT test top-1" in (out / "summary.txt").read_text()
    after_onnx = m["accuracy"]["after_onnx"]
    assert after_onnx["test"] == {"top1": round(onnx_m["ort_test_accuracy"], 3), "n": 128}
    assert after_onnx["val"]["n"] == 128 and "val top1 % onnx" in (out / "summary.txt").read_text()


def test_cli_apply_times_the_frozen_forms_with_the_torchscript_backend(tmp_path, trained):
    policy = uniform_block_inner("resnet20", 0.5, input_size=SIZE)
    out = _cli(tmp_path, trained, policy, "--no-finetune", "--eval-limit", "64", "--threads", "1",
               "--latency-backend", "torchscript")
    m = _check_outputs(out, quantized=False)
    assert m["latency_timing"]["backend"] == "torchscript" and m["after"]["latency_ratio"] > 0


@pytest.mark.slow
def test_cli_apply_with_kd_finetune(tmp_path, trained):
    policy = uniform_block_inner("resnet20", 0.3, distill=DistillSpec(alpha=0.5), finetune=TINY, input_size=SIZE)
    out = _cli(tmp_path, trained, policy, "--steps", "20")
    m = _check_outputs(out, quantized=False)
    assert m["train"]["steps"] == 20


def test_cli_bad_recipe_is_one_clear_error(tmp_path, trained, capsys):
    from search.cli import main

    ckpt = tmp_path / "m.pt"
    torch.save(trained.state_dict(), ckpt)
    rc = main(["apply", str(RECIPES_DIR / "resnet56-prune50.yaml"), "--checkpoint", str(ckpt),
               "--dataset", "digits", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "checkpoint does not match" in err and "layer1.3.conv1.weight" in err and "Traceback" not in err


def test_rebuild_compressed_reproduces_the_model(trained, digits16):
    from compress.apply import rebuild_compressed

    policy = uniform_block_inner("resnet20", 0.4, quant=QuantSpec(backend="x86", default=LayerBits(8, 8)),
                                 input_size=SIZE)
    out = apply(policy, trained, data=digits16, finetune=False, **FAST)
    calib = digits16.loader("calib", 64, shuffle=False)
    again = rebuild_compressed(out.policy, out.model.state_dict(), calib_loader=calib, calib_batches=2)
    x = next(iter(digits16.loader("val", 32, shuffle=False)))[0]
    with torch.no_grad():
        torch.testing.assert_close(again(x), out.model.eval()(x))
    with pytest.raises(PolicyError, match="prune.kept"):
        rebuild_compressed(policy, out.model.state_dict())


def test_rebuild_compressed_unpruned_option_a_model(trained):
    from compress.apply import rebuild_compressed
    from compress.prune import convert_option_a

    policy = uniform_block_inner("resnet20", 0, input_size=SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    for sd in (trained.state_dict(), convert_option_a(trained).state_dict()):
        with torch.no_grad():
            torch.testing.assert_close(rebuild_compressed(policy, sd)(x), trained(x))


def test_measure_a_compressed_model(trained, digits16):
    """The measurement service scores ``Compressed.scored``, counts the float structure at the policy's
    bits, and compares with the original's costs through ``reference``."""
    from compress.measure import count_bops, count_flops, evaluate, measure, model_size_bytes
    from compress.models import quantizable_layers
    from compress.quantize import strip_fake_quant

    policy = uniform_block_inner("resnet20", 0.5, quant=QuantSpec(backend="x86", default=LayerBits(8, 8)),
                                 input_size=SIZE)
    out = apply(policy, trained, data=digits16, finetune=False, **FAST)
    layers = quantizable_layers(trained)
    loader = digits16.loader("val", 64, shuffle=False, limit=128)
    original = measure(trained, input_size=SIZE, loader=loader, quant=QuantSpec())
    m = measure(out, input_size=SIZE, loader=loader, layers=layers, reference=original.to_dict())
    scored, what = out.scored(layers)
    assert what == "deploy" and m.accuracy == evaluate(scored, loader, progress=False)["top1"] and m.images == 128
    structure = strip_fake_quant(out.model)
    assert m.flops == count_flops(structure, SIZE) < original.flops
    assert m.size == model_size_bytes(structure, policy.quant) and m.bops == count_bops(structure, SIZE, policy.quant)
    assert m.accuracy_drop == pytest.approx(original.accuracy - m.accuracy)
    assert m.flops_ratio == pytest.approx(m.flops / original.flops)
    assert m.latency_ratio is None and list(m.to_dict()) == [
        "accuracy", "top5", "flops", "params", "size", "bops", "accuracy_drop", "flops_ratio"]
    assert list(m.times) == ["evaluate", "cost"]
