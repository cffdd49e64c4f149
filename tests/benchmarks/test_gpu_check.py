"""benchmarks/gpu_check.py on the CPU: the no-CUDA exit, the part logic on tiny models, part 4's command
and checks (the GPU run itself is what the script is for; see README "GPU")."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compress.measure import tensorrt_provider

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


gc = _module()


def test_without_cuda_it_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device even on a GPU machine
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gc.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [gc.NO_CUDA] and proc.stderr == ""
    assert not (tmp_path / "gc.json").exists()


def test_latency_and_tensorrt_parts_on_cpu(tmp_path, capsys):
    settings = dataclasses.replace(gc.QUICK, rounds=2)
    rc = gc.main(["--parts", "2,3", "--out", str(tmp_path / "gc.json")], settings=settings)
    doc = json.loads((tmp_path / "gc.json").read_text())
    lat, trt = doc["parts"]
    assert [lat["part"], trt["part"]] == [2, 3] and doc["data"] in ("digits", "cifar10-jpeg")
    widths = lat["numbers"]["pruned_widths"]
    assert widths and all(w % 8 == 0 and w > 0 for w in widths.values())  # round_to 8 on every group
    for key in ("pruned50-r8@b1", "fp16@b1", "pruned50-r8@b4", "fp16@b4"):
        row = lat["numbers"][key]
        assert row["ratio"] > 0 and row["ci95"][0] <= row["ci95"][1]
        assert row["model"]["p10_ms"] <= row["model"]["median_ms"] <= row["model"]["p90_ms"]
        assert row["model"]["mode"] == "eager"  # CUDA graphs only on CUDA
    fp16 = lat["numbers"]["fp16@b4"]["ratio"]
    assert (lat["status"] == "pass") == (fp16 < 1.0)
    if lat["status"] == "fail":
        assert "fp16 is not faster than fp32 at batch 4" in lat["reason"]
    if tensorrt_provider()[0] is None:
        assert trt["status"] == "skipped" and "pip install -e '.[gpu]'" in trt["reason"]
    assert rc == (1 if lat["status"] == "fail" else 0)
    table = capsys.readouterr().out
    assert "CUDA-event latency" in table and "TensorRT latency" in table and str(tmp_path / "gc.json") in table


def test_fit_part_reports_both_devices_and_enforces_the_ratio(tmp_path):
    settings = dataclasses.replace(gc.QUICK, min_speedup=1e6)  # CPU against CPU: far below
    data = gc.load_data()
    res = gc.run_parts(settings, [1], tmp_path, data)[0]
    assert res.status == "fail" and "needs >= 1e+06x" in res.reason


@pytest.mark.parametrize("kind", ["digits", "cifar10-jpeg"])
def test_search_command_overrides_load_into_a_valid_cuda_space(tmp_path, kind):
    from spaces.space import load_space

    data = gc.Data(kind, None, 32, {20: tmp_path / "resnet20-x.th"}, tmp_path / "cifar")
    cmd = gc.search_command(gc.Settings(), data, tmp_path / "run")
    assert cmd[cmd.index("--gpus-per-trial") + 1] == "0.25" and cmd[cmd.index("--trials") + 1] == "8"
    assert cmd[cmd.index("--max-concurrent") + 1] == "4" and cmd[cmd.index("--device") + 1] == "cuda"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    space = load_space(cmd[cmd.index("search") + 1], overrides=sets)
    assert space.budget.latency.device == "cuda" and space.quant.backend == "cuda"
    assert space.prune.round_to == 8  # auto on cuda
    assert space.budget.finetune.steps == 30 and space.quant.weight_bits == (8, 16, 32)


def test_check_search_counts_and_the_lock_log(tmp_path):
    from search.driver import run_search
    from tests.search._analytic_objective import AnalyticObjective
    from tests.search._tiny_space import tiny_space

    run = tmp_path / "run"
    run_search(tiny_space(), run, trials=4, objective_factory=AnalyticObjective, progress=False)
    log = tmp_path / "holds.jsonl"
    with pytest.raises(gc.PartFailed, match="no latency measurement"):
        gc.check_search(run, log, trials=4, concurrent=1)
    log.write_text("".join(json.dumps({"pid": 1, "acquired": t, "released": t + 0.5}) + "\n" for t in (0, 1, 2)))
    out = gc.check_search(run, log, trials=4, concurrent=1)
    assert out["complete"] == 4 and out["trial_numbers"] == [0, 1, 2, 3] and out["overlapping_holds"] == 0
    with pytest.raises(gc.PartFailed, match="expected exactly 5"):
        gc.check_search(run, log, trials=5, concurrent=1)
    with pytest.raises(gc.PartFailed, match="never ran concurrently"):
        gc.check_search(run, log, trials=4, concurrent=4)  # one process ran them one by one
    log.write_text(log.read_text() + json.dumps({"pid": 2, "acquired": 0.2, "released": 0.3}) + "\n")
    with pytest.raises(gc.PartFailed, match="1 latency measurements overlapped"):
        gc.check_search(run, log, trials=4, concurrent=1)


def test_parts_stop_when_the_whole_budget_is_spent(tmp_path):
    settings = dataclasses.replace(gc.QUICK, total_s=5.0)
    res = gc.run_parts(settings, [3, 5], tmp_path, data=None, started=0.0)  # started long ago
    assert [r.status for r in res] == ["fail", "fail"] and all("budget" in r.reason for r in res)


def test_last_json_takes_the_final_document():
    text = 'log {"x": 1}\n{\n  "a": 1\n}\nnoise\n{\n  "complete": 8\n}\n'
    assert gc.last_json(text) == {"complete": 8}
    with pytest.raises(gc.PartFailed):
        gc.last_json("no json here")


@pytest.mark.slow
def test_ray_search_part_on_cpu(tmp_path):
    """Part 4 end to end on the CPU (quickstart, 3 trials, 2 at a time): counts, lock log, finalize."""
    settings = dataclasses.replace(gc.QUICK, caps={**gc.QUICK.caps, 4: 900.0})
    res = gc.run_parts(settings, [4], tmp_path, gc.load_data())[0]
    assert res.status == "pass", res.reason
    n = res.numbers
    assert n["complete"] == 3 and n["latency_holds"] >= 1 and n["overlapping_holds"] == 0
    assert n["finalize"]["onnx"] == "ok"
