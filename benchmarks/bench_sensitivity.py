"""Sensitivity map: its cost against the search budget, and the seeds it allocates.

On a built-in space (default ``resnet20-cifar10``: the shared ResNet-20 adapted to the CIFAR-10
JPEG copy), in one process and interleaved so both see the same machine load:

* the wall time of proxy trials (``Objective.evaluate``: prune -> BN recal -> QAT -> 100-step
  fine-tune with KD -> val accuracy -> costs -> latency), a uniform baseline and random samples;
* the wall time of the sensitivity map (``search.sensitivity.objective_map``, no shared cache),
  as a fraction of the default search budget (``search.trials`` x the mean trial time);
* the map (groups x ratios; stages x blocks dropped when the space searches depth) and the seeds
  allocated at FLOPs 0.3 / 0.5 / 0.7: blocks dropped, per-stage ratios, parameters kept, and the
  uniform ratio with the same FLOPs for comparison.

Not a CI test (tens of minutes on 2 busy cores)::

    python benchmarks/bench_sensitivity.py --out runs/bench-sensitivity \
        [--checkpoint ../shared/weights/cifar10-resnet/resnet20-12fca82f.th] [--no-adapt] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from compress.allocate import CostModel
from search._logging import setup_logging
from search.objective import Objective
from search.sensitivity import objective_map, objective_seeds
from spaces.space import (
    baseline_params,
    load_space,
    params_for_ratios,
    policy_from_params,
    prune_groups,
    suggest_policy,
)

log = logging.getLogger("bench_sensitivity")


def _trial_time(obj: Objective, policy, seed: int) -> dict:
    """Wall time of one proxy trial, and its phases (``latency`` includes waiting for the
    machine-wide latency lock, so ``compute_s`` leaves it out)."""
    t0 = time.perf_counter()
    metrics = obj.evaluate(policy, seed=seed)
    wall = metrics.times["total"] if metrics.cached else time.perf_counter() - t0  # a rerun reports the first
    log.info("trial %s: %.1f s (%s), accuracy %.2f, flops %.3f", policy.summary(), wall, metrics.times,
             metrics["accuracy"], metrics["flops_ratio"])
    return {"policy": policy.summary(), "wall_s": round(wall, 1), "times": metrics.times,
            "compute_s": round(wall - metrics.times.get("latency", 0.0), 1), "accuracy": metrics["accuracy"],
            "flops_ratio": metrics["flops_ratio"]}


def _random_policies(obj: Objective, n: int):
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [suggest_policy(obj.space, obj.dims, study.ask()) for _ in range(n)]


def _stage_summary(ratios: dict[str, float], groups: list[str]) -> dict[str, dict[str, float]]:
    """Per stage: the stage group's ratio and the mean ratio of its block groups."""
    out = {}
    for s in sorted(g for g in groups if "." not in g):
        blocks = [ratios.get(g, 0.0) for g in groups if g.startswith(s + ".")]
        out[s] = {"stage": ratios.get(s, 0.0), "blocks_mean": round(sum(blocks) / len(blocks), 3) if blocks else 0.0}
    return out


def _uniform_at(flops: CostModel, groups: list[str], target: float) -> float:
    """The largest-FLOPs uniform ratio of ``groups`` (0.01 steps) within ``target``."""
    return next(r / 100 for r in range(0, 96) if flops.fraction({g: r / 100 for g in groups}) <= target)


def _seed_rows(obj: Objective, smap, targets) -> list[dict]:
    flops = CostModel.from_model(obj.model, obj.input_size, round_to=obj.space.prune.round_to)
    params = CostModel.from_model(obj.model, obj.input_size, metric="params", round_to=obj.space.prune.round_to)
    seeds, allocations = objective_seeds(obj, smap, targets)
    rows = []
    for a in allocations:
        fit = params_for_ratios(obj.space, obj.dims, a.ratios, drop=a.drop)
        free = prune_groups(obj.dims)[0]
        u = _uniform_at(flops, free, a.target)
        uniform = {g: u for g in free}
        rows.append({"label": a.label, "target": a.target, "flops": a.fraction, "summed_loss": a.loss,
                     "ratios": a.ratios, "drop": list(a.drop), "per_stage": _stage_summary(a.ratios, list(obj.groups)),
                     "params": round(params.without(a.drop).cost(a.ratios)),
                     "space_residual": fit.residual, "uniform_ratio": u, "uniform_flops": flops.fraction(uniform),
                     "uniform_params": round(params.cost(uniform)), "enqueued": a.label in dict(seeds)})
    return rows


