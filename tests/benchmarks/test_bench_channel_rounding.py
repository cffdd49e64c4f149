"""benchmarks/bench_channel_rounding.py: its inputs are checked before any work, and each variant
rebuilds the recipe's structure at the requested rounding."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_channel_rounding as bcr  # noqa: E402

from compress._apply_recipes import INT8_X86, uniform_block_inner  # noqa: E402


def test_missing_files_and_bad_rounding_are_one_line_errors(tmp_path, capsys):
    recipe = uniform_block_inner("resnet20", 0.3, quant=INT8_X86).save(tmp_path / "r.yaml")
    with pytest.raises(SystemExit) as exc:
        bcr.parse_args(["--checkpoint", str(tmp_path / "none.pt"), "--recipes", str(recipe), "--out", "x.json"])
    assert exc.value.code == 2 and f"not a file: {tmp_path / 'none.pt'}" in capsys.readouterr().err
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    args = ["--checkpoint", str(ckpt), "--recipes", str(recipe), "--out", "x.json", "--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        bcr.parse_args(args)
    assert f"--data-dir {tmp_path}: no train/ folder" in capsys.readouterr().err
    (tmp_path / "train").mkdir()
    with pytest.raises(SystemExit):
        bcr.parse_args([*args, "--round-to", "8", "0"])
    assert "--round-to [8, 0]: every value must be >= 1" in capsys.readouterr().err
    assert bcr.parse_args(args).round_to == [1, 8, 16]


def test_a_variant_sets_the_rounding_and_drops_the_kept_indices():
    policy = uniform_block_inner("resnet20", 0.3, quant=INT8_X86)
    policy = policy.replace(prune=dataclasses.replace(policy.prune, kept={"layer1.0.conv1": (0, 1)}))
    v = bcr._variant(policy, 8)
    assert v.prune.round_to == 8 and not v.prune.kept and v.prune.ratios == policy.prune.ratios
    assert v.quant == policy.quant
