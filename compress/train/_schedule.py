"""Learning-rate schedules as pure functions of the step: easy to test and to plot."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "onecycle", "constant")
#: one-cycle: start at lr / ONECYCLE_DIV, end at lr / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_PCT = 0.3


def lr_factor(schedule: str, step: int, total: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of ``total`` steps.

    Linear warm-up over ``warmup_steps`` (``(step + 1) / warmup_steps``) then:
    ``cosine`` anneals 1 -> 0 over the remaining steps, ``constant`` stays at 1,
    ``onecycle`` warms from 1/25 to 1 (over ``warmup_steps`` or the first 30%) and
    cosine-anneals to 1/(25 * 1e4) (as torch's OneCycleLR, without momentum cycling).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule = {schedule!r}: allowed {', '.join(SCHEDULES)}")
    if total < 1:
        raise ValueError(f"total = {total}: must be >= 1")
    step = min(max(step, 0), total - 1)
    if schedule == "onecycle":
        warm = warmup_steps or max(1, round(ONECYCLE_PCT * total))
        start = 1.0 / ONECYCLE_DIV
        if step < warm:
            return start + (1.0 - start) * (step + 1) / warm
        final = start / ONECYCLE_FINAL_DIV
        p = (step - warm) / max(1, total - warm)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    p = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * p))
