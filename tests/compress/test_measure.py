"""compress.measure: accuracy, FLOPs/params, BOPs/size, latency, busy detection, latency lock."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.measure import (
    compare_latency,
    count_bops,
    count_flops,
    count_params,
    evaluate,
    latency_lock,
    layer_costs,
    layer_macs,
    lock_path,
    measure_latency,
    model_size_bytes,
)
from compress.measure._busy import busy_verdict
from compress.measure._make_runner import make_runner
from compress.models import MODELS, get_model, quantizable_layers
from spaces.policy import LayerBits, PolicyError, QuantSpec
from tests.conftest import lock_attempt_in_child

# ----- accuracy ---------------------------------------------------------------------------

class Passthrough(nn.Module):
    """Logits are the inputs themselves, so expected accuracy is computable by hand."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def _logit_loader(n=50, classes=10, batch=8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, classes, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y, DataLoader(TensorDataset(x, y), batch_size=batch)


def _expected_topk(x, y, k):
    ranks = (x > x.gather(1, y.view(-1, 1))).sum(1)  # number of logits above the true one
    return 100.0 * float((ranks < k).float().mean())


def test_evaluate_matches_hand_computed_topk():
    x, y, loader = _logit_loader()
    model = Passthrough().train()
    out = evaluate(model, loader, progress=False)
    assert out["n"] == 50
    assert out["top1"] == pytest.approx(_expected_topk(x, y, 1))
    assert out["top5"] == pytest.approx(_expected_topk(x, y, 5))
    assert 0 < out["top1"] < out["top5"] < 100
    assert model.training  # training flag restored


def test_evaluate_limit_and_small_class_count():
    x, y, loader = _logit_loader(n=40, classes=5, batch=16)
    out = evaluate(Passthrough(), loader, progress=False, limit=20)
    assert out["n"] == 20
    assert out["top1"] == pytest.approx(_expected_topk(x[:20], y[:20], 1))
    assert "top5" not in out  # 5 classes: top-5 would always be 100 %


def test_evaluate_runs_in_eval_mode_without_grad():
    seen = {}

    class Probe(Passthrough):
        def forward(self, x):
            seen["training"] = self.training
            seen["grad"] = torch.is_grad_enabled()
            return super().forward(x)

    evaluate(Probe().train(), _logit_loader()[2], progress=False)
    assert seen == {"training": False, "grad": False}


def test_evaluate_errors():
    with pytest.raises(ValueError, match="no samples"):
        evaluate(Passthrough(), [], progress=False)
    with pytest.raises(ValueError, match="limit"):
        evaluate(Passthrough(), _logit_loader()[2], limit=0)


# ----- FLOPs and params --------------------------------------------------------------------

@pytest.mark.parametrize("name, size, params_m, flops_m", [
    ("resnet20", 32, 0.27, 41.2), ("resnet56", 32, 0.85, 126.8),
    ("resnet18", 224, 11.69, 1820.0), ("resnet50", 224, 25.56, 4110.0),
])
def test_known_flops_and_params(name, size, params_m, flops_m):
    model = get_model(name)
    assert round(count_params(model) / 1e6, 2) == pytest.approx(params_m)
    assert count_flops(model, size) / 1e6 == pytest.approx(flops_m, rel=0.01)


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n in ("resnet20", "resnet32", "resnet18")])
def test_layer_macs_cover_conv_and_linear(name):
    model = get_model(name)
    size = 32 if name != "resnet18" else 64
    macs = layer_macs(model, size)
    assert list(macs) == quantizable_layers(model)
    assert all(v > 0 for v in macs.values())
    total = count_flops(model, size)
    # conv + linear dominate; BN and pooling are the small rest
    assert 0.98 * total < sum(macs.values()) <= total


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_tiny_model_macs_by_hand():
    model = tiny_net()
    macs = layer_macs(model, 8)
    assert macs == {"0": 4 * 8 * 8 * 3 * 9, "5": 4 * 2}
    assert count_flops(model, 8, batch=3) == 3 * count_flops(model, 8)
    assert count_flops(model, (3, 8, 8)) == count_flops(model, 8)
    assert count_params(model) == 108 + 8 + 10


