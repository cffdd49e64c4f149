"""Interactive plotly figures built from :func:`reports.data.report_data` (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autocompress import pareto as _pareto
from autocompress.metrics import at_batch, split_batch
from reports._format import by_baseline, complete_rows, fmt, label_kind, truthy
from reports.data import batch_columns

TEMPLATE = "plotly_white"
COLORS = {"pareto": "#d62728", "feasible": "#1f77b4", "infeasible": "#b0b0b0", "line": "#d62728"}
BASELINE_SYMBOLS = {"original": "star", "uniform-prune": "diamond", "uniform-int8": "square", "seed": "cross"}
BASELINE_TEXT = {"original": "top center", "uniform-prune": "bottom center", "uniform-int8": "top left",
                 "seed": "bottom right"}
PHASE_COLORS = {"prune": "#9467bd", "finetune": "#1f77b4", "convert": "#17becf", "evaluate": "#2ca02c",
                "cost": "#8c564b", "latency": "#ff7f0e"}
HOVER_METRICS = ("accuracy", "accuracy_drop", "flops", "latency", "size", "bops")


def baseline_symbol(name: str) -> str:
    """Marker symbol of a baseline label (``uniform-prune-0.25`` -> diamond)."""
    return by_baseline(name, BASELINE_SYMBOLS, "triangle-up")


def _text_position(name: str) -> str:
    return by_baseline(name, BASELINE_TEXT, "top right")


def _ci_keys(metric: str) -> tuple[str, str] | None:
    """The confidence-interval columns of a latency metric (``latency_ci_low@128`` for ``latency@128``)."""
    base, batch = split_batch(metric)
    if base not in ("latency", "latency_ratio"):
        return None
    return at_batch("latency_ci_low", batch), at_batch("latency_ci_high", batch)


def _latency_ci(points: list[dict[str, Any]], x: str) -> dict[str, Any] | None:
    """Asymmetric error bars from the latency ratio's confidence interval, when measured."""
    keys = _ci_keys(x)
    if keys is None or not any(p.get(keys[0]) is not None for p in points):
        return None
    low, high = keys
    hi = [max(0.0, p[high] - p[x]) if p.get(high) is not None else 0.0 for p in points]
    lo = [max(0.0, p[x] - p[low]) if p.get(low) is not None else 0.0 for p in points]
    return {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "thickness": 1, "width": 2,
            "color": "rgba(80,80,80,0.45)"}


def _hover(row: dict[str, Any], metrics: list[str]) -> str:
    head = f"<b>trial {row['trial']}</b>"
    if row.get("baseline"):
        head += f" ({row['baseline']})"
    if row.get("pareto"):
        head += " - Pareto"
    if not row.get("feasible"):
        head += " - infeasible"
    lines = [head]
    for m in metrics:
        if row.get(m) is not None:
            lines.append(f"{m}: {fmt(m, row[m])}")
            keys = _ci_keys(m)
            if keys and row.get(keys[0]) is not None:
                lines[-1] += f" (95% CI {fmt(m, row[keys[0]])}-{fmt(m, row.get(keys[1]))})"
    if any(truthy(v) for k, v in row.items() if split_batch(k)[0] == "latency_busy"):
        lines.append("latency measured on a busy machine")
    lines.append(row.get("summary") or "")
    return "<br>".join(lines)


