"""`autocompress apply RECIPE.yaml --checkpoint CKPT --dataset D --out DIR`: compress one model.

Writes to DIR:

* ``policy.yaml`` + ``model.pt``: the compressed model (``compress.artifact``; reload with
  ``load_compressed``), the policy carrying the exact kept channel indices;
* ``model.onnx``: the deploy artefact (``compress.export.export_compressed``): for x86 INT8
  policies the ORT-native INT8 ONNX (``compress.onnx_int8``), verified by its own ONNX Runtime
  top-1 on the val split (all of it, or ``--eval-limit`` images) against the PyTorch
  fake-quant simulation it was built from, within ``--onnx-tolerance`` points; float models by
  top-1 agreement and logits on 256 val images;
* ``metrics.json``: accuracy before/after on val and test, FLOPs, params, size, BOPs,
  latency ratio vs. the original (interleaved, with CI; ``--latency-backend onnxruntime`` times
  ``model.onnx`` against the fp32 ONNX of the original), precision per layer, notes, timings,
  and ``onnx`` (verification; for INT8 the ORT val/test accuracies);
* ``summary.txt``: a short human table (also printed), ``apply.log``: the log of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.commands._inputs import checkpoint_file, split_accuracy

log = logging.getLogger("autocompress.apply")

#: val images a float ONNX export is verified on (logits and top-1 agreement); INT8 exports are
#: verified by accuracy on the whole val split (``--eval-limit`` caps it)
VERIFY_SAMPLES = 256


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "apply", help="apply a recipe (policy) to a trained model: prune, quantize, distil, fine-tune, export",
        description="Apply a compression recipe to a trained model and write the compressed model, "
                    "its ONNX export, metrics.json and a summary to --out.")
    p.add_argument("recipe", help="recipe / policy file (YAML or JSON), e.g. spaces/recipes/resnet20-prune30-kd.yaml")
    p.add_argument("--checkpoint", required=True,
                   help="trained weights of the uncompressed model (a state_dict file, or a directory with model.pt)")
    p.add_argument("--dataset", required=True, help="dataset name (see `autocompress datasets`)")
    p.add_argument("--data-dir", default=None, help="dataset root (where the dataset needs one)")
    p.add_argument("--normalization", default=None,
                   help="input normalization to use (default: the dataset's; the shared CIFAR weights use imagenet)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-finetune", action="store_true", help="skip fine-tuning (prune/quantize/convert only)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, help="override the recipe's fine-tune epochs")
    budget.add_argument("--steps", type=int, default=None, help="override the recipe's fine-tune steps")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device for fine-tuning")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size for the latency comparison")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the latency comparison")
    p.add_argument("--latency-backend", default="torch", choices=("torch", "onnxruntime"),
                   help="time the PyTorch deploy model, or model.onnx in ONNX Runtime against the original's fp32 ONNX")
    p.add_argument("--onnx-tolerance", type=float, default=None,
                   help="INT8 model.onnx: allowed |ORT - PyTorch| val top-1 difference in points (default 0.5)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency comparison")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on at most this many images per split (default: all)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's fine-tune seed")
    p.set_defaults(func=run)
    return p


def _policy(args: argparse.Namespace):
    from spaces.policy import Policy

    policy = Policy.load(args.recipe)
    ft = policy.finetune
    if args.epochs is not None:
        ft = dataclasses.replace(ft, epochs=args.epochs, steps=None)
    if args.steps is not None:
        ft = dataclasses.replace(ft, steps=args.steps)
    if args.seed is not None:
        ft = dataclasses.replace(ft, seed=args.seed)
    return policy.replace(finetune=ft)


def _file_logger(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "apply.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler


def run(args: argparse.Namespace) -> int:
    from search.cli import CLIError

    if args.latency_batch < 1 or args.threads < 1:
        raise CLIError(f"--latency-batch {args.latency_batch} / --threads {args.threads}: must be >= 1")
    if args.onnx_tolerance is not None and args.onnx_tolerance < 0:
        raise CLIError(f"--onnx-tolerance {args.onnx_tolerance}: must be >= 0 (percentage points)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available; use --device cpu")
    policy = _policy(args)
    ckpt = checkpoint_file(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = _file_logger(out)
    try:
        metrics, summary = _run(args, policy, ckpt, out)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    log.info("wrote %s", ", ".join(sorted(p.name for p in out.iterdir())))
    if not metrics["onnx"].get("verified"):
        log.error("model.onnx did not pass verification (see metrics.json onnx.error); exit code 3")
        return 3
    return 0


def _run(args: argparse.Namespace, policy, ckpt: Path, out: Path) -> tuple[dict[str, Any], str]:
    from compress.apply import apply
    from compress.artifact import save_compressed
    from compress.data import get_dataset
    from compress.models import CheckpointError, build_model, load_checkpoint, quantizable_layers
    from search.cli import CLIError

    t_start = time.perf_counter()
    try:
        model = load_checkpoint(build_model(policy.model), ckpt).eval()
    except CheckpointError as exc:
        raise CheckpointError(
            f"{args.recipe}: model.name = {policy.model.name!r} (num_classes {policy.model.num_classes}) does not "
            f"fit the checkpoint; is the recipe for another model?\n{exc}") from None
    data = get_dataset(args.dataset, args.data_dir, normalization=args.normalization,
                       input_size=policy.model.input_size, seed=policy.finetune.seed)
    if data.num_classes != policy.model.num_classes:
        raise CLIError(f"{args.recipe}: model.num_classes = {policy.model.num_classes}, but dataset "
                       f"{args.dataset!r} has {data.num_classes} classes")
    log.info("apply %s to %s (%s) on %s", args.recipe, policy.model.name, ckpt, args.dataset)

    before = split_accuracy(model, data, args.eval_limit, "original")
    result = apply(policy, model, data=data, finetune=not args.no_finetune, device=args.device, progress=True)
    scored, scored_what = result.scored(quantizable_layers(model))
    after = split_accuracy(scored, data, args.eval_limit, scored_what)

    t0 = time.perf_counter()
    save_compressed(out, result.policy, result.model)
    example = next(iter(data.loader("val", args.latency_batch, shuffle=False)))[0]
    onnx_report = _export(args, result, data, out / "model.onnx", example[:1])
    export_s = time.perf_counter() - t0

    costs = _costs(model, result, policy.model.input_size)
    latency = None if args.no_latency else _latency(args, result, model, example, data, out / "model.onnx")
    metrics: dict[str, Any] = {
        "recipe": str(args.recipe), "checkpoint": str(ckpt), "dataset": args.dataset,
        "policy_hash": result.policy.hash(), "summary": result.policy.summary(),
        "accuracy": {"before": before, "after": after,
                     "drop_val_top1": _drop(before, after, "val"), "drop_test_top1": _drop(before, after, "test"),
                     "after_measured_on": scored_what, "after_onnx": _onnx_accuracy(onnx_report)},
        **costs,
        "latency": latency,
        "precision": result.precision,
        "notes": result.notes,
        "train": _plain(result.train_result),
        "onnx": onnx_report,
        "timings": {**result.timings, "export": round(export_s, 3),
                    "total": round(time.perf_counter() - t_start, 3)},
    }
    return metrics, _summary(metrics)


def _export(args: argparse.Namespace, result, data, path: Path, example: torch.Tensor) -> dict[str, Any]:
    """Export and verify ``model.onnx``; a failure is flagged in the report (exit code 3), not raised."""
    from compress.apply import calibration_batches
    from compress.export import ACCURACY_TOLERANCE, ExportError, export_compressed, ort_accuracy

    tolerance = ACCURACY_TOLERANCE if args.onnx_tolerance is None else args.onnx_tolerance
    limit = args.eval_limit
    path.unlink(missing_ok=True)  # never time or keep a stale file from an earlier run
    try:
        report: Any = _plain(export_compressed(
            result, path, calib=calibration_batches(data), example=example, tolerance=tolerance,
            verify_loader=data.loader("val", 64, shuffle=False, limit=limit),
            verify_batches=VERIFY_SAMPLES // 64))
    except ExportError as exc:  # keep the compressed model and metrics; flag the export loudly
        log.warning("ONNX export/verification failed: %s", exc)
        return {"verified": False, "error": str(exc)}
    report["verified"] = True
    if report.get("ort_accuracy") is not None:  # INT8: the artefact's own test accuracy too
        report["ort_test_accuracy"], report["ort_test_images"] = ort_accuracy(
            path, data.loader("test", 256, shuffle=False, limit=limit))
        report["torch_reference"] = "fake-quant simulation (the ranges and weight grids model.onnx was built from)"
    return report


def _onnx_accuracy(onnx_report: dict[str, Any]) -> dict[str, Any] | None:
    """model.onnx's own ONNX Runtime top-1 (INT8 exports), shaped like ``accuracy.after``."""
    if onnx_report.get("ort_test_accuracy") is None:
        return None
    return {"val": {"top1": round(onnx_report["ort_accuracy"], 3), "n": onnx_report["verified_samples"]},
            "test": {"top1": round(onnx_report["ort_test_accuracy"], 3), "n": onnx_report["ort_test_images"]}}


