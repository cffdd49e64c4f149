"""compress.torchscript: frozen TorchScript of float, pruned and INT8 FX models, written, reloaded
and checked against the module it came from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.prune import prune
from compress.quantize import convert
from compress.torchscript import TorchScriptError, export_torchscript, freeze_torchscript
from spaces.policy import LayerBits, PruneSpec, QuantSpec
from tests.conftest import random_batches, resnet20_with_bn_stats

SIZE = 8


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet20_with_bn_stats(SIZE)


def _forms(resnet: nn.Module) -> dict[str, nn.Module]:
    data = random_batches(4, 16, SIZE)
    pruned = prune(resnet, PruneSpec(ratios={"layer1.0.conv1": 0.5, "layer2.1.conv1": 0.25}), input_size=SIZE)[0]
    int8 = convert(pruned, QuantSpec(backend="x86", default=LayerBits(8, 8)), data, data[0][0][:1]).model
    return {"float": resnet, "pruned": pruned.eval(), "int8": int8}


@pytest.mark.parametrize("form", ["float", "pruned", "int8"])
def test_export_reloads_and_matches_the_module_at_any_batch(resnet, form, tmp_path):
    model = _forms(resnet)[form]
    path = tmp_path / "m.pt"
    verify = random_batches(2, 16, SIZE, seed=3)
    report = export_torchscript(model, path, torch.randn(1, 3, SIZE, SIZE), verify_loader=verify)
    assert report.verified_samples == 1 + 3 + 32 and report.top1_agreement == 1.0
    assert report.max_abs_diff <= report.allowed_abs_diff and report.size_bytes == path.stat().st_size
    loaded = torch.jit.load(str(path))  # needs nothing of this package
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-3, atol=1e-3)
    assert not model.training  # the model is left as it was


def test_freeze_leaves_the_training_flag_and_removes_python(resnet):
    resnet.train()
    try:
        frozen = freeze_torchscript(resnet, torch.randn(2, 3, SIZE, SIZE))
    finally:
        was = resnet.training
        resnet.eval()
    assert was and isinstance(frozen, torch.jit.ScriptModule)
    assert not list(frozen.parameters())  # weights are constants of the frozen graph


@pytest.mark.parametrize("form", ["float", "pruned", "int8"])
def test_channels_last_form_takes_nchw_and_converts_it_in_the_graph(resnet, form):
    """The channels_last form gives the module's outputs on NCHW input at any batch; its graph
    converts the input to channels_last (memory format 2) before anything else; the module itself
    keeps its NCHW weights."""
    model = _forms(resnet)[form]
    example = torch.randn(1, 3, SIZE, SIZE)
    frozen = freeze_torchscript(model, example, channels_last=True)
    first = next(n for n in frozen.graph.nodes() if n.kind() not in ("prim::Constant", "prim::GetAttr"))
    assert first.kind() == "aten::contiguous" and first.inputsAt(1).toIValue() == 2  # torch.channels_last
    assert "aten::contiguous" not in str(freeze_torchscript(model, example).graph)
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-3, atol=1e-3)
    assert all(t.is_contiguous() for t in model.parameters())


class _SignBranch(nn.Module):
    """Data-dependent control flow: tracing records one branch only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :10]
        return y * 2 if bool(x.sum() > 0) else -y


def test_a_trace_that_disagrees_is_refused_and_not_left_on_disk(tmp_path):
    path = tmp_path / "m.pt"
    example = torch.ones(1, 3, SIZE, SIZE)
    with pytest.raises(TorchScriptError, match=r"m\.pt: TorchScript vs PyTorch top-1 agreement"):
        export_torchscript(_SignBranch(), path, example, verify_loader=[-torch.ones(4, 3, SIZE, SIZE)])
    assert not path.exists()


def test_an_untraceable_model_is_one_error():
    class Dicty(nn.Module):
        def forward(self, x):
            return {"a": x}

    with pytest.raises(TorchScriptError, match="cannot trace and freeze Dicty"):
        freeze_torchscript(Dicty(), torch.randn(1, 3, SIZE, SIZE))
