"""`autocompress apply RECIPE.yaml --checkpoint CKPT --dataset D --out DIR`: compress one model.

Writes to DIR:

* ``policy.yaml`` + ``model.pt``: the compressed model (``compress.artifact``; reload with
  ``load_compressed``), the policy carrying the exact kept channel indices;
* ``model.onnx``: the deploy artefact (``compress.export.export_compressed``): for x86 INT8
  policies the ORT-native INT8 ONNX (``compress.onnx_int8``), verified by its own ONNX Runtime
  top-1 on the val split (all of it, or ``--eval-limit`` images) against the PyTorch
  fake-quant simulation it was built from, within ``--onnx-tolerance`` points; float models by
  top-1 agreement and logits on 256 val images;
* ``model.torchscript.pt``: the PyTorch deploy model traced and frozen (``compress.torchscript``;
  ``torch.jit.load`` runs it without this package), checked against it; ``--latency-backend
  torchscript`` times this form of it against the original's (``torchscript-cl``: both run in
  channels_last layout, the original's faster form on x86 CPUs);
* ``metrics.json``: accuracy before/after on val and test; ``before`` and ``after``, the original's
  and the compressed model's ``compress.measure.Measurement`` (metric names: ``flops``, ``params``,
  ``size``, ``bops``; after also ``flops_ratio`` and ``latency_ratio`` vs. the original, timed
  interleaved, with ``latency_ci_low``/``latency_ci_high``/``latency_busy``); ``ratios``;
  ``speedup`` and ``latency_timing`` (batch, threads, milliseconds); with ``--latency-batch 1,128`` every
  other batch ``B`` adds ``after.latency@B`` (and its CI/busy keys), ``speedup@B`` and ``latency_timing@B``;
  ``--latency-backend onnxruntime`` times ``model.onnx`` against the original's fp32 ONNX;
  ``accuracy.after_onnx`` (INT8: model.onnx's own ORT val/test top-1), ``onnx`` (the verification),
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
from search.commands._table import format_table
from spaces.policy import Policy, QuantSpec

HELP = "apply a recipe (policy) to a trained model: prune, quantize, distil, fine-tune, export; or --verify it"
DESCRIPTION = ("Apply a compression recipe to a trained model and write the compressed model, "
               "its ONNX export, metrics.json and a summary to --out. With --verify, re-run the search "
               "evaluation a recipe exported by `autocompress search` records and compare it with the recorded "
               "metrics (writes nothing).")
EPILOG = """\
recipes of a search (RUN/recipes/trial-N.yaml) record the checkpoint their search started from (the run's
trained or adapted baseline) and its dataset: --checkpoint and --dataset default to those.

--verify: same seed, proxy fine-tune, val subset and latency settings as the search, result cache bypassed.
  FLOPs, params, size (and BOPs) must be equal, val accuracy within --tolerance points, the latency
  ratio inside the recorded 95% interval widened by 20% on each side. Prints a table.

exit codes: 0 done (--verify: every check holds); 2 bad input (one line on stderr);
  3 model.onnx failed its verification; 4 --verify: the replay differs from the record (named on stderr).