def _drop(before: dict, after: dict, split: str) -> float:
    return round(before[split]["top1"] - after[split]["top1"], 3)


def _costs(original: nn.Module, result, input_size: int) -> dict[str, Any]:
    """FLOPs/params/size/BOPs before and after, counted on float structures (fvcore cannot
    trace converted int8 models): fake-quant layers of the trained model go back to float."""
    from compress.measure import count_bops, count_flops, count_params, model_size_bytes
    from compress.quantize import strip_fake_quant
    from spaces.policy import QuantSpec

    quant = result.policy.quant
    structure = strip_fake_quant(result.model).cpu().eval()
    fp32 = QuantSpec()
    b = {"flops": count_flops(original, input_size), "params": count_params(original),
         "size": model_size_bytes(original, fp32), "bops": count_bops(original, input_size, fp32)}
    a = {"flops": count_flops(structure, input_size), "params": count_params(structure),
         "size": model_size_bytes(structure, quant), "bops": count_bops(structure, input_size, quant)}
    ratios = {k: round(a[k] / b[k], 4) if b[k] else None for k in b}
    return {"before": b, "after": a, "ratios": ratios}


def _latency(args: argparse.Namespace, result, original: nn.Module, example: torch.Tensor, data,
             onnx_path: Path) -> dict[str, Any]:
    """Interleaved latency ratio to the original: the PyTorch deploy model (``torch``), or the
    written ``model.onnx`` against the original's fp32 ONNX (``onnxruntime``)."""
    import contextlib

    from compress.apply import calibration_batches
    from compress.measure import compare_latency
    from compress.onnx_int8 import latency_subject

    backend = args.latency_backend
    subject = contextlib.nullcontext(onnx_path) if backend == "onnxruntime" and onnx_path.is_file() else \
        latency_subject(result, backend, calibration_batches(data))
    with subject as timed:
        r = compare_latency(timed, original, example, backend=backend, threads=args.threads)
    return {"ratio": r.ratio, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "speedup": round(1.0 / r.ratio, 3) if r.ratio else None, "busy": r.busy,
            "batch": int(example.shape[0]), "threads": args.threads, "backend": backend,
            "compressed_ms": getattr(r.a, "median_ms", None), "original_ms": getattr(r.b, "median_ms", None)}


