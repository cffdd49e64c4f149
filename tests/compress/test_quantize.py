"""compress.quantize: bit resolution, backend rules, fake quantization (STE/QAT), real conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.models import get_model, quantizable_layers
from compress.quantize import (
    ENGINES,
    FakeQuantConv2d,
    FakeQuantLinear,
    calibrate,
    check_bits,
    convert,
    fake_quant_weight,
    fake_quantize,
    resolve_bits,
    resolve_engine,
    strip_fake_quant,
)
from spaces.policy import LayerBits, PolicyError, QuantSpec
from tests.conftest import random_batches

SIZE = 8  # small inputs keep the CPU tests fast; the CIFAR ResNets are size-agnostic


def _batches(n: int = 3, bs: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(n, bs, SIZE, seed)


def _model(name: str = "resnet20") -> nn.Module:
    torch.manual_seed(0)
    kw = {"small_input": True} if name == "resnet18" else {}
    m = get_model(name, num_classes=10, **kw).eval()
    # give BN non-trivial statistics so the network behaves like a trained one
    with torch.no_grad():
        m.train()
        for x, _ in _batches(1, 32, seed=7):
            m(x)
    return m.eval()


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach(), ref.detach()
    return float((y - ref).pow(2).mean() / ref.pow(2).mean())


# ----- resolve_bits / check_bits ---------------------------------------------------------------
def test_resolve_bits_default_and_overrides():
    m = _model()
    q = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"layer2.0.conv1": LayerBits(4, 8)})
    bits = resolve_bits(m, q)
    assert list(bits) == quantizable_layers(m)
    assert bits["layer2.0.conv1"] == LayerBits(4, 8)
    assert bits["conv1"] == LayerBits(8, 8) and bits["linear"] == LayerBits(8, 8)


def test_resolve_bits_unknown_layer_names_field_and_known_layers():
    with pytest.raises(PolicyError) as exc:
        resolve_bits(_model(), QuantSpec(backend="x86", layers={"layer9.conv": LayerBits(4, 8)}))
    text = str(exc.value)
    assert 'quant.layers["layer9.conv"]' in text and "unknown layer" in text and "layer1.0.conv1" in text


@pytest.mark.parametrize("bits, backend, ok", [
    (LayerBits(4, 8), "x86", True),        # sub-8 weights: int8 kernel on the 4-bit grid
    (LayerBits(8, 4), "x86", True),        # sub-8 activations: simulation only
    (LayerBits(16, 16), "x86", True),
    (LayerBits(4, 32), "x86", False),      # int weights with float activations: no x86 kernel
    (LayerBits(32, 8), "x86", False),
    (LayerBits(4, 32), "cuda", True),
    (LayerBits(16, 32), "cuda", True),
    (LayerBits(8, 8), "none", False),
    (LayerBits(16, 32), "none", True),
    (LayerBits(4, 4), "tensorrt", True),   # sub-8 on its grid inside INT8 Q/DQ
    (LayerBits(16, 32), "tensorrt", True),
    (LayerBits(8, 32), "tensorrt", False),  # TensorRT INT8 needs Q/DQ on both inputs
    (LayerBits(32, 8), "tensorrt", False),
])
def test_check_bits_rules(bits, backend, ok):
    q = QuantSpec(backend=backend, layers={"layer1.0.conv1": bits})
    if ok:
        check_bits(q)
        return
    with pytest.raises(PolicyError) as exc:
        check_bits(q)
    text = str(exc.value)
    assert 'quant.layers["layer1.0.conv1"]' in text and "allowed" in text
    assert f"'w': {bits.w}" in text


def test_check_bits_default_entry_and_explicit_backend():
    q = QuantSpec(backend="cuda", default=LayerBits(4, 32))
    check_bits(q)
    with pytest.raises(PolicyError, match=r"quant\.default .*x86 int8 kernels"):
        check_bits(q, "x86")
    with pytest.raises(PolicyError, match="quant.backend"):
        check_bits(q, "tpu")


# ----- fake quantization -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_weight_error_shrinks_with_bits(name):
    m = get_model(name, num_classes=10, **({"small_input": True} if name == "resnet18" else {}))
    for layer in ("conv1", "layer1.0.conv1"):
        w = m.get_submodule(layer).weight.detach()
        errs = [float((fake_quant_weight(w, b) - w).pow(2).mean()) for b in range(2, 9)]
        assert all(a > b for a, b in zip(errs, errs[1:])), errs
        levels = [fake_quant_weight(w, b)[0].unique().numel() for b in (2, 3)]
        assert levels[0] <= 3 and levels[1] <= 7


def test_model_error_shrinks_with_weight_and_activation_bits():
    m = _model()
    data = _batches()
    x = data[0][0]
    ref = m(x)
    w_errs = [_rel_err(fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(b, 32)))(x), ref)
              for b in (2, 4, 8)]
    a_errs = [_rel_err(fake_quantize(m, QuantSpec(backend="cuda", default=LayerBits(32, b)), data)(x), ref)
              for b in (4, 6, 8)]
    assert w_errs[0] > w_errs[1] > w_errs[2] > 0, w_errs
    assert a_errs[0] > a_errs[1] > a_errs[2] > 0, a_errs
    assert w_errs[2] < 0.01 and a_errs[2] < 0.01


def test_fake_quantize_keeps_names_state_dict_and_input_untouched():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    q = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"layer3.2.conv2": LayerBits(32, 32)})
    fq = fake_quantize(m, q, _batches(2))
    assert fq is not m
    assert isinstance(fq.get_submodule("layer1.0.conv1"), FakeQuantConv2d)
    assert isinstance(fq.get_submodule("linear"), FakeQuantLinear)
    assert type(fq.get_submodule("layer3.2.conv2")) is nn.Conv2d  # float layer untouched
    assert isinstance(fq.get_submodule("conv1"), nn.Conv2d)  # still a Conv2d for isinstance users
    assert list(fq.state_dict()) == list(m.state_dict())
    fresh = get_model("resnet20")
    fresh.load_state_dict(fq.state_dict())  # strict: float <-> fake-quant checkpoints interchange
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(x, FakeQuantConv2d) for x in m.modules())
    back = strip_fake_quant(fq)
    assert not any(isinstance(x, (FakeQuantConv2d, FakeQuantLinear)) for x in back.modules())
    x = _batches(1)[0][0]
    torch.testing.assert_close(back(x), m(x))


def test_calibration_sets_ranges_and_methods_differ():
    m = _model()
    data = _batches(3)
    ranges = {}
    for method in ("minmax", "percentile", "mse"):
        fq = fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(8, 4)), data, act_method=method)
        layer = fq.get_submodule("layer2.0.conv1")
        assert layer.calibrated
        lo, hi = float(layer.act_lo), float(layer.act_hi)
        assert lo == 0.0 and hi > 0  # post-ReLU input: unsigned range
        ranges[method] = hi
        first = fq.get_submodule("conv1")
        assert float(first.act_lo) < 0  # normalised image input: signed range
    assert ranges["minmax"] >= ranges["percentile"] and ranges["minmax"] > ranges["mse"]


def test_ste_gradient_nonzero_and_qat_step_reduces_loss():
    m = _model()
    data = _batches(2, 16)
    fq = fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(4, 8)), data)
    fq.train()
    x, y = data[0]
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(fq(x), y)
    loss.backward()
    grads = [p.grad for n, p in fq.named_parameters() if n.endswith("conv1.weight")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert x.grad is not None and x.grad.abs().sum() > 0

    opt = torch.optim.SGD(fq.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(fq(data[0][0]), data[0][1])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[1:]) < losses[0], losses
    # the weight grid follows the trained weights
    layer = fq.get_submodule("layer1.0.conv1")
    w = layer.weight.detach()
    torch.testing.assert_close(layer.quant_weight().detach(), fake_quant_weight(w, 4))


def test_qat_with_compress_train_fit():
    train = pytest.importorskip("compress.train")
    from spaces.policy import FinetuneSpec

    m = _model()
    fq = fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(6, 8)), _batches(2))
    before = fq.get_submodule("layer2.1.conv2").weight.detach().clone()
    res = train.fit(fq, _batches(2, 16), FinetuneSpec(epochs=None, steps=2, lr=0.01, batch_size=16), progress=False)
    assert res.steps == 2
    assert not torch.equal(before, fq.get_submodule("layer2.1.conv2").weight.detach())
    assert isinstance(fq.get_submodule("layer2.1.conv2"), FakeQuantConv2d)


def test_uncalibrated_layers_track_ranges_in_training_and_can_be_calibrated_later():
    m = _model()
    fq = fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(8, 8)))
    layer = fq.get_submodule("layer1.0.conv2")
    x = _batches(1)[0][0]
    fq.eval()
    fq(x)
    assert not torch.isfinite(layer.act_lo)  # eval before any range: the batch's own range, not stored
    fq.train()
    fq(x)
    assert torch.isfinite(layer.act_hi) and float(layer.act_hi) > 0
    calibrate(fq, _batches(2))
    assert layer.calibrated


def test_cuda_backend_16_bit_simulates_fp16_rounding():
    m = _model()
    x = _batches(1)[0][0]
    fq = fake_quantize(m, QuantSpec(backend="cuda", default=LayerBits(16, 16)))
    err = _rel_err(fq(x), m(x))
    assert 0 < err < 1e-5
    fq32 = fake_quantize(m, QuantSpec(backend="x86", default=LayerBits(16, 16)))
    torch.testing.assert_close(fq32(x), m(x))  # x86: 16 bits run as fp32


# ----- conversion ---------------------------------------------------------------------------------
def _quantized_type(mod: nn.Module) -> bool:
    return type(mod).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def test_convert_x86_int8_close_to_float_and_mixed_layers_stay_float():
    m = _model()
    data = _batches(3)
    q = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"layer2.0.conv2": LayerBits(32, 32),
                                                                 "layer3.0.conv1": LayerBits(16, 16)})
    res = convert(m, q, data, data[0][0][:1])
    mods = dict(res.model.named_modules())
    assert any(isinstance(x, torch.ao.nn.quantized.Conv2d) for x in mods.values())
    assert any(type(x).__name__ == "ConvReLU2d" and _quantized_type(x) for x in mods.values())
    assert _quantized_type(mods["linear"]) and res.precision["linear"] == "int8"
    for name in ("layer2.0.conv2", "layer3.0.conv1"):
        mod = mods[name]
        conv = mod[0] if isinstance(mod, nn.Sequential) else mod  # fused float ConvReLU2d keeps a Conv2d
        assert not _quantized_type(mod) and type(conv) is nn.Conv2d and conv.weight.dtype == torch.float32
        assert res.precision[name] == "fp32"
    assert any("16-bit" in n for n in res.notes)
    x = torch.cat([b[0] for b in _batches(2, 32, seed=3)])
    ref, y = m(x), res.model(x)
    assert _rel_err(y, ref) < 0.02
    assert float((y.argmax(1) == ref.argmax(1)).float().mean()) >= 0.9
    # the input model is untouched and still float
    assert not any(_quantized_type(x) for x in m.modules())


@pytest.mark.skipif(not torch.cpu._is_vnni_supported(), reason="8-bit activations need a CPU with VNNI")
def test_convert_x86_activations_use_all_8_bits_on_vnni():
    data = _batches(3)
    model = convert(_model(), QuantSpec(backend="x86", default=LayerBits(8, 8)), data, data[0][0][:1]).model
    x = torch.cat([b[0] for b in data])
    q = torch.quantize_per_tensor(x, float(model.conv1_input_scale_0), int(model.conv1_input_zero_point_0),
                                  torch.quint8)
    assert int(q.int_repr().max()) > 127  # PyTorch's default x86 qconfig (reduce_range) stops at 127


@pytest.fixture
def restore_engine():
    """convert() leaves its engine set process-wide: put the previous one back after the test."""
    before = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = before


def test_resolve_engine_checks_names_and_the_build(monkeypatch):
    assert ENGINES == ("x86", "fbgemm", "onednn") and resolve_engine() == "x86"
    assert [resolve_engine(e) for e in ENGINES] == list(ENGINES)
    with pytest.raises(ValueError, match="int8 engine = 'mkl': allowed x86, fbgemm, onednn"):
        resolve_engine("mkl")
    from compress.quantize import _engine

    monkeypatch.setattr(_engine, "built_engines", lambda: ["qnnpack", "x86"])
    with pytest.raises(ValueError, match="int8 engine = 'onednn': this PyTorch build has qnnpack, x86"):
        resolve_engine("onednn")


@pytest.mark.parametrize("engine", ["x86", "fbgemm", "onednn"])
def test_convert_packs_int8_weights_for_the_engine(engine, restore_engine, tmp_path):
    """Every engine gives the same model to within INT8 rounding, records itself, stays set (so the
    TorchScript export repacks for it on reload) and survives a TorchScript round trip."""
    from compress.torchscript import export_torchscript

    m, data = _model(), _batches(3)
    spec = QuantSpec(backend="x86", default=LayerBits(8, 8))
    res = convert(m, spec, data, data[0][0][:1], engine=engine)
    assert res.int8_engine == engine and torch.backends.quantized.engine == engine
    assert any(engine in n for n in res.notes)
    ref = convert(m, spec, data, data[0][0][:1], engine="x86").model
    x = torch.cat([b[0] for b in _batches(2, 32, seed=3)])
    y = res.model(x)
    assert _rel_err(y, m(x)) < 0.02 and _rel_err(y, ref(x)) < 0.01
    torch.backends.quantized.engine = engine
    report = export_torchscript(res.model, tmp_path / "m.pt", x[:1], verify_loader=[(x, None)])
    assert report.top1_agreement == 1.0


def test_convert_rejects_an_unknown_engine_before_work():
    with pytest.raises(ValueError, match="int8 engine = 'avx'"):
        convert(_model(), QuantSpec(backend="x86", default=LayerBits(8, 8)), [], torch.zeros(1, 3, SIZE, SIZE),
                engine="avx")


def test_convert_sub8_weights_lie_on_grid_and_match_simulation():
    m = _model()
    data = _batches(3)
    q = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"layer2.1.conv1": LayerBits(4, 8)})
    res = convert(m, q, data, data[0][0][:1])
    layer = res.model.get_submodule("layer2.1.conv1")
    ints = layer.weight().int_repr()
    assert int(ints.abs().max()) <= 7 and ints.unique().numel() <= 15
    assert "w4" in res.precision["layer2.1.conv1"] and "int8" in res.precision["layer2.1.conv1"]
    assert any("grid" in n for n in res.notes)
    x = torch.cat([b[0] for b in _batches(2, 32, seed=3)])
    sim = fake_quantize(m, q, data)
    assert _rel_err(res.model(x), sim(x)) < 0.02


def test_convert_accepts_fake_quantized_model():
    m = _model()
    data = _batches(3)
    q = QuantSpec(backend="x86", default=LayerBits(8, 8))
    fq = fake_quantize(m, q, data)
    res = convert(fq, q, data, data[0][0][:1])
    assert len(res.quantized_layers) == len(quantizable_layers(m))
    assert isinstance(fq.get_submodule("conv1"), FakeQuantConv2d)  # input not modified


def test_convert_pruned_model_with_fixed_shortcut_convs():
    prune_mod = pytest.importorskip("compress.prune")
    from spaces.policy import PruneSpec

    m = _model()
    groups = [g.name for g in prune_mod.list_groups(m, SIZE)]
    pruned, _ = prune_mod.prune(m, PruneSpec(ratios={g: 0.5 for g in groups[:3]}), input_size=SIZE)
    fixed = [n for n, x in pruned.named_modules() if getattr(x, "autocompress_fixed", False)]
    assert fixed
    data = _batches(3)
    res = convert(pruned, QuantSpec(backend="x86", default=LayerBits(8, 8)), data, data[0][0][:1])
    for name in fixed:
        mod = res.model.get_submodule(name)
        assert _quantized_type(mod)
        w = mod.weight()
        assert set(w.int_repr().unique().tolist()) <= {0, 1} and float(w.q_scale()) == 1.0
        assert res.precision[name].startswith("int8")
    x = torch.cat([b[0] for b in _batches(2, 32, seed=3)])
    assert _rel_err(res.model(x), pruned(x)) < 0.02


def test_convert_cuda_target_bf16_on_cpu():
    m = _model()
    data = _batches(2)
    q = QuantSpec(backend="cuda", default=LayerBits(16, 16), layers={"linear": LayerBits(32, 32),
                                                                    "layer1.0.conv1": LayerBits(4, 8)})
    res = convert(m, q, data, data[0][0][:1], half_dtype=torch.bfloat16)
    assert res.precision["conv1"] == "bf16" and res.model.get_submodule("conv1").weight.dtype == torch.bfloat16
    assert res.precision["linear"] == "fp32" and res.model.get_submodule("linear").weight.dtype == torch.float32
    assert "simulated" in res.precision["layer1.0.conv1"] and any("INT8" in n for n in res.notes)
    x = data[1][0]
    y = res.model(x)
    assert y.dtype == torch.float32 and _rel_err(y, m(x)) < 0.02


def test_convert_none_and_float_only_policies_return_float_copies():
    m = _model()
    x = _batches(1)[0][0]
    for q, target in ((QuantSpec(), None), (QuantSpec(backend="x86", default=LayerBits(32, 32)), None)):
        res = convert(m, q, None if target is None and q.backend == "none" else _batches(1), x[:1], target=target)
        assert res.model is not m and not any(_quantized_type(mod) for mod in res.model.modules())
        assert set(res.precision.values()) == {"fp32"}
        torch.testing.assert_close(res.model(x), m(x))


def test_convert_rejects_bits_the_target_cannot_run():
    m = _model()
    q = QuantSpec(backend="x86", layers={"layer1.0.conv1": LayerBits(4, 32)})
    with pytest.raises(PolicyError, match=r'quant\.layers\["layer1\.0\.conv1"\]'):
        convert(m, q, _batches(1), _batches(1)[0][0][:1])
    with pytest.raises(ValueError, match="calib_loader"):
        convert(m, QuantSpec(backend="x86", default=LayerBits(8, 8)), None, _batches(1)[0][0][:1])


@pytest.mark.shared_data  # ~12 s on 2 free cores
def test_real_resnet20_int8_keeps_accuracy_and_matches_simulation(cifar_jpeg_dir):
    from compress.data import get_dataset
    from compress.measure import evaluate
    from compress.models import load_checkpoint
    from tests.conftest import shared_checkpoint

    data = get_dataset("imagefolder", cifar_jpeg_dir, normalization="imagenet", input_size=32)
    m = load_checkpoint(get_model("resnet20"), shared_checkpoint(20)).eval()
    calib = [b for _, b in zip(range(4), data.loader("calib", 64))]
    test = data.loader("test", 200, limit=600)
    base = evaluate(m, test, progress=False)["top1"]
    res = convert(m, QuantSpec(backend="x86", default=LayerBits(8, 8)), calib, calib[0][0][:1])
    int8 = evaluate(res.model, test, progress=False)["top1"]
    assert base > 70 and int8 > base - 1.5, (base, int8)
    q4 = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"layer3.2.conv2": LayerBits(4, 8)})
    sim = evaluate(fake_quantize(m, q4, calib), test, progress=False)["top1"]
    real = evaluate(convert(m, q4, calib, calib[0][0][:1]).model, test, progress=False)["top1"]
    assert abs(sim - real) < 2.0, (sim, real)


# ----- cuda / tensorrt targets (built and checked on the CPU; TensorRT itself in tests marked gpu) -------
def _onnx_ops(path) -> dict[str, int]:
    import collections

    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_convert_cuda_all_16_bit_casts_the_whole_model_once():
    m = _model()
    x = _batches(1)[0][0]
    res = convert(m, QuantSpec(backend="cuda", default=LayerBits(16, 16)), None, x[:1])
    assert all(p.dtype == torch.float16 for p in res.model.parameters())  # BatchNorm too
    assert all(not mod._forward_pre_hooks for mod in res.model.modules() if mod is not res.model)
    assert set(res.precision.values()) == {"fp16"} and set(res.precision) >= set(quantizable_layers(m))
    y = res.model(x)
    assert y.dtype == torch.float32 and _rel_err(y, m(x)) < 1e-3


def test_convert_tensorrt_folds_bn_and_quantizes_symmetrically(tmp_path):
    from compress.export import export_onnx
    from compress.quantize._fake import FAKE_QUANT_TYPES

    m = _model()
    data = _batches(3, 32)
    q = QuantSpec(backend="tensorrt", default=LayerBits(8, 8),
                  layers={"layer1.0.conv1": LayerBits(4, 4), "linear": LayerBits(16, 16)})
    res = convert(m, q, data, data[0][0][:1])
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in res.model.modules())  # folded
    fq = {n: mod for n, mod in res.model.named_modules() if isinstance(mod, FAKE_QUANT_TYPES)}
    assert set(fq) == set(quantizable_layers(m)) - {"linear"}
    assert all(mod.act_symmetric and int(mod.act_zero) == 0 for mod in fq.values())  # what TensorRT runs
    assert res.precision["conv1"] == "int8 (TensorRT Q/DQ)" and res.precision["linear"] == "fp16"
    assert "w4 simulated" in res.precision["layer1.0.conv1"] and any("simulated" in n for n in res.notes)
    x = torch.cat([b[0] for b in data])
    sim = fake_quantize(m, q, data)  # the QAT simulation of the same policy (BN not folded)
    assert _rel_err(res.model(x), sim(x)) < 0.02 and _rel_err(res.model(x), m(x)) < 0.1
    rep = export_onnx(res.model, tmp_path / "m.onnx", x[:2], verify_loader=[(x, torch.zeros(len(x)))])
    ops = _onnx_ops(tmp_path / "m.onnx")
    # Q/DQ on the input and on the weights of every integer layer; no BatchNorm left
    assert ops["QuantizeLinear"] == ops["DequantizeLinear"] == 2 * len(fq) and "BatchNormalization" not in ops
    assert rep.top1_agreement >= 0.97


def test_frozen_weights_export_as_int8_zero_point_qdq(tmp_path):
    import onnx
    from onnx import numpy_helper

    m = _model()
    data = _batches(2, 32)
    res = convert(m, QuantSpec(backend="tensorrt", default=LayerBits(8, 8)), data, data[0][0][:1])
    conv = res.model.get_submodule("layer2.0.conv1")
    w = conv.weight.detach().clone()
    assert torch.equal(conv.quant_weight(), w)  # frozen on its grid: fake quantization is the identity
    torch.onnx.export(res.model, (data[0][0][:1],), str(tmp_path / "q.onnx"), dynamo=False, opset_version=17)
    g = onnx.load(str(tmp_path / "q.onnx"))
    consts = {o: n for n in g.graph.node for o in n.output if n.op_type == "Constant"}
    inits = {i.name for i in g.graph.initializer}
    for node in (n for n in g.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        zp = node.input[2]
        arr = numpy_helper.to_array(consts[zp].attribute[0].t) if zp in consts else None
        assert arr is not None and arr.dtype.name == "int8" and not arr.any()  # symmetric, signed
    weight_q = [n for n in g.graph.node
                if n.op_type == "QuantizeLinear" and (n.input[0] in inits or n.input[0] in consts)]
    assert weight_q  # weights enter Q/DQ as constants (not folded away into float weights)


def test_cuda_target_with_integer_layers_exports_and_verifies(tmp_path):
    from compress.export import export_onnx

    m = _model()
    data = _batches(2, 32)
    q = QuantSpec(backend="cuda", default=LayerBits(8, 8), layers={"layer3.0.conv1": LayerBits(4, 4)})
    res = convert(m, q, data, data[0][0][:1])
    x = torch.cat([b[0] for b in data])
    rep = export_onnx(res.model, tmp_path / "c.onnx", x[:2], verify_loader=[(x, torch.zeros(len(x)))])
    assert rep.top1_agreement >= 0.97 and _onnx_ops(tmp_path / "c.onnx")["QuantizeLinear"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_tensorrt_deploy_models_run_on_the_gpu():
    m = _model()
    data = _batches(2, 32, size=32)
    x = torch.cat([b[0] for b in data])
    ref = m(x)
    for q in (QuantSpec(backend="cuda", default=LayerBits(16, 16)),
              QuantSpec(backend="cuda", default=LayerBits(8, 8), layers={"linear": LayerBits(16, 16)}),
              QuantSpec(backend="tensorrt", default=LayerBits(8, 8), layers={"linear": LayerBits(16, 16)})):
        res = convert(m, q, data, x[:1])
        gpu = res.model.cuda()
        with torch.no_grad():
            y = gpu(x.cuda().contiguous(memory_format=torch.channels_last))
        assert y.dtype == torch.float32 and y.is_cuda
        assert _rel_err(y.cpu(), ref) < 0.05, (q, _rel_err(y.cpu(), ref))
