"""Latency at several batches in the CLI: the ``--latency-batch 1,128`` option and the per-batch
rows and keys that ``apply``, ``evaluate`` and ``finalize`` show.

The first batch is the primary one: its keys carry no suffix (``speedup``, ``latency_timing``,
``latency_stats``, ``latency_ratio``); every other batch ``B`` adds the same keys as ``NAME@B``
(:func:`autocompress.metrics.at_batch`), as the trial metrics do (``latency@B``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from autocompress.metrics import at_batch, split_batch


def batch_list(text: str) -> tuple[int, ...]:
    """``"1,128"`` -> ``(1, 128)``: distinct integers >= 1 (an ``argparse`` type; a bad value is a
    one-line usage error, exit code 2)."""
    try:
        batches = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1 or len(set(batches)) != len(batches):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a batch size >= 1 or distinct ones separated by "
                                         "commas, e.g. 1,128 (the first is the primary batch)")
    return batches


def other_batches(metrics: Mapping[str, Any]) -> list[int]:
    """The batches ``B`` of the ``latency@B`` keys of ``metrics``, in their order."""
    found = [split_batch(k) for k in metrics]
    return [b for base, b in found if base == "latency" and b is not None]


def ratio_outputs(measurement: Any, setup: Any) -> dict[str, Any]:
    """``speedup`` and ``latency_timing`` (batch, threads, backend, both medians) of every batch a
    :class:`compress.measure.Measurement` compared with the original (``@B`` for the other batches)."""
    out: dict[str, Any] = {}
    for i, (batch, timing) in enumerate(measurement.batch_timing.items()):
        key = None if i == 0 else batch
        out[at_batch("speedup", key)] = round(1.0 / timing.ratio, 3) if timing.ratio else None
        out[at_batch("latency_timing", key)] = {"batch": batch, "threads": setup.threads, "backend": setup.backend,
                                                "compressed_ms": timing.a.median_ms, "original_ms": timing.b.median_ms}
    return out


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value else ""


def ratio_rows(m: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``apply``'s summary rows ``(latency bB, original ms, compressed ms, ratio [CI])``, one per batch."""
    rows = []
    after = m["after"]
    for batch in [None, *other_batches(after)]:
        lat = m.get(at_batch("latency_timing", batch))
        if not lat:
            continue
        low, high = after[at_batch("latency_ci_low", batch)], after[at_batch("latency_ci_high", batch)]
        ratio = after[at_batch("latency", batch)]
        busy = " (busy)" if after[at_batch("latency_busy", batch)] else ""
        rows.append((f"latency b{lat['batch']}", _ms(lat["original_ms"]), _ms(lat["compressed_ms"]),
                     f"{ratio:.3f} [{low:.3f}, {high:.3f}]{busy}"))
    return rows


def speedup_rows(m: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``finalize``'s rows ``(latency[@B], xRATIO, speed-up and CI)``: the primary batch, then the others."""
    rows = []
    for batch in [None, *other_batches(m)]:
        ratio = m[at_batch("latency", batch)] if batch is not None else m["latency_ratio"]
        busy = ", machine busy" if m[at_batch("latency_busy", batch)] else ""
        rows.append((at_batch("latency", batch), f"x{ratio:.3f}",
                     f"speed-up x{m[at_batch('speedup', batch)]:.2f} (95% CI {m[at_batch('latency_ci_low', batch)]:.3f}"
                     f"-{m[at_batch('latency_ci_high', batch)]:.3f}{busy})"))
    return rows


def stats_outputs(measurement: Any) -> dict[str, Any]:
    """``latency_stats`` (absolute timings) of every batch timed (``latency_stats@B`` for the others)."""
    return {at_batch("latency_stats", None if i == 0 else batch): timing.to_dict()
            for i, (batch, timing) in enumerate(measurement.batch_timing.items())}


__all__ = ["batch_list", "other_batches", "ratio_outputs", "ratio_rows", "speedup_rows", "stats_outputs"]
