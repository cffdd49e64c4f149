"""Replay a search recipe's own evaluation and compare it with what the search recorded.

``autocompress apply RECIPE --verify`` calls :func:`verify_recipe`. A recipe exported by a search
(``RUN/recipes/trial-N.yaml``, :func:`search.recipes.recipe_policy`) carries
``provenance.evaluation``: the checkpoint every candidate started from, the trial's seed, the proxy
fine-tune as it ran, BN recalibration batches, the val subset (``val_limit``, data section),
the eval batch size and the latency settings. From these, :func:`replay_space` builds a search
space whose original model is that checkpoint, and the recipe's policy is evaluated by
:class:`search.objective.Objective` (the one measurement path of the search) with the trial's
seed, **bypassing the result cache**, in a temporary run directory (the run itself is not touched).

Comparison (:func:`compare`) with ``provenance.metrics``:

- ``flops``, ``params``, ``size`` (and ``bops``): exactly equal;
- ``accuracy`` (val top-1): within ``tolerance`` points (default 0.5);
- ``latency_ratio`` (when the search timed latency): inside the recorded 95% interval widened by
  20% on each side, ``[ci_low * 0.8, ci_high * 1.2]``.

A recipe whose ratios were edited by hand carries kept channel indices that no longer match;
:func:`search.recipes.replay_policy` drops them (with a note), so the edit shows as a cost
difference rather than an invalid recipe.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.errors import UserError
from search.objective import Objective
from search.recipes import RecipeError, recorded_checkpoint, replay_policy
from spaces.policy import Policy
from spaces.space import SearchSpace, SpaceModel, space_from_dict

log = logging.getLogger("search.verify")

#: cost metrics that must replay exactly
EXACT = ("flops", "params", "size", "bops")
#: default allowed difference of val top-1, in points
DEFAULT_TOLERANCE = 0.5
#: the recorded latency interval is widened by this fraction on each side
LATENCY_WIDEN = 0.2
#: what provenance.evaluation must hold
REQUIRED = ("seed", "finetune", "bn_recal_batches", "val_limit", "eval_batch_size", "data", "latency")


@dataclass(frozen=True)
class Check:
    """One compared metric: recorded by the search, replayed now, what is allowed, and whether it holds."""

    metric: str
    recorded: float | None
    replayed: float | None
    allowed: str
    ok: bool


@dataclass
class Verification:
    """Outcome of :func:`verify_recipe`: the checks, notes of the replay, the replayed metrics."""

    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def differs(self) -> list[str]:
        """Metrics that do not hold, in table order."""
        return [c.metric for c in self.checks if not c.ok]


def evaluation_of(policy: Policy, source: str) -> dict[str, Any]:
    """``provenance.evaluation`` of a search recipe, checked; :class:`RecipeError` when a recipe
    has none (not exported by a search) or lacks a field or the recorded metrics."""
    prov = policy.provenance
    evaluation = prov.get("evaluation")
    if not isinstance(evaluation, Mapping):
        raise RecipeError(f"{source}: no search provenance (provenance.evaluation); --verify re-runs the search "
                          "evaluation of a recipe exported by `autocompress search` (RUN/recipes/trial-N.yaml)")
    missing = [k for k in REQUIRED if k not in evaluation]
    if missing:
        raise RecipeError(f"{source}: provenance.evaluation lacks {', '.join(missing)}; re-export the recipe "
                          "with `autocompress report RUN`")
    metrics = prov.get("metrics")
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("accuracy"), (int, float)):
        raise RecipeError(f"{source}: provenance.metrics holds no recorded accuracy: nothing to verify against")
    return dict(evaluation)


def replay_space(policy: Policy, evaluation: Mapping[str, Any], checkpoint: Path | None,
                 data_dir: str | None = None) -> SearchSpace:
    """The search space of the replay: the policy's model started from ``checkpoint`` (else the
    recorded torchvision weights), the recorded data, proxy budget and latency settings (latency
    measured exactly when the search measured it). ``data_dir`` overrides the recorded one."""
    model_fields = {f.name for f in dataclasses.fields(SpaceModel)}
    model = {k: v for k, v in dataclasses.asdict(policy.model).items() if k in model_fields}
    if checkpoint is not None:
        model["checkpoint"] = str(checkpoint)
    else:
        model["weights"] = evaluation.get("weights")
    data = dict(evaluation["data"])
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    latency = evaluation["latency"]
    budget = {"finetune": dict(evaluation["finetune"]), "bn_recal_batches": evaluation["bn_recal_batches"],
              "val_limit": evaluation["val_limit"], "eval_batch_size": evaluation["eval_batch_size"],
              "latency": {**(latency or {}), "measure": "always" if latency else "never"}}
    name = f"verify-{policy.provenance.get('space') or policy.model.name}"
    try:
        return space_from_dict({"name": name, "model": model, "data": data, "budget": budget,
                                "objectives": ["accuracy"]})
    except UserError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RecipeError(f"provenance.evaluation: cannot rebuild the search's evaluation: {first}") from None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(recorded: Mapping[str, Any], replayed: Mapping[str, Any], *, tolerance: float = DEFAULT_TOLERANCE,
            widen: float = LATENCY_WIDEN) -> list[Check]:
    """The checks of the module docstring, for every metric the search recorded."""
    checks = []
    for key in EXACT:
        rec, rep = _number(recorded.get(key)), _number(replayed.get(key))
        if rec is not None:
            checks.append(Check(key, rec, rep, "exact", rep is not None and rep == rec))
    rec, rep = _number(recorded.get("accuracy")), _number(replayed.get("accuracy"))
    checks.append(Check("accuracy", rec, rep, f"+-{tolerance:g} pt",
                        rec is not None and rep is not None and abs(rep - rec) <= tolerance + 1e-9))
    rec = _number(recorded.get("latency_ratio"))
    low, high = _number(recorded.get("latency_ci_low")), _number(recorded.get("latency_ci_high"))
    if rec is not None:
        low, high = (low if low is not None else rec), (high if high is not None else rec)
        lo, hi = low * (1 - widen), high * (1 + widen)
        rep = _number(replayed.get("latency_ratio"))
        ok = rep is not None and math.isfinite(rep) and lo <= rep <= hi
        checks.append(Check("latency_ratio", rec, rep, f"[{lo:.3f}, {hi:.3f}]", ok))
    return checks


def verify_recipe(policy: Policy, *, source: str = "recipe", checkpoint: Path | None = None, device: str = "cpu",
                  tolerance: float = DEFAULT_TOLERANCE, data_dir: str | None = None,
                  progress: bool = False) -> Verification:
    """Re-run the search evaluation recorded in ``policy``'s provenance and compare (module docstring).

    ``checkpoint`` overrides the recorded start checkpoint (needed when the run directory is gone);
    ``data_dir`` the recorded data folder. Raises :class:`search.recipes.RecipeError` for a recipe
    without search provenance or a checkpoint that no longer exists.
    """
    evaluation = evaluation_of(policy, source)
    if checkpoint is None and (evaluation.get("checkpoint") or not evaluation.get("weights")):
        checkpoint = recorded_checkpoint(policy, source)
    space = replay_space(policy, evaluation, checkpoint, data_dir)
    seed = int(evaluation["seed"])
    with tempfile.TemporaryDirectory(prefix="autocompress-verify-") as tmp:
        objective = Objective(space, tmp, device=device, progress=progress)
        replayed, notes = replay_policy(policy, objective.groups)
        log.info("verify: replaying the search evaluation (seed %d, proxy fine-tune %s) from %s", seed,
                 _budget(space), checkpoint or f"torchvision weights {evaluation.get('weights')}")
        metrics = dict(objective.evaluate(replayed, seed=seed, cache=False))
    if metrics.get("latency_busy"):
        notes.append("the machine was busy while latency was timed: the latency check may be off")
    checks = compare(policy.provenance["metrics"], metrics, tolerance=tolerance)
    return Verification(checks=checks, notes=notes, metrics=metrics)


def _budget(space: SearchSpace) -> str:
    ft = space.budget.finetune
    return f"{ft.steps} steps" if ft.steps is not None else f"{ft.epochs} epochs"


__all__ = ["Check", "DEFAULT_TOLERANCE", "EXACT", "LATENCY_WIDEN", "Verification", "compare", "evaluation_of",
           "replay_space", "verify_recipe"]
