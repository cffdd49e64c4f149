"""Compare several runs (different samplers, budgets, devices): overlaid Pareto fronts and hypervolume
against ONE shared reference point.

Shared reference point: for every objective, the *worst* of the runs' own reference points (each
run's ``RunInfo.hv_reference`` or :func:`autocompress.pareto.default_reference`), so every run's front
lies inside the same box and the hypervolumes are directly comparable. Hypervolume fractions use
the same box from that reference to the ideal point (accuracy 100, costs 0).

``contribution`` counts a run's Pareto points that stay non-dominated in the union of all fronts.
Runs must share the objectives (same metrics and directions, any order of runs); differing
models or datasets are allowed but reported as warnings (their fronts are not comparable).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from plotly.offline import get_plotlyjs

from autocompress import pareto as _pareto
from autocompress.errors import UserError
from autocompress.rundir import Run, load_run, require_complete
from reports import _plotly
from reports._format import exact, fmt, interval
from reports.data import fidelity, frame_records, jsonable, label
from reports.html import _asset, _e, _height, script_json
from reports.tables import flatten, pareto_frame, trials_frame


class CompareError(UserError, ValueError):
    """The runs cannot be compared (fewer than two, different objectives)."""


def _labels(runs: list[Run], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(runs):
            raise CompareError(f"--labels has {len(labels)} names for {len(runs)} runs")
        return list(labels)
    names = [r.dir.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.dir.parent.name}/{r.dir.name}" for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def shared_reference(runs: list[Run]) -> list[float]:
    """Worst per-objective reference over the runs (see the module docstring)."""
    objectives = [tuple(o) for o in runs[0].info.objectives]
    refs = np.array([_pareto.default_reference(r.info.reference, objectives, override=r.info.hv_reference)
                     for r in runs], dtype=float)
    return [float(refs[:, i].min() if d == "maximize" else refs[:, i].max()) for i, (_, d) in enumerate(objectives)]


def _fidelity(run: Run) -> dict[str, Any]:
    """A run's proxy fidelity in brief: Kendall tau with its interval, or that it has no audit."""
    fid = fidelity(run)
    if not fid["audited"]:
        return {"audited": False, "message": fid["message"], "text": "no audit"}
    noise = fid.get("noise") or {}
    return {"audited": True, "n": fid["n"], "kendall_tau": fid["kendall_tau"], "spearman_rho": fid["spearman_rho"],
            "sigma": noise.get("sigma"), "text": interval(fid["kendall_tau"])}


def compare_data(run_dirs: list[str | Path], labels: list[str] | None = None) -> dict[str, Any]:
    """Fronts, shared-reference hypervolumes and run settings of several runs (JSON-safe)."""
    if len(run_dirs) < 2:
        raise CompareError(f"compare needs at least two runs; got {len(run_dirs)}")
    runs = [load_run(d) for d in run_dirs]
    for r in runs:
        require_complete(r)
    objectives = [tuple(o) for o in runs[0].info.objectives]
    for r in runs[1:]:
        if sorted(tuple(o) for o in r.info.objectives) != sorted(objectives):
            raise CompareError(f"runs have different objectives: {runs[0].dir} {objectives} vs {r.dir} "
                               f"{[tuple(o) for o in r.info.objectives]}; compare runs of the same objectives")
    names = [m for m, _ in objectives]
    dirs = [d for _, d in objectives]
    reference = shared_reference(runs)
    ideal = _pareto.ideal_point(objectives)
    box = float(np.prod([abs(a - b) for a, b in zip(reference, ideal)]))
    labels = _labels(runs, labels)
    warnings = []
    for key in ("model", "dataset"):
        values = {getattr(r.info, key) for r in runs}
        if len(values) > 1:
            warnings.append(f"runs use different {key}s ({sorted(map(str, values))}): fronts are not comparable")
    for metric in names:
        values = {r.info.reference.get(metric) for r in runs}
        nums = [float(v) for v in values if isinstance(v, (int, float))]
        if len(nums) > 1 and max(nums) > 1.01 * min(nums) and metric not in _pareto.PERCENT_METRICS:
            warnings.append(f"the original models differ in {metric} ({', '.join(f'{v:.6g}' for v in sorted(nums))}): "
                            "different input sizes or models, fronts are not comparable")
    settings = [flatten({"search": r.info.search, "budget": r.info.budget}) for r in runs]
    keys = list(dict.fromkeys(k for st in settings for k in st))
    differ = [k for k in keys if len({json.dumps(st.get(k), sort_keys=True) for st in settings}) > 1
              and not k.startswith("search.storage")]
    fronts = []
    for run, name, st in zip(runs, labels, settings):
        trials = trials_frame(run)
        front = pareto_frame(run, trials)
        pts = front[names].to_numpy(float) if len(front) else np.zeros((0, len(names)))
        hv = _pareto.hypervolume(pts, dirs, reference)
        c = run.counts()
        fronts.append({"label": name, "dir": str(run.dir), "points": pts,
                       "front": frame_records(front[["trial", "baseline", "summary"] +
                                                    [m for m in dict.fromkeys(names + ["accuracy", "flops", "latency"])
                                                     if m in front.columns]]),
                       "hypervolume": hv, "fraction": hv / box,
                       "trials": len(run.records), "complete": c["complete"], "failed": c["failed"],
                       "pruned": c["pruned"], "feasible": int(trials["feasible"].sum()), "pareto": len(front),
                       "model": run.info.model, "dataset": run.info.dataset, "space": run.info.space,
                       "sampler": run.info.search.get("sampler"), "backend": run.info.search.get("backend"),
                       "seed": run.info.search.get("seed"), "budget": run.info.budget,
                       "wall_time_s": run.info.wall_time_s, "git_sha": run.info.git_sha,
                       "differs": {k: st.get(k) for k in differ}, "fidelity": _fidelity(run)})
    union = np.vstack([f["points"] for f in fronts])
    owner = np.concatenate([[i] * len(f["points"]) for i, f in enumerate(fronts)]).astype(int)
    mask = _pareto.non_dominated(union, dirs) if len(union) else np.zeros(0, dtype=bool)
    for i, f in enumerate(fronts):
        f["contribution"] = int(mask[owner == i].sum())
        del f["points"]
    pairs = []
    acc = next((m for m in names if m in ("accuracy", "top5", "accuracy_drop")), None)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            x, y = names[i], names[j]
            if x == acc:
                x, y = y, x
            pairs.append({"x": x, "y": y, "x_label": label(x), "y_label": label(y)})
    return jsonable({"format": "autocompress-compare", "version": 1, "objectives": [list(o) for o in objectives],
                     "reference": reference, "ideal": ideal, "box_volume": box, "runs": fronts, "pairs": pairs,
                     "warnings": warnings,
                     "reference_rule": "per objective the worst of the runs' own reference points"})


