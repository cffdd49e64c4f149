"""A closed-form objective for testing search backends without training anything.

It has the same interface as :class:`search.objective.Objective` (``space``, ``run_dir``,
``dims``, ``reference``, ``groups``, ``layers``, ``evaluate(policy, *, seed)``) but computes
metrics from the policy analytically: pruning lowers FLOPs and accuracy, int8 lowers size and
latency, KD recovers some accuracy, a longer proxy fine-tune than the space's
``budget.finetune`` recovers some more (multi-fidelity levels). Used for backend mechanics (resume, workers, failures,
Ray); the real objective is exercised by the quickstart tests.

Knobs (constructor or environment, so subprocesses and Ray actors see them):
``AC_TEST_FAIL_ALPHA`` (raise for ``distill.alpha`` >= this), ``AC_TEST_SLEEP`` (seconds per
evaluation, so a kill can land mid-trial).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

# resnet20 (CIFAR, option A): block groups and quantizable layers in network order; checked
# against compress.prune.list_groups / quantizable_layers by tests/search/test_backends.py
RESNET20_GROUPS: dict[str, int] = {
    f"layer{s}.{b}.conv1": 16 * 2 ** (s - 1) for s in (1, 2, 3) for b in range(3)
}
RESNET20_GROUPS.update({"layer1": 16, "layer2": 32, "layer3": 64})
RESNET20_LAYERS: list[str] = ["conv1"] + [
    f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)
] + ["linear"]
BASE_FLOPS = 40_551_232.0  # MACs of resnet20 at 32x32 (fvcore), used only as a scale


class FailingPolicy(RuntimeError):
    """Raised on purpose for policies the test marks as failing."""


class AnalyticObjective:
    """Closed-form metrics for a Policy; see the module docstring."""

    def __init__(self, space: Any, run_dir: Path, *, fail_alpha: float | None = None, sleep_s: float | None = None):
        from spaces.space import expand

        self.space = space
        self.run_dir = Path(run_dir)
        env_fail = os.environ.get("AC_TEST_FAIL_ALPHA")
        self.fail_alpha = fail_alpha if fail_alpha is not None else (float(env_fail) if env_fail else None)
        self.sleep_s = sleep_s if sleep_s is not None else float(os.environ.get("AC_TEST_SLEEP", "0"))
        self.groups = dict(RESNET20_GROUPS)
        self.layers = list(RESNET20_LAYERS)
        self.dims = expand(space, self.groups, self.layers)
        self.batches = tuple(space.budget.latency.other_batches)  # latency@B besides latency
        self.reference = {"accuracy": 90.0, "top5": 99.0, "flops": BASE_FLOPS, "params": 272_474.0,
                          "size": 272_474.0 * 4, "bops": BASE_FLOPS * 32 * 32, "latency": 1.0,
                          "latency_ratio": 1.0, "flops_ratio": 1.0, "accuracy_drop": 0.0,
                          **{f"latency@{b}": 1.0 for b in self.batches}}
        self.evaluations = 0

    @staticmethod
    def _steps(holder: Any) -> float:
        """Proxy fine-tune steps of a policy or budget (an epoch counts as 100 steps)."""
        ft = holder.finetune
        return float(ft.steps) if ft.steps is not None else 100.0 * float(ft.epochs)

    def evaluate(self, policy: Any, *, seed: int = 0, trial: int | None = None) -> dict[str, float]:
        self.evaluations += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_alpha is not None and policy.distill.alpha >= self.fail_alpha:
            raise FailingPolicy(f"alpha {policy.distill.alpha} >= {self.fail_alpha}")
        ratios = [policy.prune.ratios.get(g, 0.0) for g in self.groups if "." in g]
        keep = sum((1 - r) ** 2 for r in ratios) / len(ratios)
        int8 = policy.quant.active
        acc = 90.0 - 12.0 * (1 - keep) ** 1.5 - (0.6 if int8 else 0.0) + 1.5 * policy.distill.alpha * (1 - keep)
        acc += 2.0 * (1 - keep) * math.log2(self._steps(policy) / self._steps(self.space.budget))  # longer proxy
        flops_ratio = 0.05 + 0.95 * keep
        bits = 8 if int8 else 32
        lat = flops_ratio * (0.55 if int8 else 1.0)
        out = {
            "accuracy": acc, "top5": min(100.0, acc + 9.0), "accuracy_drop": 90.0 - acc,
            "flops": BASE_FLOPS * flops_ratio, "flops_ratio": flops_ratio,
            "params": 272_474.0 * flops_ratio, "size": 272_474.0 * flops_ratio * bits / 8,
            "bops": BASE_FLOPS * flops_ratio * bits * bits, "latency": lat, "latency_ratio": lat,
            "latency_ci_low": lat * 0.98, "latency_ci_high": lat * 1.02, "latency_busy": False,
        }
        for b in self.batches:  # larger batches: int8 gains more, pruning saves closer to its FLOPs
            lat_b = (0.1 + 0.9 * flops_ratio) * (0.35 if int8 else 1.0)
            out.update({f"latency@{b}": lat_b, f"latency_ci_low@{b}": lat_b * 0.99,
                        f"latency_ci_high@{b}": lat_b * 1.01, f"latency_busy@{b}": False})
        return out


def factory(space: Any, run_dir: Path) -> AnalyticObjective:
    """Objective factory for ``run_search(objective_factory=...)`` / ``--objective``."""
    return AnalyticObjective(space, run_dir)
