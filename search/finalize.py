"""Finalize a search: pick one point, fine-tune it fully, test it, export it.

``autocompress finalize RUN [--pick knee | --pick "max accuracy where latency_ratio <= 0.5" |
--trial N] [--epochs E] [--no-kd]``

Picking (among the run's complete trials; ``records/`` read through ``reports.tables``):

``knee`` (default)
    On the feasible Pareto front (``pareto.csv`` semantics), :func:`reports.pareto.knee_index`:
    the point farthest from the line (plane) through the normalised extreme points, towards
    the ideal point; degenerate fronts fall back to ``reports.pareto.knee_point``.
``"max METRIC [where COND [and COND ...]]"`` / ``"min METRIC ..."``
    Among feasible complete trials, the best ``METRIC`` subject to conditions such as
    ``latency_ratio <= 0.5`` (the constraint syntax of search spaces).
``trial=N``
    Trial ``N`` (any complete trial).

The chosen recipe is fine-tuned with the space's ``budget.final`` schedule (``epochs``
overrides its length) with knowledge distillation from the original model (``distill.alpha``
0 becomes 0.5 unless ``kd=False``), then scored on val and **test**, its costs and measured
speed-up reported, and exported: ``RUN/final/{policy.yaml, model.pt}``
(``compress.artifact.save_compressed``), ``model.onnx`` (``compress.export.export_compressed``:
the ORT-native INT8 ONNX for x86 INT8 policies, verified by its accuracy on val),
``recipe.yaml`` (replayable, with provenance) and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.pareto import knee_index
from search.records import METRICS, RunFormatError, atomic_write_json
from spaces._schema import UserError
from spaces._space_constraints import Constraint, parse_constraint
from spaces.policy import Policy

log = logging.getLogger("search.finalize")

DEFAULT_KD_ALPHA = 0.5
_PICK_RE = re.compile(r"^\s*(max|min)\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:where\s+(.+?))?\s*$", re.IGNORECASE)
PICK_HELP = ("'knee', or 'max METRIC [where COND and COND ...]' / 'min METRIC ...', e.g. "
             "'max accuracy where latency_ratio <= 0.5'")


class FinalizeError(UserError, ValueError):
    """The pick cannot be parsed or no trial satisfies it (a user error, shown without traceback)."""


# ----- picking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """A parsed ``--pick`` expression."""

    text: str
    goal: str  # "knee" | "max" | "min"
    metric: str | None = None
    conditions: tuple[Constraint, ...] = ()


def parse_pick(text: str) -> Pick:
    """Parse ``knee`` or ``max|min METRIC [where COND and ...]``; errors name the allowed metrics."""
    if text.strip().lower() == "knee":
        return Pick(text="knee", goal="knee")
    m = _PICK_RE.match(text)
    if not m:
        raise FinalizeError(f"--pick {text!r}: cannot parse; expected {PICK_HELP}. Metrics: {', '.join(METRICS)}")
    goal, metric, where = m.group(1).lower(), m.group(2), m.group(3)
    if metric not in METRICS:
        raise FinalizeError(f"--pick {text!r}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    conditions = []
    for part in re.split(r"\s+and\s+|\s*,\s*", where or "", flags=re.IGNORECASE):
        if not part.strip():
            if where is not None:
                raise FinalizeError(f"--pick {text!r}: empty condition after 'where'; expected {PICK_HELP}")
            continue
        try:
            conditions.append(parse_constraint(part))
        except ValueError as exc:
            raise FinalizeError(f"--pick {text!r}: {exc}") from None
    return Pick(text=text.strip(), goal=goal, metric=metric, conditions=tuple(conditions))


def choose_trial(run: Any, pick: str = "knee", *, trial: int | None = None) -> tuple[int, str]:
    """Trial number picked in a loaded run (``reports._load.Run``) and a description of why."""
    complete = [r for r in run.records if r.status == "complete"]
    if not complete:
        raise FinalizeError(f"{run.dir}: no complete trial to finalize")
    if trial is not None:
        rec = next((r for r in run.records if r.trial == trial), None)
        if rec is None:
            raise FinalizeError(f"{run.dir}: no trial {trial}; trials: {', '.join(str(r.trial) for r in run.records)}")
        if rec.status != "complete":
            raise FinalizeError(f"{run.dir}: trial {trial} is {rec.status} ({rec.error}); pick a complete trial")
        return trial, f"trial {trial}"
    p = parse_pick(pick)
    objectives = [tuple(o) for o in run.info.objectives]
    if p.goal == "knee":
        from reports.tables import pareto_frame

        front = pareto_frame(run)
        if front.empty:
            raise FinalizeError(f"{run.dir}: no feasible Pareto point (all {len(complete)} complete trials violate "
                                f"the constraints {run.info.constraints}); use --trial N or --pick with a condition")
        names = [m for m, _ in objectives]
        points = front[names].to_numpy(dtype=float)
        i = knee_index(points, [d for _, d in objectives])
        t = int(front["trial"].iloc[i])
        return t, f"knee of the {len(front)}-point Pareto front over {', '.join(names)}"
    candidates = [r for r in complete if r.feasible]
    ok = [r for r in candidates if all(c.violation(r.metrics) <= 0 for c in p.conditions)
          and _finite(r.metrics.get(p.metric))]
    if not ok:
        hints = []
        for c in p.conditions:
            vals = [float(r.metrics[c.metric]) for r in candidates if _finite(r.metrics.get(c.metric))]
            if vals:
                best = min(vals) if c.op in ("<=", "<") else max(vals)
                hints.append(f"best {c.metric} among them is {best:.4g}")
            else:
                hints.append(f"no trial has {c.metric!r} (measured metrics: {', '.join(sorted(complete[0].metrics))})")
        raise FinalizeError(f"--pick {p.text!r}: none of the {len(candidates)} feasible complete trials satisfies it"
                            + (f" ({'; '.join(hints)})" if hints else ""))
    key = (lambda r: float(r.metrics[p.metric])) if p.goal == "min" else (lambda r: -float(r.metrics[p.metric]))
    best = min(ok, key=lambda r: (key(r), r.trial))
    return best.trial, f"{p.text} ({len(ok)} of {len(candidates)} feasible trials qualify)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


# ----- the final fine-tune ----------------------------------------------------------------------


def final_policy(policy: Policy, space: Any, *, epochs: float | None = None, kd: bool = True) -> Policy:
    """The chosen recipe with the full fine-tune schedule and distillation settings."""
    schedule = space.budget.final
    if epochs is not None:
        if epochs <= 0:
            raise FinalizeError(f"--epochs {epochs}: must be > 0")
        schedule = dataclasses.replace(schedule, epochs=float(epochs), steps=None)
    distill = policy.distill
    if kd and distill.alpha == 0:
        distill = dataclasses.replace(distill, alpha=DEFAULT_KD_ALPHA)
    if not kd:
        distill = dataclasses.replace(distill, alpha=0.0, feature_weight=0.0)
    return policy.replace(finetune=dataclasses.replace(schedule, seed=policy.finetune.seed), distill=distill)


def _load_space(run_dir: Path):
    from spaces._schema import read_document
    from spaces.space import space_from_dict

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunFormatError(f"{run_dir}: no config.yaml (the resolved search space); not a search run directory")
    return space_from_dict(read_document(path), source=str(path))


def finalize(run_dir: str | Path, pick: str = "knee", *, trial: int | None = None, epochs: float | None = None,
             kd: bool = True, device: str = "cpu", onnx: bool = True, progress: bool = True) -> dict[str, Any]:
    """Pick a point of ``run_dir``, fine-tune it fully, evaluate on val and test, export it.

    Returns the dict written to ``RUN/final/metrics.json``. See the module docstring.
    """
    from compress.apply import apply
    from reports._load import load_run
    from reports.tables import recipe_policy
    from search.objective import Objective

    run_dir = Path(run_dir)
    if trial is None:
        parse_pick(pick)  # a typo fails before anything is read
    run = load_run(run_dir)
    number, why = choose_trial(run, pick, trial=trial)
    space = _load_space(run_dir)
    record = next(r for r in run.records if r.trial == number)
    log.info("finalizing trial %d (%s)", number, why)
    chosen = recipe_policy(run, number)
    policy = final_policy(chosen, space, epochs=epochs, kd=kd)

    objective = Objective(space, run_dir, device=device, progress=progress)
    reference = objective.reference
    data = objective.data
    t0 = time.perf_counter()
    out = apply(policy, objective.model, data=data, finetune=True, device=device, progress=progress,
                bn_recal_batches=space.budget.bn_recal_batches)
    finetune_s = time.perf_counter() - t0

    from compress.measure import evaluate

    batch = space.budget.eval_batch_size
    scored, _ = out.scored(objective.layers)  # the same rule as during the search
    val = evaluate(scored, data.loader("val", batch, shuffle=False), progress=progress)
    test = evaluate(scored, data.loader("test", batch, shuffle=False), progress=progress)
    test_ref = evaluate(objective.model, data.loader("test", batch, shuffle=False), progress=progress)
    from search.objective import _float_structure

    costs = objective._costs(_float_structure(out.model), policy.quant)  # noqa: SLF001
    latency = objective._latency(out)  # noqa: SLF001 - always measured for the final model

    final_dir = run_dir / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    from compress.artifact import save_compressed

    save_compressed(final_dir, out.policy, out.model)
    onnx_info: dict[str, Any] = {}
    if onnx:
        onnx_info = _export_onnx(out, final_dir / "model.onnx", data, objective.input_size)
    else:
        (final_dir / "model.onnx").unlink(missing_ok=True)  # never leave a stale export beside new weights

    provenance = dict(chosen.provenance)
    provenance.update({"finalized_from_trial": number, "pick": why, "search_metrics": dict(record.metrics)})
    recipe = out.policy.replace(provenance=provenance)
    recipe.save(final_dir / "recipe.yaml")

    metrics: dict[str, Any] = {
        "dir": str(final_dir),
        "trial": number,
        "pick": why,
        "policy_hash": policy.hash(),
        "epochs": policy.finetune.epochs,
        "steps": getattr(out.train_result, "steps", None),
        "kd_alpha": policy.distill.alpha,
        "val_accuracy": float(val["top1"]),
        "test_accuracy": float(test["top1"]),
        "reference_val_accuracy": float(reference["accuracy"]) if reference.get("val_images") else None,
        "reference_test_accuracy": float(test_ref["top1"]),
        "test_accuracy_drop": float(test_ref["top1"]) - float(test["top1"]),
        "test_images": int(test["n"]),
        "val_images": int(val["n"]),
        **costs,
        "flops_ratio": costs["flops"] / max(float(reference["flops"]), 1.0),
        "size_ratio": costs["size"] / max(float(reference["size"]), 1.0),
        "latency_ratio": latency["latency_ratio"],
        "latency_ci_low": latency["latency_ci_low"],
        "latency_ci_high": latency["latency_ci_high"],
        "latency_busy": latency["latency_busy"],
        "speedup": 1.0 / latency["latency_ratio"] if latency["latency_ratio"] > 0 else None,
        "search_metrics": dict(record.metrics),
        "precision": dict(out.precision),
        "notes": list(out.notes),
        "finetune_seconds": round(finetune_s, 2),
        "onnx": onnx_info,
        "files": sorted({p.name for p in final_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
                        | {"metrics.json"}),
    }
    if "top5" in test:
        metrics["test_top5"] = float(test["top5"])
    atomic_write_json(final_dir / "metrics.json", metrics)
    log.info("final model: test top-1 %.2f%% (original %.2f%%), FLOPs x%.3f, speed-up x%.2f; written to %s",
             metrics["test_accuracy"], metrics["reference_test_accuracy"], metrics["flops_ratio"],
             metrics["speedup"] or float("nan"), final_dir)
    return metrics


def _export_onnx(out: Any, path: Path, data: Any, input_size: int) -> dict[str, Any]:
    """Export and verify the deploy artefact (``compress.export.export_compressed``: ORT-native INT8
    verified by accuracy on val, or float); a failure is reported in metrics.json, not fatal
    (weights are saved)."""
    import torch

    from compress.apply import calibration_batches
    from compress.export import export_compressed

    example = torch.randn(1, 3, input_size, input_size)
    try:
        report = export_compressed(out, path, calib=calibration_batches(data), example=example,
                                   verify_loader=data.loader("val", 64, shuffle=False))
    except Exception as exc:  # noqa: BLE001 - keep the PyTorch artifact; say why ONNX failed
        log.warning("ONNX export failed: %s", exc)
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}
    info: dict[str, Any] = {}
    if dataclasses.is_dataclass(report):
        info.update({k: v for k, v in dataclasses.asdict(report).items()
                     if isinstance(v, (int, float, str, bool)) or v is None})
    info["path"] = path.name  # relative to RUN/final
    return info


__all__ = ["FinalizeError", "Pick", "choose_trial", "final_policy", "finalize", "knee_index", "parse_pick"]
