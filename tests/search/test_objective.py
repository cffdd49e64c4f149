"""Objective on digits with a tiny budget: sane metrics, val-only accuracy, caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from search.objective import Objective
from spaces.space import baseline_params
from tests.search._tiny_space import baseline_policy, tiny_space


@pytest.fixture(scope="module")
def objective(tmp_path_factory):
    return Objective(tiny_space(), tmp_path_factory.mktemp("run"))


def test_reference_and_cached_baseline(objective):
    ref = objective.reference
    assert 0.0 <= ref["accuracy"] <= 100.0 and ref["val_images"] == 64
    assert ref["flops"] > 0 and ref["params"] > 200_000 and ref["flops_ratio"] == 1.0
    assert ref["size"] == 4 * ref["params"]  # float weights: 32 bits each
    assert (objective.run_dir / "baseline" / "model.pt").is_file()
    assert json.loads((objective.run_dir / "baseline" / "baseline.json").read_text())["key"]
    assert set(objective.groups) >= {"layer1.0.conv1", "layer3"} and objective.layers[0] == "conv1"
    assert {d.name for d in objective.dims} >= {"prune/layer2.1.conv1", "wbits/model", "kd/alpha"}


def test_second_objective_reuses_baseline_and_reference(objective, monkeypatch):
    import search.baseline

    _ = objective.reference

    def no_training(*a, **k):
        raise AssertionError("the cached baseline must be reused, not retrained")

    monkeypatch.setattr(search.baseline, "fit", no_training)
    other = Objective(objective.space, objective.run_dir)
    assert other.reference == objective.reference
    for a, b in zip(other.model.state_dict().values(), objective.model.state_dict().values()):
        assert (a == b).all()


def test_original_is_the_reference(objective):
    m = objective.evaluate(baseline_policy(objective, "original"), seed=0, trial=0)
    assert m["accuracy"] == pytest.approx(objective.reference["accuracy"])
    assert m["accuracy_drop"] == pytest.approx(0.0) and m["flops_ratio"] == 1.0
    assert "finetune" not in m.times  # nothing to recover: not fine-tuned


def test_pruned_policy_metrics_and_cache(objective):
    policy = baseline_policy(objective, "uniform-prune-0.5")
    before = objective.evaluations
    m = objective.evaluate(policy, seed=0, trial=3)
    ref = objective.reference
    assert objective.evaluations == before + 1 and not m.cached
    assert 0.0 <= m["accuracy"] <= 100.0
    assert m["accuracy_drop"] == pytest.approx(ref["accuracy"] - m["accuracy"])
    assert 0.4 < m["flops_ratio"] < 0.75 and m["flops"] < ref["flops"] and m["params"] < ref["params"]
    assert m["flops_ratio"] == pytest.approx(m["flops"] / ref["flops"])
    assert {"prune", "finetune", "evaluate", "cost", "total"} <= set(m.times)
    cache = objective.cache_path(objective.effective_policy(policy, 0))
    assert cache.is_file()

    again = objective.evaluate(policy, seed=0, trial=7)
    assert objective.evaluations == before + 1  # not re-run
    assert again.cached and again.cached_from == 3 and dict(again) == dict(m)

    other = Objective(objective.space, objective.run_dir)  # another worker shares the cache
    assert other.evaluate(policy, seed=0).cached and other.evaluations == 0

    objective.evaluate(policy, seed=1, trial=8)  # another seed is another experiment
    assert objective.evaluations == before + 2


def test_int8_policy_costs(objective):
    m = objective.evaluate(baseline_policy(objective, "uniform-int8"), seed=0)
    ref = objective.reference
    assert m["flops"] == ref["flops"]
    assert m["size"] < 0.3 * ref["size"] and m["bops"] == pytest.approx(ref["bops"] / 16, rel=0.05)


@pytest.mark.parametrize("backend", ["tensorrt", "cuda"])
def test_gpu_targets_evaluate_on_the_cpu(tmp_path, objective, backend):
    """The cuda/tensorrt conversions run anywhere: their accuracy is scored on the CPU here."""
    space = tiny_space(quant__backend=backend)
    obj = Objective(space, objective.run_dir)  # same baseline; a space of its own
    m = obj.evaluate(baseline_policy(obj, "uniform-int8"), seed=0)
    assert 0 <= m["accuracy"] <= 100 and m["size"] < 0.3 * obj.reference["size"]
    assert abs(m["accuracy"] - obj.reference["accuracy"]) < 25
    notes = " ".join(m.notes)
    assert ("TensorRT INT8" in notes) if backend == "tensorrt" else ("fake-quantized in fp32" in notes)


def test_accuracy_uses_val_never_test(objective, monkeypatch):
    splits = []
    loader = type(objective.data).loader

    def spy(self, split, *a, **k):
        splits.append(split)
        return loader(self, split, *a, **k)

    monkeypatch.setattr(type(objective.data), "loader", spy)
    policy = baseline_policy(objective, "uniform-prune-0.25")
    objective.evaluate(policy, seed=0)
    assert "val" in splits and "test" not in splits


def test_latency_measured_when_needed(tmp_path, objective):
    space = tiny_space(objectives=["accuracy", "latency"],
                       budget__latency={"measure": "auto", "rounds": 3, "warmup_s": 0.05, "threads": 1})
    import shutil

    shutil.copytree(objective.run_dir / "baseline", tmp_path / "baseline")  # skip retraining
    obj = Objective(space, tmp_path)
    assert obj.reference["latency"] == 1.0
    m = obj.evaluate(baseline_policy(obj, "uniform-prune-0.5"), seed=0)
    assert m["latency"] == m["latency_ratio"] > 0
    assert m["latency_ci_low"] <= m["latency_ratio"] <= m["latency_ci_high"]
    assert isinstance(m["latency_busy"], bool) and "latency" in m.times


def test_onnxruntime_latency_times_the_ort_int8_artefact(tmp_path, objective, monkeypatch):
    import shutil

    import onnx

    import compress.measure._service as service

    space = tiny_space(objectives=["accuracy", "latency"],
                       budget__latency={"measure": "auto", "rounds": 3, "warmup_s": 0.05, "threads": 1,
                                        "backend": "onnxruntime"})
    shutil.copytree(objective.run_dir / "baseline", tmp_path / "baseline")  # skip retraining
    obj = Objective(space, tmp_path)
    timed = []
    real = service.compare_latency

    def spy(a, b, *args, **kwargs):
        timed.append({n.op_type for n in onnx.load(str(a)).graph.node} if isinstance(a, Path) else type(a).__name__)
        assert kwargs["backend"] == "onnxruntime"
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(service, "compare_latency", spy)
    m = obj.evaluate(baseline_policy(obj, "uniform-int8"), seed=0)
    assert m["latency_ratio"] > 0
    assert len(timed) == 1 and {"QuantizeLinear", "DequantizeLinear", "Conv"} <= timed[0]  # the QDQ ONNX file
    obj.evaluate(baseline_policy(obj, "uniform-prune-0.5"), seed=0)
    assert timed[1] == "CifarResNet"  # float policies: the module (compare_latency exports it)


def test_num_classes_mismatch_is_clear(tmp_path):
    space = tiny_space(model={"name": "resnet20", "num_classes": 7, "input_size": 16, "checkpoint": "x.pt"})
    with pytest.raises(Exception, match="num_classes = 7.*10 classes"):
        _ = Objective(space, tmp_path).data


@pytest.mark.shared_data
def test_builtin_cifar_space_with_shared_checkpoint(tmp_path, cifar_jpeg_dir):
    """resnet20-cifar10 as shipped: the shared checkpoint loads and scores well on val; a trial runs."""
    from spaces.space import load_space

    space = load_space("resnet20-cifar10", [f"data.data_dir={cifar_jpeg_dir}", "budget.val_limit=500",
                                            "budget.latency.measure=never", "budget.finetune.steps=2",
                                            "budget.finetune.batch_size=32", "budget.bn_recal_batches=1"])
    obj = Objective(space, tmp_path)
    ref = obj.reference
    assert ref["accuracy"] > 75.0 and ref["val_images"] == 500
    assert ref["flops"] == pytest.approx(40.6e6, rel=0.05)  # resnet20 at 32x32 (fvcore MACs)
    m = obj.evaluate(baseline_policy(obj, "uniform-prune-0.5"), seed=0)
    assert m["flops_ratio"] < 0.75 and 0.0 <= m["accuracy"] <= 100.0


def test_adapt_fine_tunes_a_checkpoint_once(objective, tmp_path, monkeypatch):
    """``model.adapt``: the loaded checkpoint is fine-tuned on train once; that model is the original."""
    import torch

    import search.baseline

    ckpt = tmp_path / "ckpt.pt"
    torch.save(objective.model.state_dict(), ckpt)
    model = {k: v for k, v in tiny_space().to_dict()["model"].items() if k != "baseline"}
    space = tiny_space(model={**model, "baseline": None, "checkpoint": str(ckpt),
                              "adapt": {"epochs": None, "steps": 3, "lr": 0.05, "batch_size": 16}})
    run = tmp_path / "run"
    adapted = Objective(space, run)
    changed = [not torch.equal(a, b) for a, b in zip(adapted.model.state_dict().values(),
                                                      objective.model.state_dict().values())]
    assert any(changed), "adapt must fine-tune the loaded weights"
    meta = json.loads((run / "baseline" / "baseline.json").read_text())
    assert meta["kind"] == "adapted" and meta["checkpoint"] == str(ckpt) and meta["finetune"]["steps"] == 3
    saved = torch.load(run / "baseline" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in adapted.model.state_dict().items())

    def no_training(*a, **k):
        raise AssertionError("the adapted model must be reused, not adapted again")

    monkeypatch.setattr(search.baseline, "fit", no_training)
    again = Objective(space, run)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 adapted.model.state_dict().values()))
    # the same bytes with a new mtime (a remounted or copied checkpoint) keep the cache ...
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert Objective(space, run).model is not None
    # ... changed bytes do not
    state = objective.model.state_dict()
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, ckpt)
    with pytest.raises(AssertionError, match="must be reused"):
        _ = Objective(space, run).model


def test_adapt_needs_loaded_weights():
    from spaces._schema import SchemaError

    with pytest.raises(SchemaError, match=r"adapt.*needs checkpoint or weights"):
        tiny_space(model={**tiny_space().to_dict()["model"], "adapt": {"steps": 3}})


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_objective_on_cuda_times_latency_on_the_gpu(tmp_path):
    space = tiny_space(quant__backend="cuda", quant__weight_bits=[8, 16, 32],
                       objectives=["accuracy", "flops", "latency"],
                       budget__latency={"measure": "always", "device": "cuda", "rounds": 4, "warmup_s": 0.1})
    assert space.prune.round_to == 8
    obj = Objective(space, tmp_path / "run", device="cuda")
    dims = obj.dims
    labels = [label for label, _ in baseline_params(space, dims)]
    for label in ("uniform-prune-0.5", "uniform-int8"):
        if label not in labels:
            continue
        m = obj.evaluate(baseline_policy(obj, label), seed=0)
        assert 0 <= m["accuracy"] <= 100 and m["latency"] > 0 and m["latency_ci_low"] <= m["latency_ci_high"]
