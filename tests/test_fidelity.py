"""Proxy-fidelity statistics against hand-checked cases."""

from __future__ import annotations

import math

import pytest

from autocompress.fidelity import (
    default_budgets,
    kendall_tau,
    pooled_std,
    regret,
    spearman_rho,
    ties_within_noise,
)


def test_tau_and_rho_perfect_and_reversed_orders():
    x = [1, 2, 3, 4, 5]
    assert kendall_tau(x, [10, 20, 30, 40, 50]).value == pytest.approx(1.0)
    assert kendall_tau(x, [50, 40, 30, 20, 10]).value == pytest.approx(-1.0)
    assert spearman_rho(x, [3, 9, 27, 81, 243]).value == pytest.approx(1.0)


def test_tau_hand_checked_one_discordant_pair():
    # pairs (1,1) (2,3) (3,2) (4,4): 6 pairs, 5 concordant, 1 discordant -> tau = (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(4 / 6)
    # rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.8)


def test_tau_b_handles_ties():
    # x has one tie: concordant 5, discordant 0, ties in x 1 -> tau_b = 5 / sqrt(5 * 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]).value == pytest.approx(5 / math.sqrt(30))


def test_bootstrap_interval_contains_value_and_is_seeded():
    proxy = [80.1, 81.0, 79.5, 83.2, 84.0, 78.0, 82.5, 85.1, 77.2, 83.9]
    final = [84.0, 84.9, 84.1, 86.0, 86.9, 82.8, 85.1, 87.5, 82.0, 86.1]
    a = kendall_tau(proxy, final, seed=3)
    b = kendall_tau(proxy, final, seed=3)
    assert a == b
    assert a.ci_low <= a.value <= a.ci_high
    assert a.n == 10 and a.confidence == 0.95
    assert -1.0 <= a.ci_low < a.ci_high <= 1.0


def test_undefined_correlations_are_nan():
    assert math.isnan(kendall_tau([1, 2], [1, 2]).value)  # too few pairs
    flat = kendall_tau([1, 1, 1, 1], [1, 2, 3, 4])
    assert math.isnan(flat.value) and math.isnan(flat.ci_low)
    assert kendall_tau([1, 2, float("nan"), 4], [1, 2, 3, 4]).n == 3  # non-finite pairs dropped


def test_regret_hand_checked():
    proxy = [70.0, 75.0, 72.0, 80.0]
    final = [84.0, 83.0, 85.0, 86.0]
    cost = [0.3, 0.4, 0.5, 0.9]
    # budget 0.5: proxy picks index 1 (75) -> final 83; best within budget is index 2 (85): regret 2
    r = regret(proxy, final, cost, 0.5)
    assert (r.regret, r.chosen, r.best, r.candidates) == (2.0, 1, 2, 3)
    # budget 1.0: proxy picks index 3 (80) which is also the best final: regret 0
    assert regret(proxy, final, cost, 1.0).regret == 0.0
    assert regret(proxy, final, cost, 0.1) is None


def test_default_budgets_are_cost_quantiles():
    assert default_budgets([0.2, 0.4, 0.6, 0.8]) == [0.4, 0.6, 0.8]
    assert default_budgets([0.5, 0.5]) == [0.5]
    assert default_budgets([]) == []


def test_ties_and_pooled_std():
    assert ties_within_noise([80.0, 80.5, 82.0], sigma=0.3) == [(0, 1)]
    assert ties_within_noise([80.0, 80.5], sigma=float("nan")) == []
    # two groups: (1, 3) var 2, (2, 2, 2) var 0 -> pooled = sqrt((2 + 0) / (1 + 2))
    assert pooled_std([[1, 3], [2, 2, 2], [5]]) == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(pooled_std([[1], [2]]))


def test_bootstrap_rows_equal_scipy_row_by_row():
    import numpy as np
    from scipy import stats

    from autocompress.fidelity import _rho_rows, _tau_rows

    rng = np.random.default_rng(5)
    a = np.round(rng.uniform(0, 4, size=(200, 7)))  # many ties, some constant rows
    b = np.round(a + rng.uniform(0, 3, size=(200, 7)))
    a[0] = 2.0
    tau = [stats.kendalltau(x, y, variant="b").statistic if np.ptp(x) and np.ptp(y) else math.nan for x, y in zip(a, b)]
    rho = [stats.spearmanr(x, y).statistic if np.ptp(x) and np.ptp(y) else math.nan for x, y in zip(a, b)]
    assert np.allclose(_tau_rows(a, b), tau, equal_nan=True) and math.isnan(_tau_rows(a, b)[0])
    assert np.allclose(_rho_rows(a, b), rho, equal_nan=True)


def test_audit_summary_hand_checked():
    from autocompress.fidelity import audit_summary, cost_metric
    from autocompress.rundir import AuditRecord

    assert cost_metric([("accuracy", "maximize"), ("latency", "minimize"), ("flops", "minimize")]) == "latency"
    assert cost_metric([("accuracy_drop", "minimize")]) == "flops"
    # trials 7, 3, 9, 5 (unordered on purpose): proxy 70 72 75 80, final 84 85 83 86, flops 0.3 0.5 0.4 0.9
    rows = [(7, 70.0, 84.0, 0.3), (3, 72.0, 85.0, 0.5), (9, 75.0, 83.0, 0.4), (5, 80.0, 86.0, 0.9)]
    records = [AuditRecord(trial=t, settings={}, proxy_accuracy=p, val_accuracy=f, test_accuracy=f - 1,
                           search_metrics={"accuracy": p, "flops": c}) for t, p, f, c in rows]
    noise = {"seeds": {"9": {"1": 76.0, "2": 74.0}}}  # with its proxy 75: 75, 76, 74 -> sigma 1
    s = audit_summary(records, [("accuracy", "maximize"), ("flops", "minimize")], noise=noise,
                      front=[(5, 80.0), (9, 78.5), (2, 77.0)])
    assert [r["trial"] for r in s["rows"]] == [3, 5, 7, 9] and s["rows"][0]["delta"] == 13.0
    # by trial: (3: 72/85) (5: 80/86) (7: 70/84) (9: 75/83): pairs 6, discordant (3,9) (7,9): tau (4 - 2) / 6
    assert s["kendall_tau"]["value"] == pytest.approx(2 / 6) and s["n"] == 4
    # budgets: flops quantiles 0.25/0.5/0.75 ("higher") of 0.3 0.4 0.5 0.9 -> 0.4, 0.5, 0.9
    assert [r["budget"] for r in s["regret"]] == [0.4, 0.5, 0.9]
    # flops <= 0.4: trials 7 (70/84) and 9 (75/83): proxy picks 9, best is 7 -> regret 1
    assert (s["regret"][0]["chosen_trial"], s["regret"][0]["best_trial"], s["regret"][0]["regret"]) == (9, 7, 1.0)
    assert s["regret"][2]["regret"] == 0.0  # everything: 5 is best by both
    assert s["noise"]["sigma"] == pytest.approx(1.0) and s["noise"]["groups"] == {"9": [75.0, 76.0, 74.0]}
    assert s["ties"] == [[5, 9], [9, 2]]  # |80 - 78.5| and |78.5 - 77| < 2 sigma; |80 - 77| is not
    assert audit_summary(records, [("accuracy", "maximize")])["noise"] is None
