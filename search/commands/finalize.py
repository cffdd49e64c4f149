"""`autocompress finalize RUN`: pick a Pareto point, fine-tune it fully, test and export it.

    autocompress finalize runs/quickstart                       # the knee of the Pareto front
    autocompress finalize RUN --pick "max accuracy where latency_ratio <= 0.5"
    autocompress finalize RUN --trial 12 --epochs 20 --no-kd

Writes RUN/final/{metrics.json, recipe.yaml, policy.yaml, model.pt, model.onnx}.
"""

from __future__ import annotations

import argparse
import json

from search.commands._latency import speedup_rows
from search.commands._table import format_table, si
from search.picking import PICK_HELP


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("finalize", help="fine-tune the chosen Pareto point fully, report test accuracy, export",
                       description="Pick one point of a finished search (default: the knee of the Pareto front), "
                                   "fine-tune it with the space's final schedule and distillation from the original, "
                                   "report val and test accuracy, costs and measured speed-up, and export PyTorch "
                                   "weights + recipe and ONNX to RUN/final/.")
    p.add_argument("run", metavar="RUN", help="run directory of `autocompress search`")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pick", default="knee", help=f"which point: {PICK_HELP} (default knee)")
    which.add_argument("--trial", type=int, default=None, metavar="N", help="finalize trial N")
    p.add_argument("--epochs", type=float, default=None, metavar="E",
                   help="fine-tune epochs (default: the space's budget.final schedule)")
    p.add_argument("--no-kd", action="store_true", help="no distillation from the original model")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument("--device", default="cpu", help="training device: cpu, cuda, cuda:N, mps (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-sync", action="store_true",
                   help="do not first read the records of other workers of a shared study from its storage")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from search.checks import check_device
    from search.finalize import finalize

    check_device(args.device)
    if not args.no_sync:
        from search.study_records import sync_records

        sync_records(args.run)
    m = finalize(args.run, args.pick, trial=args.trial, epochs=args.epochs, kd=not args.no_kd,
                 device=args.device, onnx=not args.no_onnx, progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps(m, indent=2, default=str))
        return 0
    rows = [
        ("trial", m["trial"], m["pick"]),
        ("test top-1 %", f"{m['test_accuracy']:.2f}", f"original {m['reference_test_accuracy']:.2f} "
                                                       f"(drop {m['test_accuracy_drop']:+.2f})"),
        ("val top-1 %", f"{m['val_accuracy']:.2f}",
         f"search proxy {m['search_metrics'].get('accuracy', float('nan')):.2f}"),
        ("FLOPs", si(m["flops"]), f"x{m['flops_ratio']:.3f} of the original"),
        ("params", si(m["params"]), ""),
        ("size", si(m["size"], "B"), f"x{m['size_ratio']:.3f} of the original"),
        *speedup_rows(m),  # latency at every measured batch
        ("files", ", ".join(m["files"]), f"{args.run}/final/"),
    ]
    print(format_table(rows, ("", "value", "notes")))
    return 0