"""

log = logging.getLogger("autocompress.apply")

#: cost metrics compared before/after (``ratios``)
COSTS = ("flops", "params", "size", "bops")

#: val images a float ONNX export is verified on (logits and top-1 agreement); INT8 exports are
#: verified by accuracy on the whole val split (``--eval-limit`` caps it)
VERIFY_SAMPLES = 256

#: exit code of --verify when the replay differs from the recorded metrics
EXIT_DIFFERS = 4


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("apply", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe / policy file (YAML or JSON), e.g. spaces/recipes/resnet20-prune30-kd.yaml")
    p.add_argument("--checkpoint", default=None,
                   help="trained weights of the uncompressed model (a state_dict file, or a directory with model.pt); "
                        "default: the checkpoint a search recipe records")
    p.add_argument("--dataset", default=None,
                   help="dataset name (see `autocompress datasets`); default: the dataset a search recipe records")
    p.add_argument("--data-dir", default=None, help="dataset root (where the dataset needs one)")
    p.add_argument("--normalization", default=None,
                   help="input normalization to use (default: the dataset's; the shared CIFAR weights use imagenet)")
    p.add_argument("--out", default=None, help="output directory (required unless --verify)")
    p.add_argument("--no-finetune", action="store_true", help="skip fine-tuning (prune/quantize/convert only)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, help="override the recipe's fine-tune epochs")
    budget.add_argument("--steps", type=int, default=None, help="override the recipe's fine-tune steps")
    p.add_argument("--device", default="cpu", help="device for fine-tuning: cpu, cuda, cuda:N, mps (default cpu)")
    p.add_argument("--latency-batch", type=batch_list, default=(1,), metavar="B[,B...]",
                   help="batch size(s) for the latency comparison, e.g. 1,128 (default 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the latency comparison")
    p.add_argument("--latency-backend", default=None,
                   choices=("torch", "torchscript", "torchscript-cl", "onnxruntime"),
                   help="time the PyTorch deploy model (torch, default), it and the original traced and frozen "
                        "(torchscript, the form of model.torchscript.pt; torchscript-cl: the same run in "
                        "channels_last, where x86 CPUs run the float original faster), or model.onnx in ONNX Runtime "
                        "against the "
                        "original's fp32 ONNX (onnxruntime)")
    p.add_argument("--onnx-tolerance", type=float, default=None, metavar="PT",
                   help="INT8 model.onnx: allowed |ORT - PyTorch| val top-1 difference in points (default 0.5)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency comparison")
    p.add_argument("--int8-engine", default=None, metavar="ENGINE",
                   help="x86 INT8: the PyTorch quantized engine the weights are packed and timed for: x86 "
                        "(default, PyTorch's), fbgemm or onednn (on x86 CPUs without VNNI: faster at large "
                        "batches, slower at batch 1); a process loading model.torchscript.pt sets it first")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="evaluate on at most this many images per split (default: all)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's fine-tune seed")
    p.add_argument("--verify", action="store_true",
                   help="re-run the recipe's search evaluation and compare with the recorded metrics (exit 4 if "
                        "they differ)")
    p.add_argument("--tolerance", type=float, default=None, metavar="PT",
                   help="--verify: allowed val accuracy difference in points (default 0.5)")
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


def _data_args(args: argparse.Namespace, policy: Policy) -> tuple[str, str | None, str | None]:
    """(dataset, data dir, normalization): the flags, else what a search recipe records."""
    if args.dataset is not None:
        return args.dataset, args.data_dir, args.normalization
    evaluation = policy.provenance.get("evaluation")
    data = evaluation.get("data") if isinstance(evaluation, dict) else None
    if not isinstance(data, dict) or not data.get("dataset"):
        raise CLIError(f"{args.recipe}: the recipe records no dataset (provenance.evaluation.data); pass --dataset")
    return (data["dataset"], args.data_dir or data.get("data_dir"),
            args.normalization or data.get("normalization"))


def _file_logger(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "apply.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler


def _check_engine(engine: str | None) -> None:
    if engine is None:
        return
    from compress.quantize._engine import resolve_engine

    try:
        resolve_engine(engine)
    except ValueError as exc:
        raise CLIError(f"--int8-engine {engine}: {exc}") from None


def _check_args(args: argparse.Namespace) -> None:
    """Every flag that can be checked without work: devices, numbers, folders, flag combinations."""
    from search.checks import check_data_dir, check_device, check_out_dir

    check_device(args.device)
    _check_engine(args.int8_engine)
    if args.threads < 1:
        raise CLIError(f"--threads {args.threads}: must be >= 1")
    check_data_dir(args.data_dir)
    if args.verify:
        changed = [flag for flag, value in (("--out", args.out), ("--no-finetune", args.no_finetune),
                                            ("--epochs", args.epochs), ("--steps", args.steps),
                                            ("--seed", args.seed), ("--dataset", args.dataset),
                                            ("--normalization", args.normalization),
                                            ("--eval-limit", args.eval_limit),
                                            ("--latency-backend", args.latency_backend),
                                            ("--onnx-tolerance", args.onnx_tolerance),
                                            ("--int8-engine", args.int8_engine)) if value not in (None, False)]
        if changed:
            raise CLIError(f"{', '.join(changed)}: not used with --verify, which re-runs the recorded search "
                           "evaluation as it was and writes nothing")
        if args.tolerance is not None and not args.tolerance >= 0:
            raise CLIError(f"--tolerance = {args.tolerance}: must be >= 0 (points of val accuracy)")
        return
    if args.tolerance is not None:
        raise CLIError("--tolerance: only used with --verify (model.onnx's allowance is --onnx-tolerance)")
    if args.onnx_tolerance is not None and not args.onnx_tolerance >= 0:
        raise CLIError(f"--onnx-tolerance = {args.onnx_tolerance}: must be >= 0 (points of val top-1)")
    if args.out is None:
        raise CLIError("--out DIR is required (or --verify to check a search recipe)")
    check_out_dir(args.out)


def run(args: argparse.Namespace) -> int:
    from search.checks import output_dir
    from search.recipes import recorded_checkpoint

    _check_args(args)
    policy = _policy(args)
    if args.verify:
        return _verify(args, policy)
    ckpt = checkpoint_file(args.checkpoint) if args.checkpoint else recorded_checkpoint(policy, args.recipe)
    data_args = _data_args(args, policy)
    with output_dir(args.out, keep=lambda d: (d / "metrics.json").is_file()) as out:
        handler = _file_logger(out)
        try:
            metrics, summary = _run(args, policy, ckpt, data_args, out)
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


def _verify(args: argparse.Namespace, policy: Policy) -> int:
    """``--verify``: replay the recipe's search evaluation, print the table, exit 0 or 4."""
    from search.verify import DEFAULT_TOLERANCE, verify_recipe

    ckpt = checkpoint_file(args.checkpoint) if args.checkpoint else None
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    result = verify_recipe(policy, source=args.recipe, checkpoint=ckpt, device=args.device, tolerance=tolerance,
                           data_dir=args.data_dir, progress=True)
    rows = [(c.metric, _show(c.metric, c.recorded), _show(c.metric, c.replayed), c.allowed, "ok" if c.ok else "DIFFERS")
            for c in result.checks]
    print(format_table(rows, ("metric", "recorded", "replayed", "allowed", "ok")))
    for note in result.notes:
        print(f"note: {note}")
    if result.ok:
        log.info("verify: %s replays its search evaluation (%d checks hold)", args.recipe, len(result.checks))
        return 0
    log.error("verify: %s differs from its search record in %s", args.recipe, ", ".join(result.differs))
    return EXIT_DIFFERS


