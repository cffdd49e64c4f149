"""Tables of a run: every trial flattened to one row, the Pareto front, and the run-dir exports.

Columns of :func:`trials_frame` (one row per trial, ordered by trial number):

- ``trial``, ``status``, ``feasible``, ``pareto`` (feasible, complete, non-dominated over
  ``RunInfo.objectives``), ``knee`` (the front's knee point, see :func:`autocompress.pareto.knee_point`),
  ``baseline`` (``original``, ``uniform-prune-0.25``, ``uniform-int8`` ...; empty for searched trials),
  ``summary`` (``Policy.summary()``); ``level`` (multi-fidelity search: levels reached, 1 = the
  first; the metrics and ``finetune.steps`` are the highest level's);
- every metric under its own name (``accuracy``, ``flops``, ``latency``, ``latency_ci_low`` ...);
- change vs the original model (from ``RunInfo.reference``): ``vs.accuracy_drop`` (points),
  ``vs.flops_speedup`` (original FLOPs / FLOPs), ``vs.latency_speedup`` (1 / latency ratio; at every
  other latency batch ``B``, ``latency@B`` and ``vs.latency_speedup@B``),
  ``vs.size_ratio``, ``vs.bops_ratio``, ``vs.params_ratio`` (value / original);
- ``time.<phase>`` seconds (``prune``, ``finetune``, ``evaluate``, ``cost``, ``latency``, ``total``);
- ``violation.<constraint>`` (<= 0 satisfied);
- every policy field flattened with dots: ``model.name``, ``prune.ratios.layer2.0.conv1``,
  ``quant.default.w``, ``quant.layers.conv1.a``, ``distill.alpha``, ``finetune.lr`` ...
  (lists as JSON text; ``provenance`` is left out);
- ``policy_hash``, ``cached_from``, ``seed``, ``worker``, ``started``, ``finished``, ``git_sha``, ``error``.

CSV files are written with full float precision (``repr``), so reading them back with
``float_precision="round_trip"`` (:func:`read_csv`) gives exactly the numbers in the frame.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from autocompress.metrics import at_batch, split_batch
from autocompress.pareto import knee_point, non_dominated
from autocompress.rundir import Run, atomic_write_text, eligible, load_run
from search.recipes import recipe_policy
from spaces.policy import Policy

HEAD_COLUMNS = ("trial", "status", "feasible", "pareto", "knee", "baseline", "summary")
TAIL_COLUMNS = ("policy_hash", "cached_from", "seed", "worker", "started", "finished", "git_sha", "error")
POLICY_SECTIONS = ("model", "prune", "quant", "distill", "finetune")
_RECIPE_RE = re.compile(r"^trial-\d+\.yaml$")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to ``{"a.b.c": value}``; lists become JSON text."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            elif isinstance(v, dict):
                continue  # empty mapping: no field
            elif isinstance(v, (list, tuple)):
                out[key] = json.dumps(list(v))
            else:
                out[key] = v
    return out


def policy_summary(policy: dict[str, Any]) -> str:
    """``Policy.summary()`` of a record's policy dict ("" if the dict is not a valid policy)."""
    try:
        return Policy.from_dict(policy).summary()
    except Exception:  # noqa: BLE001 - a summary must never break a table
        return ""


