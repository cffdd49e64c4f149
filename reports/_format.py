"""Human formatting of metric values (display only; exact values travel alongside)."""

from __future__ import annotations

import math
from typing import Any

from autocompress.metrics import split_batch


def exact(value: Any) -> str:
    """Exact text of a value (``repr`` of floats round-trips), "" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return repr(value)
    return repr(value) if isinstance(value, float) else str(value)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.4g}"


def fmt(metric: str, value: Any) -> str:
    """Short display text of ``value`` for ``metric``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    metric = split_batch(metric)[0]  # latency@128 shows as latency
    if metric in ("accuracy", "top5", "test_accuracy", "top1"):
        return f"{value:.2f}%"
    if metric in ("accuracy_drop", "vs.accuracy_drop"):
        return f"{value:+.2f} pts"
    if metric.endswith("speedup"):
        return f"{value:.2f}x"
    if metric.endswith("_ratio") or metric in ("latency", "latency_ci_low", "latency_ci_high"):
        return f"{value:.3f}"
    if metric in ("flops", "bops", "params"):
        return _si(float(value))
    if metric == "size":
        return f"{value / 1024:.1f} KiB"
    if metric.startswith("time.") or metric.endswith("_s"):
        return f"{value:.1f} s"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def by_baseline(label: str, table: dict[str, Any], default: Any) -> Any:
    """Look up a baseline label by its family: ``uniform-prune-0.25`` matches key ``uniform-prune``."""
    for prefix, value in table.items():
        if label == prefix or label.startswith(prefix + "-"):
            return value
    return default


def label_kind(label: str) -> str:
    """``seed`` for a sensitivity seed's label (``seed-flops-0.5``), else ``baseline``."""
    return "seed" if label.startswith("seed-") else "baseline"


def truthy(v: Any) -> bool:
    """A trial table's boolean cell (``True`` or the text ``"true"`` read back from CSV)."""
    return v is True or str(v).lower() == "true"


def complete_rows(data: dict[str, Any], x: str, y: str) -> list[dict[str, Any]]:
    """The report's complete trials that have both plotted values ``x`` and ``y``."""
    return [r for r in data["trials"] if r.get("status") == "complete" and r.get(x) is not None
            and r.get(y) is not None]


def interval(c: dict[str, Any] | None, digits: int = 3) -> str:
    """A correlation with its interval, ``0.812 [0.610, 0.950] (n=12)``; ``-`` where undefined."""
    if not c:
        return "-"
    num = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"  # noqa: E731
    return f"{num(c.get('value'))} [{num(c.get('ci_low'))}, {num(c.get('ci_high'))}] (n={c.get('n')})"


def fidelity_rows(fid: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and display rows of an audit's table (trial, cost, proxy, final val, test, delta)."""
    cost = fid["cost_metric"]
    rows = [[str(r["trial"]), fmt(cost, r["cost"]), fmt("accuracy", r["proxy"]), fmt("accuracy", r["final"]),
             fmt("accuracy", r["test"]), "-" if r["delta"] is None else f"{r['delta']:+.2f}"] for r in fid["rows"]]
    return ["trial", cost, "proxy val", "final val", "test", "final - proxy"], rows


def regret_rows(fid: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and display rows of an audit's regret at its cost budgets."""
    cost = fid["cost_metric"]
    rows = [[f"{cost} <= {fmt(cost, r['budget'])}", str(r["candidates"]), str(r["chosen_trial"]),
             str(r["best_trial"]), f"{r['regret']:.2f}"] for r in fid["regret"]]
    return ["budget", "audited trials within", "proxy picks", "best final", "regret (val points)"], rows


def noise_text(fid: dict[str, Any]) -> str:
    """One line on the proxy's seed noise and the Pareto ties it implies ("" without ``--noise``)."""
    noise = fid.get("noise")
    if not noise:
        return ""
    sigma = "-" if noise["sigma"] is None else f"{noise['sigma']:.3f}"
    ties = ", ".join(f"{a} ~ {b}" for a, b in fid.get("ties", [])) or "none"
    return (f"proxy noise: sigma {sigma} points (pooled over trials {', '.join(map(str, noise['trials']))}, "
            f"each re-evaluated with other seeds); Pareto points closer than {noise['k']:g} sigma in proxy "
            f"accuracy are ties: {ties}")


def audit_budget(settings: dict[str, Any]) -> str:
    """An audit's full fine-tune budget in brief: ``steps=200, lr=0.02, batch_size=64, cosine; seed of each trial``."""
    sched = settings.get("schedule") or {}
    parts = [f"{k}={sched[k]:g}" if isinstance(sched[k], float) else f"{k}={sched[k]}"
             for k in ("epochs", "steps", "lr", "batch_size") if sched.get(k) is not None]
    parts += [sched["schedule"]] if sched.get("schedule") else []
    seed = settings.get("seed")
    kd = "KD from the original" if settings.get("kd", True) else "no KD"
    return f"{', '.join(parts)}; {kd}; seed {seed if seed is not None else 'of each trial'}"


def workers_text(workers: dict[str, int]) -> str:
    """``"3 workers: host-a:12 4, host-b:7 3, host-b:9 2"`` (trials per worker)."""
    parts = ", ".join(f"{w} {n}" for w, n in workers.items())
    return f"{len(workers)} worker{'s' if len(workers) != 1 else ''}: {parts}" if workers else "-"
