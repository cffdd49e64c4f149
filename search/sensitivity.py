"""The run's sensitivity map (``RUN/sensitivity.json``) and the seed policies allocated from it.

The map (:mod:`compress.sensitivity`) is computed once per run, under a file lock so parallel
workers wait for it instead of measuring it twice, and written atomically. Its key hashes the
model's weights (content, so an adapted model counts as its own weights), the data section,
the settings, the groups and the quantization units; a cached file whose key differs is
measured again.

**Reuse across runs.** Every computed map is also stored as ``<cache>/sensitivity/<key>.json``
(``<cache>`` = ``$AUTOCOMPRESS_CACHE``, default ``~/.cache/autocompress``). A new run with the
same key (same weights, data, settings) copies it instead of measuring. Since the weights are
hashed by content, runs that adapt the same checkpoint reuse the map only when the adapted
weights came out bit-identical. An unwritable cache folder is skipped with a warning.

Integration: with ``search.seeds`` set, the driver calls :func:`search_seeds` before the trials start
(the map's time goes to ``run.json``'s ``search.sensitivity``); the backends enqueue
``baseline_params(space, dims)`` and then those seeds (labels ``seed-flops-0.5``, ...).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autocompress.rundir import atomic_write_json, file_lock
from compress.sensitivity import SensitivityMap, SensitivitySettings
from spaces.space import (
    SearchSpace,
    depth_orders,
    params_for_ratios,
    prune_groups,
    quant_units,
    ratio_grid,
    seed_params,
    seed_variants,
)

log = logging.getLogger(__name__)

FILENAME = "sensitivity.json"
#: ratios measured per group: this many, evenly spread up to the space's largest ratio
MEASURED_RATIOS = 4
SEED_TARGETS = (0.3, 0.5, 0.7)


def shared_cache_dir() -> Path:
    """Where maps are shared across runs: ``$AUTOCOMPRESS_CACHE/sensitivity`` (default ``~/.cache/autocompress``)."""
    root = os.environ.get("AUTOCOMPRESS_CACHE") or str(Path.home() / ".cache" / "autocompress")
    return Path(root).expanduser() / "sensitivity"


def _read(path: Path, key: str) -> SensitivityMap | None:
    try:
        data = json.loads(path.read_text())
        smap = SensitivityMap.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return smap if smap.key == key else None


def _compute_shared(shared: Path | None, key: str, compute_fn: Callable[[], SensitivityMap]) -> SensitivityMap:
    """The shared copy when there is one, else ``compute_fn()`` stored there (best effort)."""
    if shared is None:
        return compute_fn()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(shared / f".{key}.lock"))
        except OSError as exc:
            log.warning("sensitivity cache %s is not usable (%s): not sharing the map", shared, exc)
            return compute_fn()
        hit = _read(shared / f"{key}.json", key)
        if hit is not None:
            log.info("sensitivity map reused from %s", shared / f"{key}.json")
            return hit
        smap = compute_fn()
        try:
            atomic_write_json(shared / f"{key}.json", smap.to_dict())
        except OSError as exc:
            log.warning("could not store the sensitivity map in %s: %s", shared, exc)
        return smap


def load_or_compute(run_dir: str | Path, key: str, compute_fn: Callable[[], SensitivityMap], *,
                    shared_dir: Path | None | bool = True) -> SensitivityMap:
    """``RUN/sensitivity.json`` when its key is ``key``; else the shared copy; else ``compute_fn()``.

    ``compute_fn`` must return a map with this ``key``. ``shared_dir``: True for
    :func:`shared_cache_dir`, a folder, or None/False for no cross-run cache.
    """
    run_dir = Path(run_dir)
    path = run_dir / FILENAME
    shared = shared_cache_dir() if shared_dir is True else (Path(shared_dir) if shared_dir else None)
    with file_lock(run_dir / f".{FILENAME}.lock"):
        hit = _read(path, key)
        if hit is not None:
            return hit
        smap = _compute_shared(shared, key, compute_fn)
        if smap.key != key:
            raise ValueError(f"compute_fn returned a map with key {smap.key!r}; expected {key!r}")
        atomic_write_json(path, smap.to_dict())
        return smap


def default_settings(space: SearchSpace) -> SensitivitySettings:
    """Map settings for ``space``: 4 ratios evenly spread on its grid up to the largest, its
    criterion and rounding, its integer weight bits (activations as the space couples them),
    1,000 val images (at most ``budget.val_limit``) and the trials' BN recalibration batches.

    The recalibration follows the trials exactly (``compress.apply`` takes the batches from the
    ``calib`` split when it holds them, else from the augmented ``train`` split): on the adapted
    ResNet-20, 5 un-augmented calib batches cost 7.4 points of top-1 on the unpruned model while
    5 augmented train batches cost none, so fewer batches than the trials use would bias the map.
    """
    grid = [r for r in ratio_grid(space) if r > 0] or [0.5]
    top = grid[-1]
    picks = sorted({min(grid, key=lambda r: (round(abs(r - top * i / MEASURED_RATIOS), 9), -r))
                    for i in range(1, MEASURED_RATIOS + 1)})
    q = space.quant
    bits: list[tuple[int, int]] = []
    if q.enabled:
        for w in q.weight_bits:
            acts = [a for a in q.act_choices(w) if a < 16] or [8]
            if w < 16:
                bits.append((w, max(acts)))
    limit = space.budget.val_limit
    return SensitivitySettings(ratios=tuple(picks), bits=tuple(bits), backend=q.backend,
                               criterion=space.prune.criteria[0], round_to=space.prune.round_to,
                               val_limit=min(1000, limit) if limit else 1000,
                               bn_recal_batches=space.budget.bn_recal_batches)


def objective_map(objective: Any, settings: SensitivitySettings | None = None, *,
                  shared_dir: Path | None | bool = True) -> SensitivityMap:
    """The sensitivity map of ``objective``'s model (a ``search.objective.Objective``), cached."""
    from compress.sensitivity import compute_map, sensitivity_key

    space = objective.space
    settings = settings or default_settings(space)
    groups, _ = prune_groups(objective.dims)
    units = quant_units(objective.dims) if settings.bits else {}
    depth = depth_orders(objective.dims)
    data_desc = {**space.to_dict()["data"], "input_size": objective.baseline.input_size}
    if space.data.data_dir:  # the folder itself, however the space spells it
        data_desc["data_dir"] = str(space.resolve_path(space.data.data_dir))
    key = sensitivity_key(objective.model, data_desc, settings, groups, units, depth)

    def compute() -> SensitivityMap:
        log.info("measuring the sensitivity map: %d groups x %d ratios, %d quantization units, %d stages' depth",
                 len(groups), len(settings.ratios), len(units), len(depth))
        return compute_map(objective.model, groups, units, objective.data, settings,
                           input_size=objective.baseline.input_size, device=objective.device, key=key,
                           depth=depth)

    return load_or_compute(objective.run_dir, key, compute, shared_dir=shared_dir)