def test_fixed_modules_are_not_counted():
    model = tiny_net()
    base_flops, base_params = count_flops(model, 8), count_params(model)
    model[0].autocompress_fixed = True
    assert count_params(model) == base_params - 108
    assert count_flops(model, 8) == base_flops - 6912
    assert "0" not in layer_macs(model, 8)


def test_count_flops_keeps_training_flag():
    model = get_model("resnet20").train()
    count_flops(model, 32)
    assert model.training


# ----- BOPs and size ------------------------------------------------------------------------

def test_bops_and_size_by_hand():
    model = tiny_net()
    conv_macs, fc_macs = 6912, 8
    fp = QuantSpec()
    assert count_bops(model, 8, fp) == (conv_macs + fc_macs) * 32 * 32
    # params: conv w 108, BN 4+4, fc w 8 + b 2 -> all 32 bit
    assert model_size_bytes(model, fp) == (108 + 8 + 10) * 4

    mixed = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"5": LayerBits(4, 6)})
    assert count_bops(model, 8, mixed) == conv_macs * 64 + fc_macs * 24
    # conv w at 8 bit, BN at 32, fc weight 8 x 4 bit = 4 bytes, fc bias 32 bit
    assert model_size_bytes(model, mixed) == 108 + 32 + 4 + 8

    half = QuantSpec(backend="cuda", default=LayerBits(16, 16))
    assert count_bops(model, 8, half) == (conv_macs + fc_macs) * 256
    assert model_size_bytes(model, half) == 108 * 2 + 32 + 8 * 2 + 8

    odd = QuantSpec(backend="x86", layers={"0": LayerBits(3, 8)})
    assert model_size_bytes(model, odd) == (108 * 3 + 7) // 8 + 32 + 40  # rounded up to whole bytes


def test_layer_costs_in_network_order():
    model = get_model("resnet20")
    quant = QuantSpec(backend="x86", default=LayerBits(8, 8), layers={"linear": LayerBits(32, 32)})
    costs = layer_costs(model, 32, quant)
    assert [c["name"] for c in costs] == quantizable_layers(model)
    assert set(costs[0]) == {"name", "macs", "params", "w", "a", "bops", "bytes"}
    first, last = costs[0], costs[-1]
    assert (first["w"], first["a"], first["params"], first["bytes"]) == (8, 8, 432, 432)
    assert (last["w"], last["a"], last["params"], last["bytes"]) == (32, 32, 650, 650 * 4)
    assert sum(c["bops"] for c in costs) == count_bops(model, 32, quant)
    assert all(c["bops"] == c["macs"] * c["w"] * c["a"] for c in costs)
    # int8 everywhere but the classifier: roughly a quarter of the float size
    ratio = model_size_bytes(model, quant) / model_size_bytes(model, QuantSpec())
    assert 0.25 < ratio < 0.3


def test_unknown_quant_layer_is_named():
    quant = QuantSpec(backend="x86", layers={"layer9.conv": LayerBits(4, 8)})
    with pytest.raises(PolicyError, match=r"layer9\.conv.*unknown layer.*conv1"):
        count_bops(get_model("resnet20"), 32, quant)
    with pytest.raises(PolicyError, match="layer9"):
        model_size_bytes(get_model("resnet20"), quant)


# ----- latency --------------------------------------------------------------------------------

def conv_stack(width: int, depth: int = 3) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers).eval()


pytestmark = pytest.mark.usefixtures("private_latency_lock")


FAST = {"warmup_s": 0.05, "threads": 1}


def test_measure_latency_statistics():
    before = torch.get_num_threads()
    stats = measure_latency(conv_stack(8), torch.randn(2, 3, 16, 16), runs=15, **FAST)
    assert stats.runs == 15 == len(stats.samples_ms)
    assert stats.median_ms > 0 and stats.iqr_ms >= 0
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert (stats.batch, stats.threads, stats.backend, stats.device) == (2, 1, "torch", "cpu")
    assert stats.warmup_runs >= 2
    assert isinstance(stats.busy, bool) and (stats.busy == bool(stats.busy_reason))
    assert torch.get_num_threads() == before
    d = stats.to_dict()
    assert "samples_ms" not in d and d["runs"] == 15


def test_measure_latency_time_based():
    stats = measure_latency(conv_stack(4), torch.randn(1, 3, 8, 8), min_time_s=0.1, min_runs=5, **FAST)
    assert stats.runs >= 5
    assert sum(stats.samples_ms) / 1e3 >= 0.1 * 0.9


