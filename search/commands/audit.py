"""`autocompress audit RUN`: how well does the search's proxy rank trials the way full fine-tuning does?

    autocompress audit runs/quickstart                  # every Pareto point + 6 trials sampled over the cost range
    autocompress audit RUN --pareto --steps 200         # only the front, 200 fine-tune steps each
    autocompress audit RUN --trials 3,7,12 --noise      # named trials; also the proxy's seed noise

Writes RUN/audit/trial-N.json per audited trial (a rerun resumes), RUN/audit/summary.json (Kendall tau,
Spearman rho with bootstrap intervals, regret) and, with --noise, RUN/audit/noise.json.
"""

from __future__ import annotations

import argparse
import json

from search.commands._table import format_table

DEFAULT_SAMPLE = 6  # search.audit.DEFAULT_SAMPLE (not imported here: building the parser stays light)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("audit", help="fully fine-tune a set of trials: does the proxy rank them like full fine-tuning?",
                       description="Fully fine-tune a set of a run's complete trials the way `finalize` does (the "
                                   "space's budget.final, KD from the original) and compare their final val accuracy "
                                   "with the search's proxy accuracy: Kendall tau and Spearman rho with bootstrap 95% "
                                   "intervals, and the regret of choosing by proxy. One record per trial in "
                                   "RUN/audit/ (a rerun resumes); `autocompress report RUN` shows the result.")
    p.add_argument("run", metavar="RUN", help="run directory of `autocompress search`")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trials", default=None, metavar="N,M", help="audit exactly these trials")
    which.add_argument("--pareto", action="store_true", help="audit only the feasible Pareto points")
    which.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="K",
                       help="the Pareto points plus K feasible non-Pareto trials spread over the cost range "
                            f"(default {DEFAULT_SAMPLE})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, metavar="E",
                        help="fine-tune epochs per trial (default: the space's budget.final, like finalize)")
    budget.add_argument("--steps", type=int, default=None, metavar="S", help="fine-tune steps per trial")
    p.add_argument("--seed", type=int, default=None, help="fine-tune seed (default: each trial's own, like finalize)")
    p.add_argument("--noise", action="store_true",
                   help="also re-evaluate 3 trials' proxies with 2 other seeds: the proxy's standard deviation")
    p.add_argument("--device", default="cpu", help="training device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)
    return p


def summary_text(summary: dict) -> str:
    """The audit's table, correlations, regret and noise as plain text."""
    from reports._format import fidelity_rows, interval, noise_text, regret_rows

    header, rows = fidelity_rows(summary)
    lines = [format_table(rows, header), "", f"Kendall tau   {interval(summary['kendall_tau'])}",
             f"Spearman rho  {interval(summary['spearman_rho'])}   (95% bootstrap intervals, proxy vs final val)"]
    if summary["regret"]:
        header, rows = regret_rows(summary)
        lines += ["", format_table(rows, header)]
    noise = noise_text(summary)
    return "\n".join(lines + (["", noise] if noise else []))


def run(args: argparse.Namespace) -> int:
    import torch

    from search.audit import audit
    from search.cli import CLIError

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: no CUDA device is available; use --device cpu")
    summary = audit(args.run, trials=args.trials, pareto_only=args.pareto, sample=args.sample, epochs=args.epochs,
                    steps=args.steps, seed=args.seed, noise=args.noise, device=args.device,
                    progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(summary_text(summary))
    return 0
