"""Search overhead benchmark: time outside the objective (sampling, storage, scheduling) vs wall time.

Runs the REAL objective of a space (default: quickstart, whose trials fine-tune, quantize,
evaluate and measure latency) through each backend with one trial at a time, timing every
``Objective.evaluate`` call precisely (wall-clock stamps, so Ray actor processes count too)::

    .venv/bin/python benchmarks/bench_search.py --trials 6 --backends optuna ray \\
        --set budget.finetune.steps=60 --out runs/bench-search

For each backend it reports:

- ``objective_s``: sum of evaluate() durations;
- ``steady_overhead``: 1 - objective_s / (last evaluate end - first evaluate start): the cost of
  everything between trials (ask/tell, storage writes, records, Ray scheduling);
- ``total_overhead``: 1 - objective_s / backend wall time, which also counts one-off start-up
  (opening the study, ``ray.init``, first actor start).

The target is steady overhead < 5% for trials of >= 20 s. Results are printed as JSON and written
to ``OUT/bench.json``. Preparation (dataset, baseline training, reference metrics) happens once
per run directory before the backend starts and is not part of either number.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_search")


class TimedObjective:
    """Wraps the real objective; appends ``(start, end)`` wall stamps of each evaluate to a file."""

    def __init__(self, inner: Any, stamps: Path):
        self.inner = inner
        self.stamps = Path(stamps)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "stamps") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "stamps": self.stamps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def evaluate(self, policy: Any, **kw: Any) -> Any:
        t0 = time.time()
        try:
            return self.inner.evaluate(policy, **kw)
        finally:
            with open(self.stamps, "a") as fh:
                fh.write(json.dumps([t0, time.time()]) + "\n")


class TimedFactory:
    """Picklable objective factory: the real :class:`search.objective.Objective`, timed."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __call__(self, space: Any, run_dir: Path) -> TimedObjective:
        from search.objective import Objective

        return TimedObjective(Objective(space, run_dir, device=self.device), Path(run_dir) / "eval-stamps.jsonl")


def measure(space: Any, out: Path, backend: str, trials: int, device: str) -> dict[str, Any]:
    from autocompress.rundir import read_records
    from search.driver import run_search

    run = out / backend
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    # prepare once (trains the quickstart baseline into run/baseline), outside the timed backend
    ray_opts = {"max_concurrent": 1, "num_cpus": 2} if backend == "ray" else None
    result = run_search(space, run, backend=backend, trials=trials, objective_factory=TimedFactory(device),
                        progress=False, ray=ray_opts)
    stamps = [json.loads(line) for line in (run / "eval-stamps.jsonl").read_text().splitlines()]
    objective_s = sum(e - s for s, e in stamps)
    span = max(e for _, e in stamps) - min(s for s, _ in stamps)
    records = read_records(run)
    per_trial = [r.times.get("total", 0.0) for r in records if r.status == "complete"]
    return {
        "backend": backend, "trials": result.complete, "evaluations": len(stamps),
        "mean_trial_s": round(objective_s / max(1, len(stamps)), 2),
        "objective_s": round(objective_s, 2), "span_s": round(span, 2),
        "backend_wall_s": round(result.backend_wall_s, 2),
        "steady_overhead": round(1 - objective_s / span, 4) if span > 0 else None,
        "total_overhead": round(1 - objective_s / result.backend_wall_s, 4),
        "run_trial_total_s": round(sum(per_trial), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="quickstart")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--backends", nargs="+", default=["optuna", "ray"], choices=["optuna", "ray"])
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench-search")
    args = p.parse_args(argv)

    from search._logging import setup_logging
    from spaces.space import load_space

    setup_logging(0)
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    space = load_space(args.space, overrides=args.overrides)
    out = Path(args.out)
    results = [measure(space, out, b, args.trials, args.device) for b in args.backends]
    for r in results:
        log.info("%s: %d trials of %.1f s; steady overhead %.2f%%, incl. start-up %.2f%%", r["backend"],
                 r["trials"], r["mean_trial_s"], 100 * (r["steady_overhead"] or 0), 100 * r["total_overhead"])
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
