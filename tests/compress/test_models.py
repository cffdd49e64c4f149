"""Model registry: forward passes, parameter counts, checkpoint loading and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.measure import count_params
from compress.models import (
    MODELS,
    CheckpointError,
    build_model,
    default_input_size,
    default_num_classes,
    get_model,
    is_cifar,
    load_checkpoint,
    quantizable_layers,
)
from compress.registry import UnknownNameError
from spaces.policy import ModelSpec

#: ImageNet models other than these are run at 64x64 to keep the suite fast
FULL_SIZE = {"resnet18", "resnet50"}


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_at_input_size(name):
    model = get_model(name, num_classes=7).eval()
    size = default_input_size(name)
    if not is_cifar(name) and name not in FULL_SIZE:
        size = 64
    with torch.inference_mode():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_defaults_and_layers(name):
    cifar = is_cifar(name)
    assert default_input_size(name) == (32 if cifar else 224)
    assert default_num_classes(name) == (10 if cifar else 1000)
    model = get_model(name)
    layers = quantizable_layers(model)
    modules = dict(model.named_modules())
    assert layers[0] == "conv1"
    assert layers[-1] == ("linear" if cifar else "fc")
    assert all(isinstance(modules[n], (nn.Conv2d, nn.Linear)) for n in layers)


@pytest.mark.parametrize("name, millions", [
    ("resnet20", 0.27), ("resnet32", 0.46), ("resnet44", 0.66), ("resnet56", 0.85), ("resnet110", 1.73),
    ("resnet18", 11.69), ("resnet34", 21.80), ("resnet50", 25.56), ("resnet101", 44.55), ("resnet152", 60.19),
])
def test_known_param_counts(name, millions):
    assert round(count_params(get_model(name)) / 1e6, 2) == pytest.approx(millions, abs=0.005)


def test_build_model_from_spec():
    m = build_model(ModelSpec(name="resnet18", num_classes=100, input_size=32, small_input=True))
    assert m.fc.out_features == 100 and m.conv1.stride == (1, 1)
    with torch.inference_mode():
        assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    b = build_model(ModelSpec(name="resnet20", shortcut="B"))
    assert "layer2.0.shortcut.0" in quantizable_layers(b)


def test_bad_model_options_are_errors():
    with pytest.raises(ValueError, match="small_input"):
        get_model("resnet20", small_input=True)
    with pytest.raises(ValueError, match="shortcut"):
        get_model("resnet18", shortcut="A")


def test_unknown_model_lists_known():
    with pytest.raises(UnknownNameError) as err:
        get_model("resnet21")
    msg = str(err.value)
    assert "resnet21" in msg
    for name in MODELS.names():
        assert name in msg


def test_quantizable_layers_skip_fixed_modules():
    model = get_model("resnet20")
    n = len(quantizable_layers(model))
    model.layer2[0].conv1.autocompress_fixed = True
    layers = quantizable_layers(model)
    assert len(layers) == n - 1 and "layer2.0.conv1" not in layers


# ----- checkpoints ----------------------------------------------------------------------

@pytest.fixture
def trained_pair():
    src = get_model("resnet20").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        src.bn1.running_mean.add_(0.5)
    return src, get_model("resnet20").eval()


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "model", "state_dict+module"])
def test_checkpoint_formats_load(tmp_path, trained_pair, wrap):
    src, dst = trained_pair
    sd = src.state_dict()
    if "module" in wrap:
        sd = {f"module.{k}": v for k, v in sd.items()}
    if wrap.startswith("state_dict"):
        obj = {"state_dict": sd, "epoch": 3}
    elif wrap == "model":
        obj = {"model": sd}
    else:
        obj = sd
    path = tmp_path / "ck.pt"
    torch.save(obj, path)
    out = load_checkpoint(dst, path)
    assert out is dst
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(dst(x), src(x))


def test_checkpoint_without_num_batches_tracked_loads(tmp_path, trained_pair):
    src, dst = trained_pair
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.th")
    load_checkpoint(dst, tmp_path / "old.th")
    torch.testing.assert_close(dst.bn1.running_mean, src.bn1.running_mean)


def test_checkpoint_mismatch_names_keys_and_shapes(tmp_path):
    sd = get_model("resnet20").state_dict()
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["linear.weight"] = torch.zeros(5, 64)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(get_model("resnet20"), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg
    assert "linear.weight" in msg and "(5, 64)" in msg and "(10, 64)" in msg


def test_checkpoint_wrong_depth_is_a_clear_error(tmp_path):
    torch.save(get_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(CheckpointError, match="unexpected keys|missing keys"):
        load_checkpoint(get_model("resnet32"), tmp_path / "r20.pt")


def test_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save(get_model("resnet20"), tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(get_model("resnet20"), tmp_path / "module.pt")


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(get_model("resnet20"), tmp_path / "nope.pt")


def test_checkpoint_not_a_state_dict(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_checkpoint(get_model("resnet20"), tmp_path / "odd.pt")


@pytest.mark.shared_data
@pytest.mark.parametrize("depth", [20, 56])
def test_shared_checkpoints_load(depth):
    from tests.conftest import shared_checkpoint

    model = load_checkpoint(get_model(f"resnet{depth}"), shared_checkpoint(depth))
    assert count_params(model) == count_params(get_model(f"resnet{depth}"))
