"""Budgeted allocation: per-group prune ratios (and per-unit bits) that meet a cost target while
losing the least summed sensitivity.

>>> cost = CostModel.from_model(model, 32)                       # analytic fvcore-exact FLOPs model
>>> a = allocate(smap, cost, 0.5, grid=(0.0, 0.1, ..., 0.7))      # FLOPs <= 50% of the original
>>> a.ratios, a.fraction, a.loss, a.label                         # ..., 'seed-flops-0.5'

**Cost model.** Pruning changes a layer's channel counts, and in a ResNet a layer's input and
output channels belong to different groups: a block's ``conv1`` reads the stage's residual
channels and writes the block's inner channels, so its FLOPs are ``k*k*H*W*cin_kept*cout_kept``,
a product of two groups' kept fractions, and the cost is not a sum over groups.
:class:`CostModel` is derived once from the model: each Conv2d / Linear / BatchNorm2d becomes a
term ``base * keep[in_group] * keep[out_group]`` (:func:`compress.prune.channel_coupling` says
which groups), ``base`` its fvcore FLOPs in the unpruned model and ``keep`` the exact kept
fraction (``keep_count(channels, ratio, round_to) / channels``). This is exact for convs, linears
and BN (their fvcore counts are bilinear in the channel counts); the few other counted ops
(global pooling: 0.01% of ResNet-20) are held constant. Metrics: ``flops``; ``params``; ``bops``
(conv/linear MACs x w x a, with per-unit bit choices as extra knobs); ``latency``: the FLOPs
model with each layer's base replaced by a caller-supplied per-layer cost table (e.g. measured
milliseconds at full width), scaling with the kept channels like its FLOPs.

**Search** (:mod:`compress._allocate_search`). Minimise the summed sensitivity loss
(``SensitivityMap.prune_loss``: accuracy points lost by pruning a group alone, linear between
measured ratios) subject to ``cost <= target``. The coupled cost is not separable over groups,
so no plain knapsack DP applies to all groups at once; but once the stage groups are fixed, the
block groups are separable (a Bottleneck's two inner groups form one compound knob). So the
stage assignments are enumerated (8^3 = 512 on the CIFAR ResNets' grid, 7^4 on ResNet-50's) in
order of their own loss, with a multiple-choice knapsack DP over the block components for each
(exact up to a cost discretisation of 1/500 of the cost to save, rounded so the pick stays
feasible), stopping once a stage assignment alone loses as much as the best total. A greedy
(least loss per cost saved; the finishing move is the least-loss one that reaches the target)
gives the starting bound and is the fallback when the enumeration would be too large (e.g.
``bops`` with per-stage bit knobs). A local search over single and pairwise knob changes then
polishes the result: lower loss, or the same loss and more of the budget, while feasible. At the
end no knob can step back towards less compression without breaking the target, so the result is
never wastefully below it. Exhaustive checks on small problems find the same optimum
(tests/compress/test_allocate.py). Per target on 2 busy cores: ResNet-20 ~1 s, ResNet-56 ~5 s,
ResNet-50 ~10-30 s (the map itself takes minutes).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from torch import nn

from compress._allocate_search import Knob, exact, greedy, improve, state
from spaces.policy import LayerBits, in_dropped_block, keep_count

log = logging.getLogger(__name__)

Metric = Literal["flops", "params", "bops", "latency"]
METRICS = ("flops", "params", "bops", "latency")
FLOAT = LayerBits(32, 32)
_REL = 1e-9
#: the least goal move (x target) of :func:`allocate_expressible` once a move changed nothing
_MIN_STEP = 0.01
#: requested ratios -> the ratios a search space really applies for them
Express = Callable[[Mapping[str, float]], Mapping[str, float]]


@dataclass(frozen=True)
class CostTerm:
    """``base * keep[groups[0]] * keep[groups[1]] * bits_factor[unit]`` (missing parts are 1)."""

    module: str
    base: float
    groups: tuple[str, ...] = ()
    unit: str | None = None


@dataclass(frozen=True)
class CostModel:
    """Analytic cost of a pruned (and, for ``bops``, quantized) model; see the module docstring."""

    metric: str
    channels: dict[str, int]
    terms: tuple[CostTerm, ...]
    constant: float = 0.0
    round_to: int = 1
    units: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, input_size: int, *, metric: Metric = "flops", round_to: int = 1,
                   units: Mapping[str, Sequence[str]] | None = None,
                   layer_costs: Mapping[str, float] | None = None) -> CostModel:
        """Derive the cost model of ``model`` (one fvcore pass, two dependency-graph traces).

        ``units``: quantization unit -> layers (``bops`` only; layers in no unit stay float).
        ``layer_costs``: cost of every conv/linear layer at full width (``latency`` only, required),
        e.g. measured milliseconds; each scales with its kept input x output channels.
        """
        from compress.measure import module_flops
        from compress.prune import channel_coupling, convert_option_a, has_option_a, list_groups

        if metric not in METRICS:
            raise ValueError(f"metric = {metric!r}: allowed {', '.join(METRICS)}")
        if metric == "latency" and not layer_costs:
            raise ValueError("metric 'latency' needs layer_costs: {conv/linear module: cost at full width}")
        work = convert_option_a(model) if has_option_a(model) else model
        coupling = channel_coupling(work, input_size)
        channels = {g.name: g.channels for g in list_groups(work, input_size)}
        flops = module_flops(work, input_size)
        unit_of = {layer: u for u, layers in (units or {}).items() for layer in layers}
        modules = dict(work.named_modules())
        terms: list[CostTerm] = []
        constant = 0.0
        if metric == "params":
            return cls(metric, channels, tuple(_param_terms(modules, coupling)), 0.0, round_to)
        layers = [n for n in flops if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
        if metric == "latency" and (missing := [n for n in layers if n not in layer_costs]):
            raise ValueError(f"layer_costs has no cost for {missing}")
        for name, value in flops.items():
            c = coupling.get(name)
            if metric in ("bops", "latency") and name not in layers:
                continue
            if c is None:
                constant += value
                continue
            groups = tuple(g for g in (c.in_group, c.out_group) if g is not None)
            if metric == "latency":
                value = float(layer_costs[name])
            elif metric == "bops":
                value *= FLOAT.w * FLOAT.a
            terms.append(CostTerm(name, float(value), groups, unit_of.get(name) if metric == "bops" else None))
        used_units = {u: tuple(v) for u, v in (units or {}).items()} if metric == "bops" else {}
        return cls(metric, channels, tuple(terms), constant, round_to, used_units)

    # ----- evaluation ------------------------------------------------------------------------
    @property
    def factor_names(self) -> list[str]:
        """Order of the factor vector: groups, then ``unit:<name>`` bit factors (then a constant 1)."""
        return list(self.channels) + [f"unit:{u}" for u in self.units]

    def keep_fraction(self, group: str, ratio: float) -> float:
        """Exact kept fraction of ``group``'s channels at ``ratio`` (0 when none would stay)."""
        n = self.channels[group]
        return keep_count(n, ratio, self.round_to) / n

    def factors(self, ratios: Mapping[str, float], bits: Mapping[str, LayerBits] | None = None) -> np.ndarray:
        """The factor vector of an assignment (groups not named: ratio 0; units not named: float)."""
        unknown = [g for g in ratios if g not in self.channels] + [u for u in (bits or {}) if u not in self.units]
        if unknown:
            raise KeyError(f"unknown groups/units {unknown}; known: {self.factor_names}")
        v = [self.keep_fraction(g, ratios.get(g, 0.0)) for g in self.channels]
        v += [bits_factor((bits or {}).get(u, FLOAT)) for u in self.units]
        return np.asarray(v + [1.0])

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        pos = {g: i for i, g in enumerate(self.channels)}
        pos.update({f"unit:{u}": len(self.channels) + i for i, u in enumerate(self.units)})
        one = len(pos)
        rows = []
        for t in self.terms:
            idx = [pos[g] for g in t.groups] + ([pos[f"unit:{t.unit}"]] if t.unit is not None else [])
            rows.append(idx + [one] * (3 - len(idx)))
        return np.asarray([t.base for t in self.terms]), np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def costs(self, factors: np.ndarray) -> np.ndarray:
        """Costs of a batch of factor vectors (shape ``(M, F+1)``), vectorised."""
        base, idx = self.arrays()
        f = np.atleast_2d(factors)
        return (f[:, idx[:, 0]] * f[:, idx[:, 1]] * f[:, idx[:, 2]]) @ base + self.constant

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(base per term, (terms, 3) factor positions)``, built once."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            cached = self._index()
            object.__setattr__(self, "_arrays", cached)
        return cached

    def cost(self, ratios: Mapping[str, float], bits: Mapping[str, LayerBits] | None = None) -> float:
        """Cost of the model pruned by ``ratios`` (and, for ``bops``, quantized per unit by ``bits``)."""
        return float(self.costs(self.factors(ratios, bits))[0])

    @property
    def total(self) -> float:
        """Cost of the uncompressed (float) model."""
        return self.cost({})

    def fraction(self, ratios: Mapping[str, float], bits: Mapping[str, LayerBits] | None = None) -> float:
        """Cost relative to the uncompressed model."""
        return self.cost(ratios, bits) / self.total

    def without(self, blocks: Sequence[str]) -> CostModel:
        """The cost model of the model with residual ``blocks`` dropped: their layers' terms and the
        groups inside them are gone (its ``total`` is the cost of the model with fewer blocks)."""
        if not blocks:
            return self
        return dataclasses.replace(
            self, channels={g: n for g, n in self.channels.items() if in_dropped_block(g, blocks) is None},
            terms=tuple(t for t in self.terms if in_dropped_block(t.module, blocks) is None))


