"""The recipe of every finalized point: the policy as it was fine-tuned (the final schedule, KD, the
kept channels) with the provenance ``autocompress apply RECIPE --verify`` replays.

``provenance.evaluation`` describes the benchmark's final fine-tune the way a search recipe describes
its proxy (:func:`search.recipes.evaluation_provenance`): the adapted checkpoint every candidate
started from, the fine-tune seed and schedule, BN recalibration, the data section and the whole val
split (``val_limit`` null), no latency. ``provenance.metrics`` holds the final val accuracy and the
costs, which ``--verify`` compares (accuracy within its tolerance, costs exactly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _headline.context import Context

from search.finalize import final_policy
from spaces._schema import to_dict
from spaces.policy import Policy

#: final metrics that ``--verify`` compares, under the names a search record uses
COMPARED = {"accuracy": "val_accuracy", "flops": "flops", "params": "params", "size": "size", "bops": "bops"}


def evaluation(ctx: Context, policy: Policy) -> dict[str, Any]:
    """``provenance.evaluation`` of a finalized point: its final fine-tune, from the adapted model."""
    space = ctx.space
    data = to_dict(space.data)
    if space.data.data_dir:
        data["data_dir"] = str(Path(space.resolve_path(space.data.data_dir)).expanduser().resolve())
    return {"start": "checkpoint", "checkpoint": str(Path(ctx.adapted).resolve()), "weights": None,
            "seed": policy.finetune.seed, "finetune": to_dict(policy.finetune), "level": None,
            "bn_recal_batches": space.budget.bn_recal_batches, "val_limit": None,
            "eval_batch_size": space.budget.eval_batch_size, "data": data, "latency": None}


def save_recipe(ctx: Context, label: str, policy: Policy, final: dict[str, Any], epochs: float) -> Path:
    """Write ``points/recipes/<label>.yaml``: ``policy`` as fine-tuned (a search recipe is first given
    the final schedule and KD, as the audit and ``finalize`` train it), with replayable provenance.
    The search's own provenance, if any, is kept under ``search``."""
    prov = dict(policy.provenance)
    search = prov.pop("search", None)
    if prov.get("source") == "autocompress search":
        policy = final_policy(policy, ctx.space, epochs=epochs)
        search, prov = prov, {}
    prov.pop("evaluation", None)
    prov.update({"source": "bench_headline", "benchmark_point": label, "epochs": epochs,
                 "space": ctx.space.name, "checkpoint": str(Path(ctx.adapted).resolve()),
                 "metrics": {k: final[v] for k, v in COMPARED.items() if final.get(v) is not None},
                 "reference": {"accuracy": final.get("reference_val_accuracy"),
                               "test_accuracy": final.get("reference_test_accuracy")},
                 "evaluation": evaluation(ctx, policy)})
    if search is not None:
        prov["search"] = search
    path = ctx.points_dir / "recipes" / f"{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    policy.replace(provenance=prov).save(path)
    return path


def refresh(ctx: Context, epochs: float) -> int:
    """Give every stored point's recipe the replayable provenance (points finalized before it existed,
    or stored from the audit with the search's recipe). Returns how many were rewritten."""
    n = 0
    for point in ctx.points(epochs):
        policy = Policy.load(point["recipe"])
        if policy.provenance.get("source") == "bench_headline" and "evaluation" in policy.provenance:
            continue
        path = save_recipe(ctx, point["label"], policy, point["final"], float(point["epochs"]))
        if str(path) != point["recipe"]:
            label = point.pop("label")
            ctx.save_point(label, {**point, "recipe": str(path)})
        n += 1
    return n


__all__ = ["COMPARED", "evaluation", "refresh", "save_recipe"]
