"""benchmarks/bench_int8_engines.py: inputs checked before any work; one recipe timed under two engines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_int8_engines as bie  # noqa: E402

from compress._apply_recipes import INT8_X86, uniform_block_inner  # noqa: E402
from compress.models import get_model  # noqa: E402


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    recipe = uniform_block_inner("resnet20", 0.3, quant=INT8_X86).save(tmp_path / "r.yaml")
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "train").mkdir()
    args = ["--checkpoint", str(ckpt), "--recipes", str(recipe), "--out", "x.json", "--data-dir", str(tmp_path)]
    for extra, needle in ((["--engine", "x86", "--reference", "x86"], "--engine x86 and --reference x86: give two"),
                          (["--rounds", "1"], "--rounds 1: must be >= 2"),
                          (["--batches", "0"], "--batches [0] --threads 2: every value must be >= 1"),
                          (["--engine", "mkl"], "invalid choice: 'mkl'")):
        with pytest.raises(SystemExit) as exc:
            bie.parse_args([*args, *extra])
        assert exc.value.code == 2 and needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bie.parse_args([*args[:2], "--recipes", str(tmp_path / "none.yaml"), *args[4:]])
    assert f"not a file: {tmp_path / 'none.yaml'}" in capsys.readouterr().err
    assert (bie.parse_args(args).engine, bie.parse_args(args).reference) == ("onednn", "x86")


def test_the_benchmarks_engine_choices_are_compress_engines():
    from _recipe_inputs import INT8_ENGINES

    from compress.quantize import ENGINES

    assert INT8_ENGINES == ENGINES


def test_one_recipe_is_timed_under_both_engines(digits16, one_thread, private_latency_lock):
    before = torch.backends.quantized.engine
    try:
        policy = uniform_block_inner("resnet20", 0.25, quant=INT8_X86, num_classes=10, input_size=16)
        model = get_model("resnet20", num_classes=10).eval()
        args = argparse.Namespace(engine="onednn", reference="fbgemm", batches=[1, 4], threads=1, rounds=2)
        row = bie.time_recipe(policy, model, digits16, args)
        assert sorted(row) == ["1", "4"]
        for r in row.values():
            assert r["ratio"] > 0 and r["ci"][0] <= r["ratio"] <= r["ci"][1]
            assert r["engine_ms"] > 0 and r["reference_ms"] > 0
        assert torch.backends.quantized.engine == "fbgemm"  # the reference is left set
    finally:
        torch.backends.quantized.engine = before
