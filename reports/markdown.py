"""Markdown summary of a run: header, Pareto table, hypervolume, final model, with PNG figures.

Numbers are the exact values of ``trials.csv`` / ``pareto.csv`` rounded for display; the figures
(:mod:`reports.figures`) are written into ``figures/`` beside the Markdown file and linked relatively.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autocompress.rundir import Run
from reports._format import audit_budget, fidelity_rows, fmt, interval, noise_text, regret_rows, workers_text
from reports.data import NO_AUDIT, report_data
from reports.figures import write_figures
from reports.html import DASHBOARD_HELP, front_ties, heading, pareto_table_columns
from reports.tables import flatten


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fidelity_markdown(data: dict[str, Any], figures: list[Path], rel: Any) -> list[str]:
    """Lines of the "Proxy fidelity" section (``rel``: a figure path relative to the report)."""
    fid = data.get("fidelity") or {"audited": False, "message": NO_AUDIT}
    parts = ["", "## Proxy fidelity", ""]
    if not fid.get("audited"):
        message = fid.get("message", NO_AUDIT)
        return parts + [message[:1].upper() + message[1:] + "."]
    parts += [f"{fid['n']} trials fully fine-tuned (`autocompress audit`: {audit_budget(fid['settings'])}). "
              "Proxy vs final val accuracy:", "",
              f"- Kendall tau: {interval(fid['kendall_tau'])} (95% bootstrap interval)",
              f"- Spearman rho: {interval(fid['spearman_rho'])} (95% bootstrap interval)"]
    noise = noise_text(fid)
    if noise:
        parts.append(f"- {noise}")
    parts += ["", _table(*fidelity_rows(fid)), "", "Regret of choosing by proxy (final val accuracy lost by picking "
              "the best proxy instead of the best final trial within the budget):", "", _table(*regret_rows(fid))]
    parts += [f"\n![{p.stem}]({rel(p)})" for p in figures if p.name == "fidelity.png"]
    return parts


def render_markdown(data: dict[str, Any], run_dir: Path, out_path: Path, figures: list[Path]) -> str:
    """Markdown text of the report for ``data`` (from :func:`reports.data.report_data`)."""
    r = data["run"]
    c = r["counts"]
    out_dir = out_path.resolve().parent

    def rel(p: Path) -> str:
        return Path(os.path.relpath(Path(p).resolve(), out_dir)).as_posix()

    hv = data["hypervolume"]
    parts = [f"# autocompress report: {r['name']} ({r['model']})", ""]
    parts.append(_table(["", ""], [
        ["model", r["model"]], ["checkpoint", r["checkpoint"]], ["dataset", r["dataset"]], ["space", r["space"]],
        ["objectives", ", ".join(f"{m} ({d})" for m, d in r["objectives"])],
        ["constraints", "; ".join(r["constraints"]) or "none"],
        ["search", ", ".join(f"{k}={v}" for k, v in r["search"].items())],
        ["budget", ", ".join(f"{k}={v}" for k, v in r["budget"].items())],
        ["trials", f"{c['total']} ({c['complete']} complete, {c['failed']} failed, {c['pruned']} pruned); "
                   f"{c['feasible']} feasible, {c['pareto']} on the Pareto front"],
        ["trials per worker", workers_text(c.get("workers") or {})],
        ["wall time", f"{r['wall_time_s']} s" if r["wall_time_s"] is not None else "-"],
        ["hypervolume", f"{hv['fraction']:.6f} of the box from {hv['reference']} to {hv['ideal']} "
                        f"(raw {hv['value']!r})" if "fraction" in hv else hv.get("error", "-")],
        ["versions", ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + f"; git {r['git_sha']}"],
    ]))
    parts += ["", "## Pareto points", ""]
    cols = pareto_table_columns(data)
    by_trial = {t["trial"]: t for t in data["trials"]}
    ties = front_ties(data)
    rows = []
    for t in data["pareto"]:
        row = by_trial[t]
        name = (str(t) + (f" ({row['baseline']})" if row.get("baseline") else "")
                + (" knee" if t == data["knee"] else "")
                + (f" tie: {', '.join(map(str, ties[t]))}" if ties.get(t) else ""))
        recipe = rel(run_dir / "recipes" / f"trial-{t}.yaml")
        rows.append([name] + [fmt(col, row.get(col)) for col in cols] + [row.get("summary") or "",
                                                                        f"[{recipe}]({recipe})"])
    parts.append(_table(["trial"] + [heading(col) for col in cols] + ["policy", "recipe"], rows))
    pareto_figs = [p for p in figures if p.name.startswith("pareto-") and p.suffix == ".png"]
    policy_figs = [p for p in figures if p.name.startswith("policy-") and p.suffix == ".png"]
    if pareto_figs:
        parts += ["", "## Pareto plots", ""]
        parts += [f"![{p.stem}]({rel(p)})" for p in pareto_figs]
    if policy_figs:
        parts += ["", f"## Policies on the front ({data['policies_rule']})", ""]
        parts += [f"![{p.stem}]({rel(p)})" for p in policy_figs]
    parts += fidelity_markdown(data, figures, rel)
    sens_fig = [p for p in figures if p.name == "sensitivity.png"]
    if sens_fig:
        searched = (data.get("sensitivity") or {}).get("search") or {}
        parts += ["", "## Sensitivity map", "", f"Each group pruned alone (no fine-tune); measured in "
                  f"{fmt('time.total', (data['sensitivity'].get('seconds') or {}).get('total'))}; seeds: "
                  f"{', '.join(searched.get('seeds') or []) or 'none'}.", "", f"![sensitivity]({rel(sens_fig[0])})"]
    final = data.get("final")
    parts += ["", "## Final model", ""]
    if final and "metrics" in final:
        parts.append(_table(["metric", "value"], [[k, fmt(k.split(".")[-1], v)]
                                                   for k, v in flatten(final["metrics"]).items()]))
        parts += ["", "Files: " + ", ".join(f"[{f}]({rel(run_dir / f)})" for f in final["files"])]
    else:
        parts.append("Not finalized yet (`autocompress finalize RUN --trial N`).")
    dash = data["dashboard"]["command"] or DASHBOARD_HELP
    parts += ["", "---", f"Optuna Dashboard: `{dash}`. All numbers come from `trials.csv` / `pareto.csv`.", ""]
    return "\n".join(parts)


def write_markdown_report(run_dir: str | Path | Run, out: str | Path | None = None,
                          data: dict[str, Any] | None = None) -> Path:
    """Write ``report.md`` (default ``RUN/report.md``) and its PNG figures in ``figures/`` beside it."""
    run_path = run_dir.dir if isinstance(run_dir, Run) else Path(run_dir)
    data = report_data(run_dir) if data is None else data
    out_path = Path(out) if out is not None else run_path / "report.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figures = write_figures(run_dir, out_path.parent / "figures", formats=("png",), data=data)
    out_path.write_text(render_markdown(data, run_path, out_path, figures), encoding="utf-8")
    return out_path
