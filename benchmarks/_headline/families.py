"""The three families of candidates, each fine-tuned the same way (the ``finalize`` code path)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from _headline.context import Context
from _headline.recipes import save_recipe

from autocompress.errors import UserError
from autocompress.pareto import non_dominated
from autocompress.rundir import AuditRecord, load_run, pareto_records, read_audit_records
from search.audit import select_trials
from search.finalize import final_policy, finetune_and_measure
from search.recipes import recipe_policy
from spaces.policy import Policy
from spaces.space import policy_from_params, uniform_params

log = logging.getLogger("bench_headline")


def _cli(*args: str) -> None:
    from bench_headline import cli

    cli(*args)


def with_space_kd(policy: Policy, ctx: Context) -> Policy:
    """``policy`` distilled exactly as the space's candidates are (same alpha, temperature, teacher)."""
    d = ctx.space.distill
    fixed = {k: getattr(d, k) for k in ("alpha", "temperature", "feature_weight") if isinstance(getattr(d, k), float)}
    distill = dataclasses.replace(policy.distill, teacher=d.teacher, teacher_checkpoint=d.teacher_checkpoint,
                                  teacher_bn_recal=d.teacher_bn_recal, **fixed)
    return policy.replace(distill=distill)


def finalize_point(ctx: Context, label: str, family: str, policy: Policy, epochs: float,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``policy`` for ``epochs`` as ``finalize`` does and store the point (resumes)."""
    done = ctx.point(label)
    if done is not None and done.get("epochs") == epochs:
        return done
    policy = final_policy(policy, ctx.space, epochs=epochs)
    log.info("%s: fine-tuning %g epochs", label, epochs)
    out, metrics, finetune_s = finetune_and_measure(ctx.baseline, policy, latency=False)  # timed later
    metrics["finetune_seconds"] = round(finetune_s, 2)
    recipe = save_recipe(ctx, label, out.policy, metrics, epochs)
    point = {"family": family, "epochs": epochs, "precision": _precision(out.policy), "recipe": str(recipe),
             "final": metrics, **(extra or {})}
    ctx.save_point(label, point)
    return point


def _precision(policy: Policy) -> str:
    return "int8" if policy.quant.active else "float"


# ----- uniform ---------------------------------------------------------------------------------
def uniform_policy(ctx: Context, ratio: float, precision: str) -> Policy:
    """The same ratio on every prunable group (block and stage), float or every layer INT8."""
    dims = ctx.baseline.dims
    params = uniform_params(dims, ratio, bits=8 if precision == "int8" else 32)
    return with_space_kd(policy_from_params(ctx.space, dims, params), ctx)


def uniform(ctx: Context, args: argparse.Namespace) -> None:
    for precision in args.uniform_precisions:
        for ratio in args.uniform_ratios:
            label = f"uniform-{ratio:g}-{precision}"
            finalize_point(ctx, label, "uniform", uniform_policy(ctx, ratio, precision), args.budget_epochs,
                           {"ratio": ratio})


# ----- depth ---------------------------------------------------------------------------------
def depth_policy(ctx: Context, depth: int, ratio: float, precision: str) -> Policy:
    """``depth`` blocks dropped from the end of every stage, ``ratio`` on every remaining channel group,
    float or every remaining layer INT8."""
    dims = ctx.baseline.dims
    params = uniform_params(dims, ratio, bits=8 if precision == "int8" else 32, depth=depth)
    return with_space_kd(policy_from_params(ctx.space, dims, params), ctx)


def check_depths(ctx: Context, args: argparse.Namespace) -> None:
    """Raise a one-line :class:`UserError` (before any long work) for ``--depths`` the space cannot drop."""
    allowed = ctx.space.prune.depth
    too_deep = [k for k in args.depths if not 0 < k <= allowed]
    if allowed > 0 and too_deep:
        raise UserError(f"--depths {' '.join(map(str, too_deep))}: allowed 1..{allowed} (prune.depth of "
                        f"{ctx.space_file})")


def depth(ctx: Context, args: argparse.Namespace) -> None:
    if ctx.space.prune.depth <= 0:
        log.info("depth family skipped: the space does not search depth (prune.depth = 0)")
        return
    for precision in args.uniform_precisions:
        for k in args.depths:
            for ratio in args.depth_ratios:
                label = f"depth-{k}-{ratio:g}-{precision}"
                finalize_point(ctx, label, "depth", depth_policy(ctx, k, ratio, precision), args.budget_epochs,
                               {"depth": k, "ratio": ratio})


# ----- peer -----------------------------------------------------------------------------------
# ----- seeds ---------------------------------------------------------------------------------
def seed_policies(ctx: Context, precisions: list[str], device: str) -> list[tuple[str, Policy]]:
    """The space's sensitivity seeds as the search enqueues them (allocated from the adapted model's
    map at ``search.seeds.targets``; blocks dropped too in a depth space), once per precision."""
    from search.objective import Objective
    from search.sensitivity import objective_map, objective_seeds
    from spaces.space import policy_from_params, seed_variants

    settings = ctx.space.search.seeds
    if settings is None:
        raise UserError(f"--families seeds: the space {ctx.space.name} has no search.seeds to allocate")
    obj = Objective(ctx.space, ctx.run_dir, device=device)
    seeds, _ = objective_seeds(obj, objective_map(obj), settings.targets, metric=settings.metric)
    out = []
    for label, params in seed_variants(obj.dims, seeds, precisions):
        name = label if label.endswith("-int8") else f"{label}-float"
        out.append((name, policy_from_params(ctx.space, obj.dims, params)))
    return out


def seeds(ctx: Context, args: argparse.Namespace) -> None:
    """Each sensitivity seed x ``--uniform-precisions``, finalized with the same budget: what the
    allocation gives on its own, before any trial of the search."""
    for label, policy in seed_policies(ctx, args.uniform_precisions, args.device):
        finalize_point(ctx, label, "seeds", policy, args.budget_epochs,
                       {"drop": list(policy.prune.drop), "target": float(label.split("-")[2])})


def check_peer() -> None:
    """Raise the peer's one-line install hint before any long work when ModelOpt is missing."""
    from peer_fastnas import require_modelopt

    require_modelopt()


