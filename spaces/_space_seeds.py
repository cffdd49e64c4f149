"""Seed policies as search params: per-group ratios (and per-unit bits) -> a point of the space.

A budgeted allocation (``compress.allocate``) proposes per-group prune ratios; the search samples
params. :func:`params_for_ratios` is the inverse of :func:`~spaces._space_dims.policy_from_params`
for the prune dims: with ``parametrization: global`` it picks the global ratio and per-group
offsets whose :func:`~spaces._space_dims.global_ratio` reproduces each ratio as closely as the
grid allows, and reports what it could not reproduce (``residual``). :func:`seed_params` labels
the seeds so the backends can enqueue them after :func:`~spaces._space_dims.baseline_params`.
Pure Python, like the rest of ``spaces``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spaces._space_config import Range, SearchSpace
from spaces._space_dims import DEPTH, FLOAT_BITS, GLOBAL, OFFSET, Dim, _baseline, global_ratio, policy_from_params
from spaces.policy import LayerBits, in_dropped_block

log = logging.getLogger(__name__)

#: candidate values tried for a continuous (step-less) global ratio or offset
_FINE = 100


class SeedLike(Protocol):
    """What :func:`seed_params` needs of a seed (``compress.allocate.Allocation`` has it)."""

    label: str
    ratios: Mapping[str, float]
    bits: Mapping[str, LayerBits]
    drop: Sequence[str]  # residual blocks dropped (optional: seeds without it drop none)


@dataclass(frozen=True)
class RatioFit:
    """Params reproducing requested ratios: ``achieved`` ratios per group (what the policy built
    from ``params`` prunes) and ``residual``, the largest ``|achieved - requested|``."""

    params: dict[str, Any]
    achieved: dict[str, float]
    residual: float


def _values(d: Dim) -> list[float]:
    """The values a numeric dim can take (its grid, or a fine grid when it has no step)."""
    if d.kind == "categorical":
        return [float(c) for c in d.choices or ()]
    lo, hi = float(d.low), float(d.high)
    if d.step:
        n = int(math.floor((hi - lo) / d.step + 1e-9))
        return [round(lo + i * d.step, 10) for i in range(n + 1)]
    return [lo + (hi - lo) * i / _FINE for i in range(_FINE + 1)]


def ratio_grid(space: SearchSpace) -> tuple[float, ...]:
    """Every ratio a prune group can take in ``space`` (``prune.ratio``'s grid, 0 first if absent)."""

    r = space.prune.ratio
    values = _values(Dim("ratio", "float", r.low, r.high, r.step)) if isinstance(r, Range) else [float(r)]
    return tuple(sorted({0.0, *values}))


def prune_groups(dims: Sequence[Dim]) -> tuple[list[str], dict[str, float]]:
    """``(free groups, {pinned group: ratio})`` of the prune dims, in dim order."""
    free: list[str] = []
    fixed: dict[str, float] = {}
    for d in dims:
        if not d.name.startswith("prune/") or d.name in (GLOBAL, "prune/criterion"):
            continue
        for g in d.targets:
            if d.fixed:
                fixed[g] = float(d.choices[0] if d.kind == "categorical" else d.low)
            else:
                free.append(g)
    return free, fixed


def quant_units(dims: Sequence[Dim]) -> dict[str, tuple[str, ...]]:
    """``{unit: layers}`` of the free weight-bit dims (``wbits/<layer|stage|model>``)."""
    return {d.name.partition("/")[2]: d.targets for d in dims if d.name.startswith("wbits/") and not d.fixed}


def depth_orders(dims: Sequence[Dim]) -> dict[str, tuple[str, ...]]:
    """``{stage: blocks in the order its free depth dim drops them}`` (last block first, as many as
    the dim's range): what the sensitivity map measures and the allocation may drop."""
    return {d.name[len(DEPTH):]: tuple(reversed(d.targets))[:int(d.high)]
            for d in dims if d.name.startswith(DEPTH) and not d.fixed and int(d.high) > 0}


def depth_params(dims: Sequence[Dim], drop: Sequence[str]) -> dict[str, int]:
    """The ``depth/*`` values that drop exactly ``drop`` (a tail of each stage's droppable blocks);
    ``ValueError`` for a block no depth dim can drop that way."""
    out: dict[str, int] = {}
    left = set(drop)
    for d in dims:
        if d.name.startswith(DEPTH):
            k = sum(t in left for t in d.targets)
            if set(d.targets[len(d.targets) - k:]) != {t for t in d.targets if t in left} or k > int(d.high):
                raise ValueError(f"drop {sorted(left & set(d.targets))}: {d.name} drops only the last "
                                 f"0..{int(d.high)} of {list(d.targets)}")
            out[d.name] = k
            left -= set(d.targets)
    if left:
        raise ValueError(f"drop {sorted(left)}: no depth dim drops these blocks")
    return out


def _global_candidates(space: SearchSpace, dims: Sequence[Dim], ratios: Mapping[str, float],
                       drop: Sequence[str] = ()) -> list[float]:
    g = next(d for d in dims if d.name == GLOBAL)
    if g.fixed:
        return _values(g)
    free = [ratios.get(t, 0.0) for t in g.targets if in_dropped_block(t, drop) is None]
    mean = sum(free) / len(free) if free else 0.0
    return sorted(set(_values(g)) | ({g.snap(mean)} if not g.step else set()), key=lambda v: (abs(v - mean), v))


def _fit_global(space: SearchSpace, dims: Sequence[Dim], ratios: Mapping[str, float],
                drop: Sequence[str] = ()) -> dict[str, float]:
    """Global ratio and offsets whose ratios are closest to ``ratios`` (max error, then total
    error, then the global nearest the mean ratio); groups inside ``drop`` do not count."""
    offsets = [d for d in dims if d.name.startswith(OFFSET) and in_dropped_block(d.targets[0], drop) is None]
    best: tuple[tuple[float, float], dict[str, float]] | None = None
    for glob in _global_candidates(space, dims, ratios, drop):
        params = {GLOBAL: glob}
        errors = []
        for d in offsets:
            want = ratios.get(d.targets[0], 0.0)
            off = min(_values(d), key=lambda o: (abs(global_ratio(space, glob, o) - want), abs(o)))
            params[d.name] = off
            errors.append(abs(global_ratio(space, glob, off) - want))
        score = (round(max(errors, default=0.0), 9), round(sum(errors), 9))
        if best is None or score < best[0]:
            best = (score, params)
    return best[1] if best else {}


def params_for_ratios(space: SearchSpace, dims: Sequence[Dim], ratios: Mapping[str, float], *,
                      base: Mapping[str, Any] | None = None, drop: Sequence[str] = ()) -> RatioFit:
    """Params whose policy drops the residual blocks ``drop`` (:func:`depth_params`) and prunes each
    other group as close to ``ratios`` as the space allows.

    Groups not named are meant unpruned. Non-prune dims take ``base`` (default: the
    ``original`` baseline's values: float, the baselines' distillation). Pinned groups keep their pin (a request
    that differs shows up in ``residual``).
    """
    params = dict(base) if base is not None else _baseline(dims, ratio=0.0, bits=FLOAT_BITS)
    params.update(depth_params(dims, drop) if drop else {})
    ratios = {g: r for g, r in ratios.items() if in_dropped_block(g, drop) is None}
    if any(d.name == GLOBAL for d in dims):
        params.update(_fit_global(space, dims, ratios, drop))
    else:
        for d in dims:
            if d.name.startswith("prune/") and d.name != "prune/criterion" and not d.fixed:
                params[d.name] = d.snap(ratios.get(d.targets[0], 0.0))
    achieved = dict(policy_from_params(space, dims, params).prune.ratios)
    groups = set(ratios) | set(achieved)
    residual = max((abs(achieved.get(g, 0.0) - ratios.get(g, 0.0)) for g in groups), default=0.0)
    return RatioFit(params, achieved, round(residual, 10))


def _with_bits(dims: Sequence[Dim], params: dict[str, Any], bits: Mapping[str, LayerBits]) -> dict[str, Any]:
    by_name = {d.name: d for d in dims}
    out = dict(params)
    for unit, b in bits.items():
        for key, value in ((f"wbits/{unit}", b.w), (f"abits/{unit}", b.a)):
            if key in by_name and not by_name[key].fixed:
                out[key] = by_name[key].snap(value)
    return out


def seed_params(space: SearchSpace, dims: Sequence[Dim], seeds: Sequence[SeedLike]) -> list[tuple[str, dict]]:
    """Labelled params of the seeds, to enqueue after :func:`baseline_params` (same shape).

    Each seed's ratios and dropped blocks go through :func:`params_for_ratios` (a residual above 0
    is logged: the space cannot express that seed exactly) and its ``bits`` set the unit's bit
    dims. A seed whose params equal a baseline's or an earlier seed's is dropped.
    """
    from spaces._space_dims import baseline_params

    seen = [p for _, p in baseline_params(space, dims)]
    out: list[tuple[str, dict]] = []
    for seed in seeds:
        fit = params_for_ratios(space, dims, seed.ratios, drop=tuple(getattr(seed, "drop", ()) or ()))
        if fit.residual > 1e-9:
            log.warning("seed %s: the space reproduces its ratios only within %.2f", seed.label, fit.residual)
        params = _with_bits(dims, fit.params, getattr(seed, "bits", {}) or {})
        if params in seen:
            log.info("seed %s equals an earlier baseline or seed: dropped", seed.label)
            continue
        seen.append(params)
        out.append((seed.label, params))
    return out


def int8_params(dims: Sequence[Dim], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every free weight/activation bit dim at 8 (the INT8 variant of a seed)."""
    eight = LayerBits(8, 8)
    return _with_bits(dims, dict(params), dict.fromkeys(quant_units(dims), eight))


def seed_variants(dims: Sequence[Dim], seeds: Sequence[tuple[str, dict]],
                  precisions: Sequence[str]) -> list[tuple[str, dict]]:
    """Each labelled seed once per precision, in seed order: ``float`` as is, ``int8`` through
    :func:`int8_params` (label + ``-int8``; left out when it equals the float params: no bit dims)."""
    out: list[tuple[str, dict]] = []
    for label, params in seeds:
        for precision in precisions:
            if precision == "float":
                out.append((label, params))
            elif (variant := int8_params(dims, params)) != params:
                out.append((f"{label}-int8", variant))
    return out
