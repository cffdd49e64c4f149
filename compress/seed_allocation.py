"""Seed allocations (:func:`seed_allocations`: one budgeted allocation per target, the search's
sensitivity seeds), and depth in them: which residual blocks to drop, together with the channel ratios.

A depth dim (``depth/<stage>``) drops the last k droppable blocks of a stage; the sensitivity map
measures each stage's first k blocks of that drop order dropped alone (``SensitivityMap.depth``).
Dropping blocks removes their layers' cost outright, so one drop assignment turns the problem into
a smaller channel allocation: the cost model without those blocks (:meth:`CostModel.without`) and
the budget that is left. The drop assignments (one k per stage: 5^3 = 125 for ResNet-56 with
``prune.depth: 4``) are screened in order of their own loss with the fast allocation (greedy and
local search), stopping once a drop alone loses as much as the best total so far; the best
:data:`FINALISTS` are then allocated exactly (or as the search space can express them) and the least
total loss (drop + channels) wins. Losses add across depth and channels as they add across groups:
a ranking proxy, not a prediction of the fine-tuned drop.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from compress.allocate import Allocation, CostModel, allocate, allocate_expressible

log = logging.getLogger(__name__)

#: drop assignments allocated exactly after the screening
FINALISTS = 3
#: the most drop assignments screened (the product of the per-stage choices)
MAX_OPTIONS = 20_000
#: requested ratios and dropped blocks -> the ratios a search space really applies for them
DepthExpress = Callable[[Mapping[str, float], tuple[str, ...]], Mapping[str, float]]


def drop_options(smap, depth: Mapping[str, Sequence[str]]) -> list[tuple[float, tuple[str, ...]]]:
    """``(summed depth loss, blocks dropped)`` for every choice of k per stage (0 or a measured k),
    least loss first (ties: more blocks dropped first). ``depth``: ``{stage: blocks in drop order}``."""
    per_stage = []
    for stage, order in depth.items():
        measured = sorted(k for k in smap.depth.get(stage, {}) if 1 <= k <= len(order))
        per_stage.append([(0.0, ())] + [(smap.depth_loss(stage, k), tuple(order[:k])) for k in measured])
    n = math.prod(len(o) for o in per_stage)
    if n > MAX_OPTIONS:
        raise ValueError(f"{n} drop assignments: at most {MAX_OPTIONS} are screened (lower prune.depth)")
    combos = [(sum(loss for loss, _ in c), tuple(b for _, blocks in c for b in blocks))
              for c in itertools.product(*per_stage)]
    return sorted(combos, key=lambda c: (round(c[0], 9), -len(c[1])))


def _reduced(smap, cost: CostModel, target: float, drop: tuple[str, ...], *, express: DepthExpress | None,
             exact_search: bool, kwargs: Mapping[str, Any]) -> Allocation | None:
    """The channel allocation of the model without ``drop`` for the budget left (None when out of
    reach); its ``fraction`` is relative to the whole model, its ``loss`` the channels' alone."""
    reduced = cost.without(drop)
    goal = min(1.0, target * cost.total / reduced.total)
    kw = dict(kwargs)
    if kw.get("groups") is not None:
        kw["groups"] = [g for g in kw["groups"] if g in reduced.channels]
    kw["fixed"] = {g: r for g, r in (kw.get("fixed") or {}).items() if g in reduced.channels}
    kw["label"] = kw.get("label") or f"seed-{cost.metric}-{target:g}"  # named for the whole model's target
    try:
        if express is not None and exact_search:
            a = allocate_expressible(smap, reduced, goal, express=lambda r: express(r, drop), **kw)
        else:
            a = allocate(smap, reduced, goal, exact_search=exact_search, **kw)
    except ValueError:
        return None
    return dataclasses.replace(a, target=float(target), drop=drop,
                               fraction=round(a.fraction * reduced.total / cost.total, 6))


def allocate_depth(smap, cost: CostModel, target: float, *, depth: Mapping[str, Sequence[str]],
                   express: DepthExpress | None = None, **kwargs) -> Allocation:
    """Blocks to drop (a prefix of each stage's drop order in ``depth``) and per-group ratios with
    ``cost <= target x the whole model's cost`` and the least summed loss (depth + channels).

    ``kwargs`` go to :func:`compress.allocate.allocate` (``grid``, ``groups``, ``fixed``, ...; groups
    inside dropped blocks are left out); ``express`` maps requested ratios and the dropped blocks to
    the ratios the space applies (:func:`compress.allocate.allocate_expressible`). ``ValueError`` when
    no drop assignment meets the target.
    """
    screened: list[tuple[float, float, tuple[str, ...]]] = []
    bound = math.inf
    for loss, drop in drop_options(smap, depth):
        if loss >= bound:
            break
        a = _reduced(smap, cost, target, drop, express=None, exact_search=False, kwargs=kwargs)
        if a is not None:
            screened.append((loss + a.loss, loss, drop))
            bound = min(bound, loss + a.loss)
    finals = []
    for _, loss, drop in sorted(screened, key=lambda s: (round(s[0], 9), -len(s[2])))[:FINALISTS]:
        a = _reduced(smap, cost, target, drop, express=express, exact_search=True, kwargs=kwargs)
        if a is not None:
            finals.append(dataclasses.replace(a, loss=round(loss + a.loss, 4)))
    if not finals:
        raise ValueError(f"{cost.metric} target {target:g} is out of reach, with or without dropping blocks")
    return min(finals, key=lambda a: (round(a.loss, 9), -a.fraction))


def seed_allocations(smap, cost: CostModel, targets: Sequence[float] = (0.3, 0.5, 0.7), *,
                     express: Callable | None = None, depth: Mapping[str, Sequence[str]] | None = None,
                     **kwargs) -> list[Allocation]:
    """One :func:`allocate` (or, with ``express``, :func:`allocate_expressible`) per target,
    labelled ``seed-<metric>-<target>``; targets out of reach are skipped with a warning, and an
    allocation equal to an earlier one is dropped.

    ``depth`` (``{stage: droppable blocks in drop order}``, measured in ``smap.depth``): blocks may
    be dropped too (:func:`allocate_depth`); ``express`` then takes the dropped blocks as its second
    argument."""
    out: list[Allocation] = []
    for t in targets:
        try:
            if depth:
                a = allocate_depth(smap, cost, t, depth=depth, express=express, **kwargs)
            else:
                a = allocate(smap, cost, t, **kwargs) if express is None else \
                    allocate_expressible(smap, cost, t, express=express, **kwargs)
        except ValueError as exc:
            log.warning("no seed for %s %g: %s", cost.metric, t, exc)
            continue
        if all((a.ratios, a.bits, a.drop) != (b.ratios, b.bits, b.drop) for b in out):
            out.append(a)
    return out


__all__ = ["DepthExpress", "FINALISTS", "allocate_depth", "drop_options", "seed_allocations"]
