"""Proxy-fidelity levers: which proxy recipe ranks an audited run's trials the way the final fine-tune does?

``autocompress audit RUN`` gives, for a set of trials, the final val accuracy after ``finalize``'s
fine-tune and Kendall's tau against the search's proxy. This benchmark re-scores the *same audited
trials* under other proxy recipes and computes each one's tau (and Spearman's rho, bootstrap 95%
intervals) against the *same final accuracies*, so the levers are compared on one set of pairs (the
final val accuracy, as the audit pairs them; tau against the final *test* accuracy is reported too):

- ``default``: the search's own proxy (the records' accuracy: the highest level reached, when the run
  itself used multi-fidelity; the simulated promotion below assumes a run with one level);
- ``adaptive-bn``: no fine-tune at all, only BatchNorm recalibration (and quantization calibration)
  after pruning: the zero-cost proxy of EagleEye-style pruners;
- ``steps-S`` (``--steps``): a longer proxy fine-tune of ``S`` steps (same schedule, KD, seed);
- ``multi-fidelity-S0-S``: what ``search.fidelity: {levels: [S0, S], promote: p}`` would report for
  these trials: each trial's promotion is decided as ``search.promotion`` decides it, online in
  trial order among the run's complete trials (baselines always promoted); promoted trials take the
  ``steps-S`` value, the others the default;
- ``no-kd`` (``--no-kd``): the default proxy without distillation (KD during the proxy is the
  space's default; this measures what it adds).

Every re-scored proxy goes through :meth:`search.objective.Objective.evaluate` (the search's own
path; results cached in ``RUN/cache`` by policy hash, so a rerun resumes), except ``adaptive-bn``,
which is ``compress.apply`` with ``finetune=False`` and the same measurement. The trials' proxies
cost is reported two ways: ``steps``, the proxy fine-tune steps a search would spend per candidate
relative to the default, run-wide (multi-fidelity: ``1 + promoted share x S / S0``, the share of the run's
candidates the rule promotes), and ``seconds``, the measured fine-tune seconds per audited trial (the
default's come from the search, whose machine load may differ). Writes ``RUN/audit/levers.json``::

    autocompress search resnet20-cifar10 --out runs/r20
    autocompress audit runs/r20 --epochs 1 --sample 4
    python benchmarks/bench_fidelity_levers.py runs/r20 --steps 200 [--no-kd] [--promote 0.3]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.fidelity import json_safe, kendall_tau, spearman_rho
from autocompress.rundir import Run, atomic_write_json, audit_dir, load_run, read_audit_records
from compress.apply import apply
from search._logging import setup_logging
from search.objective import Objective
from search.promotion import always_promoted, candidate_results, is_promoted, policy_at
from search.recipes import run_space, trial_policy
from search.trial import git_sha, now_iso, versions
from spaces.policy import Policy
from spaces.space import SearchSpace

log = logging.getLogger("bench_fidelity_levers")


def _tuned(policy: Policy) -> bool:
    return policy.prune.active or policy.quant.active


def adaptive_bn(objective: Objective, policy: Policy, seed: int) -> tuple[float, float]:
    """Val accuracy of ``policy`` with BN recalibration (and quantization calibration) only; seconds."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # as Objective.evaluate seeds a trial
    out = apply(policy, objective.model, data=objective.data, finetune=False, device=objective.device,
                progress=False, bn_recal_batches=objective.space.budget.bn_recal_batches)
    accuracy = float(objective.baseline.measure(out, latency=False, costs=False).accuracy)
    return accuracy, time.perf_counter() - t0


def proxy(objective: Objective, policy: Policy, seed: int) -> tuple[float, float]:
    """The search's proxy of ``policy`` (Objective.evaluate, cached); its fine-tune seconds."""
    metrics = objective.evaluate(policy, seed=seed)
    return float(metrics["accuracy"]), float((metrics.times or {}).get("finetune", 0.0))


