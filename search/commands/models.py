"""`autocompress models`: the model registry with parameters and FLOPs at the default input size."""

from __future__ import annotations

import argparse
import logging

from tqdm.auto import tqdm

from search.commands._table import add_listing, print_rows, si

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_listing(sub, "models", help="list the registered models with params and FLOPs", func=run,
                    description="List the model registry: input size, classes, parameters and fvcore FLOPs "
                                "(multiply-accumulates) at the default input size and number of classes.")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (it traces every model)")
    return p


def model_rows(flops: bool = True, progress: bool = True) -> list[dict]:
    """One dict per registered model: name, description, input_size, num_classes, params, flops."""
    from compress.measure import count_flops, count_params
    from compress.models import MODELS, default_input_size, default_num_classes, get_model

    rows = []
    for name in tqdm(MODELS.names(), desc="models", unit="model", disable=not progress, leave=False):
        model = get_model(name)
        size = default_input_size(name)
        rows.append({
            "name": name, "description": MODELS.describe(name), "input_size": size,
            "num_classes": default_num_classes(name), "params": count_params(model),
            "flops": count_flops(model, size) if flops else None,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    print_rows(model_rows(flops=not args.no_flops, progress=args.format == "table"), args.format, [
        ("model", lambda r: r["name"]), ("input", lambda r: f"{r['input_size']}x{r['input_size']}"),
        ("classes", lambda r: r["num_classes"]), ("params", lambda r: si(r["params"])),
        ("FLOPs (MACs)", lambda r: si(r["flops"]) if r["flops"] is not None else "-"),
        ("description", lambda r: r["description"])])
    return 0