def _vs_original(metrics: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    def num(d: dict[str, Any], k: str) -> float | None:
        v = d.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    out: dict[str, float] = {}
    acc, ref_acc = num(metrics, "accuracy"), num(reference, "accuracy")
    if acc is not None and ref_acc is not None:
        out["vs.accuracy_drop"] = ref_acc - acc
    flops, ref_flops = num(metrics, "flops"), num(reference, "flops")
    if flops and ref_flops:
        out["vs.flops_speedup"] = ref_flops / flops
    lat = num(metrics, "latency")
    lat = lat if lat is not None else num(metrics, "latency_ratio")
    if lat:
        out["vs.latency_speedup"] = 1.0 / lat
    for key in metrics:  # latency@B of the other latency batches
        base, batch = split_batch(key)
        if base == "latency" and batch is not None and num(metrics, key):
            out[at_batch("vs.latency_speedup", batch)] = 1.0 / float(metrics[key])
    for m in ("size", "bops", "params"):
        v, r = num(metrics, m), num(reference, m)
        if v is not None and r:
            out[f"vs.{m}_ratio"] = v / r
    return out


def objective_columns(run: Run) -> tuple[list[str], list[str]]:
    """(metric names, directions) of the run's objectives."""
    return [m for m, _ in run.info.objectives], [d for _, d in run.info.objectives]


def _csv_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy sections shown in ``trials.csv``: the kept channel indices are left out (they stay
    in the record; :func:`search.recipes.trial_policy` reads the whole Policy)."""
    out = {k: policy[k] for k in POLICY_SECTIONS if k in policy}
    if isinstance(out.get("prune"), dict) and "kept" in out["prune"]:
        out["prune"] = {k: v for k, v in out["prune"].items() if k != "kept"}
    return out


def _frame(run: Run) -> pd.DataFrame:
    rows = []
    for r in run.records:
        row: dict[str, Any] = {
            "trial": r.trial, "status": r.status, "feasible": bool(r.feasible), "pareto": False, "knee": False,
            "baseline": r.baseline or "", "summary": policy_summary(r.policy),
        }
        if r.levels:  # multi-fidelity: how many levels the trial reached (its metrics are the highest's)
            row["level"] = len(r.levels)
        row.update(r.metrics)
        row.update(_vs_original(r.metrics, run.info.reference))
        row.update({f"time.{k}": v for k, v in r.times.items()})
        row.update({f"violation.{k}": v for k, v in r.constraints.items()})
        row.update(flatten(_csv_policy(r.policy)))
        row.update({"policy_hash": r.policy_hash, "cached_from": r.cached_from, "seed": r.seed,
                    "worker": r.worker, "started": r.started, "finished": r.finished,
                    "git_sha": r.git_sha, "error": r.error})
        rows.append(row)
    df = pd.DataFrame(rows)
    # column order: head, objectives, other metrics/vs/time/violation, policy fields, tail
    objectives, _ = objective_columns(run)
    cols = list(df.columns)
    policy_cols = sorted((c for c in cols if c.split(".", 1)[0] in POLICY_SECTIONS),
                         key=lambda c: POLICY_SECTIONS.index(c.split(".", 1)[0]))  # stable: keeps layer order
    first = [c for c in HEAD_COLUMNS if c in cols] + [c for c in objectives if c in cols]
    last = policy_cols + [c for c in TAIL_COLUMNS if c in cols]
    middle = [c for c in cols if c not in first and c not in last]
    return df[first + middle + last]


def _mark_pareto(df: pd.DataFrame, run: Run) -> pd.DataFrame:
    """Set ``pareto`` and ``knee`` on the :func:`autocompress.rundir.eligible` trials' rows."""
    recs, values = eligible(run)
    if df.empty or not recs:
        return df
    directions = [d for _, d in run.objectives]
    front = {r.trial for r, keep in zip(recs, non_dominated(values, directions)) if keep}
    knee = recs[knee_point(values, directions)].trial
    df["pareto"] = df["trial"].isin(front)
    df["knee"] = df["trial"] == knee
    return df


def trials_frame(run_dir: str | Path | Run) -> pd.DataFrame:
    """One row per trial: policy fields flattened, metrics, status, Pareto membership, times, error."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    return _mark_pareto(_frame(run), run)


def pareto_frame(run_dir: str | Path | Run, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feasible, complete, non-dominated trials over ``RunInfo.objectives``, by first objective.

    Pass ``trials`` (from :func:`trials_frame`) to avoid reading the run again.
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    df = trials_frame(run) if trials is None else trials
    front = df[df["pareto"].astype(bool)]
    objectives, _ = objective_columns(run)
    if objectives and objectives[0] in front.columns and len(front):
        front = front.sort_values([objectives[0], "trial"], kind="stable")
    return front.reset_index(drop=True)


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a ``trials.csv`` / ``pareto.csv`` back with exact floats."""
    return pd.read_csv(path, float_precision="round_trip", keep_default_na=True)


def write_exports(run_dir: str | Path | Run) -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto.csv`` and ``recipes/trial-N.yaml`` for every Pareto point.

    Idempotent: recipes of trials no longer on the front are removed. Returns
    ``{relative path: absolute path}`` of everything written.
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    trials = trials_frame(run)
    front = pareto_frame(run, trials)
    policies = {int(t): recipe_policy(run, int(t)) for t in front["trial"]}  # a damaged run fails before writing
    out: dict[str, Path] = {}
    for name, df in (("trials.csv", trials), ("pareto.csv", front)):
        path = run.dir / name
        atomic_write_text(path, df.to_csv(index=False))
        out[name] = path
    recipes = run.dir / "recipes"
    recipes.mkdir(exist_ok=True)
    wanted = {f"trial-{int(t)}.yaml" for t in front["trial"]}
    for p in recipes.iterdir():
        if _RECIPE_RE.match(p.name) and p.name not in wanted:
            p.unlink()
    for t, policy in policies.items():
        path = recipes / f"trial-{t}.yaml"
        policy.save(path)
        out[f"recipes/{path.name}"] = path
    return out