def objective_seeds(objective: Any, smap: SensitivityMap, targets: Sequence[float] = SEED_TARGETS, *,
                    metric: str = "flops") -> tuple[list[tuple[str, dict]], list[Any]]:
    """Seed params (labelled ``seed-<metric>-<target>``, to enqueue after the baselines) and the
    :class:`compress.allocate.Allocation` behind each, allocated from ``smap`` on the space's grid
    and re-allocated until the ratios the space can express meet the target. When the space
    searches depth and the map measured it, the seeds may drop blocks too."""
    from compress.allocate import CostModel
    from compress.seed_allocation import seed_allocations
    from spaces.policy import LayerBits

    space, dims = objective.space, objective.dims
    units = quant_units(dims) if metric == "bops" else None
    cost = CostModel.from_model(objective.model, objective.baseline.input_size, metric=metric,
                                round_to=space.prune.round_to, units=units)
    free, fixed = prune_groups(dims)
    bit_choices = [LayerBits(w, a) for w, a in smap.settings.bits]
    depth = {s: order for s, order in depth_orders(dims).items() if s in smap.depth}
    allocations = seed_allocations(smap, cost, targets, grid=ratio_grid(space), groups=free, fixed=fixed,
                                   bit_choices=bit_choices, depth=depth,
                                   express=lambda ratios, drop=(): params_for_ratios(space, dims, ratios,
                                                                                     drop=drop).achieved)
    return seed_params(space, dims, allocations), allocations


def search_seeds(objective: Any, settings: Any) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
    """The labelled seed params a search enqueues after its baselines (each seed once per
    ``settings.precisions``), and what to record in ``run.json`` (``search.sensitivity``): the map's
    measuring time, the time this run spent getting it (the cache's: about 0), the seeds and their
    allocations.

    ``settings``: the space's ``search.seeds`` (:class:`spaces.space.SeedSettings`), None for no
    seeds. An objective without a model to measure (a closed-form test objective) gets none.
    """
    if settings is None:
        return [], {}
    if not all(hasattr(objective, a) for a in ("model", "data", "baseline", "dims")):
        log.info("the objective has no model to measure a sensitivity map of: no seeds")
        return [], {"skipped": "the objective has no model to measure"}
    t0 = time.perf_counter()
    smap = objective_map(objective)
    wall = time.perf_counter() - t0
    seeds, allocations = objective_seeds(objective, smap, settings.targets, metric=settings.metric)
    seeds = seed_variants(objective.dims, seeds, settings.precisions)
    measured = float(smap.seconds.get("total", 0.0))
    log.info("sensitivity map: %d groups x %d ratios, measured in %.1f s (this run: %.1f s); seeds %s",
             len(smap.prune), len(smap.settings.ratios), measured, wall,
             ", ".join(label for label, _ in seeds) or "none")
    info = {"file": FILENAME, "key": smap.key, "measured_s": round(measured, 2),
            "wall_s": round(wall, 2), "images": smap.images, "metric": settings.metric,
            "targets": list(settings.targets), "seeds": [label for label, _ in seeds],
            "allocations": [{"label": a.label, "target": a.target, "fraction": round(float(a.fraction), 4),
                             "loss": round(float(a.loss), 3), **({"drop": list(a.drop)} if a.drop else {})}
                            for a in allocations]}
    return seeds, info


__all__ = ["FILENAME", "default_settings", "load_or_compute", "objective_map", "objective_seeds",
           "search_seeds", "shared_cache_dir"]
