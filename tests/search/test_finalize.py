"""finalize: pick parsing, knee, choosing trials from records, and an end-to-end tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autocompress.pareto import knee_index
from autocompress.rundir import RunInfo, TrialRecord, write_record, write_run_info
from search.finalize import final_policy
from search.picking import FinalizeError, choose_trial, parse_pick
from spaces.space import baseline_params, policy_from_params
from tests.search._tiny_space import baseline_policy, tiny_space

# ----- picks ------------------------------------------------------------------------------------


def test_parse_pick():
    p = parse_pick("max accuracy where latency_ratio <= 0.5 and flops_ratio < 0.6")
    assert (p.goal, p.metric) == ("max", "accuracy")
    assert [(c.metric, c.op, c.bound) for c in p.conditions] == [("latency_ratio", "<=", 0.5),
                                                                  ("flops_ratio", "<", 0.6)]
    assert parse_pick("MIN flops").conditions == () and parse_pick(" knee ").goal == "knee"


@pytest.mark.parametrize("text,needle", [
    ("best accuracy", "cannot parse"),
    ("max speed", "unknown metric 'speed'"),
    ("max accuracy where lat <= 1", "unknown metric 'lat'"),
    ("max accuracy where latency_ratio = 0.5", "METRIC OP NUMBER"),
])
def test_bad_pick_names_allowed_metrics(text, needle):
    with pytest.raises(FinalizeError) as exc:
        parse_pick(text)
    assert needle in str(exc.value) and "accuracy" in str(exc.value) and "latency_ratio" in str(exc.value)


def test_knee_two_objectives():
    # accuracy (max) vs flops (min): the bend is at (90, 30)
    pts = [[95, 100], [94, 60], [90, 30], [70, 20], [50, 10]]
    assert knee_index(pts, ["maximize", "minimize"]) == 2
    # the same with an objective order swap and direction flip
    assert knee_index([[-f, -a] for a, f in pts], ["maximize", "minimize"]) == 2


def test_knee_three_objectives_and_degenerate_fronts():
    pts = [[95, 100, 1.0], [90, 30, 0.5], [50, 10, 0.2], [60, 50, 0.3]]
    assert knee_index(pts, ["maximize", "minimize", "minimize"]) == 1
    line = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]  # collinear: nearest to the ideal point
    assert knee_index(line, ["minimize", "minimize"]) in (0, 1, 2)
    assert knee_index([[1.0, 2.0]], ["minimize", "minimize"]) == 0


def _fake_run(tmp_path, rows, constraints=("accuracy_drop <= 5",)):
    """A run directory with real-format records (no model): rows of (accuracy, flops_ratio, latency_ratio, feasible)."""
    info = RunInfo(space="tiny", model="resnet20", checkpoint=None, dataset="digits",
                   objectives=[("accuracy", "maximize"), ("flops_ratio", "minimize")], constraints=list(constraints),
                   reference={"accuracy": 90.0, "flops": 1e6})
    write_run_info(tmp_path, info)
    for i, (acc, fr, lat, feasible) in enumerate(rows):
        write_record(tmp_path, TrialRecord(
            trial=i, status="complete", policy={}, policy_hash=f"h{i}", feasible=feasible,
            metrics={"accuracy": acc, "flops_ratio": fr, "latency_ratio": lat, "accuracy_drop": 90.0 - acc}))
    write_record(tmp_path, TrialRecord(trial=len(rows), status="failed", policy={}, policy_hash="x",
                                       error="DivergenceError: loss nan"))
    from autocompress.rundir import load_run

    return load_run(tmp_path)


ROWS = [(90.0, 1.0, 1.0, True), (89.5, 0.5, 0.6, True), (88.0, 0.3, 0.45, True), (80.0, 0.2, 0.3, False),
        (86.0, 0.25, 0.4, True)]


def test_choose_trial_by_knee_expression_and_number(tmp_path):
    run = _fake_run(tmp_path, ROWS)
    t, why = choose_trial(run, "knee")
    assert t in (1, 2) and "knee" in why  # the bend of 90/1.0 .. 89.5/0.5 .. 88/0.3 .. 86/0.25
    assert choose_trial(run, "max accuracy where latency_ratio <= 0.5")[0] == 2
    assert choose_trial(run, "min flops_ratio")[0] == 4  # trial 3 is infeasible
    assert choose_trial(run, trial=3)[0] == 3  # an explicit trial may be anything complete
    with pytest.raises(FinalizeError, match="trial 5 is failed"):
        choose_trial(run, trial=5)
    with pytest.raises(FinalizeError, match="no trial 42"):
        choose_trial(run, trial=42)
    with pytest.raises(FinalizeError) as exc:
        choose_trial(run, "max accuracy where latency_ratio <= 0.1")
    assert "none of the 4 feasible" in str(exc.value) and "best latency_ratio among them is 0.4" in str(exc.value)


def test_final_policy_schedule_and_kd():
    space = tiny_space()
    from compress.models import get_model, quantizable_layers
    from compress.prune import list_groups

    m = get_model("resnet20")
    dims = __import__("spaces.space", fromlist=["expand"]).expand(space, list_groups(m, 16), quantizable_layers(m))
    policy = policy_from_params(space, dims, dict(baseline_params(space, dims))["uniform-prune-0.5"])
    final = final_policy(policy, space)
    assert final.finetune.steps == 3 and final.distill.alpha == 0.5 and final.prune == policy.prune
    longer = final_policy(policy, space, epochs=2.5, kd=False)
    assert longer.finetune.epochs == 2.5 and longer.finetune.steps is None and longer.distill.alpha == 0.0
    with pytest.raises(FinalizeError):
        final_policy(policy, space, epochs=0)


# ----- end to end -------------------------------------------------------------------------------


@pytest.mark.slow  # ~35 s of CPU on an idle machine; minutes on a shared one
def test_finalize_tiny_run_end_to_end(tmp_path):
    """A 2-trial search (baselines original + uniform-prune) on digits, then finalize the knee."""
    from search.driver import run_search
    from search.finalize import finalize
    from spaces.policy import Policy

    space = tiny_space(search={"trials": 2, "seed": 0, "baselines": True})
    run_dir = tmp_path / "run"
    run_search(space, run_dir, progress=False)
    m = finalize(run_dir, "max accuracy where flops_ratio <= 0.9", progress=False)
    final = run_dir / "final"
    assert m["trial"] == 1  # the only trial under 0.9 x FLOPs: uniform-prune
    assert json.loads((final / "metrics.json").read_text())["test_accuracy"] == m["test_accuracy"]
    assert 0 <= m["test_accuracy"] <= 100 and m["test_images"] > 200
    assert m["flops_ratio"] < 0.9 and m["latency_ratio"] > 0 and m["speedup"] == pytest.approx(1 / m["latency_ratio"])
    assert m["kd_alpha"] == 0.5 and m["steps"] == 3
    recipe = Policy.load(final / "recipe.yaml")
    assert recipe.prune.kept and recipe.provenance["finalized_from_trial"] == 1
    assert (final / "model.pt").is_file() and (final / "policy.yaml").is_file()
    assert m["onnx"].get("path") == "model.onnx" and (final / "model.onnx").is_file(), m["onnx"]
    ts = m["torchscript"]
    assert ts["path"] == "model.torchscript.pt" and ts["top1_agreement"] == 1.0, ts
    assert {"model.onnx", "model.torchscript.pt"} <= set(m["files"])

    from compress.artifact import load_compressed

    policy, model = load_compressed(final)
    assert policy.prune.kept == recipe.prune.kept
    x = torch.randn(3, 3, space.model.input_size, space.model.input_size)
    with torch.no_grad():  # the frozen artefact runs on its own and computes what the weights do
        torch.testing.assert_close(torch.jit.load(str(final / "model.torchscript.pt"))(x), model.eval()(x),
                                   rtol=1e-3, atol=1e-3)
    with pytest.raises(FinalizeError, match="none of the"):
        finalize(run_dir, "max accuracy where flops_ratio <= 0.01", progress=False)
    assert np.isfinite(m["val_accuracy"])


def test_cli_reports_bad_picks_clearly(tmp_path, capsys):
    from search.cli import main

    _fake_run(tmp_path, ROWS)
    assert main(["finalize", str(tmp_path), "--pick", "max speed"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'speed'" in err and "latency_ratio" in err
    assert main(["finalize", str(tmp_path), "--pick", "max accuracy where flops_ratio <= 0.01"]) == 2
    assert "none of the 4 feasible complete trials" in capsys.readouterr().err
    assert main(["finalize", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_the_final_fine_tune_replays_whatever_ran_before_it(tmp_path):
    """``finetune_and_measure`` (finalize, audit, the headline benchmark) seeds the global RNG as the
    search objective does, so an INT8 policy's final fine-tune gives the same model whatever the
    process drew before (a benchmark's earlier points moved a later INT8 point by 1 pt, and its
    recipe then failed ``apply --verify``), and the same accuracy as the objective's replay."""
    import dataclasses

    import torch

    from search.baseline import Baseline
    from search.finalize import finetune_and_measure
    from search.objective import Objective

    # BN recalibration on more batches than the calib split holds: augmented train images, whose
    # crops and flips come from the global RNG; the final metrics use the whole val split
    space = tiny_space(budget__val_limit=None, budget__bn_recal_batches=8)
    objective = Objective(space, tmp_path / "run", progress=False)
    pruned = baseline_policy(objective, "uniform-prune-0.5")  # pruned: BN is recalibrated before the fine-tune
    policy = final_policy(pruned.replace(quant=baseline_policy(objective, "uniform-int8").quant), space)
    policy = policy.replace(finetune=dataclasses.replace(policy.finetune, seed=3))
    assert policy.quant.active
    baseline = Baseline(space, tmp_path / "run", progress=False)
    results, states = [], []
    for draw in (1, 2):
        torch.manual_seed(100 + draw)
        torch.rand(draw * 7)  # whatever an earlier point left in the global RNG
        out, metrics, _ = finetune_and_measure(baseline, policy, latency=False)
        results.append(metrics)
        states.append({k: v.clone() for k, v in out.model.state_dict().items() if torch.is_tensor(v)})
    assert states[0].keys() == states[1].keys()
    differ = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not differ, f"the final model depends on the global RNG: {differ[:5]}"
    assert results[0]["val_accuracy"] == results[1]["val_accuracy"]
    replayed = objective.evaluate(policy, seed=3, cache=False)
    assert replayed["accuracy"] == results[0]["val_accuracy"]
