"""Multi-fidelity promotion: continue from the level-0 weights, or re-run with the longer budget?

For ``--policies`` prune policies of a space (random draws of its prune dims, quantization off, plus
uniform pruning at 0.5), the level-0 proxy fine-tune (``S0`` steps from the pruned start), then level 1
two ways:

- **continue**: ``S1 - S0`` more steps from the level-0 weights (a fresh cosine schedule, the next
  data order, the same KD), so level 1 costs ``S1 - S0`` steps on top of level 0;
- **re-run**: ``S1`` steps from the pruned start (what ``search.promotion`` does): level 1 costs ``S1``.

It prints and writes val top-1 and wall time of each, and Kendall's tau (with a bootstrap interval)
between the two level-1 rankings and between each and level 0::

    python benchmarks/bench_promotion.py --space quickstart --run runs/quickstart --levels 20 80 \\
        --policies 8 --out runs/bench-promotion.json

``--run`` is a run directory of that space whose baseline (trained or adapted model) is reused.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import optuna

from autocompress.fidelity import kendall_tau
from compress.apply import _finetune, apply
from compress.measure import evaluate
from search.objective import Objective
from search.promotion import policy_at
from spaces.policy import Policy, QuantSpec
from spaces.space import load_space, policy_from_params, suggest_policy, uniform_params

log = logging.getLogger("bench_promotion")


def policies(objective: Objective, n: int, seed: int) -> list[Policy]:
    """``n - 1`` random prune policies of the space (float) and uniform pruning at 0.5."""
    space, dims = objective.space, objective.dims
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = [suggest_policy(space, dims, study.ask()).replace(quant=QuantSpec()) for _ in range(n - 1)]
    out.append(policy_from_params(space, dims, uniform_params(dims, 0.5)))
    return [p for p in out if p.prune.active]


def measure_one(objective: Objective, policy: Policy, s0: int, s1: int) -> dict[str, Any]:
    """Level 0, continue and re-run of one policy: val top-1 and seconds of each."""
    data, model, recal = objective.data, objective.model, objective.space.budget.bn_recal_batches

    def top1(m: Any) -> float:
        return evaluate(m.eval(), objective.baseline.val_loader(), progress=False)["top1"]

    t = time.perf_counter()
    level0 = apply(policy_at(policy, s0), model, data=data, progress=False, bn_recal_batches=recal)
    t0 = time.perf_counter() - t
    work = copy.deepcopy(level0.model).train()
    more = policy_at(policy, s1 - s0)
    more = more.replace(finetune=dataclasses.replace(more.finetune, seed=more.finetune.seed + 1))
    t = time.perf_counter()
    _finetune(more, model, work, data, None, "cpu", False)
    t_cont = time.perf_counter() - t
    t = time.perf_counter()
    rerun = apply(policy_at(policy, s1), model, data=data, progress=False, bn_recal_batches=recal)
    t_rerun = time.perf_counter() - t
    return {"summary": policy.summary(), "level0": top1(level0.model), "continue": top1(work),
            "rerun": top1(rerun.model), "level0_s": round(t0, 2), "continue_extra_s": round(t_cont, 2),
            "rerun_s": round(t_rerun, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="quickstart")
    ap.add_argument("--run", required=True, help="run directory of that space (its baseline is reused)")
    ap.add_argument("--levels", type=int, nargs=2, default=(20, 80), metavar=("S0", "S1"))
    ap.add_argument("--policies", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-promotion.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    s0, s1 = args.levels
    objective = Objective(load_space(args.space), args.run)
    rows = []
    for i, policy in enumerate(policies(objective, args.policies, args.seed)):
        rows.append(measure_one(objective, policy, s0, s1))
        log.info("policy %d: %s", i, json.dumps(rows[-1]))
    col = {k: [r[k] for r in rows] for k in ("level0", "continue", "rerun")}
    result = {
        "space": args.space, "levels": [s0, s1], "policies": rows,
        "mean": {k: round(sum(v) / len(v), 3) for k, v in col.items()},
        "seconds": {"level0": round(sum(r["level0_s"] for r in rows), 1),
                    "continue_extra": round(sum(r["continue_extra_s"] for r in rows), 1),
                    "rerun": round(sum(r["rerun_s"] for r in rows), 1)},
        "tau": {"continue_vs_rerun": kendall_tau(col["continue"], col["rerun"]).__dict__,
                "level0_vs_rerun": kendall_tau(col["level0"], col["rerun"]).__dict__,
                "level0_vs_continue": kendall_tau(col["level0"], col["continue"]).__dict__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'policy':60s} {'level0':>7s} {'cont.':>7s} {'re-run':>7s}")
    for r in rows:
        print(f"{r['summary'][:60]:60s} {r['level0']:7.2f} {r['continue']:7.2f} {r['rerun']:7.2f}")
    print(json.dumps({k: result[k] for k in ("mean", "seconds", "tau")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
