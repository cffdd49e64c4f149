"""x86 INT8 engines A/B: the same INT8 structure packed for two PyTorch quantized engines (``--int8-engine``
of ``autocompress apply``), both traced and frozen (TorchScript), timed against each other interleaved in
one process at batch 1 and 128 (``compress.measure.compare_latency``). Writes ``--out`` JSON and logs a line
per recipe and batch::

    python benchmarks/bench_int8_engines.py --checkpoint runs/headline-r56/adapt/baseline/model.pt \\
        --recipes benchmarks/results/headline-r56-depth/recipes/depth-2-0-int8.yaml \\
        benchmarks/results/headline-r56-depth/recipes/uniform-0-int8.yaml --out runs/engine-ab.json

Each recipe is applied to the checkpoint without fine-tuning (the weights do not change the speed) and
calibrated on the data's ``calib`` split. ``ratio`` < 1: ``--engine`` is faster than ``--reference``.
Speed is all it measures; accuracy under an engine needs ``autocompress apply --int8-engine``.
"""

from __future__ import annotations

import argparse
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

log = logging.getLogger("bench_int8_engines")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(ap, "x86 INT8 policy files to time")
    add_engine_arg(ap, "--engine", "onednn", "engine under test (default onednn)")
    add_engine_arg(ap, "--reference", "x86", "engine it is timed against (default x86)")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    check_recipe_args(ap, args)
    if args.engine == args.reference:
        ap.error(f"--engine {args.engine} and --reference {args.reference}: give two different engines")
    if args.rounds < 2:
        ap.error(f"--rounds {args.rounds}: must be >= 2")
    return args


def time_recipe(policy: Any, original: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``{batch: ratio of --engine over --reference}`` for one policy, both frozen TorchScript."""
    import torch

    from compress.apply import apply
    from compress.measure import compare_latency
    from compress.quantize import use_engine
    from compress.torchscript import freeze_torchscript

    size = policy.model.input_size
    frozen = {}
    for engine in (args.engine, args.reference):
        out = apply(policy, original, data=data, finetune=False, progress=False, bn_recal_batches=0, engine=engine)
        if out.int8_engine is None:
            raise SystemExit(f"{policy.model.name}: the policy has no x86 INT8 layer, so no engine to compare")
        frozen[engine] = freeze_torchscript(out.deploy, torch.randn(1, 3, size, size))
    use_engine(args.reference)  # packed modules keep their engine; this only restores the default
    row: dict[str, Any] = {}
    for batch in args.batches:
        r = compare_latency(frozen[args.engine], frozen[args.reference], torch.randn(batch, 3, size, size),
                            backend="torch", threads=args.threads, rounds=args.rounds)
        row[str(batch)] = {"ratio": r.ratio, "ci": [r.ci_low, r.ci_high], "engine_ms": r.a.median_ms,
                           "reference_ms": r.b.median_ms, "busy": r.busy}
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for path, policy, original, data in load_recipes(args):
        row = time_recipe(policy, original, data, args)
        results.append({"recipe": str(path), **row})
        for batch, r in row.items():
            log.info("%s b%s: %s / %s = %.2f [%.2f, %.2f] (%.2f / %.2f ms)%s", path.stem, batch, args.engine,
                     args.reference, r["ratio"], *r["ci"], r["engine_ms"], r["reference_ms"],
                     " (busy)" if r["busy"] else "")
    write_results(args, "bench_int8_engines.py", argv, engine=args.engine, reference=args.reference,
                  threads=args.threads, rounds=args.rounds, backend="torchscript", results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
