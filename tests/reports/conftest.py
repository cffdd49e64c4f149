"""Run directories built from hand-chosen TrialRecords (real format, chosen metrics) for report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autocompress.rundir import RunInfo, TrialRecord, write_record, write_run_info
from spaces.policy import DistillSpec, LayerBits, ModelSpec, Policy, PruneSpec, QuantSpec

GROUPS = [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
LAYERS = ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)] + ["fc"]
REF = {"accuracy": 81.0, "top5": 98.9, "flops": 40_808_576, "params": 269_722, "size": 1_078_888,
       "bops": 41_787_981_824, "latency": 1.0}


def make_policy(ratio: float, wbits: int | None, alpha: float, rng: np.random.Generator) -> Policy:
    ratios = {g: float(np.clip(ratio + rng.uniform(-0.1, 0.1), 0, 0.9)) if ratio else 0.0 for g in GROUPS}
    quant = QuantSpec()
    if wbits is not None:
        quant = QuantSpec(backend="x86", default=LayerBits(8, 8),
                          layers={name: LayerBits(int(rng.choice([wbits, 8])), 8) for name in LAYERS[1:-1]})
    return Policy(model=ModelSpec("resnet20"), prune=PruneSpec(ratios=ratios), quant=quant,
                  distill=DistillSpec(alpha=alpha, temperature=4.0))


def build_run(root: Path, *, n: int = 12, seed: int = 0, objectives=(("accuracy", "maximize"), ("flops", "minimize")),
              failed: int = 1, pruned: int = 1, all_failed: bool = False) -> Path:
    """Write a run directory: 3 baselines, ``n`` searched trials, some infeasible / failed / pruned."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    info = RunInfo(space="quickstart", model="resnet20", checkpoint="../shared/weights/resnet20.th",
                   dataset="cifar10-jpeg", objectives=[tuple(o) for o in objectives],
                   constraints=["accuracy_drop <= 6.0"], reference=dict(REF),
                   search={"sampler": "tpe", "trials": n, "seed": seed, "backend": "optuna", "study": "test-study",
                           "storage": f"sqlite:///{root}/study.db"},
                   budget={"finetune_steps": 20, "val_subset": 500}, started="2026-11-23T12:00:00Z",
                   finished="2026-11-23T12:10:00Z", wall_time_s=600.5,
                   versions={"torch": "2.14.1", "autocompress": "0.1.0"}, git_sha="abc1234")
    write_run_info(root, info)
    specs = [("original", 0.0, None, 0.0), ("uniform-prune-0.25", 0.25, None, 0.0), ("uniform-int8", 0.0, 8, 0.0)]
    specs += [(None, float(rng.uniform(0.05, 0.7)), [None, 8, 6, 4][int(rng.integers(4))], float(rng.uniform(0, 1)))
              for _ in range(n)]
    for t, (baseline, ratio, wbits, alpha) in enumerate(specs):
        policy = make_policy(ratio, wbits, alpha, rng)
        mean_ratio = float(np.mean(list(policy.prune.ratios.values())))
        keep = (1 - mean_ratio) ** 2
        acc = REF["accuracy"] - 12 * mean_ratio ** 1.5 - (0 if wbits in (None, 8) else (8 - wbits) * 0.8) \
            + (0 if baseline == "original" else float(rng.normal(0, 0.6)))
        wb = 32 if wbits is None else (8 if wbits == 8 else (wbits + 8) / 2)
        metrics = {"accuracy": round(acc, 2), "accuracy_drop": REF["accuracy"] - round(acc, 2),
                   "top5": 98.0, "flops": int(REF["flops"] * keep), "params": int(REF["params"] * keep),
                   "size": int(REF["size"] * keep * wb / 32), "bops": int(REF["bops"] * keep * wb / 32),
                   "latency": round(keep ** 0.7 * (0.6 if wbits else 1.0), 4), "latency_busy": False}
        status, error = "complete", None
        if not all_failed and t >= 3 and failed and t == len(specs) - 1:
            status, error, metrics = "failed", "DivergenceError: loss became nan at step 7", {}
        elif not all_failed and t >= 3 and pruned and t == len(specs) - 2:
            status, metrics = "pruned", {"accuracy": round(acc, 2)}
        if all_failed:
            status, metrics = "failed", {}
            error = "RuntimeError: out of memory" if t % 2 else "DivergenceError: loss became nan at step 3"
        feasible = status == "complete" and metrics["accuracy_drop"] <= 6.0
        rec = TrialRecord(trial=t, status=status, policy=policy.to_dict(), policy_hash=policy.hash(),
                          metrics=metrics, feasible=feasible,
                          constraints=({"accuracy_drop <= 6.0": metrics.get("accuracy_drop", 0) - 6.0}
                                       if metrics else {}),
                          baseline=baseline,
                          times={"prune": 0.5, "finetune": 10 + t, "evaluate": 2.0, "cost": 0.3, "latency": 1.5,
                                 "total": 14.3 + t},
                          seed=seed, versions={"torch": "2.14.1"}, git_sha="abc1234", error=error,
                          started=f"2026-11-23T12:{t:02d}:00Z", finished=f"2026-11-23T12:{t:02d}:30Z",
                          worker="host:1")
        write_record(root, rec)
    return root


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return build_run(tmp_path / "run")


@pytest.fixture
def run_dir_3d(tmp_path) -> Path:
    return build_run(tmp_path / "run3", objectives=(("accuracy", "maximize"), ("flops", "minimize"),
                                                   ("latency", "minimize")), seed=1)
