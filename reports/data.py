"""The data behind every table and figure of a report, as one JSON-safe dict.

:func:`report_data` refreshes the run's exports (``trials.csv``, ``pareto.csv``, ``recipes/``)
and then builds the tables, figures and hypervolume from those two CSV files read back exactly,
so every number shown by the HTML, Markdown and JSON reports is a number in ``trials.csv`` /
``pareto.csv``. The HTML report embeds this dict verbatim (``<script id="report-data"
type="application/json">``).

Per-policy views: every Pareto point when there are at most :data:`MAX_POLICIES`; otherwise the
knee point plus points evenly spaced along the first objective (always including both ends),
:data:`MAX_POLICIES` in total.

Per-policy views (prune ratio per group, bits per layer, distillation) come from each trial's
Policy (``Policy.from_dict`` of the record's applied policy), not from ``trials.csv`` columns.
Layer order: the network order recorded in ``run.json`` (``groups``, ``layers``), then names only
seen in the policies, in the order they appear (search writes them in model order).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autocompress import pareto as _pareto
from autocompress.fidelity import audit_summary
from autocompress.metrics import direction as metric_direction
from autocompress.metrics import is_metric, split_batch
from autocompress.rundir import Run, load_run, read_audit_noise, read_audit_records, require_complete
from compress.sensitivity import SensitivityMap
from reports.tables import pareto_frame, read_csv, trials_frame, write_exports
from search.recipes import trial_policy
from search.sensitivity import FILENAME as SENSITIVITY_FILE
from spaces._schema import to_dict
from spaces.policy import Policy, PolicyError, in_dropped_block

DATA_VERSION = 1
MAX_POLICIES = 12
PLOT_COSTS = ("flops", "latency", "latency_ratio", "flops_ratio", "size", "bops")
PHASES = ("prune", "finetune", "convert", "evaluate", "cost", "latency")  # known order; others follow

LABELS = {
    "accuracy": "Top-1 accuracy (%)",
    "top5": "Top-5 accuracy (%)",
    "accuracy_drop": "Accuracy drop (points)",
    "flops": "FLOPs (MACs)",
    "flops_ratio": "FLOPs / original",
    "params": "Parameters",
    "size": "Weight size (bytes)",
    "bops": "BOPs (MACs x w bits x a bits)",
    "latency": "Latency / original (lower is faster)",
    "latency_ratio": "Latency / original (lower is faster)",
}


def label(metric: str) -> str:
    """Axis label of a metric (``latency@128``: the latency at batch 128)."""
    base, batch = split_batch(metric)
    if batch is not None and base in LABELS:
        return LABELS[base].replace(" / original", f" at batch {batch} / original", 1)
    return LABELS.get(metric, metric)


def batch_columns(columns: Any) -> list[str]:
    """The ``latency@B`` columns of a trials table (the latency at the other measured batches)."""
    return [c for c in columns if split_batch(str(c))[0] == "latency" and split_batch(str(c))[1] is not None]


def direction(metric: str, objectives: list[tuple[str, str]]) -> str:
    for m, d in objectives:
        if m == metric:
            return d
    return metric_direction(metric) if is_metric(metric) else "minimize"


def jsonable(value: Any) -> Any:
    """Numpy -> Python, NaN/inf -> None, recursively (floats keep full precision in JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``df`` as JSON-safe dicts (missing values -> None)."""
    return [jsonable(row) for row in df.astype(object).where(df.notna(), None).to_dict(orient="records")]


def _frames(run: Run, refresh: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    if refresh:
        paths = write_exports(run)
        return read_csv(paths["trials.csv"]), read_csv(paths["pareto.csv"])
    trials_csv, pareto_csv = run.dir / "trials.csv", run.dir / "pareto.csv"
    if trials_csv.is_file() and pareto_csv.is_file():
        return read_csv(trials_csv), read_csv(pareto_csv)
    trials = trials_frame(run)
    return trials, pareto_frame(run, trials)


def _bool(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).lower() == "true" if not isinstance(v, (bool, np.bool_)) else bool(v))


def _projections(objectives: list[tuple[str, str]], trials: pd.DataFrame) -> list[dict[str, str]]:
    """(x, y) pairs to plot: accuracy vs every cost present, and every pair of objectives."""
    present = [c for c in trials.columns if trials[c].notna().any()]
    acc = next((m for m, _ in objectives if m in ("accuracy", "top5", "accuracy_drop")), "accuracy")
    pairs: list[tuple[str, str]] = []
    obj_costs = [m for m, _ in objectives if m != acc]
    same = {"latency_ratio": "latency", "flops_ratio": "flops"}
    for cost in obj_costs + [c for c in (*PLOT_COSTS, *batch_columns(present)) if c not in obj_costs]:
        if cost in obj_costs or (cost in present and same.get(cost) not in present):
            if cost in present and acc in present:
                pairs.append((cost, acc))
    names = [m for m, _ in objectives]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            if acc not in (a, b) and a in present and b in present:
                pairs.append((a, b))
    out = []
    for x, y in pairs:
        primary = len(names) == 2 and x in names and y in names  # else: a projection of the front
        out.append({"x": x, "y": y, "x_label": label(x), "y_label": label(y),
                    "x_direction": direction(x, objectives), "y_direction": direction(y, objectives),
                    "objective_pair": primary})
    return out


def _hypervolume(run: Run, trials: pd.DataFrame) -> dict[str, Any]:
    objectives = [tuple(o) for o in run.info.objectives]
    names = [m for m, _ in objectives]
    dirs = [d for _, d in objectives]
    out: dict[str, Any] = {"objectives": names, "directions": dirs}
    try:
        ref = _pareto.default_reference(run.info.reference, objectives, override=run.info.hv_reference)
        ideal = _pareto.ideal_point(objectives)
    except _pareto.ParetoError as exc:
        out["error"] = str(exc)
        return out
    if any(m not in trials.columns for m in names):
        out["error"] = f"objective metrics {names} missing from trials.csv"
        return out
    values = trials[names].apply(pd.to_numeric, errors="coerce")
    valid = ((trials["status"] == "complete") & _bool(trials["feasible"]) & values.notna().all(axis=1)).to_numpy()
    curve = _pareto.hypervolume_curve(values.fillna(0).to_numpy(float), dirs, ref, valid=valid)
    box = float(np.prod([abs(r - i) for r, i in zip(ref, ideal)]))
    out.update({
        "reference": ref, "ideal": ideal, "box_volume": box,
        "reference_rule": "accuracy 0, accuracy_drop = original accuracy, absolute costs 1.1 x original, "
                          "ratio costs 1.1 (RunInfo.hv_reference overrides)",
        "value": float(curve[-1]) if len(curve) else 0.0,
        "fraction": float(curve[-1]) / box if len(curve) else 0.0,
        "curve": {"trial": trials["trial"].astype(int).tolist(), "value": curve.tolist(),
                  "fraction": (curve / box).tolist()},
    })
    return out


def select_policies(front: pd.DataFrame, objectives: list[tuple[str, str]], limit: int = MAX_POLICIES) -> list[int]:
    """Trials that get a per-policy view (see the module docstring for the rule)."""
    trials = front["trial"].astype(int).tolist()
    if len(trials) <= limit:
        return trials
    knee = front.loc[_bool(front["knee"]), "trial"].astype(int).tolist()
    ordered = front.sort_values(objectives[0][0], kind="stable")["trial"].astype(int).tolist()
    slots = [int(round(i)) for i in np.linspace(0, len(ordered) - 1, limit)]
    if knee and ordered.index(knee[0]) not in slots:
        k = ordered.index(knee[0])
        inner = range(1, len(slots) - 1)  # never replace the two ends
        slots[min(inner, key=lambda j: abs(slots[j] - k))] = k
    return [ordered[i] for i in sorted(set(slots))]


def _policy_objects(run: Run) -> dict[int, Policy]:
    """Every trial's Policy, read from its record (``Policy.from_dict``; unreadable ones left out)."""
    out = {}
    for r in run.records:
        try:
            out[r.trial] = trial_policy(run, r.trial)
        except PolicyError:  # a failed trial without a policy (only its raw params)
            continue
    return out


def _network_order(recorded: list[str], seen: list[list[str]]) -> list[str]:
    """Names in network order: the run's recorded order, then names only seen in policies."""
    out = list(recorded)
    for names in seen:
        out += [n for n in names if n not in out]
    return out


def _policies(run: Run, front: pd.DataFrame, objectives: list[tuple[str, str]]) -> list[dict[str, Any]]:
    policies = _policy_objects(run)
    groups = _network_order(run.info.groups, [list(p.prune.ratios) for p in policies.values()])
    layers = _network_order(run.info.layers, [list(p.quant.layers) for p in policies.values()])
    out = []
    for t in select_policies(front, objectives) if len(front) else []:
        p = policies[t]
        out.append(jsonable({
            "trial": t,
            "summary": p.summary(),
            "baseline": run.record(t).baseline or "",
            "groups": groups,
            # a group inside a dropped block (prune.drop) has lost every channel
            "prune_ratios": [1.0 if in_dropped_block(g, p.prune.drop) else p.prune.ratios.get(g, 0.0)
                             for g in groups],
            "dropped_blocks": list(p.prune.drop),
            "prune_criterion": p.prune.criterion,
            "layers": layers,
            "w_bits": [p.quant.bits_for(n).w for n in layers],
            "a_bits": [p.quant.bits_for(n).a for n in layers],
            "quant_default": {"w": p.quant.default.w, "a": p.quant.default.a},
            "quant_backend": p.quant.backend,
            "distill": to_dict(p.distill),
        }))
    return out


def _times(trials: pd.DataFrame) -> dict[str, Any]:
    seen = [c[len("time."):] for c in trials.columns if c.startswith("time.") and c != "time.total"]
    phases = [p for p in PHASES if p in seen] + [p for p in seen if p not in PHASES]
    return {"phases": phases, "trial": trials["trial"].astype(int).tolist(),
            "status": trials["status"].tolist(),
            "seconds": {p: jsonable(trials[f"time.{p}"].tolist()) for p in phases},
            "total": jsonable(trials["time.total"].tolist()) if "time.total" in trials.columns else None}


def worker_counts(run: Run) -> dict[str, int]:
    """Trials per worker (``host:pid`` of the process that ran them; ``unknown`` when not
    recorded), most first: a shared study's run directory holds every worker's trials."""
    counts = Counter(r.worker or "unknown" for r in run.records)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _final(run: Run) -> dict[str, Any] | None:
    final = run.dir / "final"
    metrics = final / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        data = json.loads(metrics.read_text())
    except json.JSONDecodeError as exc:
        return {"error": f"{metrics}: not valid JSON ({exc})", "files": []}
    files = sorted(str(p.relative_to(run.dir)) for p in final.rglob("*") if p.is_file())
    return {"metrics": jsonable(data), "files": files}


NO_AUDIT = "no audit yet: run `autocompress audit RUN`"


def fidelity(run: Run, front: list[tuple[int, float]] | None = None) -> dict[str, Any]:
    """The proxy-fidelity audit of ``run`` (``RUN/audit/``: records and noise, summarized by
    :func:`autocompress.fidelity.audit_summary`, i.e. what ``summary.json`` holds); ``front`` =
    ``(trial, proxy accuracy)`` of the Pareto points, for the noise ties. ``{"audited": False,
    "message": ...}`` without an audit."""
    records = read_audit_records(run.dir)
    if not records:
        return {"audited": False, "message": NO_AUDIT}
    out = audit_summary(records, run.info.objectives, noise=read_audit_noise(run.dir), front=front or [])
    settings = records[0].settings
    return {"audited": True, "settings": settings, **out}


def _sensitivity(run: Run) -> dict[str, Any] | None:
    """The run's sensitivity map (``RUN/sensitivity.json``) as heatmap data (groups x ratios, units x
    bits) with its measuring time, or None when the search measured none."""
    path = run.dir / SENSITIVITY_FILE
    if not path.is_file():
        return None
    try:
        smap = SensitivityMap.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        return {"error": f"{path}: unreadable sensitivity map ({exc})"}
    out: dict[str, Any] = {"reference": smap.reference, "images": smap.images, "seconds": smap.seconds,
                           "settings": smap.settings.to_dict(), "prune": smap.matrix("prune"),
                           "search": run.info.search.get("sensitivity")}
    if smap.quant:
        out["quant"] = smap.matrix("quant")
    if smap.depth:
        out["depth"] = smap.matrix("depth")
    return out


def report_data(run_dir: str | Path | Run, *, refresh_exports: bool = True) -> dict[str, Any]:
    """Everything a report shows, built from ``trials.csv`` and ``pareto.csv`` (see module docstring).

    Raises :class:`autocompress.errors.RunFormatError` for a missing/empty/old run or when no trial completed.
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    require_complete(run)
    trials, front = _frames(run, refresh_exports)
    objectives = [tuple(o) for o in run.info.objectives]
    info = run.info
    counts = run.counts()
    counts.update({"total": len(run.records), "feasible": int(_bool(trials["feasible"]).sum()),
                   "pareto": int(len(front)),
                   "cached": int(trials["cached_from"].notna().sum()) if "cached_from" in trials.columns else 0,
                   "workers": worker_counts(run)})
    storage = info.search.get("storage") or (f"sqlite:///{run.dir / 'study.db'}"
                                             if (run.dir / "study.db").is_file() else None)
    knee = trials.loc[_bool(trials["knee"]), "trial"].astype(int).tolist()
    return jsonable({
        "format": "autocompress-report",
        "version": DATA_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "dir": str(run.dir), "name": run.name, "space": info.space, "model": info.model,
            "checkpoint": info.checkpoint, "dataset": info.dataset,
            "objectives": [list(o) for o in objectives], "constraints": info.constraints,
            "reference": info.reference, "search": info.search, "budget": info.budget,
            "started": info.started, "finished": info.finished, "wall_time_s": info.wall_time_s,
            "versions": info.versions, "git_sha": info.git_sha, "counts": counts,
        },
        "metric_labels": {m: label(m) for m in trials.columns if is_metric(m)},
        "hypervolume": _hypervolume(run, trials),
        "columns": list(trials.columns),
        "trials": frame_records(trials),
        "pareto": front["trial"].astype(int).tolist(),
        "pareto_columns": list(front.columns),
        "knee": knee[0] if knee else None,
        "scatter": _projections(objectives, trials),
        "policies": _policies(run, front, objectives),
        "policies_rule": ("every Pareto point" if len(front) <= MAX_POLICIES else
                          f"{MAX_POLICIES} of {len(front)} Pareto points: the knee point and points evenly spaced "
                          f"along {objectives[0][0]}"),
        "times": _times(trials),
        "final": _final(run),
        "fidelity": fidelity(run, [(int(t), float(a)) for t, a in zip(front["trial"], front["accuracy"])]
                             if "accuracy" in front.columns else []),
        "sensitivity": _sensitivity(run),
        "dashboard": {"storage": storage,
                      "command": f"pip install optuna-dashboard; optuna-dashboard {storage}" if storage else None},
    })