def scatter(data: dict[str, Any], proj: dict[str, Any]) -> go.Figure:
    """Scatter of ``proj['y']`` vs ``proj['x']``: Pareto points joined, baselines labelled, infeasible grey."""
    x, y = proj["x"], proj["y"]
    rows = complete_rows(data, x, y)
    metrics = list(dict.fromkeys([x, y] + [m for m in HOVER_METRICS if m in data["columns"]]
                                 + batch_columns(data["columns"])))
    fig = go.Figure()

    def add(points: list[dict[str, Any]], name: str, **marker: Any) -> None:
        if not points:
            return
        fig.add_trace(go.Scatter(
            x=[p[x] for p in points], y=[p[y] for p in points], mode="markers", name=name,
            marker=marker, customdata=[[p["trial"]] for p in points], error_x=_latency_ci(points, x),
            hovertext=[_hover(p, metrics) for p in points], hoverinfo="text"))

    searched = [r for r in rows if not r.get("baseline")]
    add([r for r in searched if not truthy(r.get("feasible"))], "infeasible",
        color=COLORS["infeasible"], size=7, opacity=0.6)
    add([r for r in searched if truthy(r.get("feasible")) and not truthy(r.get("pareto"))], "feasible",
        color=COLORS["feasible"], size=8, opacity=0.75)
    front = [r for r in rows if truthy(r.get("pareto"))]
    if front:
        pts = np.array([[r[x], r[y]] for r in front], dtype=float)
        mask = _pareto.non_dominated(pts, [proj["x_direction"], proj["y_direction"]])
        line = sorted((r for r, m in zip(front, mask) if m), key=lambda r: (r[x], r[y]))
        fig.add_trace(go.Scatter(x=[r[x] for r in line], y=[r[y] for r in line], mode="lines",
                                 line={"shape": "hv", "color": COLORS["line"], "width": 1.5},
                                 name="Pareto front" + ("" if proj.get("objective_pair") else " (projection)"),
                                 hoverinfo="skip"))
    add([r for r in searched if truthy(r.get("pareto"))], "Pareto", color=COLORS["pareto"], size=11,
        line={"color": "black", "width": 1})
    for r in rows:
        if not r.get("baseline"):
            continue
        color = COLORS["pareto"] if truthy(r.get("pareto")) else (
            COLORS["feasible"] if truthy(r.get("feasible")) else COLORS["infeasible"])
        fig.add_trace(go.Scatter(
            x=[r[x]], y=[r[y]], mode="markers+text", name=f"{label_kind(r['baseline'])}: {r['baseline']}",
            cliponaxis=False,
            text=[r["baseline"]], textposition=_text_position(r["baseline"]), textfont={"size": 10},
            marker={"symbol": baseline_symbol(r["baseline"]), "size": 14, "color": color,
                    "line": {"color": "black", "width": 1}},
            customdata=[[r["trial"]]], error_x=_latency_ci([r], x), hovertext=[_hover(r, metrics)],
            hoverinfo="text"))
    fig.update_layout(template=TEMPLATE, title=f"{proj['y']} vs {proj['x']}", height=460,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"font": {"size": 10}},
                      xaxis_title=proj["x_label"], yaxis_title=proj["y_label"])
    return fig