def peer(ctx: Context, args: argparse.Namespace) -> None:
    from peer_fastnas import FastNASSettings, int8_variant, run_points

    b = ctx.baseline
    summary = ctx.out / "peer" / "fastnas.json"
    done = {round(r["flops_fraction"], 4): r for r in _rows(summary)}
    todo = [f for f in args.peer_flops if round(f, 4) not in done]
    if todo:
        budget = ctx.space.budget
        settings = FastNASSettings(val_limit=budget.val_limit, eval_batch_size=budget.eval_batch_size)
        rows = run_points(b.model, b.data, b.spec, todo, ctx.out / "peer", settings)
        done.update({round(r["flops_fraction"], 4): r for r in rows})
        _write_rows(summary, list(done.values()))
    for fraction in args.peer_flops:
        row = done[round(fraction, 4)]
        policy = with_space_kd(Policy.load(row["recipe"]), ctx)
        extra = {"flops_fraction": fraction, "fastnas_seconds": row["seconds"]}
        finalize_point(ctx, f"fastnas-{fraction:g}-float", "fastnas", policy, args.budget_epochs, extra)
        finalize_point(ctx, f"fastnas-{fraction:g}-int8", "fastnas", int8_variant(policy), args.budget_epochs, extra)


def _rows(path: Path) -> list[dict[str, Any]]:
    import json

    return json.loads(path.read_text())["points"] if path.is_file() else []


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    from autocompress.rundir import atomic_write_json

    atomic_write_json(path, {"points": rows})


# ----- searched -------------------------------------------------------------------------------
def searched(ctx: Context, args: argparse.Namespace) -> None:
    """Search, audit, then store the finalized front (audited points reused, others fine-tuned)."""
    run = str(ctx.run_dir)
    _cli("search", str(ctx.space_file), "--out", run, "--trials", str(args.trials))
    loaded = load_run(ctx.run_dir)
    front = within_drop(whole_front(loaded), loaded, args.front_max_drop)
    chosen = spread_costs(front, args.max_searched, [m for m, _ in loaded.objectives if m != "accuracy"])
    chosen += [r for r in near_fractions(front, loaded, args.peer_flops) if r not in chosen]  # matched FLOPs (b)
    audit_set = sorted({r.trial for r in chosen} | set(_sampled(loaded, args.audit_sample)))
    _cli("audit", run, "--epochs", f"{args.budget_epochs:g}", "--trials", ",".join(map(str, audit_set)))
    audited = {r.trial: r for r in read_audit_records(ctx.run_dir)}
    for rec in chosen:
        label = f"searched-t{rec.trial}"
        policy = recipe_policy(loaded, rec.trial)
        row = audited.get(rec.trial)
        if row is not None and ctx.point(label) is None:
            _point_from_audit(ctx, label, policy, row, args.budget_epochs)
        finalize_point(ctx, label, "searched", policy, args.budget_epochs,
                       {"trial": rec.trial, "proxy": dict(rec.metrics)})


