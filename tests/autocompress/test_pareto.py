"""Hand-checked Pareto cases: dominance, ties, duplicates, exact hypervolume in 2-D/3-D, knee point,
crowding distance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from autocompress.pareto import (
    ParetoError,
    crowding_distance,
    default_reference,
    hypervolume,
    hypervolume_curve,
    hypervolume_fraction,
    ideal_point,
    knee_point,
    non_dominated,
    nondominated_sort,
)

MAX_MIN = ["maximize", "minimize"]


def test_non_dominated_2d_accuracy_vs_flops():
    # (accuracy, flops): (90, 10) dominates (85, 12); (80, 5) is a trade-off
    pts = [[90, 10], [85, 12], [80, 5], [70, 5]]
    assert non_dominated(pts, MAX_MIN).tolist() == [True, False, True, False]


def test_ties_in_one_objective():
    # equal accuracy: the cheaper one dominates; equal cost: the more accurate one dominates
    pts = [[90, 10], [90, 8], [85, 8]]
    assert non_dominated(pts, MAX_MIN).tolist() == [False, True, False]


def test_duplicates_are_all_kept():
    pts = [[90, 10], [90, 10], [80, 20]]
    assert non_dominated(pts, MAX_MIN).tolist() == [True, True, False]


def test_all_dominated_but_one():
    pts = [[95, 1], [90, 2], [80, 3], [70, 4]]
    assert non_dominated(pts, MAX_MIN).tolist() == [True, False, False, False]
    assert nondominated_sort(pts, MAX_MIN).tolist() == [0, 1, 2, 3]


def test_3d_front_and_sort():
    d = ["maximize", "minimize", "minimize"]
    pts = [[90, 10, 1.0], [90, 10, 0.8], [85, 5, 1.2], [80, 6, 1.3], [80, 20, 2.0]]
    assert non_dominated(pts, d).tolist() == [False, True, True, False, False]
    assert nondominated_sort(pts, d).tolist() == [1, 0, 0, 1, 2]


def test_hypervolume_2d_hand_checked():
    # minimise both, reference (4, 4): points (1,3), (2,2), (3,1) -> staircase area 3 + 2 + 1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], ["minimize", "minimize"], [4, 4]) == pytest.approx(6.0)
    # maximise accuracy, minimise flops: (90, 10), (80, 5), ref (0, 20): 90*10 + 80*5 = 1300
    assert hypervolume([[90, 10], [80, 5]], MAX_MIN, [0, 20]) == pytest.approx(1300.0)
    # dominated and duplicate points change nothing
    assert hypervolume([[90, 10], [80, 5], [80, 5], [70, 15]], MAX_MIN, [0, 20]) == pytest.approx(1300.0)


def test_hypervolume_ignores_points_beyond_reference():
    assert hypervolume([[5, 5]], ["minimize", "minimize"], [4, 4]) == 0.0
    assert hypervolume([[4, 1]], ["minimize", "minimize"], [4, 4]) == 0.0  # on the boundary: no volume
    assert hypervolume(np.zeros((0, 2)), ["minimize", "minimize"], [4, 4]) == 0.0


def test_hypervolume_3d_hand_checked():
    mmm = ["minimize"] * 3
    # one point: a box
    assert hypervolume([[1, 1, 1]], mmm, [2, 3, 4]) == pytest.approx(1 * 2 * 3)
    # two boxes (0,0,1) and (1,1,0) with ref (2,2,2): 2*2*1 + 1*1*2 - overlap 1*1*1 = 5
    assert hypervolume([[0, 0, 1], [1, 1, 0]], mmm, [2, 2, 2]) == pytest.approx(5.0)
    # the three unit-axis points with ref (2,2,2): inclusion-exclusion 3*4 - 3*2 + 1 = 7
    assert hypervolume([[1, 0, 0], [0, 1, 0], [0, 0, 1]], mmm, [2, 2, 2]) == pytest.approx(7.0)


def _hv_monte_carlo_free(pts, ref):
    """Exact hypervolume on a grid: every coordinate is an integer, so count unit cells."""
    pts = np.asarray(pts)
    count = 0
    for cell in itertools.product(*[range(int(r)) for r in ref]):
        if np.any(np.all(pts <= np.array(cell), axis=1)):
            count += 1
    return count


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_matches_cell_count(seed, dim):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(8, dim))
    ref = [6] * dim
    assert hypervolume(pts, ["minimize"] * dim, ref) == pytest.approx(_hv_monte_carlo_free(pts, ref))


def test_hypervolume_curve_is_monotone_and_ends_at_total():
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(60, 90, 20), rng.uniform(1, 10, 20)])
    valid = rng.uniform(size=20) > 0.2
    curve = hypervolume_curve(pts, MAX_MIN, [0, 11], valid=valid)
    assert np.all(np.diff(curve) >= 0)
    assert curve[-1] == pytest.approx(hypervolume(pts[valid], MAX_MIN, [0, 11]))


def test_knee_point():
    # a convex front: the middle point is the balanced one
    pts = [[90, 10], [88, 3], [70, 2], [60, 20]]
    assert knee_point(pts, MAX_MIN) == 1
    assert knee_point([[90, 10]], MAX_MIN) == 0


def test_crowding_distance_hand_checked():
    # (accuracy, flops) on a front: the ends are inf; inner points sum their neighbours' normalised gaps
    pts = [[90, 40], [85, 20], [80, 15], [70, 10]]
    dist = crowding_distance(pts, MAX_MIN)
    assert np.isinf(dist[0]) and np.isinf(dist[3])
    # point 1: accuracy gap (90 - 80) / 20 + flops gap (40 - 15) / 30; point 2: (85 - 70) / 20 + (20 - 10) / 30
    assert dist[1] == pytest.approx(10 / 20 + 25 / 30)
    assert dist[2] == pytest.approx(15 / 20 + 10 / 30)
    # the order of the points and the direction of an objective do not change the distances
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(crowding_distance(np.asarray(pts)[perm], MAX_MIN), dist[perm])
    np.testing.assert_allclose(crowding_distance(pts, ["minimize", "minimize"]), dist)


def test_crowding_distance_small_and_flat_sets():
    assert np.isinf(crowding_distance([[1, 2], [2, 1]], MAX_MIN)).all()
    assert crowding_distance(np.zeros((0, 2)), MAX_MIN).shape == (0,)
    flat = crowding_distance([[5, 1], [5, 2], [5, 3]], MAX_MIN)  # accuracy equal everywhere: adds nothing
    assert np.isinf(flat[[0, 2]]).all() and flat[1] == pytest.approx(1.0)
    with pytest.raises(ParetoError):
        crowding_distance([[1, 2, 3]], MAX_MIN)


def test_default_reference_and_fraction():
    ref_metrics = {"accuracy": 81.0, "flops": 40_000_000, "size": 1000}
    objectives = [("accuracy", "maximize"), ("flops", "minimize"), ("latency", "minimize")]
    assert default_reference(ref_metrics, objectives) == [0.0, 44_000_000.0, 1.1]
    assert default_reference(ref_metrics, objectives, override={"accuracy": 70.0})[0] == 70.0
    assert default_reference(ref_metrics, [("accuracy_drop", "minimize")]) == [81.0]
    ideal = ideal_point(objectives)
    assert ideal == [100.0, 0.0, 0.0]
    # the ideal point itself covers the whole box
    assert hypervolume_fraction([ideal], [o[1] for o in objectives],
                                default_reference(ref_metrics, objectives), ideal) == pytest.approx(1.0)


def test_bad_input_errors():
    with pytest.raises(ParetoError, match="directions"):
        non_dominated([[1, 2]], ["maximize", "up"])
    with pytest.raises(ParetoError, match="2 directions"):
        non_dominated([[1, 2, 3]], MAX_MIN)
    with pytest.raises(ParetoError, match="NaN"):
        non_dominated([[1, float("nan")]], MAX_MIN)
    with pytest.raises(ParetoError, match="'flops'"):
        default_reference({"accuracy": 80}, [("flops", "minimize")])
    with pytest.raises(ParetoError, match="hv_reference"):
        default_reference({}, [("weird", "minimize")])


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_hypervolume_agrees_with_optuna(dim):
    hv_mod = pytest.importorskip("optuna._hypervolume")
    rng = np.random.default_rng(dim)
    pts = rng.uniform(0, 1, size=(30, dim))
    ref = np.full(dim, 1.1)
    expected = hv_mod.compute_hypervolume(pts, ref)
    assert hypervolume(pts, ["minimize"] * dim, ref) == pytest.approx(expected, rel=1e-9)