def render_compare_html(data: dict[str, Any]) -> str:
    """Self-contained comparison page (plotly.js inlined, no external URL)."""
    figs = {}
    plots = []
    for i, pair in enumerate(data["pairs"]):
        fid = f"fig-compare-{i}"
        figs[fid] = _plotly.to_json(_plotly.compare_scatter(data["runs"], pair["x"], pair["y"], pair["x_label"],
                                                            pair["y_label"]))
        plots.append(f"<div id='{fid}' class='plot pareto-plot' {_height(figs[fid])}></div>")
    cols = [("hypervolume", "hypervolume"), ("fraction", "HV fraction"), ("contribution", "points on joint front"),
            ("pareto", "Pareto points"), ("trials", "trials"), ("complete", "complete"), ("failed", "failed"),
            ("feasible", "feasible"), ("wall_time_s", "wall time (s)")]
    text_cols = [("sampler", "sampler"), ("backend", "backend"), ("seed", "seed"), ("model", "model"),
                 ("dataset", "dataset")]
    head = "".join(f"<th>{_e(h)}</th>" for _, h in cols) + "".join(f"<th class='text'>{_e(h)}</th>"
                                                                  for _, h in text_cols)
    rows = []
    for r in data["runs"]:
        cells = "".join(f"<td data-col='{k}' data-value='{_e(exact(r[k]))}'>"
                        f"{_e(f'{r[k]:.6g}' if isinstance(r[k], float) else r[k])}</td>" for k, _ in cols)
        cells += "".join(f"<td class='text'>{_e(r[k])}</td>" for k, _ in text_cols)
        budget = html.escape(", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in r["differs"].items()) or "same")
        fid = r.get("fidelity") or {}
        tau = fid.get("kendall_tau") or {}
        cells += (f"<td class='text' data-col='kendall_tau' data-value='{_e(exact(tau.get('value')))}'>"
                  f"{_e(fid.get('text', 'no audit'))}</td>")
        rows.append(f"<tr data-run='{_e(r['label'])}'><td class='text' title='{_e(r['dir'])}'>{_e(r['label'])}</td>"
                    f"{cells}<td class='text muted'>{budget}</td></tr>")
    warn = "".join(f"<p><b>Warning:</b> {_e(w)}</p>" for w in data["warnings"])
    ref = ", ".join(f"{m} {fmt(m, v)}" for (m, _), v in zip(data["objectives"], data["reference"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autocompress compare</title>
<style>{_asset("report.css")}</style><script>{get_plotlyjs()}</script></head><body>
<header><h1>autocompress compare: {len(data['runs'])} runs</h1>
<div class="sub">objectives {_e(', '.join(m for m, _ in data['objectives']))}; shared hypervolume reference {_e(ref)}
</div></header><main>{warn}
<section id="runs"><h2>Runs</h2><p class="muted">Hypervolume of every run's Pareto front against the SHARED reference
point {_e(data['reference'])} ({_e(data['reference_rule'])}); fraction = share of the box from the reference to the
ideal point {_e(data['ideal'])}.</p><div class="scroll"><table class="data sortable" id="compare">
<thead><tr><th class="text">run</th>{head}<th class="text" title="proxy fidelity: Kendall tau between proxy and
final val accuracy of the audited trials, 95% bootstrap interval (autocompress audit RUN)">proxy tau [95% CI]</th>
<th class="text">settings that differ</th></tr></thead>
<tbody>{''.join(rows)}</tbody>
</table></div></section>
<section id="fronts"><h2>Pareto fronts</h2><div class="grid2">{''.join(plots)}</div></section></main>
<footer><p>Data embedded as JSON (<code>#report-data</code>).</p></footer>
<script id="report-data" type="application/json">{script_json(data)}</script>
<script id="report-figures" type="application/json">{script_json(figs)}</script>
<script>{_asset("report.js")}</script></body></html>
"""


def write_compare_report(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None,
                         data: dict[str, Any] | None = None) -> Path:
    """Write the comparison page (``.html``) or its data (``.json``) to ``out``."""
    data = compare_data(run_dirs, labels) if data is None else data
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    else:
        out.write_text(render_compare_html(data), encoding="utf-8")
    return out
