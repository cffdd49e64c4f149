"""benchmarks/bench_runtimes.py: inputs checked before any work; one recipe timed in each runtime form
against the original in each form; the best-against-fastest line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_runtimes as br  # noqa: E402

from compress._apply_recipes import INT8_X86, uniform_block_inner  # noqa: E402
from compress.models import get_model  # noqa: E402


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    recipe = uniform_block_inner("resnet20", 0.3, quant=INT8_X86).save(tmp_path / "r.yaml")
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "train").mkdir()
    args = ["--checkpoint", str(ckpt), "--recipes", str(recipe), "--out", "x.json", "--data-dir", str(tmp_path)]
    for extra, needle in ((["--rounds", "1"], "--rounds 1: must be >= 2"),
                          (["--forms", "tflite"], "invalid choice: 'tflite'"),
                          (["--threads", "0"], "--batches [1, 128] --threads 0: every value must be >= 1")):
        with pytest.raises(SystemExit) as exc:
            br.parse_args([*args, *extra])
        assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert br.parse_args(args).forms == list(br.FORMS)


def test_fastest_vs_fastest_is_the_best_form_against_the_originals_fastest():
    def cell(s):
        return {"speedup": s, "ci": [s, s]}
    # the original is fastest in ts-cl (every candidate's speed-up is smallest there); the candidate's
    # best form is the one with the largest speed-up against it
    matrix = {"ts": {"ts": cell(4.0), "ts-cl": cell(2.5)}, "ts-cl": {"ts": cell(4.2), "ts-cl": cell(2.8)}}
    assert br.fastest_vs_fastest(matrix) == {"candidate": "ts-cl", "reference": "ts-cl", **cell(2.8)}


def test_one_recipe_is_timed_in_every_form(digits16, one_thread, private_latency_lock, monkeypatch):
    monkeypatch.setattr(br, "torchao_missing", lambda: "torchao is not installed (pip install torchao)")
    policy = uniform_block_inner("resnet20", 0.25, quant=INT8_X86, num_classes=10, input_size=16)
    model = get_model("resnet20", num_classes=10).eval()
    args = argparse.Namespace(engine="onednn", forms=list(br.FORMS), batches=[1, 4], threads=1, rounds=2)
    before = torch.backends.quantized.engine
    try:
        out = br.time_recipe(policy, model, digits16, args)
    finally:
        torch.backends.quantized.engine = before
    assert out["skipped_forms"] == {"inductor": "torchao is not installed (pip install torchao)"}
    assert sorted(out["batches"]) == ["1", "4"]
    for row in out["batches"].values():
        assert sorted(row["speedup"]) == ["ts", "ts-cl"] and all(sorted(v) == ["ts", "ts-cl"]
                                                                 for v in row["speedup"].values())
        for cells in row["speedup"].values():
            for c in cells.values():
                assert c["ci"][0] <= c["speedup"] <= c["ci"][1] and c["candidate_ms"] > 0 < c["reference_ms"]
        assert row["fastest_vs_fastest"] == {**row["fastest_vs_fastest"], **br.fastest_vs_fastest(row["speedup"])}


@pytest.mark.slow
def test_the_inductor_form_quantizes_the_recipes_int8_layers(digits16, one_thread):
    pytest.importorskip("torchao", reason="the inductor INT8 form needs torchao (pip install torchao)")
    from compress.apply import apply

    policy = uniform_block_inner("resnet20", 0.25, quant=INT8_X86, num_classes=10, input_size=16)
    model = get_model("resnet20", num_classes=10).eval()
    float_model = apply(policy.replace(quant=type(policy.quant)()), model, data=digits16, finetune=False,
                        progress=False, bn_recal_batches=0).deploy
    x = torch.randn(4, 3, 16, 16)
    q = br.pt2e_int8(policy, float_model, digits16)
    ops = {str(n.target) for n in q.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in op for op in ops)
    with torch.no_grad():
        assert (q(x).argmax(1) == float_model(x).argmax(1)).float().mean() >= 0.5


@pytest.mark.slow
def test_the_inductor_forms_are_timed_against_each_other(digits16, one_thread, private_latency_lock):
    pytest.importorskip("torchao", reason="the inductor INT8 form needs torchao (pip install torchao)")
    policy = uniform_block_inner("resnet20", 0.25, quant=INT8_X86, num_classes=10, input_size=16)
    model = get_model("resnet20", num_classes=10).eval()
    args = argparse.Namespace(engine="onednn", forms=["inductor"], batches=[2], threads=1, rounds=2)
    out = br.time_recipe(policy, model, digits16, args)
    cell = out["batches"]["2"]["speedup"]["inductor"]["inductor"]
    assert out["skipped_forms"] == {} and cell["speedup"] > 0 and cell["candidate_ms"] > 0


def test_results_carry_the_exact_command(tmp_path):
    import json

    from _recipe_inputs import write_results

    out = tmp_path / "deep" / "r.json"
    write_results(argparse.Namespace(out=out), "bench_runtimes.py", ["--out", str(out), "--forms", "ts"], rounds=3)
    assert json.loads(out.read_text()) == {"command": f"python benchmarks/bench_runtimes.py --out {out} --forms ts",
                                           "rounds": 3}