def _variants(policy: Policy, steps: list[int], no_kd: bool) -> list[tuple[str, Policy | None]]:
    """The re-scored recipes of one trial's policy (``None``: adaptive BN, no fine-tune)."""
    variants: list[tuple[str, Policy | None]] = [("adaptive-bn", None)]
    variants += [(f"steps-{s}", policy_at(policy, s)) for s in steps]
    if no_kd:
        variants.append(("no-kd", policy.replace(distill=dataclasses.replace(policy.distill, alpha=0.0,
                                                                            feature_weight=0.0))))
    return variants


def rescore(objective: Objective, run: Run, trials: list[int], steps: list[int], no_kd: bool) -> dict[str, dict]:
    """``values`` and ``seconds``: ``{lever: {trial: val accuracy / fine-tune seconds}}``."""
    values: dict[str, dict[int, float]] = {"default": {}}
    seconds: dict[str, dict[int, float]] = {"default": {}}
    for i, trial in enumerate(trials, 1):
        rec = run.record(trial)
        policy = trial_policy(run, trial)
        values["default"][trial] = float(rec.metrics["accuracy"])
        seconds["default"][trial] = float((rec.times or {}).get("finetune", 0.0))
        for name, variant in _variants(policy, steps, no_kd):
            if not _tuned(policy):  # the original: nothing to fine-tune, the same value under every recipe
                acc, secs = values["default"][trial], 0.0
            else:
                log.info("trial %d (%d/%d): %s", trial, i, len(trials), name)
                acc, secs = (adaptive_bn(objective, policy, rec.seed) if variant is None
                             else proxy(objective, variant, rec.seed))
                log.info("trial %d: %s %.2f%% (default %.2f%%)", trial, name, acc, values["default"][trial])
            values.setdefault(name, {})[trial] = acc
            seconds.setdefault(name, {})[trial] = secs
    return {"values": values, "seconds": seconds}


def multi_fidelity(scored: dict[str, dict], promoted: set[int], s0: int, s1: int) -> None:
    """Add the ``multi-fidelity-S0-S1`` lever to ``scored``: promoted trials report level ``S1``, and
    cost both levels (re-run, as ``search.promotion`` does)."""
    name = f"multi-fidelity-{s0}-{s1}"
    values, seconds = scored["values"], scored["seconds"]
    values[name] = {t: values[f"steps-{s1}" if t in promoted else "default"][t] for t in values["default"]}
    seconds[name] = {t: seconds["default"][t] + (seconds[f"steps-{s1}"][t] if t in promoted else 0.0)
                     for t in seconds["default"]}


def promoted_trials(run: Run, space: SearchSpace, fraction: float, min_results: int = 1) -> set[int]:
    """Trials ``search.promotion`` would promote from the records' (level-0) metrics, decided online in
    trial order among complete trials (a duplicate proposal ranked in its earliest twin's place);
    baselines always."""
    records = sorted((r for r in run.records if r.status == "complete"), key=lambda r: r.trial)
    results, stands_for = candidate_results(records, lambda r: r.metrics, space)
    promoted: set[int] = set()
    for rec in records:
        if rec.trial not in stands_for:  # metrics without the objectives
            continue
        so_far = [r for r in results if r.trial <= rec.trial]
        if always_promoted(rec.baseline) or is_promoted(so_far, stands_for[rec.trial], space.directions, fraction,
                                                        min_results):
            promoted.add(rec.trial)
    return promoted


def correlations(values: dict[str, dict[int, float]], final: dict[int, float]) -> dict[str, dict[str, Any]]:
    """Kendall tau and Spearman rho (with intervals) of every lever against the final val accuracy."""
    out = {}
    for name, by_trial in values.items():
        trials = sorted(t for t in by_trial if t in final)
        x = [by_trial[t] for t in trials]
        y = [final[t] for t in trials]
        out[name] = json_safe({"tau": kendall_tau(x, y).to_dict(), "rho": spearman_rho(x, y).to_dict(),
                               "n": len(trials)})
    return out