def whole_front(run: Any) -> list[Any]:
    """The searched trials (sensitivity seeds included; the original and the uniform baselines are the
    uniform family's business) that no other dominates, over the whole cost range: the space's
    constraints (a filter for the user's pick, on proxy accuracy, which overstates the final drop) are
    not applied. One trial per policy (cached repeats, of a baseline too, dropped), sorted by trial number."""
    names = [m for m, _ in run.objectives]
    recs, seen = [], set()
    for r in sorted(run.records, key=lambda r: r.trial):
        if (r.baseline or "").startswith(("original", "uniform")):
            seen.add(r.policy_hash)  # a searched trial that repeats a baseline's policy is that baseline
            continue
        if r.status == "complete" and r.policy_hash not in seen and all(
                isinstance(r.metrics.get(m), (int, float)) for m in names):
            seen.add(r.policy_hash)
            recs.append(r)
    if not recs:
        return []
    mask = non_dominated([[float(r.metrics[m]) for m in names] for r in recs], [d for _, d in run.objectives])
    return [r for r, keep in zip(recs, mask) if keep]


def within_drop(records: list[Any], run: Any, max_drop: float) -> list[Any]:
    """The records whose proxy accuracy is at most ``max_drop`` points below the original's proxy
    accuracy (the headline compares points within a few points of the original; a front point that
    lost 50 points is not worth a final fine-tune)."""
    ref = run.info.reference.get("accuracy")
    if ref is None:
        return records
    return [r for r in records if float(r.metrics["accuracy"]) >= float(ref) - max_drop]


def near_fractions(records: list[Any], run: Any, fractions: list[float]) -> list[Any]:
    """For each FLOPs fraction of the original (the peer's points), the record nearest to it: headline (b)
    compares at matched FLOPs, so the searched family has a finalized point there, not only an
    interpolation between far-apart ones."""
    ref = float(run.info.reference.get("flops") or 0)
    if not records or ref <= 0:
        return []
    out = []
    for f in fractions:
        best = min(records, key=lambda r: (abs(float(r.metrics["flops"]) / ref - f), r.trial))
        if best not in out:
            out.append(best)
    return out


def _sampled(run: Any, k: int) -> list[int]:
    """The audit's stratified sample of ``k`` feasible non-Pareto trials (its default selection minus
    the front): the finalized points plus these give the proxy-fidelity figures."""
    front = {r.trial for r in pareto_records(run)}
    return [t for t in select_trials(run, sample=k) if t not in front]


def spread(records: list[Any], n: int, key: str) -> list[Any]:
    """At most ``n`` records evenly spread along ``key`` (all when there are no more than ``n``)."""
    ordered = sorted(records, key=lambda r: (float(r.metrics.get(key, np.inf)), r.trial))
    if len(ordered) <= n:
        return ordered
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, n)})
    return [ordered[i] for i in picks]


def spread_costs(records: list[Any], n: int, keys: list[str]) -> list[Any]:
    """The union of :func:`spread` along each cost in ``keys`` (FLOPs and the latency at each batch),
    by trial: a front spread along FLOPs alone holds only float points when the INT8 ones sit in its
    middle, and headline (a) compares at matched measured speed-up."""
    picked = {r.trial: r for key in keys for r in spread(records, n, key)}
    return [picked[t] for t in sorted(picked)]


def _point_from_audit(ctx: Context, label: str, policy: Policy, record: AuditRecord, epochs: float) -> None:
    """A searched point the audit already fine-tuned with this budget: stored without training again."""
    if record.epochs is None or float(record.epochs) != float(epochs):
        return
    final = dict(record.metrics)  # what finetune_and_measure measured
    recipe = save_recipe(ctx, label, policy, final, epochs)
    ctx.save_point(label, {"family": "searched", "epochs": epochs, "precision": _precision(policy),
                           "recipe": str(recipe), "final": final, "trial": record.trial,
                           "proxy": dict(record.search_metrics), "from_audit": True})


__all__ = ["check_peer", "finalize_point", "peer", "searched", "spread", "spread_costs", "uniform", "uniform_policy",
           "near_fractions", "whole_front", "with_space_kd", "within_drop"]
