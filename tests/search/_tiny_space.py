"""A tiny search space on scikit-learn digits at 16x16 for objective/trial/finalize tests (CPU, seconds)."""

from __future__ import annotations

from typing import Any

from spaces.policy import Policy
from spaces.space import SearchSpace, baseline_params, policy_from_params, space_from_dict

SIZE = 16  # digits upsampled to 16x16: every forward pass of resnet20 is cheap


def tiny_space_dict(**changes) -> dict:
    """resnet20 on digits, baseline trained for a few steps, a 2-step proxy fine-tune."""
    d = {
        "name": "tiny",
        "model": {"name": "resnet20", "num_classes": 10, "input_size": SIZE, "shortcut": "A",
                  "baseline": {"train": True, "epochs": None, "steps": 8, "lr": 0.1, "batch_size": 32}},
        "data": {"dataset": "digits", "calib_size": 64, "seed": 0},
        "prune": {"granularity": "block", "ratio": {"low": 0.0, "high": 0.5, "step": 0.25}},
        "quant": {"backend": "x86", "weight_bits": [8, 32], "act_bits": "follow", "share": "model"},
        "distill": {"alpha": {"low": 0.0, "high": 0.5, "step": 0.5}, "temperature": 4.0},
        "objectives": ["accuracy", "flops"],
        "constraints": ["accuracy_drop <= 100"],
        "budget": {"bn_recal_batches": 1, "val_limit": 64, "eval_batch_size": 64,
                   "finetune": {"epochs": None, "steps": 2, "lr": 0.01, "batch_size": 16},
                   "final": {"epochs": None, "steps": 3, "lr": 0.01, "batch_size": 16},
                   "latency": {"measure": "never", "rounds": 3, "warmup_s": 0.05, "threads": 1}},
        "search": {"trials": 4, "seed": 0},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            d[section] = {**d[section], field: value}
        else:
            d[section] = value
    return d


def tiny_space(**changes) -> SearchSpace:
    return space_from_dict(tiny_space_dict(**changes))


def baseline_policy(objective: Any, label: str) -> Policy:
    """The Policy of one of the space's baselines (``original``, ``uniform-prune-0.5``, ...) on ``objective``'s dims."""
    params = dict(baseline_params(objective.space, objective.dims))[label]
    return policy_from_params(objective.space, objective.dims, params)
