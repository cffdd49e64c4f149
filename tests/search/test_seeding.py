"""Every random start of a search is seeded: the trained-from-scratch baseline (initialisation, data
order), so two runs of the same space give the same original model and accuracy."""

from __future__ import annotations

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