def hypervolume_progress(data: dict[str, Any]) -> go.Figure | None:
    hv = data["hypervolume"]
    if "curve" not in hv:
        return None
    c = hv["curve"]
    fig = go.Figure(go.Scatter(x=c["trial"], y=c["fraction"], mode="lines+markers", line={"shape": "hv"},
                               name="hypervolume",
                               hovertemplate="after trial %{x}: %{y:.5f} of the reference box<extra></extra>"))
    fig.update_layout(template=TEMPLATE, title="Hypervolume by trial",
                      xaxis_title="trial", yaxis_title="hypervolume fraction", height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def durations(data: dict[str, Any]) -> go.Figure | None:
    t = data["times"]
    if not t["phases"]:
        return None
    fig = go.Figure()
    for phase in t["phases"]:
        fig.add_trace(go.Bar(x=t["trial"], y=t["seconds"][phase], name=phase,
                             marker_color=PHASE_COLORS.get(phase),
                             hovertemplate=f"trial %{{x}}: {phase} %{{y:.2f}} s<extra></extra>"))
    fig.update_layout(template=TEMPLATE, barmode="stack", title="Trial durations by phase",
                      xaxis_title="trial", yaxis_title="seconds", height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def policy_bars(policy: dict[str, Any]) -> go.Figure:
    """Per-layer prune ratio (top) and weight/activation bits (bottom), network order."""
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.22,
                        subplot_titles=("prune ratio per group", "bits per layer (16/32 = float)"))
    if policy["groups"]:
        fig.add_trace(go.Bar(x=policy["groups"], y=policy["prune_ratios"], name="prune ratio",
                             marker_color="#1f77b4",
                             hovertemplate="%{x}: %{y:.3f}<extra></extra>"), row=1, col=1)
    if policy["layers"]:
        fig.add_trace(go.Bar(x=policy["layers"], y=policy["w_bits"], name="weight bits", marker_color="#ff7f0e",
                             hovertemplate="%{x}: w%{y}<extra></extra>"), row=2, col=1)
        fig.add_trace(go.Bar(x=policy["layers"], y=policy["a_bits"], name="activation bits",
                             marker_color="#2ca02c", hovertemplate="%{x}: a%{y}<extra></extra>"), row=2, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(type="log", tickvals=[2, 4, 8, 16, 32], range=[0.15, 1.6], row=2, col=1)
    fig.update_layout(template=TEMPLATE, barmode="group", height=430, showlegend=True,
                      margin={"l": 50, "r": 20, "t": 40, "b": 90}, legend={"orientation": "h", "y": 1.12})
    return fig


def compare_scatter(runs: list[dict[str, Any]], x: str, y: str, x_label: str, y_label: str) -> go.Figure:
    """Overlay of several runs' Pareto fronts (one colour per run)."""
    fig = go.Figure()
    for run in runs:
        pts = run["front"]
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p[y] for p in pts], mode="lines+markers",
                                 line={"shape": "hv"}, name=run["label"],
                                 customdata=[[p["trial"]] for p in pts],
                                 hovertext=[f"{run['label']} trial {p['trial']}<br>{x}: {fmt(x, p[x])}<br>"
                                            f"{y}: {fmt(y, p[y])}<br>{p.get('summary') or ''}" for p in pts],
                                 hoverinfo="text"))
    fig.update_layout(template=TEMPLATE, title=f"Pareto fronts: {y_label} vs {x_label}", height=480,
                      xaxis_title=x_label, yaxis_title=y_label, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def fidelity_scatter(fid: dict[str, Any], pareto: list[int]) -> go.Figure:
    """Proxy val accuracy (x) vs final val accuracy (y) of the audited trials, with the identity line."""
    rows = [r for r in fid["rows"] if r["proxy"] is not None and r["final"] is not None]
    fig = go.Figure()
    values = [v for r in rows for v in (r["proxy"], r["final"])]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.5, 0.05 * (hi - lo))
        fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="final = proxy",
                                 line={"color": "#888", "dash": "dash", "width": 1}, hoverinfo="skip"))
    cost = fid["cost_metric"]
    for name, keep, color in (("sampled trial", False, COLORS["feasible"]), ("Pareto point", True, COLORS["pareto"])):
        pts = [r for r in rows if (r["trial"] in pareto) == keep]
        if pts:
            fig.add_trace(go.Scatter(
                x=[r["proxy"] for r in pts], y=[r["final"] for r in pts], mode="markers+text", name=name,
                text=[str(r["trial"]) for r in pts], textposition="top center", textfont={"size": 9},
                marker={"color": color, "size": 10, "line": {"color": "black", "width": 1}},
                customdata=[[r["trial"]] for r in pts], hoverinfo="text",
                hovertext=[f"<b>trial {r['trial']}</b><br>proxy val {fmt('accuracy', r['proxy'])}<br>final val "
                           f"{fmt('accuracy', r['final'])}<br>test {fmt('accuracy', r['test'])}<br>{cost}: "
                           f"{fmt(cost, r['cost'])}" for r in pts]))
    fig.update_layout(template=TEMPLATE, title="Proxy vs final val accuracy (audited trials)", height=460,
                      xaxis_title="proxy val accuracy (%) after the search's short fine-tune",
                      yaxis_title="final val accuracy (%) after the full fine-tune",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend={"font": {"size": 10}})
    return fig


def sensitivity_heatmap(sens: dict[str, Any], kind: str = "prune") -> go.Figure:
    """Accuracy points lost by compressing each group (rows) alone at each ratio or bit-width
    (columns): the run's sensitivity map (``reports.data`` ``sensitivity``)."""
    m = sens[kind]
    columns = [f"{c:g}" if isinstance(c, (int, float)) else str(c) for c in m["columns"]]
    fig = go.Figure(go.Heatmap(
        z=m["loss"], x=columns, y=m["rows"], colorscale="Reds", zmin=0, colorbar={"title": "points lost"},
        text=[[fmt("accuracy", a) if a is not None else "" for a in row] for row in m["top1"]],
        texttemplate="%{text}", hovertemplate="%{y} at %{x}: top-1 %{text} (%{z:.2f} points lost)<extra></extra>"))
    what = {"prune": "prune ratio (group pruned alone, BN recalibrated, no fine-tune)",
            "quant": "bits (unit quantized alone)",
            "depth": "blocks dropped (a stage's last k alone, BN recalibrated, no fine-tune)"}[kind]
    fig.update_layout(template=TEMPLATE, title=f"Sensitivity: top-1 by {what}", xaxis_title=what.split(" (")[0],
                      yaxis={"autorange": "reversed"}, height=max(300, 60 + 26 * len(m["rows"])),
                      margin={"l": 120, "r": 20, "t": 50, "b": 50})
    return fig


def to_json(fig: go.Figure) -> dict[str, Any]:
    """Plain JSON spec ({data, layout}) of a figure."""
    return json.loads(fig.to_json())