def bits_factor(bits: LayerBits) -> float:
    """BOPs factor of a layer at ``bits`` relative to float (32 x 32)."""
    return (bits.w * bits.a) / (FLOAT.w * FLOAT.a)


def _param_terms(modules: Mapping[str, nn.Module], coupling: Mapping[str, object]) -> list[CostTerm]:
    """Parameter counts: weights scale with in x out channels, biases and BN affines with out."""
    terms = []
    for name, c in coupling.items():
        m = modules[name]
        if getattr(m, "autocompress_fixed", False):
            continue
        io = tuple(g for g in (c.in_group, c.out_group) if g is not None)
        out = (c.out_group,) if c.out_group is not None else ()
        for pname, p in m.named_parameters(recurse=False):
            groups = io if pname == "weight" and not isinstance(m, nn.BatchNorm2d) else out
            terms.append(CostTerm(f"{name}.{pname}", float(p.numel()), groups))
    return terms


# ----- allocation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Allocation:
    """One budgeted policy: per-group ratios (and per-unit bits) with its predicted cost and loss.

    ``fraction``: cost / uncompressed cost by the analytic :class:`CostModel`; ``loss``: summed
    sensitivity loss in accuracy points (a ranking proxy, not a prediction of the fine-tuned drop);
    ``drop``: residual blocks dropped (depth, :func:`compress.seed_allocation.allocate_depth`).
    """

    label: str
    metric: str
    target: float
    fraction: float
    loss: float
    ratios: dict[str, float]
    bits: dict[str, LayerBits] = field(default_factory=dict)
    drop: tuple[str, ...] = ()


