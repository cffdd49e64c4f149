"""Pareto analysis: non-dominated filtering, non-dominated sorting, exact hypervolume, knee point.

All functions take ``points`` as an ``(n, d)`` array (or nested list) of objective values in
their natural units and ``directions`` as a list of ``"maximize"``/``"minimize"``, one per
column. Internally everything is turned into minimisation by negating maximised columns.

Dominance
    ``a`` dominates ``b`` when ``a`` is no worse in every objective and strictly better in at
    least one. Duplicate points do not dominate each other, so *all* copies of a non-dominated
    point are reported as non-dominated (a cached trial that repeats a Pareto policy stays on the
    front). Filtering to feasible, complete trials is the caller's job.

Hypervolume
    The volume of objective space dominated by the front and bounded by a *reference point*
    (the "worst acceptable" corner). Exact for any dimension by recursive slicing (HSO); with
    the handful of Pareto points a search produces this is instant for 2-D and 3-D. Points that
    are not strictly better than the reference in every objective contribute nothing.

Default reference point (:func:`default_reference`)
    Chosen from the *original model's* metrics (``RunInfo.reference``) so that runs of the same
    model are comparable and the reference never depends on what a search happened to find:

    - ``accuracy`` / ``top5`` (maximise, percent): ``0``. A point counts with its full accuracy;
      a front that loses accuracy is penalised proportionally, never cut off to zero.
    - ``accuracy_drop`` (minimise, points): the reference accuracy (i.e. accuracy 0).
    - absolute costs ``flops``, ``params``, ``size``, ``bops`` (minimise): ``1.1 x`` the original
      model's value, so the uncompressed model itself still contributes a thin slab.
    - ratio costs ``flops_ratio``, ``latency``, ``latency_ratio`` (minimise; 1.0 = original),
      and the latency at any other batch, ``latency@128``: ``1.1``.

    A run may fix its own point in ``RunInfo.hv_reference``; that wins over the default.

Normalised hypervolume (:func:`hypervolume_fraction`)
    Raw hypervolume has awkward units (percent x MACs). Reports therefore show the fraction of
    the box between the reference point and the *ideal point* (accuracy 100, accuracy drop 0,
    cost 0) that the front dominates: ``0`` = nothing better than the reference, ``1`` = a
    perfect, free model. Fractions are comparable across runs that share a reference point.

Knee point (:func:`knee_point`)
    The non-dominated point closest (Euclidean) to the utopia point after min-max normalising
    every objective over the non-dominated set: the best balanced trade-off. Ties go to the
    lowest index.

Crowding distance (:func:`crowding_distance`)
    NSGA-II's density estimate within one set of points: per objective, the gap between a
    point's two neighbours in sorted order, divided by that objective's range, summed over the
    objectives. The extreme points of every objective get ``inf`` (always kept); a larger
    distance means a more isolated point. Used to promote diverse points of a front.

Knee of a front (:func:`knee_index`, what ``autocompress finalize --pick knee`` picks)
    On a non-dominated set with objectives normalised to [0, 1], the point farthest from the
    line through the two extreme points (2 objectives) or the hyperplane through the
    per-objective extremes (3+), on the side towards the ideal point. Degenerate fronts (fewer
    than 3 points, collinear points, a plane through the ideal point) fall back to
    :func:`knee_point`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autocompress.metrics import DIRECTIONS, lookup

#: metrics whose default reference / ideal is defined by :func:`default_reference`
PERCENT_METRICS = ("accuracy", "top5")
DROP_METRICS = ("accuracy_drop",)
ABSOLUTE_COSTS = ("flops", "params", "size", "bops")
RATIO_COSTS = ("flops_ratio", "latency", "latency_ratio")
COST_MARGIN = 1.1


class ParetoError(ValueError):
    """Bad input to a Pareto function (shape, direction, reference point)."""


def _as_min(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Return an ``(n, d)`` float array in which every column is to be minimised."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, len(directions))
    if arr.ndim != 2:
        raise ParetoError(f"points must be a 2-D array (n points x d objectives); got shape {arr.shape}")
    if arr.shape[1] != len(directions):
        raise ParetoError(f"points have {arr.shape[1]} objectives but {len(directions)} directions were given "
                          f"({list(directions)})")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ParetoError(f"directions = {bad}: allowed {list(DIRECTIONS)}")
    if np.isnan(arr).any():
        raise ParetoError("points contain NaN; drop trials without the objective metrics first")
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return arr * sign


def _ref_min(reference: Sequence[float], directions: Sequence[str]) -> np.ndarray:
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if ref.shape[0] != len(directions):
        raise ParetoError(f"reference point has {ref.shape[0]} values but there are {len(directions)} objectives")
    if np.isnan(ref).any():
        raise ParetoError(f"reference point contains NaN: {ref.tolist()}")
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return ref * sign


def _nd_mask_min(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of minimisation points (vectorised, in blocks to bound memory)."""
    n, d = pts.shape
    mask = np.ones(n, dtype=bool)
    block = max(1, 2_000_000 // max(1, n * d))
    for s in range(0, n, block):
        blk = pts[s:s + block, None, :]
        no_worse = np.all(pts[None, :, :] <= blk, axis=2)  # [i, j]: j is no worse than i everywhere
        better = np.any(pts[None, :, :] < blk, axis=2)
        mask[s:s + block] = ~np.any(no_worse & better, axis=1)
    return mask


def non_dominated(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Boolean mask: True for every point that no other point dominates (duplicates all kept)."""
    return _nd_mask_min(_as_min(points, directions))


def nondominated_sort(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Front rank of every point: 0 = non-dominated, 1 = non-dominated once front 0 is removed, ..."""
    pts = _as_min(points, directions)
    rank = np.full(pts.shape[0], -1, dtype=int)
    remaining = np.arange(pts.shape[0])
    level = 0
    while remaining.size:
        mask = _nd_mask_min(pts[remaining])
        rank[remaining[mask]] = level
        remaining = remaining[~mask]
        level += 1
    return rank


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume of minimisation points strictly better than ``ref`` (dominated ones add 0)."""
    p = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    best_before = np.minimum.accumulate(np.concatenate([[ref[1]], p[:, 1]]))[:-1]
    gain = np.clip(best_before - p[:, 1], 0.0, None)
    return float(np.sum((ref[0] - p[:, 0]) * gain))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[0] == 0:
        return 0.0
    d = pts.shape[1]
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _hv2(pts, ref)
    # slice along the last objective: between consecutive values the dominated region is the
    # (d-1)-D hypervolume of every point at or below the slice (dominated points add nothing)
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    depth = np.diff(np.append(pts[:, -1], ref[-1]))
    volume = 0.0
    for i in np.flatnonzero(depth > 0):
        volume += float(depth[i]) * _hv(pts[: i + 1, :-1], ref[:-1])
    return float(volume)


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference`` (natural units).

    Points not strictly better than the reference in every objective are ignored. Returns 0.0
    for an empty front.
    """
    pts = _as_min(points, directions)
    ref = _ref_min(reference, directions)
    pts = pts[np.all(pts < ref, axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    pts = np.unique(pts[_nd_mask_min(pts)], axis=0)
    return _hv(pts, ref)


def hypervolume_fraction(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                         reference: Sequence[float], ideal: Sequence[float]) -> float:
    """Hypervolume divided by the volume of the box between ``reference`` and ``ideal`` (0..1)."""
    ref = _ref_min(reference, directions)
    best = _ref_min(ideal, directions)
    sides = ref - best
    if np.any(sides <= 0):
        raise ParetoError(f"ideal point {list(ideal)} must be strictly better than reference {list(reference)} "
                          "in every objective")
    return hypervolume(points, directions, reference) / float(np.prod(sides))


def hypervolume_curve(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                      reference: Sequence[float], valid: Sequence[bool] | None = None) -> np.ndarray:
    """Hypervolume of the first ``k`` points for k = 1..n (search progress), skipping ``~valid`` points."""
    pts = _as_min(points, directions) if len(points) else np.zeros((0, len(directions)))
    ref = _ref_min(reference, directions)
    ok = np.ones(pts.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = np.zeros(pts.shape[0])
    front = np.zeros((0, len(directions)))
    value = 0.0
    for i in range(pts.shape[0]):
        if ok[i] and np.all(pts[i] < ref):
            p = pts[i]
            dominated = np.any(np.all(front <= p, axis=1) & np.any(front < p, axis=1)) if len(front) else False
            duplicate = np.any(np.all(front == p, axis=1)) if len(front) else False
            if not dominated and not duplicate:  # only a new non-dominated point adds volume
                keep = ~(np.all(p <= front, axis=1) & np.any(p < front, axis=1))
                front = np.vstack([front[keep], p])
                value = _hv(front, ref)
        out[i] = value
    return out


def knee_point(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """Index (into ``points``) of the non-dominated point closest to the normalised utopia point."""
    pts = _as_min(points, directions)
    if pts.shape[0] == 0:
        raise ParetoError("knee_point of an empty set of points")
    idx = np.flatnonzero(_nd_mask_min(pts))
    front = pts[idx]
    lo, hi = front.min(axis=0), front.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    dist = np.linalg.norm((front - lo) / span, axis=1)
    return int(idx[int(np.argmin(dist))])


def knee_index(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """Index of the knee of a set of non-dominated points (see the module docstring)."""
    pts = _as_min(points, directions)
    if pts.shape[0] == 0:
        raise ParetoError("knee_index of an empty set of points")
    plane = _extremes_plane(pts) if pts.shape[0] > 2 else None
    if plane is not None:
        w, c, z = plane
        dist = c - z @ w  # signed distance from the plane, > 0 towards the ideal point
        best = int(np.argmax(dist))
        if dist[best] > 1e-12:
            return best
    return knee_point(points, directions)  # degenerate: the point nearest the ideal one


def _extremes_plane(pts: np.ndarray) -> tuple[np.ndarray, float, np.ndarray] | None:
    """``(w, c, z)``: unit normal and offset of the hyperplane ``w . x = c`` through the
    per-objective extreme points of the min-max normalised points ``z``, oriented so the ideal
    point (the origin) is on its positive side; None when degenerate."""
    d = pts.shape[1]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    z = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)  # 0 = best in that objective
    extremes = z[[int(np.argmin(z[:, j])) for j in range(d)]]
    if d == 2:
        a, b = extremes
        w = np.array([b[1] - a[1], a[0] - b[0]])
    else:
        try:
            _, sv, vt = np.linalg.svd(extremes[1:] - extremes[0])
        except np.linalg.LinAlgError:
            return None
        if sv.size != d - 1 or sv[-1] <= 1e-9:
            return None
        w = vt[-1]
    norm = float(np.linalg.norm(w))
    if norm < 1e-12:
        return None
    w = w / norm
    c = float(w @ extremes[0])
    if abs(c) < 1e-12:  # the plane passes through the ideal point: no "towards the ideal" side
        return None
    return (w, c, z) if c > 0 else (-w, -c, z)


def crowding_distance(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """NSGA-II crowding distance of every point (see the module docstring); ``inf`` at the extremes.

    Sets of one or two points are all extremes (``inf``). An objective in which every point is
    equal adds nothing. Duplicate points share their neighbours' gap in sorted order.
    """
    pts = _as_min(points, directions)
    n, d = pts.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for j in range(d):
        order = np.argsort(pts[:, j], kind="stable")
        column = pts[order, j]
        span = column[-1] - column[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (column[2:] - column[:-2]) / span
    return dist


def _batch_ratio(metric: str) -> bool:
    """``latency@128``: a ratio cost measured at another batch."""
    found = lookup(metric)
    return "@" in metric and found is not None and found.name in RATIO_COSTS


def _metric_reference(metric: str, reference_metrics: Mapping[str, Any]) -> float:
    if metric in PERCENT_METRICS:
        return 0.0
    if metric in RATIO_COSTS or _batch_ratio(metric):
        return COST_MARGIN
    if metric in DROP_METRICS:
        acc = reference_metrics.get("accuracy")
        if acc is None:
            raise ParetoError("default hypervolume reference for 'accuracy_drop' needs the original model's "
                              "'accuracy' in the run's reference metrics")
        return float(acc)
    if metric in ABSOLUTE_COSTS:
        value = reference_metrics.get(metric)
        if value is None:
            raise ParetoError(f"default hypervolume reference for {metric!r} needs the original model's "
                              f"{metric!r} in the run's reference metrics (have {sorted(reference_metrics)})")
        return COST_MARGIN * float(value)
    raise ParetoError(f"no default hypervolume reference for metric {metric!r}; known: "
                      f"{list(PERCENT_METRICS + DROP_METRICS + ABSOLUTE_COSTS + RATIO_COSTS)}; "
                      "set RunInfo.hv_reference")


def default_reference(reference_metrics: Mapping[str, Any], objectives: Sequence[tuple[str, str]],
                      override: Mapping[str, float] | None = None) -> list[float]:
    """Reference point for ``objectives`` ([(metric, direction), ...]); see the module docstring.

    ``override`` (e.g. ``RunInfo.hv_reference``) replaces the default for the metrics it names.
    """
    override = override or {}
    return [float(override[m]) if m in override else _metric_reference(m, reference_metrics)
            for m, _ in objectives]


def ideal_point(objectives: Sequence[tuple[str, str]]) -> list[float]:
    """The best value each objective could take: accuracy 100, accuracy drop 0, cost 0."""
    out = []
    for metric, direction in objectives:
        if metric in PERCENT_METRICS:
            out.append(100.0)
        elif direction == "minimize":
            out.append(0.0)
        else:
            raise ParetoError(f"no ideal value known for maximised metric {metric!r}")
    return out
