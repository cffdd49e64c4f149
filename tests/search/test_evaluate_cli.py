"""`autocompress evaluate` and `autocompress models` end to end (tiny data, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from compress.measure import count_flops, evaluate, layer_macs
from compress.models import MODELS, get_model
from search.cli import main


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):] if out.lstrip().startswith("{") else out[out.index("["):])


@pytest.fixture
def r20_checkpoint(tmp_path):
    model = get_model("resnet20")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    path = tmp_path / "r20.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model.eval(), path


pytestmark = pytest.mark.usefixtures("private_latency_lock")


def test_models_lists_registry(capsys):
    assert main(["models", "--no-flops", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == MODELS.names()
    by = {r["name"]: r for r in rows}
    assert by["resnet20"]["params"] == 269722 and by["resnet20"]["input_size"] == 32
    assert by["resnet50"]["num_classes"] == 1000 and by["resnet50"]["flops"] is None


def test_models_table(capsys):
    assert main(["-q", "models", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "resnet110" in out and "1.73 M" in out and "224x224" in out


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_evaluate_json(capsys, r20_checkpoint, backend):
    model, path = r20_checkpoint
    rc = main(["-q", "evaluate", "--model", "resnet20", "--checkpoint", str(path), "--dataset", "digits",
               "--limit", "64", "--batch-size", "32", "--threads", "1", "--latency-time", "0.1",
               "--latency-backend", backend, "--format", "json"])
    assert rc == 0
    r = _json_out(capsys)
    from compress.data import get_dataset

    expected = evaluate(model, get_dataset("digits").loader("test", 32, shuffle=False, limit=64), progress=False)
    assert r["accuracy"] == expected
    assert r["flops"] == count_flops(model, 32) and r["params"] == 269722
    assert r["size"] == 269722 * 4  # the metric name (was "size_bytes" before one measurement service)
    assert r["bops"] == sum(layer_macs(model, 32).values()) * 32 * 32
    lat = r["latency_stats"]  # absolute timings: "latency" is the ratio metric elsewhere
    assert lat["backend"] == backend and lat["runs"] >= 10 and lat["median_ms"] > 0
    assert lat["threads"] == 1 and lat["batch"] == 1 and isinstance(lat["busy"], bool)


def test_evaluate_table_no_latency(capsys, r20_checkpoint):
    _, path = r20_checkpoint
    rc = main(["-q", "evaluate", "--model", "resnet20", "--checkpoint", str(path), "--dataset", "digits",
               "--limit", "32", "--no-latency"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "top-5" in out and "40.93 M" in out and "median" not in out


def test_evaluate_user_errors(capsys, tmp_path, r20_checkpoint):
    _, path = r20_checkpoint
    assert main(["evaluate", "--model", "resnet21", "--dataset", "digits", "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "resnet21" in err and "resnet56" in err
    assert main(["evaluate", "--model", "resnet32", "--checkpoint", str(path), "--dataset", "digits",
                 "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint does not match" in err and "layer1.3" in err
    assert main(["evaluate", "--dataset", "digits", "--no-latency"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["evaluate", "--model", "resnet20", "--dataset", "digits", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_evaluate_compressed_dir(capsys, tmp_path):
    artifact = pytest.importorskip("compress.artifact")
    from compress.prune import list_groups, prune
    from spaces.policy import LayerBits, ModelSpec, Policy, PruneSpec, QuantSpec

    base = get_model("resnet20")
    group = list_groups(base)[0].name
    spec = PruneSpec(ratios={group: 0.5})
    pruned, kept = prune(base, spec, input_size=32)
    policy = Policy(model=ModelSpec(name="resnet20"), prune=PruneSpec(ratios={group: 0.5}, kept=kept),
                    quant=QuantSpec(backend="x86", default=LayerBits(8, 8)))
    artifact.save_compressed(tmp_path / "c", policy, pruned)
    rc = main(["-q", "evaluate", "--recipe", str(tmp_path / "c"), "--dataset", "digits", "--limit", "32",
               "--no-latency", "--format", "json"])
    assert rc == 0
    r = _json_out(capsys)
    assert r["model"] == "resnet20"
    assert r["flops"] < count_flops(base, 32)
    assert r["bops"] == pytest.approx(r["flops"] * 64, rel=0.02)  # int8 x int8, BN/pool excluded


def _shared_eval(capsys, cifar_jpeg_dir, depth, extra=()):
    from tests.conftest import shared_checkpoint

    rc = main(["-q", "evaluate", "--model", f"resnet{depth}", "--checkpoint", str(shared_checkpoint(depth)),
               "--dataset", "imagefolder", "--data-dir", str(cifar_jpeg_dir), "--no-latency", "--format", "json",
               *extra])
    assert rc == 0
    return _json_out(capsys)


@pytest.mark.shared_data
def test_shared_resnet20_subset(capsys, cifar_jpeg_dir):
    r = _shared_eval(capsys, cifar_jpeg_dir, 20, ["--limit", "1000"])
    assert r["accuracy"]["n"] == 1000
    assert 76.0 < r["accuracy"]["top1"] < 86.0  # full test split: 81.0 %


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("depth, top1, mflops", [(20, 81.0, 41.2), (56, 83.2, 126.8)])
def test_shared_checkpoints_full_test_split(capsys, cifar_jpeg_dir, depth, top1, mflops):
    r = _shared_eval(capsys, cifar_jpeg_dir, depth)
    assert r["accuracy"]["n"] == 10000
    assert r["accuracy"]["top1"] == pytest.approx(top1, abs=0.3)
    assert r["flops"] / 1e6 == pytest.approx(mflops, rel=0.01)
