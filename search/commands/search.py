"""`autocompress search`: find the Pareto front of compression policies for a model.

Outputs go to ``--out`` (default ``runs/<space name>``; deterministic so that rerunning the same
command resumes the run until the study holds exactly ``--trials`` complete trials). After the
search (``search.driver.run_search``), the reports package writes the exports (``trials.csv``,
``pareto.csv``, ``recipes/``) and ``report.html``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from autocompress.rundir import read_records
from search.cli import CLIError
from spaces.space import load_space

log = logging.getLogger("search")

EPILOG = """\
resume:   rerun the same command; only the missing trials run (failed and interrupted trials are
          replaced, a trial whose process died is marked FAIL and re-queued).
Ctrl-C:   the running trial is marked FAIL and re-queued; the study stays resumable.
workers:  --workers K starts K local processes on one study; on other machines run the same
          command with the same --storage (e.g. postgresql://host/db) and --study.
ray:      --backend ray runs trials as Ray Tune trials (local, or --address HOST:PORT of a
          cluster started with `ray start --head`); on GPUs add --device cuda --gpus-per-trial 0.25.
examples:
  autocompress search                                   # quickstart (digits, ~5 min)
  autocompress search resnet20-cifar10 --trials 40 --set budget.finetune.steps=200
  autocompress search my-space.yaml --storage journal:///shared/study.log --study s1 --workers 2
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("search", help="search compression policies (Pareto front of accuracy vs cost)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", nargs="?", default="quickstart",
                   help="built-in space name (see `autocompress spaces`) or a YAML file (default: quickstart)")
    p.add_argument("--trials", type=int, help="number of COMPLETE trials the study must hold (baselines included)")
    p.add_argument("--out", help="run directory (default: runs/<space name>)")
    p.add_argument("--backend", choices=("optuna", "ray"), help="search backend (default: space's search.backend)")
    p.add_argument("--storage", help="Optuna storage: sqlite:///path.db (default RUN/study.db), "
                                     "journal:///path.log, or a database URL")
    p.add_argument("--study", help="study name (default: the space name)")
    p.add_argument("--sampler", choices=("nsga2", "tpe", "gp", "random"))
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="local worker processes sharing the study (optuna backend)")
    p.add_argument("--timeout", type=float, help="stop asking for new trials after this many seconds")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a space field, e.g. --set budget.finetune.steps=50 (repeatable)")
    p.add_argument("--device", default="cpu",
                   help="torch device for fine-tuning and evaluation (default cpu; cuda trains with AMP + "
                        "channels_last; with --backend ray each trial sees its reserved GPU as cuda)")
    p.add_argument("--finalize", action="store_true", help="fine-tune the chosen Pareto point at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--json", action="store_true", help="print a JSON summary to stdout at the end")
    ray = p.add_argument_group("ray backend")
    ray.add_argument("--address", help="Ray cluster: auto or HOST:PORT (default: start Ray in-process)")
    ray.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs reserved per trial (default 1)")
    ray.add_argument("--gpus-per-trial", type=float, default=None,
                     help="GPUs reserved per trial (default 0; a fraction shares a GPU: 0.25 runs 4 trials per GPU; "
                          "> 0 needed for --device cuda or a cuda latency device)")
    ray.add_argument("--max-concurrent", type=int, default=None,
                     help="trials running at once (default: --workers or 1)")
    p.add_argument("--objective", help=argparse.SUPPRESS)  # MODULE:CALLABLE objective factory (tests, plugins)
    p.set_defaults(func=run)
    return p


def load_factory(text: str):
    """``module:callable`` -> the callable (an objective factory ``(space, run_dir) -> objective``)."""
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise CLIError(f"--objective = {text!r}: expected MODULE:CALLABLE")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"--objective = {text!r}: {exc}") from None
    return obj


def write_reports(run_dir: Path) -> dict[str, Path]:
    """The run's exports (``trials.csv``, ``pareto.csv``, ``recipes/``) and ``report.html``, so a
    person can open the result straight away. Returns ``{relative path: path}`` of what was written."""
    from reports.html import write_html_report
    from reports.tables import write_exports

    exports = write_exports(run_dir)
    n_pareto = sum(1 for k in exports if k.startswith("recipes/"))
    log.info("exports:   %s (trials.csv, pareto.csv, %d Pareto recipes)", run_dir, n_pareto)
    if not any(r.status == "complete" and r.feasible for r in read_records(run_dir)):
        log.info("no feasible complete trial yet: no report written")
        return exports
    path = write_html_report(run_dir)
    log.info("report:    %s (regenerate with `autocompress report %s`)", path, run_dir)
    return {**exports, path.name: path}


def _has_records(run_dir: Path) -> bool:
    """Whether a trial finished in ``run_dir`` (then a later error keeps the directory)."""
    return any((run_dir / "records").glob("trial-*.json"))


def run(args: argparse.Namespace) -> int:
    from search.checks import output_dir
    from search.driver import default_run_dir, run_search

    if args.trials is not None and args.trials < 1:
        raise CLIError(f"--trials = {args.trials}: must be >= 1")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers = {args.workers}: must be >= 1")
    space = load_space(args.space, overrides=args.overrides)
    ray_opts = {k: v for k, v in dict(address=args.address, cpus_per_trial=args.cpus_per_trial,
                                      gpus_per_trial=args.gpus_per_trial,
                                      max_concurrent=args.max_concurrent).items() if v is not None}
    backend = args.backend or space.search.backend
    if ray_opts and backend != "ray":
        raise CLIError(f"--{next(iter(ray_opts)).replace('_', '-')} needs --backend ray")
    factory = load_factory(args.objective) if args.objective else None
    # run_search checks --device, --storage and --out before it creates the run directory; a user
    # error after that (e.g. a missing data folder) removes the directory if it made it
    with output_dir(args.out or default_run_dir(space), create=False, keep=_has_records) as out:
        result = run_search(space, out, backend=args.backend, trials=args.trials, storage=args.storage,
                            study=args.study, sampler=args.sampler, seed=args.seed, workers=args.workers,
                            timeout_s=args.timeout, objective_factory=factory, device=args.device,
                            ray=ray_opts, finalize=args.finalize, progress=not args.no_progress)
    exports = write_reports(result.run_dir)
    if args.json:
        json.dump({"run_dir": str(result.run_dir), "complete": result.complete, "failed": result.failed,
                   "ran": result.ran, "storage": result.storage_url, "study": result.study,
                   "workers": result.workers, "synced": len(result.synced),
                   "wall_time_s": round(result.wall_time_s, 2), "stopped_early": result.stopped_early,
                   "exports": sorted(exports)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0 if not result.stopped_early else 1
