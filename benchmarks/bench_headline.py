"""The headline benchmark: searched policies vs uniform pruning (+ INT8) vs a peer pruner, after the
same final fine-tune, timed the same way.

Every candidate starts from the same shared checkpoint, adapted once to the JPEG data (the space's
``model.adapt``; cached in ``OUT/adapt``); every candidate gets the same final fine-tune (``E``
epochs of the space's ``budget.final`` schedule, KD from the same teacher: the adapted model) through
the one code path ``autocompress finalize`` and ``audit`` use. Four families:

1. **searched**: ``autocompress search`` (objectives accuracy, FLOPs, latency at b1 and b128 by
   default; ``--set`` to change them; its sensitivity seeds are allocated at the space's FLOPs
   targets and at each ``--peer-flops`` fraction, the targets FastNAS is given), then ``autocompress
   audit`` of up to ``--max-searched`` points spread along each cost objective (FLOPs and the
   latency at each batch; every finalized point is timed again later, together) from the front of
   the searched trials (seeds included, baselines not; the space's proxy-drop constraint is not
   applied, the benchmark compares the whole cost range, but points more than ``--front-max-drop``
   proxy points below the original are left out), plus the front point nearest each ``--peer-flops``
   fraction (headline (b) compares at matched FLOPs), plus a stratified sample of ``--audit-sample``
   other feasible trials (each fine-tuned ``E`` epochs); the audited front points are the finalized
   ones;
2. **uniform**: the same ratio on every prunable channel group (block and stage groups) for each
   ``--uniform-ratios`` x ``--uniform-precisions`` (float, int8);
3. **depth**: the same number of residual blocks dropped from the end of every stage (``prune.drop``;
   never a stage's first block), for each ``--depths`` x ``--depth-ratios`` (the uniform channel
   ratio on top, default none) x ``--uniform-precisions``; only for spaces that search depth
   (``prune.depth`` > 0, e.g. ``resnet56-cifar10``), skipped otherwise;
4. **peer**: NVIDIA ModelOpt FastNAS (``benchmarks/peer_fastnas.py``; ``pip install -e '.[bench]'``)
   at ``--peer-flops``, each also with INT8 through our converter.

Opt-in (``--families ... seeds``): **seeds**, the space's sensitivity seeds (allocated from the adapted
model's map at ``search.seeds.targets`` and each ``--peer-flops``, blocks dropped too in a depth space)
x ``--uniform-precisions``, each finalized with the same budget: what the allocation gives before any
trial of the search.

Then every point is timed in one process, interleaved against the original (torch CPU, ``--threads``,
batch 1 and 128; ONNX Runtime too for INT8 points), and the table, ``headline.json`` and
``headline.png`` are written. Each phase stores its results under ``OUT`` as it goes, so a rerun
resumes; partial results are usable.

    python benchmarks/bench_headline.py --model resnet20 --budget-epochs 1 --trials 40 --out runs/headline-r20
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root and benchmarks/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _recipe_inputs import add_engine_arg  # noqa: E402

log = logging.getLogger("bench_headline")

SPACES = {"resnet20": "resnet20-cifar10", "resnet56": "resnet56-cifar10"}
UNIFORM_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6)
PEER_FLOPS = (0.5, 0.65)
DEPTHS = (2, 4)
BATCHES = (1, 128)
SPEEDUP_RANGE = (1.5, 4.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SPACES), default="resnet20")
    ap.add_argument("--budget-epochs", type=float, default=1.0, help="final fine-tune epochs E for every point")
    ap.add_argument("--trials", type=int, default=40, help="search trials (default 40)")
    ap.add_argument("--out", type=Path, required=True, help="output directory (a rerun resumes)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="override a field of the search space (repeatable)")
    ap.add_argument("--families", nargs="+", default=["searched", "uniform", "depth", "peer"],
                    choices=["searched", "seeds", "uniform", "depth", "peer"],
                    help="which families to run (default all but seeds)")
    ap.add_argument("--uniform-ratios", type=float, nargs="+", default=list(UNIFORM_RATIOS))
    ap.add_argument("--uniform-precisions", nargs="+", default=["float", "int8"], choices=["float", "int8"])
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS),
                    help="depth family: blocks dropped per stage (at most the space's prune.depth)")
    ap.add_argument("--depth-ratios", type=float, nargs="+", default=[0.0],
                    help="depth family: uniform channel ratio applied on top (default 0)")
    ap.add_argument("--peer-flops", type=float, nargs="+", default=list(PEER_FLOPS))
    ap.add_argument("--audit-sample", type=int, default=6, help="non-Pareto trials the audit adds (default 6)")
    ap.add_argument("--front-max-drop", type=float, default=10.0,
                    help="searched front points more than this many proxy points below the original are not "
                         "finalized (default 10)")
    ap.add_argument("--max-searched", type=int, default=6, help="searched points finalized per cost objective "
                    "when the front is larger (spread along FLOPs and each latency; default 6)")
    ap.add_argument("--threads", type=int, default=2, help="threads for timing (default 2)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds per point and batch")
    ap.add_argument("--no-latency", action="store_true", help="skip the timing phase")
    ap.add_argument("--torchscript-cl", action="store_true",
                    help="also time TorchScript with both sides in channels_last (latency backend torchscript-cl: the "
                         "float original's faster form on x86 CPUs); points timed without it are re-timed")
    add_engine_arg(ap, "--int8-engine", "x86", "PyTorch quantized engine INT8 points are timed with (default x86; "
                   "onednn runs large batches faster on x86 CPUs without VNNI); points timed with another are re-timed")
    ap.add_argument("--device", default="cpu", help="fine-tuning device (timing is always on the CPU)")
    return ap.parse_args(argv)


def cli(*args: str) -> None:
    """Run ``autocompress ARGS`` (this checkout's) as a user would; raise if it fails."""
    cmd = [sys.executable, "-m", "search.cli", *args]
    log.info("$ autocompress %s", " ".join(args))
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1])


def write_json(path: Path, data: Any) -> None:
    from autocompress.rundir import atomic_write_json

    atomic_write_json(path, data)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # first: --help needs neither torch nor the peer
    from _headline import families, recipes, report, timing
    from _headline.context import prepare

    from autocompress.errors import UserError
    from search._logging import setup_logging

    setup_logging()
    t0 = time.perf_counter()
    try:
        if "peer" in args.families:
            families.check_peer()  # before any long work: say how to install the peer
        ctx = prepare(args)
        if "depth" in args.families:
            families.check_depths(ctx, args)
    except UserError as exc:
        print(f"bench_headline: {exc}", file=sys.stderr)
        return 2
    if "searched" in args.families:
        families.searched(ctx, args)
    if "seeds" in args.families:
        families.seeds(ctx, args)
    if "uniform" in args.families:
        families.uniform(ctx, args)
    if "depth" in args.families:
        families.depth(ctx, args)
    if "peer" in args.families:
        families.peer(ctx, args)
    recipes.refresh(ctx, args.budget_epochs)  # every finalized point's recipe replays with `apply --verify`
    if not args.no_latency:
        timing.time_points(ctx, args)
    result = report.write(ctx, args, wall_s=time.perf_counter() - t0, argv=sys.argv[1:] if argv is None else argv)
    print(report.table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