def _evaluate_seeds(obj: Objective, seed_rows: list[dict]) -> list[dict]:
    """Each enqueued seed as a proxy trial, and the uniform ratio of the same FLOPs (same seed)."""
    import dataclasses

    seeds, _ = objective_seeds(obj, objective_map(obj, shared_dir=None), [r["target"] for r in seed_rows])
    out = []
    for (label, params), row in zip(seeds, seed_rows):
        policy = policy_from_params(obj.space, obj.dims, params)
        uniform = {g: row["uniform_ratio"] for g in prune_groups(obj.dims)[0]}
        flat = policy.replace(prune=dataclasses.replace(policy.prune, ratios=uniform, drop=()))
        for name, p in ((label, policy), (f"uniform-{row['uniform_ratio']:g}", flat)):
            m = obj.evaluate(p, seed=0)
            out.append({"policy": name, "accuracy": m["accuracy"], "flops_ratio": round(m["flops_ratio"], 4),
                        "params": m["params"]})
            log.info("%s: accuracy %.2f flops %.3f params %d", name, m["accuracy"], m["flops_ratio"], m["params"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="resnet20-cifar10")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sensitivity"))
    ap.add_argument("--checkpoint", default=None, help="override model.checkpoint")
    ap.add_argument("--data-dir", default=None, help="override data.data_dir")
    ap.add_argument("--no-adapt", action="store_true", help="use the checkpoint as is (timing only)")
    ap.add_argument("--random-trials", type=int, default=2, help="random samples of the space to time")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--evaluate-seeds", action="store_true",
                    help="also run each seed and the uniform ratio of the same FLOPs as proxy trials")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    setup_logging()
    overrides = list(args.overrides)
    overrides += [f"model.checkpoint={args.checkpoint}"] if args.checkpoint else []
    overrides += [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    overrides += ["model.adapt=null"] if args.no_adapt else []
    space = load_space(args.space, overrides=overrides)
    obj = Objective(space, args.out / "run", progress=False)

    t0 = time.perf_counter()
    _ = obj.reference  # adapts the checkpoint once (cached in RUN/baseline)
    t_prepare = time.perf_counter() - t0
    uniform = next(p for label, p in baseline_params(space, obj.dims) if label.startswith("uniform-prune"))
    policies = [policy_from_params(space, obj.dims, uniform)] + _random_policies(obj, args.random_trials)
    half = len(policies) // 2
    trial_s = [_trial_time(obj, p, seed=i) for i, p in enumerate(policies[:half])]
    t0 = time.perf_counter()
    smap = objective_map(obj, shared_dir=None)
    map_s = max(time.perf_counter() - t0, smap.seconds.get("total", 0.0))  # read from RUN/ on a rerun
    trial_s += [_trial_time(obj, p, seed=half + i) for i, p in enumerate(policies[half:])]

    budget = space.search.trials * statistics.mean(t["wall_s"] for t in trial_s)
    compute = space.search.trials * statistics.mean(t["compute_s"] for t in trial_s)
    result = {"space": space.name, "prepare_s": round(t_prepare, 1), "trials": trial_s,
              "map_s": round(map_s, 1), "map_seconds": smap.seconds, "search_trials": space.search.trials,
              "budget_s": round(budget, 1), "map_fraction_of_budget": round(map_s / budget, 4),
              "map_fraction_of_budget_without_latency": round(map_s / compute, 4),
              "map": smap.to_dict(), "matrix": smap.matrix(), "seeds": _seed_rows(obj, smap, args.targets)}
    if args.evaluate_seeds:
        result["seed_trials"] = _evaluate_seeds(obj, result["seeds"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    _print(result)


def _print(result: dict) -> None:
    for t in result["trials"]:
        print(f"trial {t['policy']}: {t['wall_s']} s (without latency {t['compute_s']} s) {t['times']}")
    print(f"map: {result['map_s']} s {result['map_seconds']}")
    print(f"map / budget ({result['search_trials']} trials x mean trial = {result['budget_s']} s): "
          f"{100 * result['map_fraction_of_budget']:.1f}% "
          f"({100 * result['map_fraction_of_budget_without_latency']:.1f}% of the trials' time without latency)")
    m = result["matrix"]
    print(f"{'group':18s}" + "".join(f"{c:>8g}" for c in m["columns"]))
    for row, values in zip(m["rows"], m["top1"]):
        print(f"{row:18s}" + "".join(f"{v:8.2f}" if v is not None else f"{'-':>8s}" for v in values))
    q = result["map"]["quant"]
    for unit, row in q.items():
        print(f"{unit:18s}" + "".join(f"{k}={v:.2f}  " for k, v in row.items()))
    for stage, row in result["map"].get("depth", {}).items():
        print(f"{stage:18s}" + "".join(f"-{k}: {v:.2f}  " for k, v in row.items()))
    for s in result["seeds"]:
        print(f"{s['label']}: flops {s['flops']:.3f} loss {s['summed_loss']:.2f} params {s['params']} "
              f"drop {s['drop'] or 'none'} "
              f"(uniform {s['uniform_ratio']:.2f}: flops {s['uniform_flops']:.3f} params {s['uniform_params']}) "
              f"residual {s['space_residual']:.2f} per stage {s['per_stage']}")
    for t in result.get("seed_trials", []):
        print(f"proxy trial {t['policy']}: accuracy {t['accuracy']:.2f} flops {t['flops_ratio']:.3f} "
              f"params {t['params']}")


if __name__ == "__main__":
    main()