def relative_steps(names: list[str], s0: int, promoted_share: float) -> dict[str, float]:
    """Proxy fine-tune steps per candidate of each lever relative to the default's ``s0``, run-wide."""
    out = {}
    for name in names:
        if name.startswith("multi-fidelity-"):
            out[name] = 1.0 + promoted_share * int(name.rsplit("-", 1)[1]) / s0
        elif name.startswith("steps-"):
            out[name] = int(name.split("-", 1)[1]) / s0
        else:
            out[name] = {"adaptive-bn": 0.0}.get(name, 1.0)
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown table of the levers: tau [interval], rho, tau vs test, proxy steps relative to the default."""
    lines = ["| proxy recipe | Kendall tau [95% CI] | Spearman rho [95% CI] | tau vs final test | n | "
             "proxy steps vs default |", "|---|---|---|---|---|---|"]
    def fmt(c: dict[str, Any]) -> str:
        if c["value"] is None:
            return "undefined"
        return f"{c['value']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"

    for name, c in result["correlations"].items():
        rel = result["relative_steps"][name]
        test_tau = result["correlations_test"][name]["tau"]["value"]
        test_tau = "undefined" if test_tau is None else f"{test_tau:.2f}"
        lines.append(f"| {name} | {fmt(c['tau'])} | {fmt(c['rho'])} | {test_tau} | {c['n']} | {rel:.2f}x |")
    return "\n".join(lines)


def run_levers(run_dir: str | Path, *, steps: list[int], no_kd: bool, fraction: float) -> dict[str, Any]:
    """Re-score the audited trials of ``run_dir`` under every lever; writes ``RUN/audit/levers.json``."""
    run = load_run(run_dir)
    audited = read_audit_records(run.dir)
    if len(audited) < 3:
        raise SystemExit(f"{run.dir}/audit: {len(audited)} audited trials; run `autocompress audit {run.dir}` first "
                         f"(at least 3 are needed for a rank correlation)")
    space = run_space(run.dir)
    final = {r.trial: float(r.val_accuracy) for r in audited}
    final_test = {r.trial: float(r.test_accuracy) for r in audited}
    objective = Objective(space, run.dir, progress=False)
    t0 = time.perf_counter()
    scored = rescore(objective, run, sorted(final), steps, no_kd)
    promoted = promoted_trials(run, space, fraction)
    complete = [r.trial for r in run.records if r.status == "complete"]
    for s in steps:
        multi_fidelity(scored, promoted, int(space.budget.finetune.steps), s)
    result = {"run": str(run.dir), "audit": audited[0].settings, "final": final, "promoted": sorted(promoted),
              "promoted_share": round(len(promoted) / max(1, len(complete)), 3), "promote_fraction": fraction,
              "relative_steps": relative_steps(list(scored["values"]), int(space.budget.finetune.steps),
                                               len(promoted) / max(1, len(complete))),
              "final_test": final_test, **scored, "correlations": correlations(scored["values"], final),
              "correlations_test": correlations(scored["values"], final_test),
              "wall_s": round(time.perf_counter() - t0, 1), "finished": now_iso(), "versions": versions(),
              "git_sha": git_sha(), "command": " ".join(sys.argv)}
    atomic_write_json(audit_dir(run.dir) / "levers.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory of `autocompress search`, audited with `autocompress audit`")
    p.add_argument("--steps", type=int, nargs="+", default=[200], help="longer proxy budgets to try (steps)")
    p.add_argument("--no-kd", action="store_true", help="also the default proxy without distillation")
    p.add_argument("--promote", type=float, default=0.3, help="multi-fidelity promotion fraction (default 0.3)")
    args = p.parse_args(argv)
    setup_logging()
    result = run_levers(args.run, steps=args.steps, no_kd=args.no_kd, fraction=args.promote)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
