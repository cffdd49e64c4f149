"""Latency repeatability on this machine: repeated medians and interleaved ratios.

    .venv/bin/python benchmarks/bench_eval.py --model resnet20 --repeats 5 --threads 1

Prints, per repeat, the batch-1 median/IQR/busy flag of ``--model``, then the coefficient of
variation of the medians; then ``--repeats`` interleaved ratios ``--heavy`` / ``--model``
(compare_latency) and their CV. Ratios should be far more stable than absolute medians on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics

import torch

from compress.measure import compare_latency, measure_latency
from compress.models import default_input_size, get_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--heavy", default="resnet56", help="second model for the interleaved ratio ('' to skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    model = get_model(args.model).eval()
    size = default_input_size(args.model)
    x = torch.randn(args.batch, 3, size, size)
    medians = []
    for i in range(args.repeats):
        s = measure_latency(model, x, backend=args.backend, threads=args.threads, min_time_s=args.min_time)
        medians.append(s.median_ms)
        print(json.dumps({"repeat": i, "median_ms": round(s.median_ms, 4), "iqr_ms": round(s.iqr_ms, 4),
                          "runs": s.runs, "other_cores": round(s.other_cores, 2), "busy": s.busy}))
    cv = statistics.stdev(medians) / statistics.mean(medians) if len(medians) > 1 else 0.0
    print(json.dumps({"model": args.model, "medians_ms": [round(m, 4) for m in medians], "cv": round(cv, 4)}))
    if args.heavy:
        heavy = get_model(args.heavy).eval()
        ratios = []
        for i in range(args.repeats):
            r = compare_latency(heavy, model, x, backend=args.backend, threads=args.threads, rounds=10)
            ratios.append(r.ratio)
            print(json.dumps({"repeat": i, "ratio": round(r.ratio, 4), "ci": [round(r.ci_low, 4), round(r.ci_high, 4)],
                              "busy": r.busy}))
        cv = statistics.stdev(ratios) / statistics.mean(ratios) if len(ratios) > 1 else 0.0
        print(json.dumps({"ratio": f"{args.heavy}/{args.model}", "ratios": [round(r, 4) for r in ratios],
                          "cv": round(cv, 4)}))


if __name__ == "__main__":
    main()
