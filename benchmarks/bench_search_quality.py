"""Search quality: does the multi-objective search beat a uniform-pruning sweep?

On the shared ResNet-20 and the CIFAR-10 JPEG copy, run a 40-trial search (accuracy vs FLOPs,
per-block prune ratios and KD) and a sweep of uniform block-inner ratios evaluated by the SAME
objective (same proxy fine-tune budget, seed and val subset). Report:

* the hypervolume (accuracy vs FLOPs, reference point from ``autocompress.pareto.default_reference``)
  of the searched front and of the uniform sweep's front;
* at matched FLOPs: for each uniform point, the best searched accuracy at no more FLOPs;
* wall times.

Not a CI test (about 20-30 minutes on 2 cores)::

    python benchmarks/bench_search_quality.py --out runs/bench-quality [--trials 40] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from autocompress.pareto import default_reference, hypervolume, non_dominated
from autocompress.rundir import read_records
from search._logging import setup_logging
from search.driver import run_search
from search.objective import Objective
from spaces.space import load_space, policy_from_params, uniform_params

log = logging.getLogger("bench_search_quality")

OVERRIDES = [
    "objectives=[accuracy, flops]",  # FLOPs are what uniform pruning trades; bits do not change them
    "quant.backend=none",
    "constraints=[]",
    "budget.latency.measure=never",
]
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="resnet20-cifar10")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    setup_logging()
    space = load_space(args.space, overrides=OVERRIDES + args.overrides)

    t0 = time.perf_counter()
    run_search(space, args.out / "search", trials=args.trials, progress=True)
    t_search = time.perf_counter() - t0
    searched = [r for r in read_records(args.out / "search") if r.status == "complete"]

    # the uniform sweep through the very same objective (same adapted model, budget, seed, val
    # subset) and run directory: a uniform policy the search already evaluated (its enqueued
    # uniform-prune baselines) is answered from the objective's cache
    t0 = time.perf_counter()
    objective = Objective(space, args.out / "search")
    uniform = []
    for r in RATIOS:
        policy = policy_from_params(space, objective.dims, uniform_params(objective.dims, r))
        m = objective.evaluate(policy, seed=space.search.seed)
        uniform.append({"ratio": r, "accuracy": m["accuracy"], "flops": m["flops"]})
        log.info("uniform %.1f: accuracy %.2f, FLOPs %.2f M", r, m["accuracy"], m["flops"] / 1e6)
    t_uniform = time.perf_counter() - t0

    objectives = [("accuracy", "maximize"), ("flops", "minimize")]
    directions = [d for _, d in objectives]
    ref = default_reference(objective.reference, objectives)
    s_pts = [[r.metrics["accuracy"], r.metrics["flops"]] for r in searched]
    own_pts = [[r.metrics["accuracy"], r.metrics["flops"]] for r in searched if not r.baseline]
    u_pts = [[u["accuracy"], u["flops"]] for u in uniform] + [[objective.reference["accuracy"],
                                                               objective.reference["flops"]]]
    hv_s = hypervolume(s_pts, directions, ref)
    hv_u = hypervolume(u_pts, directions, ref)
    hv_own = hypervolume(own_pts, directions, ref)  # without the enqueued baselines
    front = [p for p, keep in zip(s_pts, non_dominated(s_pts, directions)) if keep]

    matched = []
    for u in uniform:
        cands = [p for p in own_pts if p[1] <= u["flops"]]
        best = max(cands, key=lambda p: p[0]) if cands else None
        matched.append({"ratio": u["ratio"], "uniform_flops": u["flops"], "uniform_accuracy": u["accuracy"],
                        "searched_accuracy": best[0] if best else None,
                        "searched_flops": best[1] if best else None,
                        "gain": (best[0] - u["accuracy"]) if best else None})

    result = {
        "space": space.name, "trials": len(searched), "reference": objective.reference, "hv_reference": ref,
        "hypervolume": {"searched": hv_s, "uniform": hv_u, "ratio": hv_s / hv_u if hv_u else None,
                        "searched_without_baselines": hv_own,
                        "ratio_without_baselines": hv_own / hv_u if hv_u else None},
        "searched_front": sorted(front, key=lambda p: p[1]), "uniform": uniform, "matched_flops": matched,
        "wall_time_s": {"search": t_search, "uniform_sweep": t_uniform},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(result, indent=2, default=float))
    print(f"\nsearch quality on {space.name}: {len(searched)} trials")
    print(f"hypervolume (accuracy vs FLOPs): searched {hv_s:.4g}  uniform sweep {hv_u:.4g}  "
          f"ratio {result['hypervolume']['ratio']:.3f}; searched without the enqueued baselines {hv_own:.4g} "
          f"(ratio {result['hypervolume']['ratio_without_baselines']:.3f})")
    print(f"{'ratio':>6} {'uniform FLOPs':>14} {'uniform acc':>12} {'searched acc':>13} {'at FLOPs':>10} {'gain':>7}")
    for m in matched:
        sa = f"{m['searched_accuracy']:.2f}" if m["searched_accuracy"] is not None else "-"
        sf = f"{m['searched_flops'] / 1e6:.2f}M" if m["searched_flops"] is not None else "-"
        g = f"{m['gain']:+.2f}" if m["gain"] is not None else "-"
        print(f"{m['ratio']:>6.1f} {m['uniform_flops'] / 1e6:>13.2f}M {m['uniform_accuracy']:>12.2f} "
              f"{sa:>13} {sf:>10} {g:>7}")
    print(f"wall time: search {t_search:.0f} s, uniform sweep {t_uniform:.0f} s -> {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