def _plain(obj: Any) -> Any:
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj):
        return {k: v for k, v in dataclasses.asdict(obj).items() if _jsonable(v)}
    return obj if _jsonable(obj) else str(obj)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _fmt_int(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _summary(m: dict[str, Any]) -> str:
    acc_b, acc_a = m["accuracy"]["before"], m["accuracy"]["after"]
    rows = [("", "original", "compressed", "ratio")]
    for split in ("val", "test"):
        rows.append((f"{split} top1 %", f"{acc_b[split]['top1']:.2f}", f"{acc_a[split]['top1']:.2f}",
                     f"{acc_a[split]['top1'] - acc_b[split]['top1']:+.2f} pt"))
    for split, a in (m["accuracy"].get("after_onnx") or {}).items():
        rows.append((f"{split} top1 % onnx", "", f"{a['top1']:.2f}", f"{a['top1'] - acc_b[split]['top1']:+.2f} pt"))
    for key in ("flops", "params", "bops"):
        rows.append((key, _fmt_int(m["before"][key]), _fmt_int(m["after"][key]), f"{m['ratios'][key]:.3f}"))
    rows.append(("size", f"{m['before']['size'] / 1024:.1f} KiB", f"{m['after']['size'] / 1024:.1f} KiB",
                 f"{m['ratios']['size']:.3f}"))
    lat = m.get("latency")
    if lat:
        rows.append((f"latency b{lat['batch']}", f"{lat['original_ms']:.2f} ms" if lat["original_ms"] else "",
                     f"{lat['compressed_ms']:.2f} ms" if lat["compressed_ms"] else "",
                     f"{lat['ratio']:.3f} [{lat['ci_low']:.3f}, {lat['ci_high']:.3f}]"
                     + (" (busy)" if lat["busy"] else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [m["summary"], ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    precisions: dict[str, int] = {}
    for p in m["precision"].values():
        precisions[p] = precisions.get(p, 0) + 1
    if precisions:
        lines.append("precision: " + ", ".join(f"{k} x{v}" for k, v in sorted(precisions.items())))
    lines += [f"note: {n}" for n in m["notes"]]
    onnx = m["onnx"]
    if onnx.get("verified") and onnx.get("ort_accuracy") is not None:
        lines.append(f"onnx: model.onnx (ONNX Runtime INT8) verified by accuracy on {onnx['verified_samples']} val "
                     f"images: ORT {onnx['ort_accuracy']:.2f}% vs PyTorch fake-quant simulation "
                     f"{onnx['torch_accuracy']:.2f}% (tolerance {onnx['accuracy_tolerance']:g} pt); "
                     f"ORT test top-1 {onnx['ort_test_accuracy']:.2f}%")
    elif onnx.get("verified"):
        agree = onnx.get("top1_agreement")
        lines.append(f"onnx: model.onnx verified on {onnx.get('verified_samples')} val images"
                     + (f", top-1 agreement {agree:.2%}" if agree is not None else ""))
    else:
        lines.append(f"onnx: VERIFICATION FAILED: {onnx.get('error')}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items()))
    return "\n".join(lines)
