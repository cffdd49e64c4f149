"""Time every point against the original, interleaved in this one process (nothing else should run):
on the CPU at batch 1 and 128, eager torch (the deploy module as ``apply`` returns it), TorchScript
(the point and the original both traced and frozen: ``model.torchscript.pt``), with ``--torchscript-cl``
TorchScript again with both sides in channels_last, and, for INT8 points, ONNX Runtime (the ORT-native
INT8 ONNX against the fp32 ONNX original)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from _headline.context import Context

from compress.apply import apply, calibration_batches
from compress.measure import compare_latency
from compress.onnx_int8 import latency_subject
from spaces.policy import Policy

log = logging.getLogger("bench_headline")

BATCHES = (1, 128)
BACKENDS = ("torch", "torchscript", "onnxruntime")  # onnxruntime for INT8 points only
CL_BACKEND = "torchscript-cl"  # with --torchscript-cl: both sides frozen in channels_last


def backends(args: argparse.Namespace) -> list[str]:
    """The backends every point is timed on: BACKENDS, plus torchscript-cl when asked."""
    return [*BACKENDS, *([CL_BACKEND] if args.torchscript_cl else [])]


def _ratio(r: Any) -> dict[str, Any]:
    return {"ratio": float(r.ratio), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high),
            "speedup": 1.0 / float(r.ratio), "speedup_ci": [1.0 / float(r.ci_high), 1.0 / float(r.ci_low)],
            "busy": bool(r.busy), "median_ms": float(r.a.median_ms), "original_median_ms": float(r.b.median_ms)}


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"threads": args.threads, "rounds": args.rounds, "batches": list(BATCHES), "onnx_int8": "ort-native",
            "backends": backends(args), "int8_engine": args.int8_engine}


def time_point(ctx: Context, point: dict[str, Any], args: argparse.Namespace,
               calib: list | None = None) -> dict[str, Any]:
    """Speed-ups of one point's deploy model (its recipe applied without fine-tuning: the weights do
    not change the speed; INT8 weights packed for ``args.int8_engine``) over the original, per backend
    and batch. ``calib``: the calibration batches of the ORT-native INT8 export (default: drawn from the
    data here)."""
    original = ctx.baseline.model
    policy = Policy.load(point["recipe"])
    out = apply(policy, original, data=ctx.baseline.data, finetune=False, progress=False, bn_recal_batches=0,
                engine=args.int8_engine)
    s = ctx.baseline.input_size
    timings: dict[str, Any] = {"torch": {}, **_settings(args)}
    calib = calib if calib is not None else calibration_batches(ctx.baseline.data)
    for backend in [b for b in backends(args) if policy.quant.active or b != "onnxruntime"]:
        timings[backend] = {}
        # onnxruntime: the ORT-native INT8 ONNX users deploy, against the fp32 ONNX of the original
        with latency_subject(out, backend, calib) as subject:
            for batch in BATCHES:
                x = torch.randn(batch, 3, s, s)
                r = compare_latency(subject, original, x, backend=backend, threads=args.threads, rounds=args.rounds)
                timings[backend][str(batch)] = _ratio(r)
                log.info("%s %s b%d: speed-up %.2fx [%.2f, %.2f]%s", point["label"], backend, batch,
                         1 / r.ratio, 1 / r.ci_high, 1 / r.ci_low, " (busy)" if r.busy else "")
    return timings


def time_points(ctx: Context, args: argparse.Namespace) -> None:
    """Time every stored point that has no timing with these settings yet (resumable)."""
    calib = None
    for point in ctx.points(args.budget_epochs):
        old = point.get("latency") or {}
        if all(old.get(k) == v for k, v in _settings(args).items()):
            continue
        if calib is None:
            calib = calibration_batches(ctx.baseline.data)  # once: every INT8 point's ORT export uses them
        point["latency"] = time_point(ctx, point, args, calib)
        label = point.pop("label")
        ctx.save_point(label, point)


__all__ = ["BACKENDS", "BATCHES", "CL_BACKEND", "backends", "time_point", "time_points"]
