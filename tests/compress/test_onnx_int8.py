"""compress.onnx_int8: the ORT-native INT8 export (QDQ via onnxruntime.quantization) from our calibration."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress._apply_recipes import uniform_block_inner
from compress.apply import apply, calibration_batches
from compress.export import ort_accuracy, ort_session
from compress.measure import evaluate
from compress.onnx_int8 import export_onnx_int8, needs_int8_onnx, scope_module
from compress.quantize import act_qparams
from spaces.policy import LayerBits, QuantSpec
from tests.compress.conftest import SIZE

INT8 = QuantSpec(backend="x86", default=LayerBits(8, 8))
FAST = dict(calib_batches=2, bn_recal_batches=2, progress=False)


@pytest.fixture(scope="module")
def pruned_int8(trained, digits16):
    """ResNet-20, 50% block-inner pruned (stage 1 keeps 8 of 16 channels), INT8, no fine-tune."""
    return apply(uniform_block_inner("resnet20", 0.5, quant=INT8, input_size=SIZE), trained, data=digits16,
                 finetune=False, **FAST)


def _graph(path) -> tuple:
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    return proto, inits, producer


def _weight(node, inits, producer) -> tuple[np.ndarray, np.ndarray | None]:
    """(stored weight, its per-channel scale or None when the weight is float)."""
    dq = producer.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear":
        return inits[node.input[1]], None
    return inits[dq.input[0]], inits[dq.input[1]]


def _conv(proto, module: str):
    return next(n for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and scope_module(n.name) == module)


def test_scope_module_names():
    assert scope_module("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert scope_module("/layer1/layer1.0/downsample/downsample.0/Conv") == "layer1.0.downsample.0"
    assert scope_module("/conv1/Conv") == "conv1" and scope_module("/linear/Gemm") == "linear"


def test_needs_int8_onnx():
    layers = ["conv1", "linear"]
    assert needs_int8_onnx(INT8, layers)
    assert not needs_int8_onnx(QuantSpec(), layers)
    assert not needs_int8_onnx(QuantSpec(backend="x86", default=LayerBits(32, 32)), layers)
    assert not needs_int8_onnx(dataclasses.replace(INT8, backend="cuda"), layers)


@pytest.mark.parametrize("weight_type", ["s8", "u8"])
def test_int8_export_runs_int8_kernels_and_matches_the_simulation(pruned_int8, digits16, tmp_path, weight_type):
    path = tmp_path / "q.onnx"
    info = export_onnx_int8(pruned_int8.model, INT8, calibration_batches(digits16, 2), path, weight_type=weight_type)
    assert info.weight_type == weight_type
    assert info.padded_convs == 3  # the three 8-channel stage-1 block convs, widened to 16
    assert len(info.int8_layers) == 20 and info.float_layers == () and info.calibrated_ranges == 20
    # ONNX Runtime fuses the QDQ graph into integer kernels (nothing runs in float but the pooling glue)
    import onnxruntime as ort

    from compress.measure._runners import session_options

    so = session_options(1)
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert {"QLinearConv", "QLinearAdd"} <= ops and "Conv" not in ops and "Add" not in ops
    # the dynamic batch axis works and the accuracy is the fake-quant simulation's
    session = ort_session(path, 1)
    for n in (1, 3):
        assert session.run(None, {"input": torch.randn(n, 3, SIZE, SIZE).numpy()})[0].shape == (n, 10)
    ort_top1, n = ort_accuracy(path, digits16.loader("test", 128, shuffle=False))
    sim_top1 = evaluate(pruned_int8.model, digits16.loader("test", 128, shuffle=False), progress=False)["top1"]
    assert n == len(digits16.split("test")) and abs(ort_top1 - sim_top1) <= 2.0


def test_channel_padding_is_exact(pruned_int8, digits16, tmp_path):
    calib = calibration_batches(digits16, 2)
    export_onnx_int8(pruned_int8.model, INT8, calib, tmp_path / "pad.onnx")
    info = export_onnx_int8(pruned_int8.model, INT8, calib, tmp_path / "nopad.onnx", pad_channels=False)
    assert info.padded_convs == 0
    proto, inits, producer = _graph(tmp_path / "pad.onnx")
    weight, _ = _weight(_conv(proto, "layer1.0.conv1"), inits, producer)
    assert weight.shape[0] == 16 and not weight[8:].any()
    x = next(iter(digits16.loader("val", 64, shuffle=False)))[0].numpy()
    a = ort_session(tmp_path / "pad.onnx", 1).run(None, {"input": x})[0]
    b = ort_session(tmp_path / "nopad.onnx", 1).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("weight_type", ["s8", "u8"])
def test_our_ranges_float_layers_and_sub8_weight_grid(trained, digits16, tmp_path, weight_type):
    quant = QuantSpec(backend="x86", default=LayerBits(8, 8),
                      layers={"conv1": LayerBits(32, 32), "layer2.0.conv2": LayerBits(4, 8)})
    path = tmp_path / "mixed.onnx"
    fq = apply(uniform_block_inner("resnet20", 0.5, quant=quant, input_size=SIZE), trained, data=digits16,
               finetune=False, **FAST).model
    info = export_onnx_int8(fq, quant, calibration_batches(digits16, 2), path, weight_type=weight_type)
    assert info.float_layers == ("conv1",) and info.weight_type == weight_type
    proto, inits, producer = _graph(path)
    # the float layer keeps float weights
    weight, scale = _weight(_conv(proto, "conv1"), inits, producer)
    assert scale is None and weight.dtype == np.float32
    # a 4-bit layer: 8-bit storage (int8, or uint8 around zero point 128) holding the 4-bit grid, every
    # channel reaching +-7
    node = _conv(proto, "layer2.0.conv2")
    weight, scale = _weight(node, inits, producer)
    assert weight.dtype == (np.int8 if weight_type == "s8" else np.uint8)
    grid = weight.astype(np.int32) - (0 if weight_type == "s8" else 128)
    assert np.abs(grid).max() == 7 and (np.abs(grid).reshape(len(grid), -1).max(1) == 7).all()
    # its input range is the one the fake-quant layer calibrated
    layer = fq.get_submodule("layer2.0.conv2")
    q = producer[producer[node.input[0]].input[0]]
    assert q.op_type == "QuantizeLinear"
    want_scale, want_zero = act_qparams(float(layer.act_lo), float(layer.act_hi), 8)
    assert inits[q.input[1]] == pytest.approx(want_scale, rel=1e-5) and int(inits[q.input[2]]) == want_zero


def test_weight_type_follows_the_cpu(monkeypatch):
    """u8s8 weights where the CPU has VNNI, u8u8 on x86 CPUs without (their u8s8 kernels saturate)."""
    import platform

    from compress import onnx_int8

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for vnni in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda v=vnni: v)
        assert onnx_int8.cpu_has_vnni() is vnni
        assert onnx_int8.resolve_weight_type("auto") == ("s8" if vnni else "u8")
        assert onnx_int8.resolve_weight_type("s8") == "s8" and onnx_int8.resolve_weight_type("u8") == "u8"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert onnx_int8.cpu_has_vnni() is True and onnx_int8.resolve_weight_type("auto") == "s8"
    with pytest.raises(ValueError, match="weight_type = 'int4': allowed auto, s8, u8"):
        onnx_int8.resolve_weight_type("int4")
