"""`autocompress evaluate`: accuracy, FLOPs, params, size and latency of one model.

    autocompress evaluate --model resnet20 --checkpoint ../shared/weights/cifar10-resnet/resnet20-12fca82f.th \\
        --dataset imagefolder --data-dir ~/.cache/autocompress/cifar10-jpeg75

``--recipe DIR`` evaluates a compressed model saved by ``autocompress apply`` (policy + weights,
read with ``compress.artifact.load_compressed``); its bit-widths then count in size and BOPs.

``--format json`` prints ``accuracy`` (``top1``, ``top5``, ``n`` of the split), the metrics of
``compress.measure.measure`` by name (``flops``, ``params``, ``size``, ``bops``) and, unless
``--no-latency``, ``latency_stats`` (absolute timings of this model alone: there is no original
to take a ratio to); with ``--latency-batch 1,128`` also ``latency_stats@128`` for each other batch.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from search.cli import CLIError
from search.commands._latency import batch_list, stats_outputs
from search.commands._table import format_table, si

log = logging.getLogger("autocompress.evaluate")

HELP = "accuracy, FLOPs, params, size and latency of a model"
DESCRIPTION = ("Evaluate a model (registry name + checkpoint, or a compressed model directory): top-1/top-5 "
               "accuracy on a dataset split, fvcore FLOPs (MACs), parameters, weight size, BOPs and latency.")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help=HELP, description=DESCRIPTION)
    p.add_argument("--model", help="registry name (see `autocompress models`); optional with --recipe")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="state_dict file (plain, {'state_dict'|'model': ...}, module.)")
    src.add_argument("--weights", help="torchvision weights name for ImageNet ResNets, e.g. IMAGENET1K_V1")
    p.add_argument("--recipe", type=Path,
                   help="compressed model directory written by `autocompress apply` (policy.yaml + model.pt)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the dataset's classes)")
    p.add_argument("--shortcut", choices=("A", "B"), help="CIFAR ResNets: shortcut type (default A)")
    p.add_argument("--small-input", action="store_true", help="ImageNet ResNets: 3x3 stride-1 stem for 32x32 input")
    p.add_argument("--dataset", default="digits", help="dataset name (see `autocompress datasets`; default digits)")
    p.add_argument("--data-dir", type=Path, help="dataset root (imagefolder: folder with train/ and test/)")
    p.add_argument("--normalization", help="input normalization (default: the dataset's default)")
    p.add_argument("--input-size", type=int, help="resize images to this size (default: native)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "calib"),
                   help="split to score (default test)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--limit", type=int, help="score only this many images (seeded subset)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                   help="measure latency (default on)")
    p.add_argument("--latency-batch", type=batch_list, default=(1,), metavar="B[,B...]",
                   help="batch size(s) for latency, e.g. 1,128 (default 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for latency (default 2)")
    p.add_argument("--latency-backend", choices=("torch", "torchscript", "torchscript-cl", "onnxruntime"),
                   default="torch",
                   help="latency backend (default torch; torchscript: traced and frozen, CPU; torchscript-cl: the "
                        "same in channels_last layout)")
    p.add_argument("--latency-time", type=float, default=2.0, help="seconds of timed runs (default 2)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)
    return p


def _load_model(args: argparse.Namespace, num_classes: int):
    """(model, policy or None, float structure for FLOP counting)."""
    from compress.models import MODELS, get_model, load_checkpoint, load_pretrained

    if args.recipe is not None:
        if args.checkpoint is not None or args.weights is not None:
            raise CLIError("--recipe DIR already holds the weights; drop --checkpoint/--weights")
        try:
            from compress.artifact import load_compressed
        except ImportError:
            raise CLIError("--recipe needs compress.artifact, which this installation lacks") from None
        policy, model = load_compressed(args.recipe)
        if args.model is not None and args.model != policy.model.name:
            raise CLIError(f"--model {args.model!r} but {args.recipe} holds a {policy.model.name!r}")
        if policy.model.num_classes != num_classes:
            raise CLIError(f"{args.recipe}: model.num_classes = {policy.model.num_classes}, but dataset "
                           f"{args.dataset!r} has {num_classes} classes")
        return model, policy
    if args.model is None:
        raise CLIError(f"give --model NAME (one of: {', '.join(MODELS.names())}) or --recipe DIR")
    kw: dict[str, Any] = {}
    if args.shortcut:
        kw["shortcut"] = args.shortcut
    if args.small_input:
        kw["small_input"] = True
    try:
        model = get_model(args.model, num_classes=num_classes, **kw)
    except ValueError as exc:
        raise CLIError(f"--model {args.model}: {exc}") from None
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint)
    elif args.weights is not None:
        load_pretrained(model, args.model, args.weights)
    else:
        log.warning("no --checkpoint or --weights: evaluating randomly initialised %s", args.model)
    return model, None


def run(args: argparse.Namespace) -> int:
    from compress.data import get_dataset
    from compress.measure import LatencySetup, evaluate, measure
    from search.checks import check_data_dir, check_device

    check_device(args.device)
    check_data_dir(args.data_dir)
    for name in ("batch_size", "threads"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} = {getattr(args, name)}: must be >= 1")
    data = get_dataset(args.dataset, args.data_dir, normalization=args.normalization, input_size=args.input_size)
    model, policy = _load_model(args, args.num_classes or data.num_classes)
    input_size = data.input_size
    result: dict[str, Any] = {
        "model": policy.model.name if policy is not None else args.model,
        "source": str(args.recipe or args.checkpoint or (f"torchvision:{args.weights}" if args.weights else "random")),
        "dataset": args.dataset, "split": args.split, "input_size": input_size,
    }
    loader = data.loader(args.split, args.batch_size, shuffle=False, limit=args.limit)
    result["accuracy"] = evaluate(model, loader, device=args.device, progress=args.format == "table")
    setup = None
    if args.latency:
        device = "cpu" if args.latency_backend in ("onnxruntime", "torchscript", "torchscript-cl") else args.device
        setup = LatencySetup(backend=args.latency_backend, device=device, batch=args.latency_batch,
                             threads=args.threads, min_time_s=args.latency_time)
    measured = measure(model, input_size=input_size, quant=policy.quant if policy is not None else None,
                       latency=setup)
    result.update(measured.to_dict())
    if measured.timing is not None:
        result.update(stats_outputs(measured))  # latency_stats (and latency_stats@B for the other batches)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(_table(result))
    return 0


def _table(r: dict[str, Any]) -> str:
    acc = r["accuracy"]
    rows = [
        ("model", f"{r['model']} ({r['source']})"),
        ("data", f"{r['dataset']} {r['split']} ({acc['n']} images, {r['input_size']}x{r['input_size']})"),
        ("top-1", f"{acc['top1']:.2f} %"),
    ]
    if "top5" in acc:
        rows.append(("top-5", f"{acc['top5']:.2f} %"))
    rows += [("FLOPs (MACs)", si(r["flops"])), ("params", si(r["params"])),
             ("size", f"{r['size'] / 2**20:.3f} MiB"), ("BOPs", si(r["bops"]))]
    for key in [k for k in r if k.split("@")[0] == "latency_stats"]:
        lat = r[key]
        busy = f"BUSY: {lat['busy_reason']}" if lat["busy"] else "no"
        rows += [
            (f"latency b{lat['batch']}", f"median {lat['median_ms']:.3f} ms, IQR {lat['iqr_ms']:.3f} ms, "
                                         f"{lat['runs']} runs ({lat['threads']} threads, {lat['backend']} on "
                                         f"{lat['device']})"),
            ("machine busy", busy),
        ]
    return format_table(rows, ("metric", "value"))
