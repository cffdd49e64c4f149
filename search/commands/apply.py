"""`autocompress apply RECIPE.yaml --checkpoint CKPT --dataset D --out DIR`: compress one model.

Writes to DIR:

* ``policy.yaml`` + ``model.pt``: the compressed model (``compress.artifact``; reload with
  ``load_compressed``), the policy carrying the exact kept channel indices;
* ``model.onnx``: the deploy model (INT8 when quantized for x86), verified on a val batch;
* ``metrics.json``: accuracy before/after on val and test; ``before`` and ``after``, the original's
  and the compressed model's ``compress.measure.Measurement`` (metric names: ``flops``, ``params``,
  ``size``, ``bops``; after also ``flops_ratio`` and ``latency_ratio`` vs. the original, timed
  interleaved, with ``latency_ci_low``/``latency_ci_high``/``latency_busy``); ``ratios``;
  ``speedup`` and ``latency_timing`` (batch, threads, milliseconds); with ``--latency-batch 1,128`` every
  other batch ``B`` adds ``after.latency@B`` (and its CI/busy keys), ``speedup@B`` and ``latency_timing@B``;
  precision per layer, notes, timings;
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

from search.cli import CLIError
from search.commands._inputs import checkpoint_file, split_accuracy
from search.commands._latency import batch_list, ratio_outputs, ratio_rows
from spaces.policy import Policy, QuantSpec

HELP = "apply a recipe (policy) to a trained model: prune, quantize, distil, fine-tune, export"
DESCRIPTION = ("Apply a compression recipe to a trained model and write the compressed model, "
               "its ONNX export, metrics.json and a summary to --out.")

log = logging.getLogger("autocompress.apply")

#: cost metrics compared before/after (``ratios``)
COSTS = ("flops", "params", "size", "bops")

#: val images the ONNX export is verified on (INT8 agreement is a rate: too few samples make it 0/1)
VERIFY_SAMPLES = 256


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("apply", help=HELP, description=DESCRIPTION)
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
    p.add_argument("--latency-batch", type=batch_list, default=(1,), metavar="B[,B...]",
                   help="batch size(s) for the latency comparison, e.g. 1,128 (default 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the latency comparison")
    p.add_argument("--no-latency", action="store_true", help="skip the latency comparison")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on at most this many images per split (default: all)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's fine-tune seed")
    p.set_defaults(func=run)
    return p


def _policy(args: argparse.Namespace):
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
    if args.threads < 1:
        raise CLIError(f"--threads {args.threads}: must be >= 1")
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
    from compress.export import ExportError, export_onnx
    from compress.measure import LatencySetup
    from compress.models import CheckpointError, build_model, load_checkpoint, quantizable_layers

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
    layers = quantizable_layers(model)
    scored, scored_what = result.scored(layers)
    after = split_accuracy(scored, data, args.eval_limit, scored_what)

    t0 = time.perf_counter()
    save_compressed(out, result.policy, result.model)
    example = next(iter(data.loader("val", args.latency_batch[0], shuffle=False)))[0]
    try:
        onnx_report: Any = _plain(export_onnx(
            result.deploy, out / "model.onnx", example[:1],
            verify_loader=data.loader("val", 64, shuffle=False, limit=VERIFY_SAMPLES),
            verify_batches=VERIFY_SAMPLES // 64))
        onnx_report["verified"] = True
    except ExportError as exc:  # keep the compressed model and metrics; flag the export loudly
        log.warning("ONNX export/verification failed: %s", exc)
        onnx_report = {"verified": False, "error": str(exc)}
    export_s = time.perf_counter() - t0

    setup = None if args.no_latency else LatencySetup(batch=args.latency_batch, threads=args.threads)  # torch, CPU
    measured = _measure(model, result, policy.model.input_size, layers, setup, example)
    metrics: dict[str, Any] = {
        "recipe": str(args.recipe), "checkpoint": str(ckpt), "dataset": args.dataset,
        "policy_hash": result.policy.hash(), "summary": result.policy.summary(),
        "accuracy": {"before": before, "after": after,
                     "drop_val_top1": _drop(before, after, "val"), "drop_test_top1": _drop(before, after, "test"),
                     "after_measured_on": scored_what},
        **measured,
        "precision": result.precision,
        "notes": result.notes,
        "train": _plain(result.train_result),
        "onnx": onnx_report,
        "timings": {**result.timings, "export": round(export_s, 3),
                    "total": round(time.perf_counter() - t_start, 3)},
    }
    return metrics, _summary(metrics)


def _drop(before: dict, after: dict, split: str) -> float:
    return round(before[split]["top1"] - after[split]["top1"], 3)


def _measure(original: nn.Module, result: Any, input_size: int, layers: list[str], setup: Any,
             example: torch.Tensor) -> dict[str, Any]:
    """``before``/``after`` (the original's and the compressed ``result``'s Measurement, metric names),
    their cost ``ratios``, and the latency timing details when latency was measured (``setup``)."""
    from compress.measure import LatencyRatio, measure

    before = measure(original, input_size=input_size, quant=QuantSpec())
    after = measure(result, input_size=input_size, layers=layers, reference=before.to_dict(), latency=setup,
                    original=original, example=example)
    b, a = before.to_dict(), after.to_dict()
    out: dict[str, Any] = {"before": b, "after": a,
                           "ratios": {k: round(a[k] / b[k], 4) if b[k] else None for k in COSTS}}
    if isinstance(after.timing, LatencyRatio):
        out.update(ratio_outputs(after, setup))  # speedup, latency_timing (and @B for the other batches)
    return out


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
    for key in ("flops", "params", "bops"):
        rows.append((key, _fmt_int(m["before"][key]), _fmt_int(m["after"][key]), f"{m['ratios'][key]:.3f}"))
    rows.append(("size", f"{m['before']['size'] / 1024:.1f} KiB", f"{m['after']['size'] / 1024:.1f} KiB",
                 f"{m['ratios']['size']:.3f}"))
    rows += ratio_rows(m)  # one per latency batch
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
    if onnx.get("verified"):
        agree = onnx.get("top1_agreement")
        lines.append(f"onnx: model.onnx verified on {onnx.get('verified_samples')} val images"
                     + (f", top-1 agreement {agree:.2%}" if agree is not None else ""))
    else:
        lines.append(f"onnx: VERIFICATION FAILED: {onnx.get('error')}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items()))
    return "\n".join(lines)