def _knobs(smap, cost: CostModel, grid: Sequence[float], groups: Sequence[str],
           bit_choices: Sequence[LayerBits]) -> list[Knob]:
    """Prune knobs (grid ratios that keep a channel) and, for ``bops``, the measured bit choices."""
    knobs = []
    names = cost.factor_names
    for g in groups:
        ratios = [r for r in sorted({float(r) for r in grid}) if cost.keep_fraction(g, r) > 0]
        knobs.append(Knob(g, names.index(g), tuple(ratios), np.asarray([cost.keep_fraction(g, r) for r in ratios]),
                          np.asarray([smap.prune_loss(g, r) for r in ratios])))
    if cost.metric == "bops":
        ordered = sorted({b for b in bit_choices if not b.is_float}, key=bits_factor, reverse=True)
        for u in cost.units:
            measured = [(b, loss) for b in ordered if (loss := smap.quant_loss(u, b)) is not None]
            if measured:
                choices = (FLOAT, *(b for b, _ in measured))
                knobs.append(Knob(u, names.index(f"unit:{u}"), choices, np.asarray([bits_factor(b) for b in choices]),
                                  np.asarray([0.0] + [loss for _, loss in measured])))
    return knobs


def allocate(smap, cost: CostModel, target: float, *, grid: Sequence[float], groups: Sequence[str] | None = None,
             fixed: Mapping[str, float] | None = None, bit_choices: Sequence[LayerBits] = (),
             label: str | None = None, exact_search: bool = True) -> Allocation:
    """Per-group ratios on ``grid`` (and, for ``bops``, per-unit bits from ``bit_choices``) with
    ``cost <= target x uncompressed cost`` and the least summed sensitivity loss.

    ``smap``: a :class:`compress.sensitivity.SensitivityMap` with a row for every group in
    ``groups`` (default: every group the map and the model share); ``fixed``: ratios of groups
    that are not searched (pins), counted in the cost but never changed. Raises ``ValueError``
    when even the most compressed allocation misses the target (the message gives the minimum).
    ``exact_search=False`` stops after the greedy and local search (a fast bound, for screening).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target = {target}: allowed 0 < target <= 1 (a fraction of the uncompressed cost)")
    fixed = dict(fixed or {})
    if groups is None:
        groups = [g for g in cost.channels if g in smap.prune and g not in fixed]
    missing = [g for g in groups if g not in smap.prune or g not in cost.channels]
    if missing:
        raise ValueError(f"groups {missing} are not in both the sensitivity map and the model")
    knobs = _knobs(smap, cost, grid, groups, bit_choices)
    v0 = cost.factors(fixed)
    budget = target * cost.total * (1 + _REL)
    lowest = float(cost.costs(state(knobs, v0, [len(k.choices) - 1 for k in knobs]))[0])
    if lowest > budget:
        raise ValueError(f"{cost.metric} target {target:g} is out of reach: the most compressed allocation on "
                         f"this grid costs {lowest / cost.total:.3f} of the original")
    heuristic = improve(cost, knobs, v0, budget, greedy(cost, knobs, v0, budget))
    best = exact(cost, knobs, v0, budget, incumbent=heuristic) if exact_search else None
    choice = heuristic if best is None or best == heuristic else improve(cost, knobs, v0, budget, best)
    fraction = float(cost.costs(state(knobs, v0, choice))[0]) / cost.total
    assert fraction <= target * (1 + 1e-6), (fraction, target)  # the final exact check
    picked = [(k.name, k.choices[j]) for k, j in zip(knobs, choice)]
    chosen = {**fixed, **{name: c for name, c in picked if not isinstance(c, LayerBits)}}
    ratios = {g: float(chosen[g]) for g in cost.channels if chosen.get(g, 0.0) > 0}
    bits = {name: c for name, c in picked if isinstance(c, LayerBits) and not c.is_float}
    loss = float(sum(k.losses[j] for k, j in zip(knobs, choice)))
    return Allocation(label or f"seed-{cost.metric}-{target:g}", cost.metric, float(target), round(fraction, 6),
                      round(loss, 4), ratios, bits)


def allocate_expressible(smap, cost: CostModel, target: float, *, express: Express, rounds: int = 10,
                         **kwargs) -> Allocation:
    """:func:`allocate`, then the ratios as the search space can express them.

    ``express`` maps requested ratios to the ratios the space really applies (e.g. ``lambda r:
    spaces.space.params_for_ratios(space, dims, r).achieved``). When those miss the target, the
    allocation is redone for a goal moved by the miss, for up to ``rounds`` rounds; a space whose
    expressed cost jumps with the goal (global ratio + offsets) gets goals bisected between one that
    lands within the target and one beyond (:func:`_next_goal`). The result is the expressed
    allocation with the most cost within ``target`` (its ``ratios``, ``fraction`` and ``loss`` are
    the expressed ones). ``ValueError`` when no round lands within the target.
    """
    goal, best, last = target, None, None
    lo, hi = 0.0, math.inf  # goals known to express within / beyond the target
    label = kwargs.pop("label", None) or f"seed-{cost.metric}-{target:g}"
    for _ in range(rounds):
        try:
            a = allocate(smap, cost, goal, label=label, **kwargs)
        except ValueError:
            break
        ratios = {g: float(r) for g, r in express(a.ratios).items() if r > 0}
        fraction = cost.fraction(ratios, a.bits)
        feasible = fraction <= target * (1 + 1e-6)
        if feasible and (best is None or fraction > best.fraction):
            delta = sum(smap.prune_loss(g, ratios.get(g, 0.0)) - smap.prune_loss(g, a.ratios.get(g, 0.0))
                        for g in set(ratios) | set(a.ratios) if g in smap.prune)
            best = dataclasses.replace(a, target=float(target), ratios=ratios, fraction=round(fraction, 6),
                                       loss=round(a.loss + delta, 4))
        if feasible and target - fraction <= 1e-3 * target:  # close enough, from below
            break
        lo, hi = (max(lo, goal), hi) if feasible else (lo, min(hi, goal))
        goal, last = _next_goal(goal, target - fraction, lo, hi, stalled=ratios == last, target=target), ratios
    if best is None:
        raise ValueError(f"no allocation the space can express meets the {cost.metric} target {target:g}")
    return best


def _next_goal(goal: float, step: float, lo: float, hi: float, *, stalled: bool, target: float) -> float:
    """The next goal of :func:`allocate_expressible`: moved by the miss; once a feasible and an
    infeasible goal bracket the target, halfway between them when the move leaves the bracket or
    changed nothing; unbracketed, at least :data:`_MIN_STEP` x target when the last move changed nothing."""
    proposal = goal + step
    if lo > 0 and hi < math.inf:
        if stalled or not lo < proposal < hi:
            proposal = (lo + hi) / 2
    elif stalled:
        proposal = goal + math.copysign(max(abs(step), _MIN_STEP * target), step)
    return min(1.0, proposal)


__all__ = [
    "Allocation", "CostModel", "CostTerm", "Express", "METRICS", "allocate", "allocate_expressible", "bits_factor",
]
