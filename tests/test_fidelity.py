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
