"""Proxy fidelity: how well the search's proxy accuracy ranks candidates the way full fine-tuning does.

Pure statistics over paired samples (one pair per audited trial), used by ``autocompress audit``,
the reports and ``compare``. No I/O.

- :func:`kendall_tau` / :func:`spearman_rho`: rank correlations (tau-b, so ties are handled) between
  proxy and final accuracy, each with a seeded percentile-bootstrap 95% interval over the pairs
  (:class:`Correlation`). Fewer than 3 pairs, or no variation in either sample, gives ``nan``.
- :func:`regret`: at a cost budget, the final accuracy lost by choosing the trial with the best
  *proxy* accuracy among those within the budget instead of the one with the best *final* accuracy.
  :func:`default_budgets` picks three budgets (cost quantiles 0.25 / 0.5 / 0.75 of the audited
  trials, so each budget holds some of them).
- :func:`ties_within_noise`: which pairs of front points differ by less than ``k`` proxy standard
  deviations (the audit's ``--noise`` estimate), i.e. cannot be told apart by the proxy.
- :func:`audit_summary`: all of the above for a run's audit records (``autocompress.rundir.AuditRecord``)
  and noise file, as one JSON-safe dict: what ``RUN/audit/summary.json`` holds and the reports show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from autocompress.rundir import AuditRecord

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
BUDGET_QUANTILES = (0.25, 0.5, 0.75)
#: objectives that measure accuracy; the others are costs
ACCURACY_METRICS = ("accuracy", "top5", "accuracy_drop")
#: front points whose proxy accuracies differ by less than TIE_SIGMAS proxy standard deviations are ties
TIE_SIGMAS = 2.0


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its bootstrap interval (``nan`` where undefined)."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Regret:
    """Regret of choosing by proxy at one cost budget (accuracy points, >= 0)."""

    budget: float
    regret: float
    chosen: int  # index of the proxy's choice among the pairs
    best: int  # index of the best final accuracy within the budget
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.kendalltau(a, b, variant="b").statistic)


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


#: bootstrap draws evaluated at once (bounds the (rows, n, n) sign arrays of tau's draws)
_CHUNK = 256


def _tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of ``a``, ``b`` (``(rows, n)``), vectorized: the sum over pairs of
    sign products over the square root of the untied pair counts; ``nan`` where a row is constant."""
    out = []
    for lo in range(0, len(a), _CHUNK):
        da = np.sign(a[lo:lo + _CHUNK, :, None] - a[lo:lo + _CHUNK, None, :])
        db = np.sign(b[lo:lo + _CHUNK, :, None] - b[lo:lo + _CHUNK, None, :])
        s = (da * db).sum(axis=(1, 2))
        ta, tb = np.abs(da).sum(axis=(1, 2)), np.abs(db).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where((ta > 0) & (tb > 0), s / np.sqrt(ta * tb), np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def _rho_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson correlation of the average ranks); ``nan`` where constant."""
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / den, np.nan)


def _with_interval(stat, rows_stat, x: Sequence[float], y: Sequence[float], *, samples: int, seed: int,
                   confidence: float) -> Correlation:
    a, b = _pairs(x, y)
    value = stat(a, b)
    if math.isnan(value):
        return Correlation(math.nan, math.nan, math.nan, len(a), confidence)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(samples, len(a)))
    draws = rows_stat(a[index], b[index])  # every bootstrap draw at once
    finite = draws[~np.isnan(draws)]
    if len(finite) == 0:
        return Correlation(value, math.nan, math.nan, len(a), confidence)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Correlation(value, float(low), float(high), len(a), confidence)


def kendall_tau(proxy: Sequence[float], final: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES,
                seed: int = 0, confidence: float = CONFIDENCE) -> Correlation:
    """Kendall's tau-b between paired samples with a percentile-bootstrap interval (seeded)."""
    return _with_interval(_tau, _tau_rows, proxy, final, samples=samples, seed=seed, confidence=confidence)


def spearman_rho(proxy: Sequence[float], final: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0, confidence: float = CONFIDENCE) -> Correlation:
    """Spearman's rho between paired samples with a percentile-bootstrap interval (seeded)."""
    return _with_interval(_rho, _rho_rows, proxy, final, samples=samples, seed=seed, confidence=confidence)


def regret(proxy: Sequence[float], final: Sequence[float], cost: Sequence[float], budget: float) -> Regret | None:
    """Regret at ``budget``: best final accuracy within the budget minus the final accuracy of the
    trial the proxy would pick there (highest proxy; ties to the lower cost, then the lower index).
    None when no trial fits the budget."""
    p, f, c = (np.asarray(v, dtype=float) for v in (proxy, final, cost))
    inside = [i for i in range(len(c)) if c[i] <= budget and math.isfinite(p[i]) and math.isfinite(f[i])]
    if not inside:
        return None
    chosen = min(inside, key=lambda i: (-p[i], c[i], i))
    best = min(inside, key=lambda i: (-f[i], c[i], i))
    return Regret(budget=float(budget), regret=float(f[best] - f[chosen]), chosen=chosen, best=best,
                  candidates=len(inside))


