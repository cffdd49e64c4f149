"""What the recipe-timing benchmarks (``bench_channel_rounding.py``, ``bench_int8_engines.py``,
``bench_runtimes.py``) share: their input flags, checked before any work; loading each recipe with the
original and the data; writing the results with the exact command; and the INT8 engine flag, which
``bench_headline.py`` takes too."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA_DIR = Path.home() / ".cache" / "autocompress" / "cifar10-jpeg75"
#: ``compress.quantize.ENGINES``, spelled out so that ``--help`` imports no torch (a test keeps them equal)
INT8_ENGINES = ("x86", "fbgemm", "onednn")


def add_engine_arg(ap: argparse.ArgumentParser, flag: str, default: str, help: str) -> None:
    """A PyTorch quantized engine flag (one of :data:`INT8_ENGINES`)."""
    ap.add_argument(flag, default=default, choices=INT8_ENGINES, help=help)


def add_recipe_args(ap: argparse.ArgumentParser, what: str = "policy files to time") -> None:
    """``--checkpoint``, ``--recipes``, ``--data-dir``, ``--batches``, ``--threads``, ``--out``."""
    ap.add_argument("--checkpoint", type=Path, required=True, help="the original's weights (e.g. the adapted model)")
    ap.add_argument("--recipes", type=Path, nargs="+", required=True, help=what)
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR,
                    help="ImageFolder data the INT8 calibration draws from (default: the CIFAR-10 JPEG copy)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 128])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="JSON results")


def check_recipe_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line ``ap.error`` (exit 2) for a missing file, a data folder without ``train/`` or a
    batch or thread count below 1."""
    bad = [str(p) for p in [args.checkpoint, *args.recipes] if not p.is_file()]
    if bad:
        ap.error(f"not a file: {', '.join(bad)}")
    if not (args.data_dir / "train").is_dir():
        ap.error(f"--data-dir {args.data_dir}: no train/ folder (ImageFolder layout expected)")
    if min(args.batches) < 1 or args.threads < 1:
        ap.error(f"--batches {args.batches} --threads {args.threads}: every value must be >= 1")


def load_recipes(args: argparse.Namespace) -> Iterator[tuple[Path, Any, Any, Any]]:
    """``(path, policy, original, data)`` per recipe: the checkpoint loaded into the recipe's model
    (eval mode) and the ImageFolder data at the recipe's input size. Sets up logging first."""
    from compress.data import get_dataset
    from compress.models import build_model, load_checkpoint
    from search._logging import setup_logging
    from spaces.policy import Policy

    setup_logging()
    for path in args.recipes:
        policy = Policy.load(path)
        original = load_checkpoint(build_model(policy.model), args.checkpoint).eval()
        yield path, policy, original, get_dataset("imagefolder", args.data_dir, input_size=policy.model.input_size)


def write_results(args: argparse.Namespace, script: str, argv: list[str] | None, **fields: Any) -> None:
    """``args.out``: the exact command (``python benchmarks/SCRIPT ARGS``), then ``fields`` (JSON)."""
    command = f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, **fields}, indent=2) + "\n")