def _show(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in COSTS:
        return f"{value:.0f}"
    return f"{value:.3f}" if metric.startswith("latency") else f"{value:.2f}"


def _run(args: argparse.Namespace, policy, ckpt: Path, data_args: tuple[str, str | None, str | None],
         out: Path) -> tuple[dict[str, Any], str]:
    from compress.apply import apply
    from compress.artifact import save_compressed
    from compress.data import get_dataset
    from compress.measure import LatencySetup
    from compress.models import CheckpointError, build_model, load_checkpoint, quantizable_layers
    from compress.prune import list_groups
    from search.finalize import torchscript_artifact
    from search.recipes import replay_policy

    t_start = time.perf_counter()
    try:
        model = load_checkpoint(build_model(policy.model), ckpt).eval()
    except CheckpointError as exc:
        raise CheckpointError(
            f"{args.recipe}: model.name = {policy.model.name!r} (num_classes {policy.model.num_classes}) does not "
            f"fit the checkpoint; is the recipe for another model?\n{exc}") from None
    dataset, data_dir, normalization = data_args
    data = get_dataset(dataset, data_dir, normalization=normalization, input_size=policy.model.input_size,
                       seed=policy.finetune.seed)
    if data.num_classes != policy.model.num_classes:
        raise CLIError(f"{args.recipe}: model.num_classes = {policy.model.num_classes}, but dataset "
                       f"{dataset!r} has {data.num_classes} classes")
    policy, notes = replay_policy(policy, {g.name: g.channels for g in list_groups(model, policy.model.input_size)})
    log.info("apply %s to %s (%s) on %s", args.recipe, policy.model.name, ckpt, dataset)

    before = split_accuracy(model, data, args.eval_limit, "original")
    result = apply(policy, model, data=data, finetune=not args.no_finetune, device=args.device, progress=True,
                   engine=args.int8_engine or "x86")
    layers = quantizable_layers(model)
    scored, scored_what = result.scored(layers)
    after = split_accuracy(scored, data, args.eval_limit, scored_what)

    t0 = time.perf_counter()
    save_compressed(out, result.policy, result.model)
    example = next(iter(data.loader("val", args.latency_batch[0], shuffle=False)))[0]
    onnx_report = _export(args, result, data, out / "model.onnx", example[:1])
    ts_report = torchscript_artifact(result.deploy, out / "model.torchscript.pt", example[:1],
                                     data.loader("val", 64, shuffle=False, limit=args.eval_limit),
                                     int8_engine=result.int8_engine)
    export_s = time.perf_counter() - t0

    setup = None if args.no_latency else LatencySetup(backend=args.latency_backend or "torch",
                                                      batch=args.latency_batch, threads=args.threads)  # CPU
    measured = _measure(model, result, policy.model.input_size, layers, setup, example, data, out / "model.onnx")
    metrics: dict[str, Any] = {
        "recipe": str(args.recipe), "checkpoint": str(ckpt), "dataset": dataset,
        "policy_hash": result.policy.hash(), "summary": result.policy.summary(),
        "accuracy": {"before": before, "after": after,
                     "drop_val_top1": _drop(before, after, "val"), "drop_test_top1": _drop(before, after, "test"),
                     "after_measured_on": scored_what, "after_onnx": _onnx_accuracy(onnx_report)},
        **measured,
        "precision": result.precision,
        "int8_engine": result.int8_engine,
        "notes": notes + result.notes,
        "train": _plain(result.train_result),
        "onnx": onnx_report,
        "torchscript": ts_report,
        "timings": {**result.timings, "export": round(export_s, 3),
                    "total": round(time.perf_counter() - t_start, 3)},
    }
    return metrics, _summary(metrics)


def _drop(before: dict, after: dict, split: str) -> float:
    return round(before[split]["top1"] - after[split]["top1"], 3)


def _export(args: argparse.Namespace, result: Any, data: Any, path: Path, example: torch.Tensor) -> dict[str, Any]:
    """Export and verify ``model.onnx``; a failure is flagged in the report (exit code 3), not raised."""
    from compress.apply import calibration_batches
    from compress.export import ACCURACY_TOLERANCE, ExportError, export_compressed, ort_accuracy

    tolerance = ACCURACY_TOLERANCE if args.onnx_tolerance is None else args.onnx_tolerance
    path.unlink(missing_ok=True)  # never time or keep a stale file from an earlier run
    try:
        report: Any = _plain(export_compressed(
            result, path, calib=calibration_batches(data), example=example, tolerance=tolerance,
            verify_loader=data.loader("val", 64, shuffle=False, limit=args.eval_limit),
            verify_batches=VERIFY_SAMPLES // 64))
    except ExportError as exc:  # keep the compressed model and metrics; flag the export loudly
        log.warning("ONNX export/verification failed: %s", exc)
        return {"verified": False, "error": str(exc)}
    report["verified"] = True
    if report.get("ort_accuracy") is not None:  # INT8: the artefact's own test accuracy too
        report["ort_test_accuracy"], report["ort_test_images"] = ort_accuracy(
            path, data.loader("test", 256, shuffle=False, limit=args.eval_limit))
        report["torch_reference"] = "fake-quant simulation (the ranges and weight grids model.onnx was built from)"
    return report


def _onnx_accuracy(onnx_report: dict[str, Any]) -> dict[str, Any] | None:
    """model.onnx's own ONNX Runtime top-1 (INT8 exports), shaped like ``accuracy.after``."""
    if onnx_report.get("ort_test_accuracy") is None:
        return None
    return {"val": {"top1": round(onnx_report["ort_accuracy"], 3), "n": onnx_report["verified_samples"]},
            "test": {"top1": round(onnx_report["ort_test_accuracy"], 3), "n": onnx_report["ort_test_images"]}}


def _measure(original: nn.Module, result: Any, input_size: int, layers: list[str], setup: Any,
             example: torch.Tensor, data: Any, onnx_path: Path) -> dict[str, Any]:
    """``before``/``after`` (the original's and the compressed ``result``'s Measurement, metric names),
    their cost ``ratios``, and the latency timing details when latency was measured (``setup``; backend
    ``onnxruntime`` times the INT8 ``model.onnx`` written at ``onnx_path``, else a fresh ORT-native export)."""
    from compress.apply import calibration_batches
    from compress.measure import LatencyRatio, measure

    calib = calibration_batches(data) if setup is not None and setup.backend == "onnxruntime" else None
    before = measure(original, input_size=input_size, quant=QuantSpec())
    after = measure(result, input_size=input_size, layers=layers, reference=before.to_dict(), latency=setup,
                    original=original, example=example, calib=calib, int8_onnx=onnx_path)
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
    for split, a in (m["accuracy"].get("after_onnx") or {}).items():
        rows.append((f"{split} top1 % onnx", "", f"{a['top1']:.2f}", f"{a['top1'] - acc_b[split]['top1']:+.2f} pt"))
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
    ts = m.get("torchscript") or {}
    lines.append(f"torchscript: {ts['path']} verified on {ts['verified_samples']} images, max |logit difference| "
                 f"{ts['max_abs_diff']:.2g}" if ts.get("path") else f"torchscript: EXPORT FAILED: {ts.get('error')}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings"].items()))
    return "\n".join(lines)
