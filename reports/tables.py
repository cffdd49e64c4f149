"""Tables of a run: every trial flattened to one row, the Pareto front, and the run-dir exports.

Columns of :func:`trials_frame` (one row per trial, ordered by trial number):

- ``trial``, ``status``, ``feasible``, ``pareto`` (feasible, complete, non-dominated over
  ``RunInfo.objectives``), ``knee`` (the front's knee point, see :func:`reports.pareto.knee_point`),
  ``baseline`` (``original``, ``uniform-prune-0.25``, ``uniform-int8`` ...; empty for searched trials),
  ``summary`` (``Policy.summary()``);
- every metric under its own name (``accuracy``, ``flops``, ``latency``, ``latency_ci_low`` ...);
- change vs the original model (from ``RunInfo.reference``): ``vs.accuracy_drop`` (points),
  ``vs.flops_speedup`` (original FLOPs / FLOPs), ``vs.latency_speedup`` (1 / latency ratio),
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
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports import pareto as _pareto
from reports._load import Run, load_run
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
    for m in ("size", "bops", "params"):
        v, r = num(metrics, m), num(reference, m)
        if v is not None and r:
            out[f"vs.{m}_ratio"] = v / r
    return out


def objective_columns(run: Run) -> tuple[list[str], list[str]]:
    """(metric names, directions) of the run's objectives."""
    return [m for m, _ in run.info.objectives], [d for _, d in run.info.objectives]


def _frame(run: Run) -> pd.DataFrame:
    rows = []
    for r in run.records:
        row: dict[str, Any] = {
            "trial": r.trial, "status": r.status, "feasible": bool(r.feasible), "pareto": False, "knee": False,
            "baseline": r.baseline or "", "summary": policy_summary(r.policy),
        }
        row.update(r.metrics)
        row.update(_vs_original(r.metrics, run.info.reference))
        row.update({f"time.{k}": v for k, v in r.times.items()})
        row.update({f"violation.{k}": v for k, v in r.constraints.items()})
        row.update(flatten({k: r.policy[k] for k in POLICY_SECTIONS if k in r.policy}))
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
    objectives, directions = objective_columns(run)
    if df.empty or any(m not in df.columns for m in objectives):
        return df
    values = df[objectives].apply(pd.to_numeric, errors="coerce")
    eligible = (df["status"] == "complete") & df["feasible"].astype(bool) & values.notna().all(axis=1)
    idx = np.flatnonzero(eligible.to_numpy())
    if idx.size == 0:
        return df
    pts = values.to_numpy(dtype=float)[idx]
    mask = _pareto.non_dominated(pts, directions)
    pareto = np.zeros(len(df), dtype=bool)
    pareto[idx[mask]] = True
    knee = np.zeros(len(df), dtype=bool)
    knee[idx[_pareto.knee_point(pts, directions)]] = True
    df["pareto"] = pareto
    df["knee"] = knee
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


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python, NaN -> None (YAML/JSON-safe)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def recipe_policy(run: Run, trial: int) -> Policy:
    """The replayable Policy of ``trial`` with provenance (run, study, trial, metrics, versions, git sha)."""
    rec = next((r for r in run.records if r.trial == trial), None)
    if rec is None:
        raise KeyError(f"{run.dir}: no trial {trial}")
    policy = Policy.from_dict(rec.policy, source=f"{run.dir}/records/trial-{trial:05d}.json: policy")
    info = run.info
    provenance = dict(policy.provenance)
    provenance.update({
        "source": "autocompress search",
        "run": str(run.dir.resolve()),
        "study": info.search.get("study"),
        "trial": rec.trial,
        "baseline": rec.baseline,
        "space": info.space,
        "model": info.model,
        "checkpoint": info.checkpoint,
        "dataset": info.dataset,
        "objectives": [list(o) for o in info.objectives],
        "metrics": {k: _plain(v) for k, v in rec.metrics.items()},
        "reference": {k: _plain(v) for k, v in info.reference.items()},
        "policy_hash": rec.policy_hash,
        "seed": rec.seed,
        "versions": dict(rec.versions or info.versions),
        "git_sha": rec.git_sha or info.git_sha,
        "finished": rec.finished,
    })
    return policy.replace(provenance=provenance)


def write_exports(run_dir: str | Path | Run) -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto.csv`` and ``recipes/trial-N.yaml`` for every Pareto point.

    Idempotent: recipes of trials no longer on the front are removed. Returns
    ``{relative path: absolute path}`` of everything written.
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    trials = trials_frame(run)
    front = pareto_frame(run, trials)
    out: dict[str, Path] = {}
    for name, df in (("trials.csv", trials), ("pareto.csv", front)):
        path = run.dir / name
        _atomic_write_text(path, df.to_csv(index=False))
        out[name] = path
    recipes = run.dir / "recipes"
    recipes.mkdir(exist_ok=True)
    wanted = {f"trial-{int(t)}.yaml" for t in front["trial"]}
    for p in recipes.iterdir():
        if _RECIPE_RE.match(p.name) and p.name not in wanted:
            p.unlink()
    for t in front["trial"]:
        path = recipes / f"trial-{int(t)}.yaml"
        recipe_policy(run, int(t)).save(path)
        out[f"recipes/{path.name}"] = path
    return out