def test_compare_latency_heavier_model_is_slower():
    light, heavy = conv_stack(8), conv_stack(32)  # 4x the channels: ~16x the MACs
    x = torch.randn(1, 3, 32, 32)
    # max_block high enough that neither block size hits the cap on a fast machine
    r = compare_latency(heavy, light, x, rounds=6, block_s=0.02, max_block=100_000, **FAST)
    assert r.ratio > 1.5
    assert r.ci_low <= r.ratio <= r.ci_high
    assert r.speedup == pytest.approx(1 / r.ratio)
    assert r.rounds == 6 and len(r.round_ratios) == 6
    assert r.a.median_ms > r.b.median_ms
    assert r.a.runs < r.b.runs  # blocks are sized by time, so the slow model gets fewer runs
    swapped = compare_latency(light, heavy, x, rounds=4, block_s=0.02, **FAST)
    assert swapped.ratio < 1 / 1.5 and swapped.speedup > 1.5


def test_onnxruntime_backend(tmp_path):
    import onnxruntime as ort

    from compress.measure._runners import export_temp_onnx, session_options

    model, x = conv_stack(8), torch.randn(1, 3, 16, 16)
    stats = measure_latency(model, x, backend="onnxruntime", runs=10, **FAST)
    assert stats.backend == "onnxruntime" and stats.runs == 10 and stats.median_ms > 0
    # a ready session and a path work too, and the exported model agrees with torch
    path = export_temp_onnx(model, x, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
    x4 = torch.randn(4, 3, 16, 16)  # dynamic batch
    with torch.inference_mode():
        torch.testing.assert_close(torch.from_numpy(sess.run(None, {"input": x4.numpy()})[0]), model(x4),
                                   rtol=1e-4, atol=1e-4)
    assert measure_latency(str(path), x, runs=3, **FAST).backend == "onnxruntime"
    r = compare_latency(sess, model, x, rounds=2, block_s=0.01, **FAST)
    assert r.a.backend == "onnxruntime" and r.b.backend == "torch" and r.ratio > 0


def test_torchscript_backend_times_frozen_forms_of_both():
    from compress.measure._runners import TorchScriptRunner

    light, heavy = conv_stack(8), conv_stack(32)
    x = torch.randn(1, 3, 32, 32)
    runner = make_runner(light, x, backend="torchscript", threads=1)
    assert isinstance(runner, TorchScriptRunner) and runner.mode == "frozen"
    assert isinstance(runner.model, torch.jit.ScriptModule) and not isinstance(light, torch.jit.ScriptModule)
    with torch.inference_mode():
        torch.testing.assert_close(runner.output(), light(x))
    r = compare_latency(heavy, light, x, backend="torchscript", rounds=4, block_s=0.02, **FAST)
    assert r.a.backend == r.b.backend == "torchscript" and r.ratio > 1.5
    with pytest.raises(ValueError, match="CPU only"):
        make_runner(light, x, backend="torchscript", device="cuda")


def test_torchscript_cl_backend_times_channels_last_forms_of_both():
    light, heavy = conv_stack(8), conv_stack(32)
    x = torch.randn(2, 3, 32, 32)
    runner = make_runner(light, x, backend="torchscript-cl", threads=1)
    assert (runner.backend, runner.mode) == ("torchscript-cl", "frozen-channels_last")
    assert runner.example.is_contiguous()  # timed on the NCHW input; the form converts it itself
    assert "aten::contiguous" in str(runner.model.graph)
    with torch.inference_mode():
        torch.testing.assert_close(runner.output(), light(x), rtol=1e-4, atol=1e-4)
    r = compare_latency(heavy, light, x, backend="torchscript-cl", rounds=4, block_s=0.02, **FAST)
    assert r.a.backend == r.b.backend == "torchscript-cl" and r.a.mode == "frozen-channels_last" and r.ratio > 1.5
    with pytest.raises(ValueError, match="CPU only"):
        make_runner(light, x, backend="torchscript-cl", device="cuda")


def test_latency_argument_errors(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="backend"):
        measure_latency(conv_stack(4), x, backend="tvm")
    with pytest.raises(ValueError, match="threads"):
        measure_latency(conv_stack(4), x, threads=0)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        measure_latency(tmp_path / "nope.onnx", x)
    with pytest.raises(TypeError, match="cannot time"):
        measure_latency(42, x, backend="onnxruntime")
    with pytest.raises(ValueError, match="rounds"):
        compare_latency(conv_stack(4), conv_stack(4), x, rounds=1)


def _burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def test_busy_machine_is_flagged():
    ctx = mp.get_context("fork")
    n = max(2, os.cpu_count() or 2)
    procs = [ctx.Process(target=_burn, args=(time.time() + 4.0,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.2)
        stats = measure_latency(conv_stack(8), torch.randn(1, 3, 16, 16), min_time_s=1.0, **FAST)
    finally:
        for p in procs:
            p.terminate()
            p.join()
    assert stats.busy
    assert "other processes" in stats.busy_reason
    assert stats.other_cores > 0.5


def test_busy_verdict_rules():
    assert busy_verdict(0.1, 0.05) == (False, "")
    busy, reason = busy_verdict(1.2, 0.05)
    assert busy and "1.20 cores" in reason
    busy, reason = busy_verdict(0.0, 0.9)
    assert busy and "spread" in reason


def test_latency_lock_serialises_processes_and_is_reentrant(tmp_path):
    path = lock_path()
    assert path == tmp_path / "latency.lock"
    attempt = functools.partial(latency_lock, timeout_s=0.2)  # the child inherits the lock path (env)
    with latency_lock() as waited:
        assert waited >= 0
        with latency_lock():  # re-entrant in one process
            pass
        assert lock_attempt_in_child(attempt).startswith("timeout: latency lock")
    assert lock_attempt_in_child(attempt) == "acquired"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latency_uses_events():
    model = conv_stack(16)
    stats = measure_latency(model, torch.randn(1, 3, 32, 32), device="cuda", runs=10, warmup_s=0.1)
    assert stats.device.startswith("cuda") and stats.median_ms > 0
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is not moved


def test_measurement_is_keyed_by_metric_names():
    from autocompress.metrics import DETAILS, METRICS
    from compress.measure import METRIC_KEYS, Measurement

    assert set(METRIC_KEYS) == set(METRICS) | set(DETAILS)
    m = Measurement(accuracy=90.0, flops=10, size=40, latency_ratio=0.5, latency_ci_low=0.4, latency_ci_high=0.6,
                    latency_busy=False, images=64)
    assert m.to_dict() == {"accuracy": 90.0, "flops": 10, "size": 40, "latency": 0.5, "latency_ratio": 0.5,
                           "latency_ci_low": 0.4, "latency_ci_high": 0.6, "latency_busy": False}
    assert m.latency == m.latency_ratio


def test_measurement_keys_of_other_batches():
    from autocompress.metrics import DETAILS, METRICS, is_metric, lookup, split_batch
    from compress.measure import BatchLatency, Measurement

    first, other = BatchLatency(0.5, 0.4, 0.6, False), BatchLatency(0.3, 0.25, 0.35, True)
    m = Measurement(flops=10, latency_ratio=0.5, latency_ci_low=0.4, latency_ci_high=0.6, latency_busy=False,
                    per_batch={1: first, 128: other})
    assert list(m.to_dict()) == ["flops", "latency", "latency_ratio", "latency_ci_low", "latency_ci_high",
                                 "latency_busy", "latency@128", "latency_ci_low@128", "latency_ci_high@128",
                                 "latency_busy@128"]
    assert m.to_dict()["latency@128"] == 0.3 and m.to_dict()["latency_busy@128"] is True
    assert m.batch_metrics(speedup=True)["speedup@128"] == pytest.approx(1 / 0.3) and "speedup" not in m.to_dict()
    assert is_metric("latency@128") and lookup("latency@128").direction == "minimize"
    assert {split_batch(k)[0] for k in m.batch_metrics()} <= set(METRICS) | set(DETAILS)


def test_measure_times_every_batch_back_to_back(tmp_path, monkeypatch):
    """``LatencySetup(batch=(1, 4))``: one comparison per batch, all under one hold of the latency lock."""
    from compress.measure import LatencyRatio, LatencySetup, measure, read_lock_log

    log_path = tmp_path / "holds.jsonl"
    monkeypatch.setenv("AUTOCOMPRESS_LATENCY_LOG", str(log_path))
    model, original = conv_stack(8), conv_stack(16)
    setup = LatencySetup(batch=(1, 4), rounds=3, warmup_s=0.05, threads=1)
    assert setup.batches == (1, 4) and LatencySetup().batches == (1,)
    example = torch.randn(3, 3, 16, 16)  # the primary batch's input; batch 4 repeats its rows
    m = measure(model, input_size=16, costs=False, latency=setup, original=original, example=example)
    assert list(m.batch_timing) == [1, 4] and list(m.per_batch) == [1, 4]
    assert all(isinstance(t, LatencyRatio) for t in m.batch_timing.values())
    assert m.batch_timing[1].a.batch == 3 and m.batch_timing[4].a.batch == m.batch_timing[4].b.batch == 4
    assert m.timing is m.batch_timing[1] and m.latency_ratio == m.per_batch[1].ratio == m.batch_timing[1].ratio
    d = m.to_dict()
    assert d["latency@4"] == pytest.approx(m.batch_timing[4].ratio) and d["latency@4"] > 0
    assert d["latency_ci_low@4"] <= d["latency@4"] <= d["latency_ci_high@4"] and isinstance(d["latency_busy@4"], bool)
    assert len(read_lock_log(log_path)) == 1  # both batches inside one outermost hold
    alone = measure(model, input_size=16, costs=False, latency=LatencySetup(batch=(2, 5), warmup_s=0.05,
                                                                           min_time_s=0.05, threads=1))
    assert [t.batch for t in alone.batch_timing.values()] == [2, 5] and alone.to_dict() == {}


@pytest.mark.parametrize("batch", [(), (1, 1), (0,), 0])
def test_latency_setup_refuses_bad_batches(batch):
    from compress.measure import LatencySetup

    with pytest.raises(ValueError, match="latency batch"):
        LatencySetup(batch=batch)


def test_measure_a_model_against_the_original():
    from compress.measure import LatencyRatio, LatencySetup, LatencyStats, measure

    model, original = conv_stack(8), conv_stack(16)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(40, 3, 16, 16, generator=g), torch.randint(0, 10, (40,), generator=g)
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    ref = measure(original, input_size=16, quant=QuantSpec())
    setup = LatencySetup(rounds=3, warmup_s=0.05, threads=1)
    m = measure(model, input_size=16, loader=loader, reference={"accuracy": 50.0, "flops": ref.flops}, latency=setup,
                original=original)
    assert m.images == 40 and m.accuracy == evaluate(model, loader, progress=False)["top1"]
    assert m.accuracy_drop == pytest.approx(50.0 - m.accuracy)
    assert m.flops == count_flops(model, 16) < ref.flops and m.flops_ratio == pytest.approx(m.flops / ref.flops)
    assert m.size == model_size_bytes(model, QuantSpec()) and ref.params == count_params(original)
    assert isinstance(m.timing, LatencyRatio) and m.latency == m.latency_ratio == pytest.approx(m.timing.ratio)
    assert m.latency_ci_low <= m.latency_ratio <= m.latency_ci_high and isinstance(m.latency_busy, bool)
    assert list(m.times) == ["evaluate", "cost", "latency"]
    alone = measure(model, input_size=16, costs=False, latency=LatencySetup(warmup_s=0.05, min_time_s=0.05, threads=1))
    assert isinstance(alone.timing, LatencyStats) and alone.timing.median_ms > 0
    assert alone.latency_ratio is None and alone.to_dict() == {}  # absolute timings are no metric


def _hold_lock(path: str, log_path: str, hold_s: float) -> None:
    os.environ["AUTOCOMPRESS_LATENCY_LOCK"] = path
    os.environ["AUTOCOMPRESS_LATENCY_LOG"] = log_path
    with latency_lock():
        with latency_lock():  # nested: one hold is logged, the outermost
            time.sleep(hold_s)


def test_lock_log_records_serialised_holds_of_concurrent_processes(tmp_path):
    from compress.measure import overlapping_holds, read_lock_log

    log_path = tmp_path / "holds.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold_lock, args=(str(lock_path()), str(log_path), 0.15)) for _ in range(3)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    holds = read_lock_log(log_path)
    assert sorted(h["pid"] for h in holds) == sorted(p.pid for p in procs)  # one line per process
    assert all(t0 <= h["acquired"] <= h["released"] for h in holds)
    assert overlapping_holds(holds) == []
    assert time.time() - t0 >= 0.45  # they waited for each other
    clash = holds + [{"pid": 0, "acquired": holds[0]["acquired"] + 0.01, "released": holds[0]["released"]}]
    assert len(overlapping_holds(clash)) == 1


def test_tensorrt_backend_without_tensorrt_is_one_line_with_the_install_command():
    from compress.measure import TensorRTUnavailableError, tensorrt_provider

    model = conv_stack(8)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="runs on CUDA only"):
        measure_latency(model, x, backend="tensorrt", device="cpu")
    if tensorrt_provider()[0] is not None:
        pytest.skip("TensorRT is importable here; the runner itself is tested under the gpu marker")
    with pytest.raises(TensorRTUnavailableError) as exc:
        compare_latency(model, model, x, backend="tensorrt", device="cuda")
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and "pip install -e '.[gpu]'" in text and "tensorrt" in text


def test_cpu_runs_are_eager_and_report_their_mode():
    stats = measure_latency(conv_stack(8), torch.randn(1, 3, 16, 16), runs=3, **FAST)
    assert stats.mode == "eager" and stats.to_dict()["mode"] == "eager"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_matches_eager_and_times_faster_models_faster():
    from compress.measure._runners import TorchRunner

    model = conv_stack(32, depth=6).eval()
    x = torch.randn(64, 3, 32, 32)
    graph = TorchRunner(model, x, device="cuda")
    eager = TorchRunner(model, x, device="cuda", cuda_graph=False)
    assert graph.mode == "cuda-graph" and eager.mode == "eager"
    assert graph.example.is_contiguous(memory_format=torch.channels_last)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is untouched
    with torch.no_grad():
        ref = model(x)
    graph._output.zero_()  # the replay must write the output again
    graph.run_ms()
    torch.testing.assert_close(graph.output(), ref, rtol=1e-2, atol=1e-2)  # TF32 convolutions on the GPU
    torch.testing.assert_close(eager.output(), graph.output(), rtol=1e-3, atol=1e-3)
    r = compare_latency(conv_stack(32, depth=2), conv_stack(32, depth=6), x, device="cuda", rounds=6, warmup_s=0.1)
    assert r.a.mode == r.b.mode == "cuda-graph" and r.ratio < 0.8, r.ratio
    graph.close()
    eager.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensorrt_engines_from_fp16_and_int8_qdq_exports(tmp_path):
    from compress.export import export_onnx
    from compress.measure import tensorrt_provider
    from compress.measure._tensorrt import tensorrt_runner
    from compress.models import get_model
    from compress.quantize import convert
    from spaces.policy import LayerBits, QuantSpec

    if tensorrt_provider()[0] is None:
        pytest.skip(f"no TensorRT: {tensorrt_provider()[1]}")
    torch.manual_seed(0)
    model = get_model("resnet20").eval()
    calib = [(torch.randn(32, 3, 32, 32), torch.zeros(32)) for _ in range(2)]
    x = torch.randn(16, 3, 32, 32)
    fp16 = convert(model, QuantSpec(backend="cuda", default=LayerBits(16, 16)), None, x[:1]).model
    int8 = convert(model, QuantSpec(backend="tensorrt", default=LayerBits(8, 8)), calib, x[:1]).model
    for name, deploy in (("fp16", fp16), ("int8", int8)):
        path = tmp_path / f"{name}.onnx"
        export_onnx(deploy, path, x[:2])
        runner = tensorrt_runner(path, x, device="cuda")
        assert runner.mode == "engine" and runner.run_ms() > 0
        with torch.no_grad():
            ref = deploy.cuda()(x.cuda()).float().cpu()
        err = float((runner.output() - ref).norm() / ref.norm())  # the engine computes what PyTorch simulates
        assert err < (0.02 if name == "fp16" else 0.05), (name, err)
        runner.close()
    stats = measure_latency(tmp_path / "int8.onnx", x, backend="tensorrt", device="cuda", runs=10, warmup_s=0.1)
    assert stats.backend == "tensorrt" and stats.mode == "engine" and stats.median_ms > 0
