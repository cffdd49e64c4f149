"""Search spaces for GPU targets: latency device/backend validation, the round_to default, and the
bit rule of each quantization target (cuda, tensorrt)."""

from __future__ import annotations

import pytest
import yaml

from spaces.space import SpaceError, baseline_params, expand, load_space, policy_from_params, space_from_dict
from tests.spaces.test_space import model_info, space_dict


def _load(tmp_path, **sections):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(space_dict(**sections)))
    return p


@pytest.mark.parametrize("latency, quant, field, allowed", [
    ({"device": "gpu"}, "x86", "budget.latency.device", "allowed cpu, cuda, cuda:N"),
    ({"device": "cuda:x"}, "none", "budget.latency.device", "allowed cpu, cuda, cuda:N"),
    ({"backend": "tensorrt"}, "none", "budget.latency.backend", "torch, tensorrt with device cuda"),
    ({"device": "cuda", "backend": "onnxruntime"}, "none", "budget.latency.backend", "CPU only"),
    ({"device": "cuda", "backend": "torchscript"}, "none", "budget.latency.backend", "CPU only"),
    ({"device": "cuda", "backend": "torchscript-cl"}, "none", "budget.latency.backend", "CPU only"),
    ({"backend": "tvm"}, "x86", "budget.latency.backend", "torchscript"),
    ({"device": "cuda"}, "x86", "quant.backend", "allowed cuda, tensorrt, none"),
    ({"device": "cuda", "backend": "tensorrt"}, "cuda", "quant.backend", "allowed tensorrt, none"),
    ({"backend": "torch", "rounds": 20}, "cpu", "quant.backend", 'allowed "x86", "cuda", "tensorrt", "none"'),
])
def test_gpu_target_errors_name_file_field_value_and_allowed(tmp_path, latency, quant, field, allowed):
    quant_section = {"backend": quant, "weight_bits": [8, 32], "act_bits": [8, 32], "share": "stage"}
    p = _load(tmp_path, quant=quant_section, budget={"latency": latency})
    with pytest.raises(SpaceError) as exc:
        load_space(p)
    text = str(exc.value)
    assert str(p) in text and field in text and allowed in text, text
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize("latency, quant", [
    ({"device": "cuda"}, "cuda"), ({"device": "cuda:1"}, "tensorrt"), ({"device": "cuda", "backend": "tensorrt"},
                                                                        "tensorrt"),
    ({"device": "cuda", "backend": "tensorrt"}, "none"), ({"device": "cpu", "backend": "onnxruntime"}, "x86"),
    ({"device": "cpu", "backend": "torchscript"}, "x86"), ({"device": "cpu", "backend": "torchscript-cl"}, "x86"),
])
def test_valid_gpu_targets_load(tmp_path, latency, quant):
    quant_section = {"backend": quant, "weight_bits": [8, 32], "act_bits": [8, 32], "share": "stage"}
    space = load_space(_load(tmp_path, quant=quant_section, budget={"latency": latency}))
    assert space.budget.latency.device == latency["device"] and space.quant.backend == quant


def test_round_to_defaults_to_8_on_cuda_else_1_and_is_saved_resolved(tmp_path):
    cpu = load_space("resnet20-cifar10")
    gpu = load_space("resnet20-cifar10", ["budget.latency.device=cuda", "quant.backend=cuda"])
    explicit = load_space("resnet20-cifar10", ["budget.latency.device=cuda", "quant.backend=cuda", "prune.round_to=4"])
    assert (cpu.prune.round_to, gpu.prune.round_to, explicit.prune.round_to) == (1, 8, 4)
    saved = gpu.to_dict()  # what RUN/config.yaml holds
    assert saved["prune"]["round_to"] == 8
    again = space_from_dict(yaml.safe_load(yaml.safe_dump(saved)))
    assert again == gpu and again.prune.round_to == 8
    groups, layers, _ = model_info("resnet20")
    dims = expand(gpu, groups, layers)
    policy = policy_from_params(gpu, dims, dict(baseline_params(gpu, dims))["uniform-prune-0.5"])
    assert policy.prune.round_to == 8
    with pytest.raises(SpaceError, match=r"prune\.round_to.*integer >= 1 or null"):
        load_space("resnet20-cifar10", ["prune.round_to=0"])


def test_tensorrt_couples_bits_and_cuda_does_not():
    groups, layers, _ = model_info("resnet20")
    quant = {"weight_bits": [4, 16, 32], "act_bits": [8, 32], "share": "model"}
    for backend, expected in (("tensorrt", {(4, 8)}), ("cuda", {(4, 32)})):
        space = space_from_dict(space_dict(quant={**quant, "backend": backend},
                                           budget={"latency": {"device": "cuda"}}))
        dims = expand(space, groups, layers)
        base = dict(baseline_params(space, dims))["original"]
        policy = policy_from_params(space, dims, {**base, "wbits/model": 4, "abits/model": 32})
        assert {(b.w, b.a) for b in policy.quant.layers.values()} == expected, backend
        assert policy.quant.backend == backend
        from compress.quantize import check_bits

        check_bits(policy.quant)  # what the target accepts
