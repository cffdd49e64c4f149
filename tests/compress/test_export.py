"""compress.export: ONNX export (float and INT8 FX) with dynamic batch, verified in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress.export import ExportError, export_onnx, ort_session, verify_onnx
from compress.models import get_model
from compress.quantize import convert
from spaces.policy import LayerBits, QuantSpec
from tests.conftest import random_batches

SIZE = 8


def _batches(n: int = 3, bs: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(n, bs, SIZE, seed)


@pytest.fixture(scope="module")
def float_model() -> nn.Module:
    torch.manual_seed(0)
    m = get_model("resnet20", num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics, as in a trained network
        m.train()
        for x, _ in _batches(1, 32, seed=7):
            m(x)
    return m.eval()


@pytest.fixture(scope="module")
def int8_model(float_model) -> nn.Module:
    data = _batches(4)
    return convert(float_model, QuantSpec(backend="x86", default=LayerBits(8, 8)), data, data[0][0][:1]).model


def _run(session, x: torch.Tensor) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_export_float_dynamic_batch_and_verified(float_model, tmp_path):
    path = tmp_path / "float.onnx"
    report = export_onnx(float_model, path, _batches(1)[0][0][:2], verify_loader=_batches(2, 32, seed=3))
    assert report.quantized is False and report.verified_samples == 64 and report.top1_agreement >= 0.995
    assert report.rel_diff < 1e-3 and report.size_bytes == path.stat().st_size
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch axis
    session = ort_session(path, threads=1)
    for n in (1, 3):
        x = torch.randn(n, 3, SIZE, SIZE)
        out = _run(session, x)
        assert out.shape == (n, 10)
        np.testing.assert_allclose(out, float_model(x).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_export_int8_fx_model_qdq_dynamic_batch(int8_model, float_model, tmp_path):
    path = tmp_path / "int8.onnx"
    report = export_onnx(int8_model, path, _batches(1)[0][0][:1], verify_loader=_batches(2, 32, seed=3))
    assert report.quantized is True
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(report.ops)
    assert report.top1_agreement >= 0.97
    session = ort_session(path, threads=1)
    x = torch.randn(3, 3, SIZE, SIZE)
    assert _run(session, x[:1]).shape == (1, 10) and _run(session, x).shape == (3, 10)
    ref = float_model(x).detach().numpy()
    assert np.abs(_run(session, x) - ref).max() < 0.1 * np.abs(ref).max()  # an INT8 copy of the float net
    # int8 weights make the file smaller than the float export
    fpath = tmp_path / "float.onnx"
    export_onnx(float_model, fpath, x[:1])
    assert path.stat().st_size < 0.5 * fpath.stat().st_size


def test_verification_fails_when_model_and_onnx_differ(float_model, tmp_path):
    import copy

    path = tmp_path / "m.onnx"
    m = copy.deepcopy(float_model)
    export_onnx(m, path, _batches(1)[0][0][:1])
    with torch.no_grad():
        m.linear.weight[0] += 0.5  # corrupt a weight after export
    with pytest.raises(ExportError, match="logits differ"):
        verify_onnx(m, path, _batches(1)[0][0][:1])


def test_int8_verification_fails_on_top1_disagreement(int8_model, tmp_path):
    import copy

    path = tmp_path / "q.onnx"
    q = copy.deepcopy(int8_model)
    export_onnx(q, path, _batches(1)[0][0][:1])
    lin = q.get_submodule("linear")
    bias = lin.bias().detach().clone()
    bias[3] += 1000.0  # torch now predicts class 3 for every sample; the ONNX file does not
    lin.set_weight_bias(lin.weight(), bias)
    with pytest.raises(ExportError, match="agree on top-1"):
        verify_onnx(q, path, _batches(1)[0][0][:1], verify_loader=_batches(2))


def test_verify_rejects_unreadable_file_and_export_errors_are_clear(float_model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match="bad.onnx"):
        verify_onnx(float_model, bad, torch.randn(1, 3, SIZE, SIZE))

    class Unexportable(nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy() * 2)  # leaves the traced graph: not exportable as a model

    with pytest.raises(ExportError, match="ONNX"):
        export_onnx(Unexportable(), tmp_path / "u.onnx", torch.randn(1, 3, SIZE, SIZE))


def test_ort_session_threads_validated(float_model, tmp_path):
    path = tmp_path / "f.onnx"
    export_onnx(float_model, path, torch.randn(1, 3, SIZE, SIZE))
    assert ort_session(path, None).get_inputs()[0].name == "input"
    with pytest.raises(ValueError, match="threads"):
        ort_session(path, 0)
