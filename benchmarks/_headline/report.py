"""The benchmark's table, ``headline.json`` and ``headline.png``, and its three headline lines:

(a) the searched front's accuracy advantage over the uniform curve at matched measured speed-up
    (interpolated along the uniform family's upper envelope), mean and minimum over the searched
    points whose speed-up lies in 1.5x-4x, per batch;
(b) the same against FastNAS at matched FLOPs (the searched upper envelope interpolated at each
    FastNAS point's FLOPs);
(c) the fastest point within 1.0 pt of the original's test accuracy, per batch, with its speed-ups.

(a) and (c) are computed on eager-torch speed-ups (``headline``) and again on TorchScript ones
(``headline.torchscript``: both the point and the original traced and frozen; ``headline.torchscript-cl``:
the same in channels_last, when the points were timed with ``--torchscript-cl``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _headline.context import Context

from autocompress.rundir import atomic_write_json

SPEEDUP_RANGE = (1.5, 4.0)
WITHIN_PT = 1.0
FAMILIES = ("searched", "seeds", "uniform", "depth", "fastnas")
#: speed-up columns of the table: (backend, header), the channels_last one only when some point has it
COLUMNS = (("torch", "speed-up"), ("torchscript", "TorchScript"), ("torchscript-cl", "TorchScript CL"),
           ("onnxruntime", "ORT"))
OPTIONAL = ("torchscript-cl",)
#: the table's columns between the point's label and its speed-ups
FIXED_COLUMNS = ("family", "test top-1", "drop", "FLOPs", "params", "size")
#: backends (a) and (c) are computed on again, besides eager torch
RECOMPUTED = ("torchscript", "torchscript-cl")


def _speedup(p: dict[str, Any], batch: int, backend: str = "torch") -> float | None:
    t = (p.get("latency") or {}).get(backend, {}).get(str(batch))
    return None if t is None else float(t["speedup"])


def _acc(p: dict[str, Any]) -> float:
    return float(p["final"]["test_accuracy"])


def envelope(xy: list[tuple[float, float]], larger_x_better: bool) -> list[tuple[float, float]]:
    """The upper envelope (non-dominated points) of (x, accuracy), sorted by x."""
    pts = sorted(xy, key=lambda t: (-t[0], -t[1]) if larger_x_better else (t[0], -t[1]))
    out, best = [], -math.inf
    for x, y in pts:
        if y > best:
            out.append((x, y))
            best = y
    return sorted(out)


def interp(curve: list[tuple[float, float]], x: float) -> float | None:
    """Accuracy of ``curve`` at ``x`` (linear in between its points; None outside them)."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    xs, ys = zip(*curve)
    return float(np.interp(x, xs, ys))


