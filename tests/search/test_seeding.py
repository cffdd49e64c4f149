"""Every random start of a search is seeded: the trained-from-scratch baseline (initialisation, data
order), so two runs of the same space give the same original model and accuracy."""

from __future__ import annotations

import pytest
import torch

from search.baseline import Baseline
from tests.search._tiny_space import tiny_space


def test_trained_baseline_does_not_depend_on_the_process_random_state(tmp_path):
    space = tiny_space()
    models = []
    for i, state in enumerate((1, 12345)):
        torch.manual_seed(state)  # whatever ran before in this process
        models.append(Baseline(space, tmp_path / f"run{i}").model)
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_baseline_seed_changes_the_trained_model(tmp_path):
    space = tiny_space()
    other = tiny_space(model={**space.to_dict()["model"], "baseline": {**space.to_dict()["model"]["baseline"],
                                                                       "seed": 1}})
    a = Baseline(space, tmp_path / "a").model.state_dict()
    b = Baseline(other, tmp_path / "b").model.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_the_proxy_does_not_depend_on_the_process_random_state(tmp_path):
    from search.objective import Objective
    from tests.search._tiny_space import baseline_policy

    space = tiny_space()
    results = []
    for i, state in enumerate((3, 999)):
        objective = Objective(space, tmp_path / f"run{i}")
        torch.manual_seed(state)
        results.append(objective.evaluate(baseline_policy(objective, "uniform-prune-0.5"), seed=0))
    assert results[0]["accuracy"] == results[1]["accuracy"] and not results[1].cached


def test_two_runs_propose_the_same_points(tmp_path):
    import sys
    from pathlib import Path

    from autocompress.rundir import read_records
    from search.driver import run_search
    from spaces.space import load_space

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _analytic_objective import factory

    space = load_space("quickstart")
    params = []
    for out in ("A", "B"):
        torch.manual_seed(len(out) * 7 + ord(out))  # whatever ran before in this process
        run_search(space, tmp_path / out, trials=14, objective_factory=factory, progress=False)
        params.append([r.policy["provenance"]["params"] for r in read_records(tmp_path / out)])
    assert params[0] == params[1] and len({str(p) for p in params[0]}) > 8  # TPE's own proposals too


@pytest.mark.slow
def test_same_command_twice_same_original_and_first_proposals(tmp_path):
    """`autocompress search quickstart --trials 9` into --out A and --out B (each with its own map cache):
    the same original accuracy, sensitivity map, seeds and first proposals, and the same proxy accuracies."""
    import json
    import subprocess

    import optuna

    from tests.search.test_driver import AUTOCOMPRESS, _env

    cheap = ["--set", "model.baseline.epochs=2", "--set", "budget.finetune.steps=3",
             "--set", "budget.latency.rounds=3"]
    runs = []
    for out in ("A", "B"):
        res = subprocess.run([AUTOCOMPRESS, "search", "quickstart", "--out", str(tmp_path / out), "--trials", "9",
                              "--no-progress", *cheap], cwd=tmp_path, capture_output=True, text=True, timeout=3000,
                             env=_env(AUTOCOMPRESS_CACHE=str(tmp_path / f"cache-{out}")))
        assert res.returncode == 0, res.stderr[-3000:]
        info = json.loads((tmp_path / out / "run.json").read_text())
        study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path / out / 'study.db'}")
        runs.append((info, study.trials, json.loads((tmp_path / out / "sensitivity.json").read_text())))
    (info_a, trials_a, map_a), (info_b, trials_b, map_b) = runs
    assert info_a["reference"]["accuracy"] == info_b["reference"]["accuracy"]
    assert map_a["prune"] == map_b["prune"] and info_a["search"]["sensitivity"]["seeds"]
    assert [t.params for t in trials_a] == [t.params for t in trials_b]
    assert [t.user_attrs.get("baseline") for t in trials_a][4:7] == ["seed-flops-0.3", "seed-flops-0.5",
                                                                      "seed-flops-0.7"]
    assert [t.values[0] for t in trials_a] == [t.values[0] for t in trials_b]  # accuracy; latency is timed
