"""Latency: robust single-model statistics and interleaved A/B ratios.

Absolute times on a shared machine are noisy; ratios of two models timed *interleaved* in one
process after warm-up are not (both see the same noise). :func:`compare_latency` is therefore
what search objectives use; :func:`measure_latency` reports a median with its spread.

Both take the machine-wide :func:`latency_lock` by default and flag ``busy=True`` (with a
reason, and a logged warning) when other processes used more than ``max_other_cores`` cores
on average during the measurement or the run-to-run spread is huge.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from compress.measure._busy import MAX_OTHER_CORES, MAX_SPREAD, CpuMonitor, busy_verdict
from compress.measure._lock import latency_lock
from compress.measure._make_runner import make_runner
from compress.measure._runners import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of repeated forward passes of one model (milliseconds per batch)."""

    median_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch: int
    threads: int
    backend: str
    device: str
    busy: bool = False
    busy_reason: str = ""
    other_cores: float = 0.0
    warmup_runs: int = 0
    #: how the runs were executed: ``eager``, ``cuda-graph`` (torch on CUDA) or ``engine`` (TensorRT)
    mode: str = "eager"
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def spread(self) -> float:
        """IQR / median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples_ms")
        return d


@dataclass(frozen=True)
class LatencyRatio:
    """``a``'s time over ``b``'s, measured interleaved. ``ratio < 1`` means ``a`` is faster."""

    ratio: float
    ci_low: float
    ci_high: float
    a: LatencyStats
    b: LatencyStats
    rounds: int
    confidence: float = 0.95
    busy: bool = False
    busy_reason: str = ""
    round_ratios: tuple[float, ...] = field(default=(), repr=False)

    @property
    def speedup(self) -> float:
        """How many times faster ``a`` is than ``b`` (``1 / ratio``)."""
        return 1.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "ci_low": self.ci_low, "ci_high": self.ci_high, "speedup": self.speedup,
                "rounds": self.rounds, "confidence": self.confidence, "busy": self.busy,
                "busy_reason": self.busy_reason, "a": self.a.to_dict(), "b": self.b.to_dict()}


def _stats(samples: list[float], runner: Runner, *, other_cores: float, warmup_runs: int,
           max_other_cores: float, max_spread: float, what: str, warn: bool = True) -> LatencyStats:
    arr = np.asarray(samples, dtype=float)
    p10, q1, med, q3, p90 = np.percentile(arr, [10, 25, 50, 75, 90])
    spread = (q3 - q1) / med if med > 0 else math.inf
    busy, reason = busy_verdict(other_cores, spread, max_other_cores=max_other_cores, max_spread=max_spread)
    if busy and warn:
        log.warning("latency of %s measured on a busy machine: %s", what, reason)
    return LatencyStats(
        median_ms=float(med), iqr_ms=float(q3 - q1), p10_ms=float(p10), p90_ms=float(p90),
        mean_ms=float(arr.mean()), runs=len(samples), batch=runner.batch, threads=runner.num_threads,
        backend=runner.backend, device=runner.device, busy=busy, busy_reason=reason,
        other_cores=float(other_cores), warmup_runs=warmup_runs, mode=runner.mode,
        samples_ms=tuple(float(s) for s in arr),
    )


def _warm_up(runners: list[Runner], warmup_s: float, min_runs: int = 2) -> list[int]:
    """Run each runner (round-robin) for ``warmup_s`` seconds in total; return runs per runner."""
    counts = [0] * len(runners)
    start = time.perf_counter()
    while True:
        for i, r in enumerate(runners):
            r.run_ms()
            counts[i] += 1
        if min(counts) >= min_runs and time.perf_counter() - start >= warmup_s:
            return counts


def _lock_ctx(lock: bool):
    return latency_lock() if lock else contextlib.nullcontext(0.0)


def measure_latency(model: Any, example: torch.Tensor, *, backend: str = "torch", device: str = "cpu",
                    threads: int | None = None, runs: int | None = None, min_time_s: float = 1.0,
                    warmup_s: float = 0.5, min_runs: int = 10, max_runs: int = 100_000, lock: bool = True,
                    max_other_cores: float = MAX_OTHER_CORES, max_spread: float = MAX_SPREAD,
                    progress: bool = False, cuda_graph: bool = True) -> LatencyStats:
    """Time forward passes of ``model`` on ``example`` (its batch size is the latency batch).

    ``model`` may be an ``nn.Module`` (``backend`` "torch" or "onnxruntime": exported to a
    temporary ONNX file with a dynamic batch axis), an ``onnxruntime.InferenceSession`` or a
    path to an ``.onnx`` file. ``threads=None`` uses torch's current thread count for either
    backend; torch's process-wide setting is restored afterwards. After ``warmup_s`` seconds of
    warm-up, exactly ``runs`` timed runs, or when ``runs`` is None at least ``min_runs`` and
    until ``min_time_s`` seconds have passed. ``backend="tensorrt"`` (CUDA only) builds a TensorRT
    engine from the module or ``.onnx`` path. On CUDA, torch modules are replayed as a CUDA graph
    unless ``cuda_graph=False`` (see :mod:`compress.measure._runners`).
    """
    if runs is not None and runs < 1:
        raise ValueError(f"runs = {runs}: must be >= 1 or None")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_lock_ctx(lock))  # engines are built and graphs captured under the lock too
        runner = make_runner(model, example, backend=backend, device=device, threads=threads, cuda_graph=cuda_graph)
        stack.callback(runner.close)
        with runner.threads():
            warm = _warm_up([runner], warmup_s)[0]
            samples: list[float] = []
            with CpuMonitor() as mon:
                start = time.perf_counter()
                while True:
                    samples.append(runner.run_ms())
                    n = len(samples)
                    if runs is not None:
                        if n >= runs:
                            break
                    elif (n >= min_runs and time.perf_counter() - start >= min_time_s) or n >= max_runs:
                        break
    return _stats(samples, runner, other_cores=mon.other_cores, warmup_runs=warm,
                  max_other_cores=max_other_cores, max_spread=max_spread, what=type(model).__name__)


def _block_runs(est_ms: float, block_s: float, max_block: int) -> int:
    return int(min(max_block, max(1, round(block_s * 1e3 / max(est_ms, 1e-6)))))


def _bootstrap_ci(a_blocks: np.ndarray, b_blocks: np.ndarray, confidence: float, n_boot: int,
                  seed: int) -> tuple[float, float]:
    rounds = a_blocks.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rounds, size=(n_boot, rounds))
    a_med = np.median(a_blocks[idx].reshape(n_boot, -1), axis=1)
    b_med = np.median(b_blocks[idx].reshape(n_boot, -1), axis=1)
    boots = a_med / b_med
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return float(lo), float(hi)


def compare_latency(a: Any, b: Any, example: torch.Tensor, *, backend: str = "torch", device: str = "cpu",
                    threads: int | None = None, rounds: int = 20, block_s: float = 0.05, max_block: int = 50,
                    warmup_s: float = 0.5, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
                    lock: bool = True, max_other_cores: float = MAX_OTHER_CORES, max_spread: float = MAX_SPREAD,
                    on_round: Callable[[int], None] | None = None, cuda_graph: bool = True) -> LatencyRatio:
    """Time ``a`` and ``b`` interleaved in this process and return the ratio of medians a/b.

    After a round-robin warm-up, each of ``rounds`` rounds times a block of ``a`` runs and a
    block of ``b`` runs, alternating the order (a b, b a, a b, ...) so drifts cancel. Block
    sizes aim at ``block_s`` seconds per block from the warm-up estimate (capped at
    ``max_block``). The confidence interval is a percentile bootstrap over rounds.
    ``a``/``b`` may be modules, ONNX Runtime sessions or ``.onnx`` paths (see
    :func:`measure_latency`), so an int8 torch model can be compared with an ONNX one.
    """
    if rounds < 2:
        raise ValueError(f"rounds = {rounds}: must be >= 2")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence}: allowed 0 < confidence < 1")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_lock_ctx(lock))  # engines are built and graphs captured under the lock too
        ra = make_runner(a, example, backend=backend, device=device, threads=threads, cuda_graph=cuda_graph)
        stack.callback(ra.close)
        rb = make_runner(b, example, backend=backend, device=device, threads=threads, cuda_graph=cuda_graph)
        stack.callback(rb.close)
        # torch's thread count is process-wide: both runners see the same setting
        with ra.threads(), rb.threads():
            warm = _warm_up([ra, rb], warmup_s)
            est_a = float(np.median([ra.run_ms() for _ in range(3)]))
            est_b = float(np.median([rb.run_ms() for _ in range(3)]))
            ka, kb = _block_runs(est_a, block_s, max_block), _block_runs(est_b, block_s, max_block)
            a_blocks = np.empty((rounds, ka))
            b_blocks = np.empty((rounds, kb))
            with CpuMonitor() as mon:
                for r in range(rounds):
                    order = ((ra, a_blocks, ka), (rb, b_blocks, kb))
                    if r % 2:
                        order = order[::-1]
                    for runner, blocks, k in order:
                        for j in range(k):
                            blocks[r, j] = runner.run_ms()
                    if on_round is not None:
                        on_round(r)
    sa = _stats(list(a_blocks.ravel()), ra, other_cores=mon.other_cores, warmup_runs=warm[0],
                max_other_cores=max_other_cores, max_spread=max_spread, what="a", warn=False)
    sb = _stats(list(b_blocks.ravel()), rb, other_cores=mon.other_cores, warmup_runs=warm[1],
                max_other_cores=max_other_cores, max_spread=max_spread, what="b", warn=False)
    ratio = sa.median_ms / sb.median_ms
    lo, hi = _bootstrap_ci(a_blocks, b_blocks, confidence, n_boot, seed)
    round_ratios = tuple(float(x) for x in np.median(a_blocks, axis=1) / np.median(b_blocks, axis=1))
    busy, reason = busy_verdict(mon.other_cores, max(sa.spread, sb.spread),
                                max_other_cores=max_other_cores, max_spread=max_spread)
    if busy:
        log.warning("latency comparison measured on a busy machine: %s", reason)
    return LatencyRatio(ratio=float(ratio), ci_low=lo, ci_high=hi, a=sa, b=sb, rounds=rounds,
                        confidence=confidence, busy=busy, busy_reason=reason,
                        round_ratios=round_ratios)
