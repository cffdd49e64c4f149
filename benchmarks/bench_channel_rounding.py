"""Channel rounding on x86 INT8: how much faster a pruned policy runs when every kept channel count is
a multiple of ``round_to`` (``prune.round_to``), timed in one process against the original.

For each recipe (``--recipes``, e.g. a headline run's ``results/recipes/*.yaml``) and each ``--round-to``
value, the recipe's structure is rebuilt with that rounding (its kept indices dropped, so the rounding
takes effect), applied to the checkpoint without fine-tuning (weights do not change the speed), and
timed against the original, interleaved, in eager torch and TorchScript (both sides frozen) at batch 1
and 128 (``compress.measure.compare_latency``). FLOPs of each variant are reported beside it, since
rounding up keeps more channels. Writes ``--out`` JSON and prints a table::

    python benchmarks/bench_channel_rounding.py --checkpoint runs/headline-r56/adapt/baseline/model.pt \\
        --recipes benchmarks/results/headline-r56/recipes/uniform-0.2-int8.yaml \\
        benchmarks/results/headline-r56/recipes/uniform-0.4-int8.yaml --out runs/rounding-r56.json

Speed is all it measures: accuracy of a rounded policy needs its own fine-tune (``autocompress apply``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root and benchmarks/ importable
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from _recipe_inputs import (  # noqa: E402
    add_engine_arg,
    add_recipe_args,
    check_recipe_args,
    load_recipes,
    write_results,
)

log = logging.getLogger("bench_channel_rounding")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(ap)
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16], help="multiples to try (default 1 8 16)")
    ap.add_argument("--backends", nargs="+", default=["torch", "torchscript"], choices=["torch", "torchscript"])
    ap.add_argument("--rounds", type=int, default=10)
    add_engine_arg(ap, "--int8-engine", "x86", "PyTorch quantized engine the INT8 weights are packed for (default x86)")
    args = ap.parse_args(argv)
    check_recipe_args(ap, args)
    if any(r < 1 for r in args.round_to):
        ap.error(f"--round-to {args.round_to}: every value must be >= 1")
    return args


def _variant(policy: Any, round_to: int) -> Any:
    return policy.replace(prune=dataclasses.replace(policy.prune, round_to=round_to, kept={}))


def time_variant(policy: Any, original: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """FLOPs ratio and speed-ups (per backend and batch) of ``policy`` applied to ``original``."""
    import torch

    from compress.apply import apply
    from compress.measure import compare_latency, count_flops
    from compress.measure._service import float_structure

    size = policy.model.input_size
    out = apply(policy, original, data=data, finetune=False, progress=False, bn_recal_batches=0,
                engine=args.int8_engine)
    row: dict[str, Any] = {"flops_ratio": count_flops(float_structure(out.model), size) / count_flops(original, size)}
    for backend in args.backends:
        for batch in args.batches:
            r = compare_latency(out.deploy, original, torch.randn(batch, 3, size, size), backend=backend,
                                threads=args.threads, rounds=args.rounds)
            row[f"{backend}@{batch}"] = {"speedup": 1 / r.ratio, "speedup_ci": [1 / r.ci_high, 1 / r.ci_low],
                                         "ms": r.a.median_ms, "original_ms": r.b.median_ms, "busy": r.busy}
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for path, policy, original, data in load_recipes(args):
        for rt in args.round_to:
            row = {"recipe": str(path), "round_to": rt, **time_variant(_variant(policy, rt), original, data, args)}
            results.append(row)
            cells = " ".join(f"{k} {v['speedup']:.2f}x" for k, v in row.items() if isinstance(v, dict))
            log.info("%s round_to=%d: FLOPs x%.3f %s", path.stem, rt, row["flops_ratio"], cells)
    write_results(args, "bench_channel_rounding.py", argv, threads=args.threads, rounds=args.rounds,
                  int8_engine=args.int8_engine, results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
