"""The optimisers behind :func:`compress.allocate.allocate`: exact-up-to-discretisation search for
coupled prune groups, a greedy fallback, and a local search that polishes either result.

The problem: knobs (prune groups, quantization units) each pick one choice; minimise the summed
loss subject to ``cost(choices) <= budget``, where the cost is a sum of terms each multiplying at
most three knob factors (:class:`compress.allocate.CostModel`).

* :func:`exact`: knobs coupled with more than two others (a ResNet's stage groups: every block
  conv of the stage reads or writes their channels) are enumerated; the others fall into small
  components (a BasicBlock's inner group alone, a Bottleneck's two inner groups together) whose
  costs are *separable* once the outer knobs are fixed, so each outer assignment is a
  multiple-choice knapsack solved exactly by DP over the cost saved, discretised into
  :data:`BUCKETS` steps rounded down (so a DP-feasible pick is truly feasible; what the rounding
  gives away is at most one step per component, recovered by the local search). Outer
  assignments are visited in order of their own loss and the loop stops once that alone reaches
  the best total. Returns None when the enumeration would be too large.
* :func:`greedy`: start uncompressed; repeatedly take the move (one knob to any more compressed
  choice) with the least loss per cost saved; the last move is the least-loss one that reaches
  the budget.
* :func:`improve`: single and pairwise knob changes that lower the loss, or keep it and use more
  of the budget, while feasible, until none is left.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BUCKETS = 500
MAX_OUTER = 4096
MAX_COMPOUND = 64
_REL = 1e-9


@dataclass(frozen=True)
class Knob:
    """One decision: a prune group's ratio or a quantization unit's bits."""

    name: str
    factor: int  # position in the cost model's factor vector
    choices: tuple  # least compressed first
    values: np.ndarray  # factor value per choice
    losses: np.ndarray  # sensitivity loss per choice (non-decreasing)


def state(knobs: Sequence[Knob], base: np.ndarray, choice: Sequence[int]) -> np.ndarray:
    """The factor vector with every knob at its chosen value."""
    v = base.copy()
    for k, j in zip(knobs, choice):
        v[k.factor] = k.values[j]
    return v


def _singles(knobs: Sequence[Knob], choice: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Every single change: knob index, new choice, factor position, new value, loss change."""
    rows = [(i, j) for i, k in enumerate(knobs) for j in range(len(k.choices)) if j != choice[i]]
    ks = np.asarray([i for i, _ in rows], dtype=np.int64)
    js = np.asarray([j for _, j in rows], dtype=np.int64)
    fac = np.asarray([knobs[i].factor for i, _ in rows], dtype=np.int64)
    val = np.asarray([knobs[i].values[j] for i, j in rows])
    dl = np.asarray([knobs[i].losses[j] - knobs[i].losses[choice[i]] for i, j in rows])
    return ks, js, fac, val, dl


def improve(cost, knobs: Sequence[Knob], v0: np.ndarray, budget: float, choice: Sequence[int],
            max_rounds: int = 200) -> list[int]:
    """Single and pairwise changes that lower the loss (or keep it and spend more budget)."""
    choice = list(choice)
    for _ in range(max_rounds):
        v = state(knobs, v0, choice)
        current = float(cost.costs(v)[0])
        ks, js, fac, val, dl = _singles(knobs, choice)
        a, b = np.triu_indices(len(ks), 1)
        a, b = a[ks[a] != ks[b]], b[ks[a] != ks[b]]
        first = np.concatenate([np.arange(len(ks)), a])
        second = np.concatenate([np.full(len(ks), -1), b])
        batch = np.repeat(v[None, :], len(first), axis=0)
        rows = np.arange(len(first))
        batch[rows, fac[first]] = val[first]
        paired = second >= 0
        batch[rows[paired], fac[second[paired]]] = val[second[paired]]
        new = cost.costs(batch)
        dloss = dl[first] + np.where(paired, dl[np.maximum(second, 0)], 0.0)
        ok = (new <= budget) & ((dloss < -1e-9) | ((np.abs(dloss) <= 1e-9) & (new > current * (1 + _REL))))
        if not ok.any():
            return choice
        cand = np.flatnonzero(ok)
        m = cand[np.lexsort((-new[cand], dloss[cand]))[0]]
        for idx in (first[m], second[m]):
            if idx >= 0:
                choice[int(ks[idx])] = int(js[idx])
    log.warning("allocation local search stopped after %d rounds", max_rounds)
    return choice