def _family(points: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    return [p for p in points if p["family"] == family]


def advantage_vs_uniform(points: list[dict[str, Any]], batch: int, backend: str = "torch") -> dict[str, Any]:
    """Headline (a) at one batch (speed-ups timed on ``backend``)."""
    uni = [(s, _acc(p)) for p in _family(points, "uniform") if (s := _speedup(p, batch, backend)) is not None]
    curve = envelope(uni, larger_x_better=True)
    rows = []
    for p in _family(points, "searched"):
        s = _speedup(p, batch, backend)
        if s is None or not SPEEDUP_RANGE[0] <= s <= SPEEDUP_RANGE[1]:
            continue
        ref = interp(curve, s)
        if ref is not None:
            rows.append({"label": p["label"], "speedup": s, "accuracy": _acc(p), "uniform": ref,
                         "advantage": _acc(p) - ref})
    adv = [r["advantage"] for r in rows]
    return {"batch": batch, "points": rows, "uniform_curve": curve, "n": len(rows),
            "mean": float(np.mean(adv)) if adv else None, "min": float(np.min(adv)) if adv else None}


def advantage_vs_fastnas(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline (b): at each FastNAS point's FLOPs, the searched envelope's accuracy minus FastNAS's."""
    curve = envelope([(float(p["final"]["flops"]), _acc(p)) for p in _family(points, "searched")],
                     larger_x_better=False)
    rows = []
    for p in _family(points, "fastnas"):
        f = float(p["final"]["flops"])
        ref = interp(curve, f)
        if ref is not None:
            rows.append({"label": p["label"], "flops": f, "fastnas": _acc(p), "searched": ref,
                         "advantage": ref - _acc(p)})
    adv = [r["advantage"] for r in rows]
    return {"points": rows, "searched_curve": curve, "n": len(rows),
            "mean": float(np.mean(adv)) if adv else None, "min": float(np.min(adv)) if adv else None}


def fastest_within(points: list[dict[str, Any]], batch: int, within: float = WITHIN_PT,
                   backend: str = "torch") -> dict[str, Any] | None:
    """Headline (c): the fastest point (at ``batch``, on ``backend``) whose test accuracy is within
    ``within`` pt of the original's."""
    ok = [p for p in points if _speedup(p, batch, backend) is not None
          and float(p["final"]["reference_test_accuracy"]) - _acc(p) <= within]
    if not ok:
        return None
    best = max(ok, key=lambda p: _speedup(p, batch, backend))
    return {"label": best["label"], "family": best["family"], "accuracy": _acc(best),
            "drop": float(best["final"]["reference_test_accuracy"]) - _acc(best),
            "speedup": {str(b): _speedup(best, b, backend) for b in (1, 128)},
            **{f"{other}_speedup": {str(b): _speedup(best, b, other) for b in (1, 128)}
               for other in _backends(points) if other != backend}}


def _backends(points: list[dict[str, Any]]) -> list[str]:
    """The speed-up backends shown: every column but an optional one no point was timed on."""
    timed = {b for p in points for b in (p.get("latency") or {})}
    return [b for b, _ in COLUMNS if b not in OPTIONAL or b in timed]


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    """(a), (b), (c) on eager-torch speed-ups, and (a), (c) again on TorchScript ones (``torchscript``,
    and ``torchscript-cl`` when timed)."""
    out = {"a_vs_uniform": {str(b): advantage_vs_uniform(points, b) for b in (1, 128)},
           "b_vs_fastnas": advantage_vs_fastnas(points),
           "c_fastest_within_1pt": {str(b): fastest_within(points, b) for b in (1, 128)}}
    for backend in RECOMPUTED:
        if backend in _backends(points):
            out[backend] = {
                "a_vs_uniform": {str(b): advantage_vs_uniform(points, b, backend) for b in (1, 128)},
                "c_fastest_within_1pt": {str(b): fastest_within(points, b, backend=backend) for b in (1, 128)}}
    return out


def write(ctx: Context, args: argparse.Namespace, *, wall_s: float, argv: list[str]) -> dict[str, Any]:
    """``headline.json`` and ``headline.png`` of every stored point. The wall time of this invocation is
    appended to ``OUT/invocations.json``; the total over every invocation that built ``OUT`` (resumed
    runs, families run separately) is ``wall_time_total_s``."""
    log_path = ctx.out / "invocations.json"
    runs = json.loads(log_path.read_text())["invocations"] if log_path.is_file() else []
    runs.append({"argv": list(argv), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "wall_time_s": round(wall_s, 1)})
    atomic_write_json(log_path, {"invocations": runs})
    points = sorted(ctx.points(args.budget_epochs), key=lambda p: (FAMILIES.index(p["family"]), p["label"]))
    result = {"model": args.model, "budget_epochs": args.budget_epochs, "trials": args.trials,
              "command": "python benchmarks/bench_headline.py " + shlex.join(argv),
              "machine": _machine(args), "wall_time_s": round(wall_s, 1),
              "wall_time_total_s": round(sum(r["wall_time_s"] for r in runs), 1), "invocations": runs,
              "headline": summarize(points), "points": points}
    atomic_write_json(ctx.out / "headline.json", result)
    _figure(points, ctx.out / "headline.png")
    _export(ctx.out / "results", result)
    return result


def _export(folder: Path, result: dict[str, Any]) -> None:
    """``OUT/results/``: what to commit. ``headline.json`` whose points name their recipe relative to it
    (``recipes/<label>.yaml``, copied beside it), ``headline.png`` and ``headline.md`` (the table)."""
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    points = []
    for p in result["points"]:
        rel = f"recipes/{p['label']}.yaml"
        shutil.copyfile(p["recipe"], folder / rel)
        points.append({**p, "recipe": rel})
    atomic_write_json(folder / "headline.json", {**result, "points": points})
    shutil.copyfile(folder.parent / "headline.png", folder / "headline.png")  # drawn once, by write()
    (folder / "headline.md").write_text(table(result) + "\n")


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    return {"cpu": model, "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__}


def table(result: dict[str, Any]) -> str:
    """The points as a Markdown table, then the headline lines."""
    shown = _backends(result["points"])
    speed = [f"{name} b{b}" for backend, name in COLUMNS if backend in shown for b in (1, 128)]
    cols = ["point", *FIXED_COLUMNS, *speed]
    lines = ["| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|"]
    for p in result["points"]:
        cells = [p["label"], *fixed_cells(p).values(), *(_cell(p, b, be) for be in shown for b in (1, 128))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _headline_text(result["headline"])


def fixed_cells(p: dict[str, Any]) -> dict[str, str]:
    """The table's cells for ``p`` before its speed-ups, by column header."""
    f = p["final"]
    cells = (p["family"], f"{_acc(p):.2f}", f"{f['reference_test_accuracy'] - _acc(p):+.2f}",
             f"{f['flops'] / 1e6:.1f}M", f"{f['params'] / 1e3:.0f}k", f"{f['size'] / 1e3:.0f}kB")
    return dict(zip(FIXED_COLUMNS, cells))


def _cell(p: dict[str, Any], batch: int, backend: str) -> str:
    t = (p.get("latency") or {}).get(backend, {}).get(str(batch))
    if t is None:
        return "-"
    lo, hi = t["speedup_ci"]
    return f"{t['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]"


def _a_lines(a_by_batch: dict[str, Any], where: str) -> list[str]:
    return [f"(a) b{b}{where}: searched vs uniform at matched speed-up (1.5-4x, {a['n']} points): "
            + (f"mean {a['mean']:+.2f} pt, min {a['min']:+.2f} pt" if a["n"] else "no point in range")
            for b, a in a_by_batch.items()]


def _c_lines(c_by_batch: dict[str, Any], where: str) -> list[str]:
    return [f"(c) b{batch}{where}: " + ("no point within 1 pt" if c is None else
            f"{c['label']} ({c['family']}): {c['accuracy']:.2f} ({c['drop']:+.2f} pt), speed-up "
            + " / ".join(f"{s:.2f}x b{b}" if s is not None else f"- b{b}" for b, s in c["speedup"].items()))
            for batch, c in c_by_batch.items()]


def _headline_text(h: dict[str, Any]) -> str:
    out = _a_lines(h["a_vs_uniform"], "")
    b = h["b_vs_fastnas"]
    out.append(f"(b) searched vs FastNAS at matched FLOPs ({b['n']} points): "
               + (f"mean {b['mean']:+.2f} pt, min {b['min']:+.2f} pt" if b["n"] else "no point in range"))
    out += _c_lines(h["c_fastest_within_1pt"], "")
    for backend, name in COLUMNS:
        if backend in RECOMPUTED and (ts := h.get(backend)):
            out += _a_lines(ts["a_vs_uniform"], f" {name}") + _c_lines(ts["c_fastest_within_1pt"], f" {name}")
    return "\n".join(out)


def _figure(points: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    shown = _backends(points)
    rows = [(b, what) for b, what in (("torch", "torch CPU, eager"), ("torchscript", "TorchScript CPU, frozen"),
                                      ("torchscript-cl", "TorchScript CPU, frozen, channels_last")) if b in shown]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), sharey=True, squeeze=False)
    markers = {"searched": "o", "seeds": "P", "uniform": "s", "depth": "D", "fastnas": "^"}
    for row, (backend, what) in zip(axes, rows):
        for ax, batch in zip(row, (1, 128)):
            for i, fam in enumerate(FAMILIES):
                for precision, filled in (("float", False), ("int8", True)):
                    pts = [(s, _acc(p)) for p in _family(points, fam)
                           if p["precision"] == precision and (s := _speedup(p, batch, backend))]
                    if pts:
                        color = f"C{i}"
                        ax.scatter(*zip(*pts), marker=markers[fam], edgecolors=color,
                                   facecolors=color if filled else "none", label=f"{fam} {precision}")
            ax.set_xscale("log")
            for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
                axis(FuncFormatter(lambda v, _pos: f"{v:g}x"))
            ax.tick_params(axis="x", which="minor", labelsize=7)
            ax.set_xlabel(f"measured speed-up at batch {batch} ({what})")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("test top-1 after the final fine-tune (%)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["advantage_vs_fastnas", "advantage_vs_uniform", "envelope", "fastest_within", "interp", "summarize",
           "table", "write"]