def default_budgets(cost: Sequence[float], quantiles: Sequence[float] = BUDGET_QUANTILES) -> list[float]:
    """Cost budgets at the given quantiles of the audited trials' costs (distinct, ascending)."""
    c = np.asarray([v for v in cost if math.isfinite(float(v))], dtype=float)
    if len(c) == 0:
        return []
    return sorted({float(np.quantile(c, q, method="higher")) for q in quantiles})


def ties_within_noise(values: Sequence[float], sigma: float, k: float = 2.0) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose values differ by less than ``k * sigma``."""
    v = [float(x) for x in values]
    if not math.isfinite(sigma) or sigma <= 0:
        return []
    return [(i, j) for i in range(len(v)) for j in range(i + 1, len(v)) if abs(v[i] - v[j]) < k * sigma]


def pooled_std(groups: Sequence[Sequence[float]]) -> float:
    """Pooled within-group standard deviation (ddof 1 per group) of repeated measurements, e.g. the
    proxy accuracy of the same trial under several seeds. ``nan`` without any repeated group."""
    num, den = 0.0, 0
    for g in groups:
        a = np.asarray([x for x in g if math.isfinite(float(x))], dtype=float)
        if len(a) >= 2:
            num += float(((a - a.mean()) ** 2).sum())
            den += len(a) - 1
    return math.sqrt(num / den) if den else math.nan


def cost_metric(objectives: Sequence[Sequence[str]]) -> str:
    """The first cost objective of a run (``[(metric, direction), ...]``): the first that is not an
    accuracy metric; ``flops`` when every objective is one."""
    return next((o[0] for o in objectives if o[0] not in ACCURACY_METRICS), "flops")


def _finite_or_nan(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    return float(value) if ok else math.nan


def noise_summary(noise: Mapping[str, Any] | None, proxy: Mapping[int, float]) -> dict[str, Any] | None:
    """The proxy's pooled standard deviation from ``noise`` (``{"seeds": {trial: {seed: accuracy}}}``,
    ``RUN/audit/noise.json``) together with each trial's own proxy accuracy (``proxy``); None without noise."""
    if not noise or not noise.get("seeds"):
        return None
    groups = {}
    for t, seeds in noise["seeds"].items():
        own = [proxy[int(t)]] if int(t) in proxy else []
        groups[int(t)] = own + [float(v) for v in seeds.values()]
    return {"sigma": pooled_std(list(groups.values())), "k": TIE_SIGMAS, "trials": sorted(groups),
            "groups": {str(t): g for t, g in sorted(groups.items())},
            "seeds": {str(t): dict(s) for t, s in noise["seeds"].items()}}


def audit_summary(records: Sequence[AuditRecord], objectives: Sequence[Sequence[str]], *,
                  noise: Mapping[str, Any] | None = None, front: Sequence[tuple[int, float]] = (),
                  seed: int = 0) -> dict[str, Any]:
    """Rows (trial, cost, proxy, final val, test, delta), Kendall tau and Spearman rho between proxy
    and final val accuracy with bootstrap intervals, the regret at :func:`default_budgets` of the run's
    first cost objective (:func:`cost_metric`, the trials' search values), the proxy noise
    (:func:`noise_summary`) and, with noise, ``ties``: the pairs of ``front`` points ``(trial, proxy
    accuracy)`` less than :data:`TIE_SIGMAS` sigma apart. JSON-safe (``nan`` becomes None)."""
    cost = cost_metric(objectives)
    rows = [{"trial": r.trial, "cost": _finite_or_nan(r.search_metrics.get(cost)), "proxy": r.proxy_accuracy,
             "final": r.val_accuracy, "test": r.test_accuracy, "delta": r.val_accuracy - r.proxy_accuracy}
            for r in sorted(records, key=lambda r: r.trial)]
    proxy, final, costs = ([row[k] for row in rows] for k in ("proxy", "final", "cost"))
    regrets = []
    for budget in default_budgets(costs):
        r = regret(proxy, final, costs, budget)
        if r is not None:
            regrets.append({**r.to_dict(), "chosen_trial": rows[r.chosen]["trial"],
                            "best_trial": rows[r.best]["trial"]})
    out = {"n": len(rows), "cost_metric": cost, "rows": rows,
           "kendall_tau": kendall_tau(proxy, final, seed=seed).to_dict(),
           "spearman_rho": spearman_rho(proxy, final, seed=seed).to_dict(),
           "regret": regrets, "regret_on": "final val accuracy (points)",
           "noise": noise_summary(noise, {row["trial"]: row["proxy"] for row in rows})}
    sigma = out["noise"]["sigma"] if out["noise"] else math.nan
    out["ties"] = [[front[i][0], front[j][0]] for i, j in ties_within_noise([a for _, a in front], sigma, TIE_SIGMAS)]
    return json_safe(out)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (an undefined correlation, ...) as ``None``: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["ACCURACY_METRICS", "TIE_SIGMAS", "Correlation", "Regret", "audit_summary", "cost_metric",
           "default_budgets", "json_safe", "kendall_tau", "noise_summary", "pooled_std", "regret", "spearman_rho",
           "ties_within_noise"]
