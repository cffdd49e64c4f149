"""One self-contained HTML report of a run: opens offline, no server, no external URL.

plotly.js, the CSS and the small table-sorting script are inlined. The numbers come from
:func:`reports.data.report_data` (i.e. from ``trials.csv`` / ``pareto.csv``), embedded verbatim as
``<script id="report-data" type="application/json">``; figures are embedded as plotly JSON in
``<script id="report-figures">`` and drawn by ``assets/report.js``. Every table cell carries its
exact value in ``data-value`` (``repr`` of floats), the display text is rounded.
"""

from __future__ import annotations

import html
import json
import os
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from autocompress.metrics import at_batch, split_batch
from autocompress.rundir import Run
from reports import _plotly
from reports._format import audit_budget, exact, fidelity_rows, fmt, interval, noise_text, regret_rows, workers_text
from reports.data import NO_AUDIT, batch_columns, report_data
from reports.tables import flatten

DASHBOARD_HELP = "pip install optuna-dashboard; optuna-dashboard sqlite:///RUN/study.db"


def _asset(name: str) -> str:
    return resources.files("reports").joinpath("assets", name).read_text()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def script_json(data: Any) -> str:
    """JSON safe to place inside ``<script>`` (no ``</script>`` break-out)."""
    return json.dumps(data, allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def _kv(rows: dict[str, Any]) -> str:
    return "<table>" + "".join(f"<tr><td class='muted'>{_e(k)}</td><td>{_e(v)}</td></tr>"
                               for k, v in rows.items() if v not in (None, "", [], {})) + "</table>"


def _card(title: str, body: str) -> str:
    return f"<div class='card'><div class='k'>{_e(title)}</div>{body}</div>"


def _compact(value: Any) -> Any:
    """``{"steps": 30, "lr": 0.02}`` -> ``steps=30, lr=0.02`` (nulls left out)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "[" + ", ".join(str(_compact(v)) for v in value) + "]"
    return value


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(float(seconds))))


def _header(data: dict[str, Any]) -> str:
    r = data["run"]
    c = r["counts"]
    hv = data["hypervolume"]
    objectives = ", ".join(f"{m} ({'max' if d == 'maximize' else 'min'})" for m, d in r["objectives"])
    hv_text = (f"{hv['fraction']:.4f} of the box from reference {hv['reference']} to ideal {hv['ideal']}"
               if "fraction" in hv else hv.get("error", "-"))
    cards = [
        _card("Model", _kv({"model": r["model"], "checkpoint": r["checkpoint"], "dataset": r["dataset"],
                            "space": r["space"]})),
        _card("Objectives", _kv({"objectives": objectives, "constraints": "; ".join(r["constraints"]) or "none",
                                 "hypervolume": hv_text})),
        _card("Search", _kv({k: _compact(v) for k, v in r["search"].items()})),
        _card("Budget", _kv({k: _compact(v) for k, v in r["budget"].items()})),
        _card("Trials", _kv({"total": c["total"], "workers": workers_text(c.get("workers") or {}),
                             "complete": c["complete"], "failed": c["failed"],
                             "pruned": c["pruned"], "running": c["running"] or None, "feasible": c["feasible"],
                             "Pareto points": c["pareto"], "cached results": c.get("cached") or None,
                             "wall time": _duration(r["wall_time_s"]), "started": r["started"],
                             "finished": r["finished"]})),
        _card("Versions", _kv({**r["versions"], "git sha": r["git_sha"]})),
    ]
    if r["reference"]:
        cards.append(_card("Original model (reference)", _kv({k: fmt(k, v) for k, v in r["reference"].items()})))
    failures = _failures(data)
    return ("<section id='summary'><h2>Run</h2><div class='cards'>" + "".join(cards) + "</div>" + failures
            + "</section>")


def _failures(data: dict[str, Any]) -> str:
    """Failed trials grouped by their first error line."""
    reasons: dict[str, list[int]] = {}
    for r in data["trials"]:
        if r.get("status") == "failed":
            first = (r.get("error") or "no error message").strip().splitlines()[0][:200]
            reasons.setdefault(first, []).append(r["trial"])
    if not reasons:
        return ""
    items = "".join(f"<li><code>{_e(reason)}</code>: trials {_e(', '.join(map(str, trials)))}</li>"
                    for reason, trials in sorted(reasons.items(), key=lambda kv: -len(kv[1])))
    return f"<div id='failures'><h3>Failed trials</h3><ul>{items}</ul></div>"


def _height(fig: dict[str, Any]) -> str:
    """Fixed div height = figure height, so plots never overlap what follows."""
    return f"style='height:{int(fig['layout'].get('height', 400)) + 2}px'"


def _link(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def pareto_table_columns(data: dict[str, Any]) -> list[str]:
    """Columns of the Pareto table: objectives, other key metrics, change vs original."""
    cols = data["columns"]
    objectives = [m for m, _ in data["run"]["objectives"]]
    batches = batch_columns(cols)  # latency@B at the other measured batches
    metrics = [m for m in ("accuracy", "flops", "latency", *batches, "size", "bops")
               if m in cols and m not in objectives]
    speedups = [at_batch("vs.latency_speedup", split_batch(b)[1]) for b in batches]
    vs = [c for c in ("vs.accuracy_drop", "vs.flops_speedup", "vs.latency_speedup", *speedups, "vs.size_ratio")
          if c in cols]
    return objectives + metrics + vs


HEADINGS = {"vs.accuracy_drop": "accuracy drop", "vs.flops_speedup": "FLOPs speed-up",
            "vs.latency_speedup": "latency speed-up", "vs.size_ratio": "size / original"}


def heading(column: str) -> str:
    """A table heading (``vs.latency_speedup@128``: latency speed-up b128)."""
    base, batch = split_batch(column)
    if batch is not None and base in HEADINGS:
        return f"{HEADINGS[base]} b{batch}"
    return HEADINGS.get(column, column)


def _pareto_table(data: dict[str, Any], run_dir: Path, out_dir: Path) -> str:
    cols = pareto_table_columns(data)
    by_trial = {r["trial"]: r for r in data["trials"]}
    ties = front_ties(data)
    head = "".join(f"<th title='{_e(c)}'>{_e(heading(c))}</th>" for c in cols)
    rows = []
    for t in data["pareto"]:
        r = by_trial[t]
        tags = ""
        if r.get("baseline"):
            tags += f"<span class='tag base'>{_e(r['baseline'])}</span>"
        if t == data["knee"]:
            tags += "<span class='tag knee'>knee</span>"
        if ties.get(t):
            tags += (f"<span class='tag tie' title='proxy accuracy within 2 sigma of the proxy noise'>tie: "
                     f"{_e(', '.join(map(str, ties[t])))}</span>")
        cells = "".join(f"<td data-col='{_e(c)}' data-value='{_e(exact(r.get(c)))}'>{_e(fmt(c, r.get(c)))}</td>"
                        for c in cols)
        recipe = _link(run_dir / "recipes" / f"trial-{t}.yaml", out_dir)
        rows.append(f"<tr data-trial='{t}'><td data-col='trial' data-value='{t}'>{t}{tags}</td>{cells}"
                    f"<td class='text'>{_e(r.get('summary'))}</td>"
                    f"<td class='text'><a href='{_e(recipe)}'>{_e(recipe)}</a></td></tr>")
    return ("<section id='pareto-table'><h2>Pareto points</h2>"
            "<p class='muted'>Feasible, complete trials that no other trial beats in every objective. "
            "Click a heading to sort. Speed-ups and drops are relative to the original model.</p>"
            "<div class='scroll'><table class='data sortable' id='pareto'><thead><tr><th>trial</th>"
            f"{head}<th class='text'>policy</th><th class='text'>recipe</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div></section>")


def front_ties(data: dict[str, Any]) -> dict[int, list[int]]:
    """Pareto trial -> the other Pareto trials its proxy accuracy cannot be told from (audit ``--noise``)."""
    out: dict[int, list[int]] = {}
    for a, b in (data.get("fidelity") or {}).get("ties") or []:
        out.setdefault(a, []).append(b)
        out.setdefault(b, []).append(a)
    return {t: sorted(v) for t, v in out.items()}


def _table(header: list[str], rows: list[list[str]], table_id: str, exact_rows: list[list[Any]] | None = None) -> str:
    """A sortable data table; ``exact_rows`` (same shape) go into ``data-value``."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        values = exact_rows[i] if exact_rows else row
        body.append("<tr>" + "".join(f"<td data-value='{_e(exact(v))}'>{_e(c)}</td>" for c, v in zip(row, values))
                    + "</tr>")
    return (f"<div class='scroll'><table class='data sortable' id='{table_id}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _fidelity(data: dict[str, Any], figs: dict[str, Any]) -> str:
    """The "Proxy fidelity" section: proxy vs final scatter, tau and rho with intervals, regret, noise."""
    fid = data.get("fidelity") or {"audited": False, "message": NO_AUDIT}
    if not fid.get("audited"):
        text = _e(fid.get("message", NO_AUDIT)).replace("`autocompress audit RUN`",
                                                         "<code>autocompress audit RUN</code>")
        return f"<section id='fidelity'><h2>Proxy fidelity</h2><p class='muted'>{text}</p></section>"
    figs["fig-fidelity"] = _plotly.to_json(_plotly.fidelity_scatter(fid, data["pareto"]))
    header, rows = fidelity_rows(fid)
    exact_rows = [[r["trial"], r["cost"], r["proxy"], r["final"], r["test"], r["delta"]] for r in fid["rows"]]
    r_header, r_rows = regret_rows(fid)
    noise = noise_text(fid)
    stats = _kv({"Kendall tau (95% bootstrap CI)": interval(fid["kendall_tau"]),
                 "Spearman rho (95% bootstrap CI)": interval(fid["spearman_rho"]),
                 "audited trials": fid["n"], "full fine-tune": audit_budget(fid["settings"])})
    return ("<section id='fidelity'><h2>Proxy fidelity</h2><p class='muted'>Audited trials fully fine-tuned "
            "(<code>autocompress audit</code>, the schedule of <code>finalize</code>): does the search's short proxy "
            "fine-tune rank them as the full fine-tune does? Rank correlations between proxy and final val accuracy; "
            "regret: final val accuracy lost by picking the best proxy instead of the best final trial within a "
            f"cost budget.</p><div class='grid2'><div id='fig-fidelity' class='plot' {_height(figs['fig-fidelity'])}>"
            f"</div><div>{stats}<h3>Regret of choosing by proxy</h3>{_table(r_header, r_rows, 'regret')}"
            + (f"<p id='noise'>{_e(noise)}</p>" if noise else "")
            + f"</div></div><h3>Audited trials</h3>{_table(header, rows, 'audit', exact_rows)}</section>")


def _trials_table(data: dict[str, Any]) -> str:
    objectives = [m for m, _ in data["run"]["objectives"]]
    cols = ["status", "feasible", "pareto", "baseline"] + objectives + [
        c for c in ("level", "time.total") if c in data["columns"]]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for r in data["trials"]:
        cells = "".join(f"<td data-col='{_e(c)}' data-value='{_e(exact(r.get(c)))}'>{_e(fmt(c, r.get(c)))}</td>"
                        for c in cols)
        rows.append(f"<tr><td data-value='{r['trial']}'>{r['trial']}</td>{cells}"
                    f"<td class='text'>{_e(r.get('error') or r.get('summary'))}</td></tr>")
    return ("<section id='trials'><details><summary><b>All trials</b> "
            f"({len(data['trials'])}; full table in trials.csv)</summary><div class='scroll'>"
            f"<table class='data sortable' id='all-trials'><thead><tr><th>trial</th>{head}"
            "<th class='text'>policy / error</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div></details></section>")


def _policies(data: dict[str, Any], figs: dict[str, Any]) -> str:
    parts = [f"<section id='policies'><h2>Policies on the front</h2><p class='muted'>Shown: "
             f"{_e(data['policies_rule'])}. Layers in network order.</p>"]
    for p in data["policies"]:
        fid = f"fig-policy-{p['trial']}"
        figs[fid] = _plotly.to_json(_plotly.policy_bars(p))
        distill = p["distill"]
        kd = (f"KD alpha {fmt('alpha', distill.get('alpha'))}, T {fmt('T', distill.get('temperature'))}, "
              f"feature weight {fmt('w', distill.get('feature_weight'))}, teacher {distill.get('teacher')}"
              if distill.get("alpha") or distill.get("feature_weight") else "no distillation")
        base = f" <span class='tag base'>{_e(p['baseline'])}</span>" if p.get("baseline") else ""
        parts.append(f"<div class='policy' data-trial='{p['trial']}'><h3>Trial {p['trial']}{base}</h3>"
                     f"<div class='muted'>{_e(p['summary'])}</div>"
                     f"<div class='muted'>prune criterion {_e(p['prune_criterion'])}; quant backend "
                     f"{_e(p['quant_backend'])}, default w{_e(p['quant_default']['w'])}/a"
                     f"{_e(p['quant_default']['a'])}; {_e(kd)}</div>"
                     f"<div id='{fid}' class='plot' {_height(figs[fid])}></div></div>")
    parts.append("</section>")
    return "".join(parts)


def _final(data: dict[str, Any], run_dir: Path, out_dir: Path) -> str:
    final = data.get("final")
    if not final:
        return ("<section id='final'><h2>Final model</h2><p class='muted'>Not finalized yet: run "
                "<code>autocompress finalize RUN --trial N</code>, then re-run the report.</p></section>")
    if "error" in final:
        return f"<section id='final'><h2>Final model</h2><p>{_e(final['error'])}</p></section>"

    metrics = flatten(final["metrics"])
    rows = "".join(f"<tr><td class='text'>{_e(k)}</td><td data-value='{_e(exact(v))}'>{_e(fmt(k.split('.')[-1], v))}"
                   "</td></tr>" for k, v in metrics.items())
    files = "".join(f"<li><a href='{_e(_link(run_dir / f, out_dir))}'>{_e(f)}</a></li>" for f in final["files"])
    return ("<section id='final'><h2>Final model</h2><div class='grid2'><div><table class='data'>"
            f"<thead><tr><th class='text'>metric</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></div>"
            f"<div><h3>Exported files</h3><ul>{files}</ul></div></div></section>")


def _sensitivity(data: dict[str, Any], figs: dict[str, Any]) -> str:
    """The sensitivity map behind the seeds: heatmaps of groups x ratios (and units x bits)."""
    sens = data.get("sensitivity")
    if not sens:
        return ""
    if "error" in sens:
        return f"<section id='sensitivity'><h2>Sensitivity map</h2><p>{_e(sens['error'])}</p></section>"
    searched = sens.get("search") or {}
    seeds = ", ".join(searched.get("seeds") or []) or "none"
    plots = []
    for kind in ("prune", "quant", "depth"):
        if sens.get(kind, {}).get("rows"):
            fid = f"fig-sensitivity-{kind}"
            figs[fid] = _plotly.to_json(_plotly.sensitivity_heatmap(sens, kind))
            plots.append(f"<div id='{fid}' class='plot' {_height(figs[fid])}></div>")
    return ("<section id='sensitivity'><h2>Sensitivity map</h2><p class='muted'>Each group compressed alone "
            f"(no fine-tune) on {_e(sens['images'])} val images; measured in "
            f"{_e(fmt('time.total', (sens.get('seconds') or {}).get('total')))} (this run: "
            f"{_e(fmt('time.total', searched.get('wall_s')))}). Seeds allocated from it: {_e(seeds)}.</p>"
            f"<div class='grid2'>{''.join(plots)}</div></section>")


def render_html(data: dict[str, Any], run_dir: Path, out_path: Path) -> str:
    """The report page for ``data`` (from :func:`report_data`) as one HTML string."""
    out_dir = out_path.resolve().parent
    run_dir = run_dir.resolve()
    figs: dict[str, Any] = {}
    plots = []
    for i, proj in enumerate(data["scatter"]):
        fid = f"fig-pareto-{i}"
        figs[fid] = _plotly.to_json(_plotly.scatter(data, proj))
        plots.append(f"<div id='{fid}' class='plot pareto-plot' data-x='{_e(proj['x'])}' data-y='{_e(proj['y'])}' "
                     f"{_height(figs[fid])}></div>")
    progress = []
    figures = (("fig-hypervolume", _plotly.hypervolume_progress(data)), ("fig-durations", _plotly.durations(data)))
    for fid, fig in figures:
        if fig is not None:
            figs[fid] = _plotly.to_json(fig)
            progress.append(f"<div id='{fid}' class='plot' {_height(figs[fid])}></div>")
    policies = _policies(data, figs)
    sensitivity = _sensitivity(data, figs)
    r = data["run"]
    dash = data["dashboard"]
    dash_cmd = dash["command"] or DASHBOARD_HELP
    body = "".join([
        _header(data),
        "<section id='pareto-plots'><h2>Pareto fronts</h2><p class='muted'>Red: Pareto points (joined by the "
        "front's staircase); blue: other feasible trials; grey: infeasible (violate a constraint); large labelled "
        "symbols: baselines and sensitivity seeds (seed-flops-0.5: allocated at half the original's FLOPs). "
        "Hover a point for its metrics and policy.</p>"
        f"<div class='grid2'>{''.join(plots)}</div></section>",
        _pareto_table(data, run_dir, out_dir),
        policies,
        f"<section id='progress'><h2>Search progress</h2><div class='grid2'>{''.join(progress)}</div></section>",
        _fidelity(data, figs),
        sensitivity,
        _final(data, run_dir, out_dir),
        _trials_table(data),
    ])
    title = f"autocompress report - {r['name']} ({r['model']})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_asset("report.css")}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<header><h1>{_e(title)}</h1><div class="sub">{_e(r['dataset'])} &middot; objectives
{_e(', '.join(m for m, _ in r['objectives']))} &middot; {r['counts']['total']} trials &middot;
generated {_e(data['generated'])}</div></header>
<main>{body}</main>
<footer><p>Explore the study interactively with Optuna Dashboard: <code>{_e(dash_cmd)}</code>
(the storage stays readable by it; see also <code>{_e(DASHBOARD_HELP)}</code>).</p>
<p>All numbers come from <code>trials.csv</code> and <code>pareto.csv</code> in the run directory; the data
behind every figure is embedded in this page as JSON (<code>#report-data</code>). Hypervolume reference:
{_e(data['hypervolume'].get('reference_rule', '-'))}.</p></footer>
<script id="report-data" type="application/json">{script_json(data)}</script>
<script id="report-figures" type="application/json">{script_json(figs)}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""


def write_html_report(run_dir: str | Path | Run, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (default ``RUN/report.html``); returns its path."""
    run_path = run_dir.dir if isinstance(run_dir, Run) else Path(run_dir)
    data = report_data(run_dir)
    out_path = Path(out) if out is not None else run_path / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_html(data, run_path, out_path), encoding="utf-8")
    return out_path
