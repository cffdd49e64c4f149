"""Static figures for papers and Markdown (matplotlib, Agg): Pareto plots and per-layer policy bars.

Built from :func:`reports.data.report_data`, like the HTML report, and written by default into
``RUN/figures/``: ``pareto-<y>-vs-<x>.{png,svg}`` for every plotted projection and
``policy-trial-<N>.{png,svg}`` for every policy with a per-layer view and, after ``autocompress audit``,
``fidelity.{png,svg}`` (proxy vs final val accuracy), and ``sensitivity.{png,svg}`` (the run's
sensitivity map as a heatmap) when the search measured one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from autocompress import pareto as _pareto  # noqa: E402
from autocompress.rundir import Run  # noqa: E402
from reports._format import by_baseline, complete_rows, interval, label_kind, truthy  # noqa: E402
from reports.data import report_data  # noqa: E402

MARKERS = {"original": "*", "uniform-prune": "D", "uniform-int8": "s", "seed": "P"}
FORMATS = ("png", "svg")


def _marker(baseline: str) -> str:
    return by_baseline(baseline, MARKERS, "^")


def pareto_figure(data: dict[str, Any], proj: dict[str, Any]) -> plt.Figure:
    """Matplotlib version of the interactive Pareto scatter (same data, same encoding)."""
    x, y = proj["x"], proj["y"]
    rows = complete_rows(data, x, y)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    searched = [r for r in rows if not r.get("baseline")]
    groups = [
        ([r for r in searched if not truthy(r.get("feasible"))], dict(c="#b0b0b0", s=14, label="infeasible")),
        ([r for r in searched if truthy(r.get("feasible")) and not truthy(r.get("pareto"))],
         dict(c="#1f77b4", s=18, alpha=0.8, label="feasible")),
        ([r for r in searched if truthy(r.get("pareto"))],
         dict(c="#d62728", s=34, edgecolors="black", linewidths=0.6, label="Pareto", zorder=3)),
    ]
    for pts, style in groups:
        if pts:
            ax.scatter([p[x] for p in pts], [p[y] for p in pts], **style)
    front = [r for r in rows if truthy(r.get("pareto"))]
    if front:
        arr = np.array([[r[x], r[y]] for r in front], dtype=float)
        mask = _pareto.non_dominated(arr, [proj["x_direction"], proj["y_direction"]])
        line = sorted((r for r, m in zip(front, mask) if m), key=lambda r: (r[x], r[y]))
        ax.step([r[x] for r in line], [r[y] for r in line], where="post", color="#d62728", lw=1.2, zorder=2)
    for r in rows:
        if r.get("baseline"):
            color = "#d62728" if truthy(r.get("pareto")) else "#1f77b4"
            ax.scatter([r[x]], [r[y]], marker=_marker(r["baseline"]), s=90, c=color, edgecolors="black",
                       linewidths=0.8, zorder=4, label=f"{label_kind(r['baseline'])}: {r['baseline']}")
            ax.annotate(r["baseline"], (r[x], r[y]), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set_xlabel(proj["x_label"])
    ax.set_ylabel(proj["y_label"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def policy_figure(policy: dict[str, Any]) -> plt.Figure:
    """Per-layer prune ratios (top) and weight/activation bits (bottom), network order."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.2), dpi=110)
    g = np.arange(len(policy["groups"]))
    a1.bar(g, policy["prune_ratios"], color="#1f77b4")
    a1.set_xticks(g, policy["groups"], rotation=45, ha="right", fontsize=7)
    a1.set_ylim(0, 1)
    a1.set_ylabel("prune ratio")
    a1.set_title(f"trial {policy['trial']}: {policy['summary']}", fontsize=8)
    n = np.arange(len(policy["layers"]))
    a2.bar(n - 0.2, policy["w_bits"], width=0.4, color="#ff7f0e", label="weight bits")
    a2.bar(n + 0.2, policy["a_bits"], width=0.4, color="#2ca02c", label="activation bits")
    a2.set_yscale("log", base=2)
    a2.set_yticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
    a2.set_ylim(1, 40)
    a2.set_xticks(n, policy["layers"], rotation=60, ha="right", fontsize=6)
    a2.set_ylabel("bits")
    a2.legend(fontsize=7, ncol=2)
    for ax in (a1, a2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fidelity_figure(fid: dict[str, Any], pareto: list[int]) -> plt.Figure:
    """Proxy vs final val accuracy of the audited trials with the identity line (Pareto points red)."""
    rows = [r for r in fid["rows"] if r["proxy"] is not None and r["final"] is not None]
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=120)
    values = [v for r in rows for v in (r["proxy"], r["final"])]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.5, 0.05 * (hi - lo))
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", c="#888", lw=1, label="final = proxy")
    for label, keep, color in (("sampled trial", False, "#1f77b4"), ("Pareto point", True, "#d62728")):
        pts = [r for r in rows if (r["trial"] in pareto) == keep]
        if pts:
            ax.scatter([r["proxy"] for r in pts], [r["final"] for r in pts], c=color, s=30, edgecolors="black",
                       linewidths=0.6, label=label, zorder=3)
            for r in pts:
                ax.annotate(str(r["trial"]), (r["proxy"], r["final"]), textcoords="offset points", xytext=(3, 4),
                            fontsize=7)
    tau = fid["kendall_tau"]
    ax.set_title(f"proxy fidelity: Kendall tau {interval(tau)}", fontsize=8)
    ax.set_xlabel("proxy val accuracy (%)")
    ax.set_ylabel("final val accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def sensitivity_figure(sens: dict[str, Any]) -> plt.Figure:
    """The sensitivity map as a heatmap: accuracy points lost per prune group (rows) and ratio (columns)."""
    m = sens["prune"]
    loss = np.array([[np.nan if v is None else v for v in row] for row in m["loss"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(m["columns"]), 1.2 + 0.3 * len(m["rows"])), dpi=120)
    im = ax.imshow(loss, cmap="Reds", vmin=0, aspect="auto")
    ax.set_xticks(range(len(m["columns"])), [f"{c:g}" for c in m["columns"]])
    ax.set_yticks(range(len(m["rows"])), m["rows"], fontsize=7)
    for i, row in enumerate(m["top1"]):
        for j, acc in enumerate(row):
            if acc is not None:
                ax.text(j, i, f"{acc:.1f}", ha="center", va="center", fontsize=6)
    ax.set_xlabel("prune ratio (group pruned alone, no fine-tune)")
    ax.set_title(f"Sensitivity: top-1 (reference {m['reference']:.2f}); colour = points lost", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def _save(fig: plt.Figure, stem: Path, formats: tuple[str, ...]) -> list[Path]:
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt)
        out.append(path)
    plt.close(fig)
    return out


def write_figures(run_dir: str | Path | Run, out_dir: str | Path | None = None, *,
                  formats: tuple[str, ...] = FORMATS, data: dict[str, Any] | None = None) -> list[Path]:
    """Write every Pareto projection and per-layer policy figure; returns the files written."""
    run_path = run_dir.dir if isinstance(run_dir, Run) else Path(run_dir)
    data = report_data(run_dir) if data is None else data
    out = Path(out_dir) if out_dir is not None else run_path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for proj in data["scatter"]:
        written += _save(pareto_figure(data, proj), out / f"pareto-{proj['y']}-vs-{proj['x']}", formats)
    for policy in data["policies"]:
        written += _save(policy_figure(policy), out / f"policy-trial-{policy['trial']}", formats)
    if (data.get("fidelity") or {}).get("audited"):
        written += _save(fidelity_figure(data["fidelity"], data["pareto"]), out / "fidelity", formats)
    if (data.get("sensitivity") or {}).get("prune", {}).get("rows"):
        written += _save(sensitivity_figure(data["sensitivity"]), out / "sensitivity", formats)
    return written
