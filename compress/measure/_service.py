"""One measurement service: accuracy, costs and latency of a model or a compressed model.

Every path that scores a model (the search objective, ``finalize``, the ``apply`` and
``evaluate`` commands) calls :func:`measure` and gets a :class:`Measurement` whose fields are
named as the metrics (:data:`autocompress.metrics.METRICS`), so the keys agree everywhere.

What is measured on what, for a :class:`compress.apply.Compressed` result:

- accuracy on ``Compressed.scored(layers)`` (the deploy model when it runs the policy's exact
  precision, else the fake-quant simulation), on CPU when the model is quantized;
- FLOPs, params, size and BOPs on the float structure (fake-quant layers back to float; fvcore
  cannot trace converted INT8 models), size and BOPs at the policy's bit-widths;
- latency on the deploy model, as a ratio to ``original`` timed interleaved
  (:func:`compress.measure.compare_latency`); with backend ``onnxruntime`` an x86 INT8 policy is
  timed as what users deploy, its ORT-native INT8 ONNX (:func:`compress.onnx_int8.latency_subject`,
  exported from ``calib`` batches to a temporary file before the latency lock is taken), not as
  the ONNX export of the FX INT8 deploy model. Without ``original``, absolute timings
  (:func:`compress.measure.measure_latency`, ``Measurement.timing``, no metric). With several
  batches (``LatencySetup(batch=(1, 128))``) each batch is compared in turn, all of them under one
  hold of the latency lock so a model's batches are timed back to back: the first batch gives
  ``latency``/``latency_ratio``/``latency_ci_low``/``latency_ci_high``/``latency_busy``, each other
  batch ``B`` the keys ``latency@B``, ``latency_ci_low@B``, ``latency_ci_high@B``, ``latency_busy@B``
  (:func:`autocompress.metrics.batch_keys`).

A plain ``nn.Module`` is all three (its fake-quant layers, if any, stripped for the costs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.metrics import at_batch, batch_keys
from compress._timing import phase
from compress.apply import Compressed
from compress.measure._accuracy import evaluate
from compress.measure._bits import count_bops, model_size_bytes
from compress.measure._flops import count_flops, count_params
from compress.measure._latency import LatencyRatio, LatencyStats, compare_latency, measure_latency
from compress.measure._lock import latency_lock
from compress.models import quantizable_layers
from compress.onnx_int8 import latency_subject
from compress.quantize import FAKE_QUANT_TYPES, strip_fake_quant
from spaces.policy import QuantSpec

#: metric keys of :meth:`Measurement.to_dict`, in this order (trial records and tables keep it); the
#: keys of every other latency batch ``B`` follow them (``latency@B`` ..., :func:`autocompress.metrics.batch_keys`)
METRIC_KEYS = ("accuracy", "top5", "flops", "params", "size", "bops", "accuracy_drop", "flops_ratio",
               "latency", "latency_ratio", "latency_ci_low", "latency_ci_high", "latency_busy")


@dataclass(frozen=True)
class LatencySetup:
    """How latency is timed: the fields of a search space's ``budget.latency`` plus ``min_time_s``
    (seconds of timed runs for absolute timings, when there is no original to compare with).

    ``batch`` is one batch size or several (``(1, 128)``, the first is the primary batch); every
    batch is timed with ``rounds`` interleaved rounds (``min_time_s`` for absolute timings).
    """

    backend: str = "torch"
    device: str = "cpu"
    batch: int | tuple[int, ...] = 1
    threads: int | None = 2
    rounds: int = 20
    warmup_s: float = 0.5
    min_time_s: float = 1.0

    def __post_init__(self) -> None:
        batches = self.batches
        if not batches or any(int(b) < 1 for b in batches) or len(set(batches)) != len(batches):
            raise ValueError(f"latency batch = {self.batch!r}: allowed an integer >= 1 or distinct integers >= 1")

    @property
    def batches(self) -> tuple[int, ...]:
        """Every batch timed, the primary one first."""
        return (int(self.batch),) if isinstance(self.batch, int) else tuple(int(b) for b in self.batch)

    @classmethod
    def of(cls, budget: Any) -> LatencySetup:
        """From any object with ``backend, device, batch, threads, rounds, warmup_s`` (a space's
        ``budget.latency``; ``batch`` one size or a list)."""
        batch = budget.batch if isinstance(budget.batch, int) else tuple(budget.batch)
        return cls(backend=budget.backend, device=budget.device, batch=batch, threads=budget.threads,
                   rounds=budget.rounds, warmup_s=budget.warmup_s)


@dataclass(frozen=True)
class BatchLatency:
    """The latency ratio measured at one batch: its metric and details (see :class:`Measurement`)."""

    ratio: float
    ci_low: float
    ci_high: float
    busy: bool

    @classmethod
    def of(cls, timing: LatencyRatio) -> BatchLatency:
        return cls(ratio=float(timing.ratio), ci_low=float(timing.ci_low), ci_high=float(timing.ci_high),
                   busy=bool(timing.busy))

    def keyed(self, batch: int | None) -> dict[str, Any]:
        """``{latency@B: ratio, latency_ci_low@B: ..., latency_ci_high@B: ..., latency_busy@B: ...}``
        (no suffix when ``batch`` is None: the primary batch)."""
        return dict(zip(batch_keys(batch), (self.ratio, self.ci_low, self.ci_high, self.busy)))


@dataclass(frozen=True)
class Measurement:
    """Measured values, named as the metrics; ``None`` where not measured.

    ``images`` counts the images accuracy was scored on; ``timing`` is the raw latency result: a
    :class:`~compress.measure.LatencyRatio` (the deploy model against the original, whose ratio,
    confidence interval and busy flag are ``latency_ratio`` (also ``latency``), ``latency_ci_low``,
    ``latency_ci_high``, ``latency_busy``) or, without an original, :class:`~compress.measure.LatencyStats`;
    ``times`` the seconds per phase (``evaluate``, ``cost``, ``latency``).

    Per batch: ``per_batch`` maps every batch timed as a ratio (the primary one first, equal to the
    ``latency_*`` fields) to its :class:`BatchLatency`; ``batch_timing`` maps every batch timed to
    its raw result (``timing`` is the primary batch's). :meth:`to_dict` adds the keys of each other
    batch ``B``: ``latency@B``, ``latency_ci_low@B``, ``latency_ci_high@B``, ``latency_busy@B``.
    """

    accuracy: float | None = None
    top5: float | None = None
    images: int | None = None
    flops: int | None = None
    params: int | None = None
    size: int | None = None
    bops: int | None = None
    accuracy_drop: float | None = None
    flops_ratio: float | None = None
    timing: LatencyRatio | LatencyStats | None = field(default=None, compare=False, repr=False)
    latency_ratio: float | None = None
    latency_ci_low: float | None = None
    latency_ci_high: float | None = None
    latency_busy: bool | None = None
    per_batch: dict[int, BatchLatency] = field(default_factory=dict)
    batch_timing: dict[int, LatencyRatio | LatencyStats] = field(default_factory=dict, compare=False, repr=False)
    times: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def latency(self) -> float | None:
        """The ``latency`` metric: the same number as ``latency_ratio``."""
        return self.latency_ratio

    def to_dict(self) -> dict[str, Any]:
        """``{metric name: value}`` of everything measured, in :data:`METRIC_KEYS` order, then the
        other latency batches' keys in batch order."""
        values = {k: getattr(self, k) for k in METRIC_KEYS}
        return {**{k: v for k, v in values.items() if v is not None}, **self.batch_metrics()}

    def batch_metrics(self, *, speedup: bool = False) -> dict[str, Any]:
        """The other latency batches' keys (``latency@B`` ...), with ``speedup@B`` (``1 / ratio``)
        when ``speedup``; empty with a single batch."""
        out: dict[str, Any] = {}
        for batch, lat in list(self.per_batch.items())[1:]:
            out.update(lat.keyed(batch))
            if speedup:
                out[at_batch("speedup", batch)] = 1.0 / lat.ratio if lat.ratio > 0 else None
        return out


def float_structure(model: nn.Module) -> nn.Module:
    """The float (pruned) structure of a trainable model, for counting: fake-quant layers back to float."""
    if any(isinstance(m, FAKE_QUANT_TYPES) for m in model.modules()):
        return strip_fake_quant(model).cpu().eval()
    return model.cpu().eval()


def _is_quantized(model: nn.Module) -> bool:
    """Converted (INT8 FX) models only run on CPU."""
    return any("quantized" in type(m).__module__ for m in model.modules())


def _accuracy(model: nn.Module, loader: Iterable, device: str, progress: bool) -> dict[str, Any]:
    res = evaluate(model, loader, device="cpu" if _is_quantized(model) else device, topk=(1, 5), progress=progress)
    out: dict[str, Any] = {"accuracy": float(res["top1"]), "images": int(res["n"])}
    if "top5" in res:
        out["top5"] = float(res["top5"])
    return out


def _costs(structure: nn.Module, input_size: int, quant: QuantSpec) -> dict[str, int]:
    return {"flops": int(count_flops(structure, input_size)), "params": int(count_params(structure)),
            "size": int(model_size_bytes(structure, quant)), "bops": int(count_bops(structure, input_size, quant))}


def _latency(deploy: nn.Module, original: nn.Module | None, example: torch.Tensor,
             setup: LatencySetup) -> LatencyRatio | LatencyStats:
    if original is None:
        return measure_latency(deploy, example, backend=setup.backend, device=setup.device, threads=setup.threads,
                               warmup_s=setup.warmup_s, min_time_s=setup.min_time_s)
    return compare_latency(deploy, original, example, backend=setup.backend, device=setup.device,
                           threads=setup.threads, rounds=setup.rounds, warmup_s=setup.warmup_s)


def _batch_example(example: torch.Tensor | None, batch: int, input_size: int, primary: bool) -> torch.Tensor:
    """The latency input of one batch: ``example`` itself for the primary batch, its rows repeated
    (or cut) to ``batch`` rows for the others; random images without an ``example``."""
    if example is None:
        return torch.randn(batch, 3, input_size, input_size)
    if primary or example.shape[0] == batch:
        return example
    reps = -(-batch // example.shape[0])
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:batch]


def _latencies(deploy: nn.Module, original: nn.Module | None, example: torch.Tensor | None, input_size: int,
               setup: LatencySetup) -> dict[int, LatencyRatio | LatencyStats]:
    """Time every batch of ``setup`` in turn under one hold of the latency lock (see :func:`_latency`)."""
    out: dict[int, LatencyRatio | LatencyStats] = {}
    with latency_lock():
        for i, batch in enumerate(setup.batches):
            out[batch] = _latency(deploy, original, _batch_example(example, batch, input_size, i == 0), setup)
    return out


def _latency_values(timings: dict[int, LatencyRatio | LatencyStats]) -> dict[str, Any]:
    """Measurement fields of per-batch timings (the first batch is the primary one)."""
    values: dict[str, Any] = {"timing": next(iter(timings.values())), "batch_timing": timings}
    per_batch = {b: BatchLatency.of(t) for b, t in timings.items() if isinstance(t, LatencyRatio)}
    if per_batch:
        first = next(iter(per_batch.values()))
        values.update(latency_ratio=first.ratio, latency_ci_low=first.ci_low, latency_ci_high=first.ci_high,
                      latency_busy=first.busy, per_batch=per_batch)
    return values


def _timed(subject: Compressed | nn.Module, backend: str, calib: Iterable | None,
           written: str | Path | None) -> contextlib.AbstractContextManager[Any]:
    """What the latency of ``subject`` times on ``backend``: a plain module itself; for a Compressed
    result :func:`compress.onnx_int8.latency_subject` (its deploy model, or its ORT-native INT8 ONNX)."""
    if isinstance(subject, Compressed):
        return latency_subject(subject, backend, calib, written=written)
    return contextlib.nullcontext(subject)


def measure(subject: Compressed | nn.Module, *, input_size: int, loader: Iterable | None = None,
            costs: bool = True, quant: QuantSpec | None = None, layers: Sequence[str] | None = None,
            reference: Mapping[str, Any] | None = None, latency: LatencySetup | None = None,
            original: nn.Module | None = None, example: torch.Tensor | None = None,
            calib: Iterable | None = None, int8_onnx: str | Path | None = None, device: str = "cpu",
            progress: bool = False) -> Measurement:
    """Measure ``subject`` (see the module docstring for what is measured on which model).

    Args:
        input_size: image side for FLOPs/BOPs and the random latency example.
        loader: score top-1/top-5 accuracy on these batches (none: no accuracy).
        costs: count FLOPs, params, size and BOPs.
        quant: bit-widths for size/BOPs (default: a Compressed result's policy, else float).
        layers: the original model's quantizable layers for ``Compressed.scored`` (default: the
            compressed model's, which keep their names).
        reference: the original's metrics (``accuracy``, ``flops``): adds ``accuracy_drop`` and
            ``flops_ratio`` for what was measured.
        latency: time the deploy model (a ratio to ``original`` when given, else absolute), at
            each of ``latency.batches``.
        example: the primary batch's latency input (default: random images); the other batches
            repeat its rows.
        calib: ``(inputs, targets)`` calibration batches (``compress.apply.calibration_batches``),
            needed to time a Compressed x86 INT8 policy with backend ``onnxruntime``.
        int8_onnx: that policy's ORT-native INT8 ONNX, already written (``apply``'s ``model.onnx``):
            timed as it is when the file exists, instead of a fresh export.
    """
    if isinstance(subject, Compressed):
        scored = subject.scored(layers if layers is not None else quantizable_layers(subject.model))[0]
        trainable = subject.model
        quant = subject.policy.quant if quant is None else quant
    else:
        scored = trainable = subject
    values: dict[str, Any] = {}
    times: dict[str, float] = {}
    if loader is not None:
        with phase(times, "evaluate"):
            values.update(_accuracy(scored, loader, device, progress))
    if costs:
        with phase(times, "cost"):
            values.update(_costs(float_structure(trainable), input_size, quant or QuantSpec()))
    if reference is not None and "accuracy" in values:
        values["accuracy_drop"] = float(reference["accuracy"]) - values["accuracy"]
    if reference is not None and "flops" in values:
        values["flops_ratio"] = values["flops"] / max(float(reference["flops"]), 1.0)
    if latency is not None:
        with phase(times, "latency"), _timed(subject, latency.backend, calib, int8_onnx) as timed:
            values.update(_latency_values(_latencies(timed, original, example, input_size, latency)))
    return Measurement(**values, times=times)


__all__ = ["METRIC_KEYS", "BatchLatency", "LatencySetup", "Measurement", "float_structure", "measure"]