def greedy(cost, knobs: Sequence[Knob], v0: np.ndarray, budget: float) -> list[int]:
    """Least loss per cost saved until the cost is within ``budget`` (see the module docstring)."""
    choice = [0] * len(knobs)
    v = state(knobs, v0, choice)
    current = float(cost.costs(v)[0])
    while current > budget:
        ks, js, fac, val, dl = _singles(knobs, choice)
        forward = js > np.asarray(choice)[ks]
        ks, js, fac, val, dl = ks[forward], js[forward], fac[forward], val[forward], dl[forward]
        batch = np.repeat(v[None, :], len(ks), axis=0)
        batch[np.arange(len(ks)), fac] = val
        new = cost.costs(batch)
        saved = current - new
        feasible = np.flatnonzero(new <= budget)
        if len(feasible):  # finishing move: least loss, then the most cost kept
            m = feasible[np.lexsort((-new[feasible], np.round(dl[feasible], 9)))[0]]
        else:
            useful = np.flatnonzero(saved > 0)
            if not len(useful):
                raise ValueError("no move lowers the cost")
            m = useful[np.lexsort((-saved[useful], dl[useful] / saved[useful]))[0]]
        choice[int(ks[m])] = int(js[m])
        v = batch[m]
        current = float(new[m])
    return choice


# ----- exact search ------------------------------------------------------------------------------
def _partition(cost, knobs: Sequence[Knob]) -> tuple[list[int], list[list[int]]] | None:
    """Outer knobs and the components of the others: the most coupled knob of the largest
    component moves out until every component has at most :data:`MAX_COMPOUND` compound
    choices (a ResNet's stage groups go first). None when the outer enumeration is too large."""
    _, idx = cost.arrays()
    knob_of = {k.factor: i for i, k in enumerate(knobs)}
    linked = [sorted({knob_of[f] for f in row.tolist() if f in knob_of}) for row in idx]
    neighbours: list[set[int]] = [set() for _ in knobs]
    for ks in linked:
        for a in ks:
            neighbours[a].update(b for b in ks if b != a)
    size = lambda ids: math.prod(len(knobs[i].choices) for i in ids)  # noqa: E731
    outer: list[int] = []
    while True:
        comps = _connected([i for i in range(len(knobs)) if i not in outer], neighbours)
        big = max(comps, key=size, default=[])
        if size(big) <= MAX_COMPOUND:
            break
        outer.append(max(big, key=lambda i: (len(neighbours[i] - set(outer)), -i)))
    return (outer, comps) if size(outer) <= MAX_OUTER else None


def _connected(ids: Sequence[int], neighbours: Sequence[set[int]]) -> list[list[int]]:
    """Connected components of ``ids`` under ``neighbours`` (restricted to ``ids``), in order."""
    todo, out = set(ids), []
    for i in ids:
        if i not in todo:
            continue
        comp, stack = [], [i]
        todo.discard(i)
        while stack:
            a = stack.pop()
            comp.append(a)
            for b in neighbours[a] & todo:
                todo.discard(b)
                stack.append(b)
        out.append(sorted(comp))
    return out


@dataclass
class _Component:
    knobs: list[int]
    choices: list[tuple[int, ...]]  # compound choices (one choice per knob)
    factors: np.ndarray  # (n_choices, len(knobs)) factor values
    positions: np.ndarray  # factor positions of the knobs
    losses: np.ndarray  # (n_choices,)


def _components(knobs: Sequence[Knob], comps: Sequence[Sequence[int]]) -> list[_Component]:
    out = []
    for ids in comps:
        choices = list(itertools.product(*(range(len(knobs[i].choices)) for i in ids)))
        factors = np.asarray([[knobs[i].values[j] for i, j in zip(ids, js)] for js in choices])
        losses = np.asarray([sum(knobs[i].losses[j] for i, j in zip(ids, js)) for js in choices])
        out.append(_Component(list(ids), choices, factors, np.asarray([knobs[i].factor for i in ids]), losses))
    return out


def _savings(cost, v: np.ndarray, base: float, comps: Sequence[_Component]) -> list[np.ndarray]:
    """Cost saved by each compound choice of each component, the others at their first choice."""
    batch = np.repeat(v[None, :], sum(len(c.choices) for c in comps), axis=0)
    bounds = np.cumsum([0] + [len(c.choices) for c in comps])
    for c, lo, hi in zip(comps, bounds, bounds[1:]):
        batch[lo:hi, c.positions] = c.factors
    costs = cost.costs(batch)
    return [base - costs[lo:hi] for lo, hi in zip(bounds, bounds[1:])]


def _efficient(savings: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the choices no other choice beats (more saving for no more loss)."""
    order = np.lexsort((loss, -savings))
    sorted_loss = loss[order]
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(sorted_loss)[:-1]])
    return order[sorted_loss < best_before - 1e-12]


def _best_rate(savings: Sequence[np.ndarray], comps: Sequence[_Component]) -> float:
    """The least loss per unit of cost saved of any choice: the inner loss is at least this
    times the cost that must be saved."""
    rates = [c.losses[s > 0] / s[s > 0] for s, c in zip(savings, comps)]
    return float(min((r.min() for r in rates if len(r)), default=0.0))


def _mckp(savings: Sequence[np.ndarray], losses: Sequence[np.ndarray], need: float) -> list[int] | None:
    """Least-loss choice per component with summed savings >= ``need``; savings are discretised
    down to ``need / BUCKETS`` steps, and the state ``BUCKETS`` means "need met"."""
    if need <= 0:
        return [int(np.argmin(loss)) for loss in losses]
    steps = BUCKETS
    grid = np.arange(steps + 1)
    dp = np.full(steps + 1, np.inf)
    dp[0] = 0.0
    history = []
    kept = [_efficient(s, loss) for s, loss in zip(savings, losses)]
    for (s, loss), keep in zip(zip(savings, losses), kept):
        s, loss = s[keep], loss[keep]
        d = np.minimum(np.floor(np.maximum(s, 0.0) * steps / need + 1e-9), steps).astype(np.int64)
        src = grid[None, :] - d[:, None]
        cand = np.where(src >= 0, dp[np.clip(src, 0, None)], np.inf) + loss[:, None]
        suffix = np.minimum.accumulate(dp[::-1])[::-1]  # "need met" is reached from any state >= steps - d
        cand[:, steps] = suffix[np.maximum(steps - d, 0)] + loss
        pick = np.argmin(cand, axis=0)
        history.append((dp, d, pick))
        dp = cand[pick, grid]
    if not np.isfinite(dp[steps]):
        return None
    picks, t = [], steps
    for (prev, d, pick), keep in zip(reversed(history), reversed(kept)):
        j = int(pick[t])
        picks.append(int(keep[j]))
        if t < steps:
            t -= int(d[j])
        else:
            lo = max(steps - int(d[j]), 0)
            t = lo + int(np.argmin(prev[lo:]))
    return picks[::-1]


def exact(cost, knobs: Sequence[Knob], v0: np.ndarray, budget: float,
          incumbent: Sequence[int] | None = None) -> list[int] | None:
    """Outer knobs enumerated by increasing loss, a knapsack DP for the rest (module docstring).
    ``incumbent`` (a feasible choice, e.g. the greedy one) bounds the enumeration from the start.
    Returns the best choice found (the incumbent when nothing beats it), or None when the
    problem is too large to enumerate."""
    parts = _partition(cost, knobs)
    if parts is None:
        return None
    outer, comp_ids = parts
    comps = _components(knobs, comp_ids)
    combos = list(itertools.product(*(range(len(knobs[i].choices)) for i in outer)))
    outer_loss = np.asarray([sum(knobs[i].losses[j] for i, j in zip(outer, js)) for js in combos])
    best = list(incumbent) if incumbent is not None else None
    best_loss = float(sum(k.losses[j] for k, j in zip(knobs, best))) if best is not None else np.inf
    for o in np.argsort(outer_loss, kind="stable"):
        if outer_loss[o] >= best_loss - 1e-12:
            break  # every remaining outer assignment alone loses at least as much
        choice = [0] * len(knobs)
        for i, j in zip(outer, combos[o]):
            choice[i] = j
        v = state(knobs, v0, choice)
        base = float(cost.costs(v)[0])
        savings = _savings(cost, v, base, comps)
        if base - sum(float(x.max()) for x in savings) > budget:
            continue  # even the most compressed components miss the budget
        if outer_loss[o] + (base - budget) * _best_rate(savings, comps) >= best_loss - 1e-12:
            continue  # lower bound: no component loses less per unit of cost saved than the best rate
        picks = _mckp(savings, [c.losses for c in comps], base - budget)
        if picks is None:
            continue
        loss = outer_loss[o] + sum(c.losses[p] for c, p in zip(comps, picks))
        if loss < best_loss - 1e-12:
            for c, p in zip(comps, picks):
                for i, j in zip(c.knobs, c.choices[p]):
                    choice[i] = j
            best_loss, best = loss, choice
    return best
