"""Replayable recipes of a run's trials: the record's Policy plus where it came from.

A trial record holds the applied policy (``Policy.to_dict()``, kept channel indices included;
see :mod:`autocompress.rundir`). :func:`recipe_policy` reads it back with
:meth:`spaces.policy.Policy.from_dict` and adds provenance, for ``RUN/recipes/trial-N.yaml``
(``reports.tables.write_exports``) and ``autocompress finalize``.

``provenance.evaluation`` (when the run has its ``config.yaml``) is what ``autocompress apply
RECIPE --verify`` needs to re-run the trial's search evaluation (:mod:`search.verify`):

- ``checkpoint``: the weights every candidate started from: ``RUN/baseline/model.pt`` when the run
  trained or adapted its baseline, else the space's checkpoint (absolute paths); ``start`` says which
  (``baseline``, ``adapted``, ``checkpoint``, ``weights``) and ``weights`` names torchvision weights;
- ``seed`` (the trial's), ``finetune`` (the proxy fine-tune as it ran), ``level`` (the fidelity level the
  recorded ``metrics`` come from; ``None``: the one proxy budget), ``bn_recal_batches``, ``val_limit``,
  ``eval_batch_size``, ``data`` (the space's data section, ``data_dir`` absolute) and ``latency`` (the
  latency settings, ``None`` when the search did not time latency).

The recorded metrics (latency CI included) are ``provenance.metrics``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.errors import RunFormatError, UserError
from autocompress.rundir import Run, TrialRecord, record_path
from spaces._schema import read_document, to_dict
from spaces.policy import Policy, PruneSpec, keep_count
from spaces.space import SearchSpace, space_from_dict

log = logging.getLogger("search.recipes")


class RecipeError(UserError, ValueError):
    """A recipe lacks what a replay needs (provenance, a checkpoint that still exists)."""


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python, NaN -> None (YAML/JSON-safe)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_space(run_dir: str | Path) -> SearchSpace:
    """The resolved search space of a run (``RUN/config.yaml``); :class:`RunFormatError` naming the
    file when it is missing, not YAML, or not a valid space."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunFormatError(f"{run_dir}: no config.yaml (the resolved search space); not a search run directory")
    try:
        doc = read_document(path)
        if not isinstance(doc, dict):
            raise RunFormatError(f"{path}: not a search space (expected a YAML mapping, got {type(doc).__name__})")
        return space_from_dict(doc, source=str(path))
    except RunFormatError:
        raise
    except UserError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
        raise RunFormatError(f"{path}: not a valid search space: {lines[0].removeprefix(f'{path}: ')}{more}") from None


def start_checkpoint(space: SearchSpace, run_dir: str | Path) -> dict[str, Any]:
    """Where every candidate of the run started from (``search.baseline.Baseline``'s original model):
    ``{"start": "baseline"|"adapted"|"checkpoint"|"weights", "checkpoint": absolute path or None,
    "weights": torchvision weights name or None}``."""
    m = space.model
    cached = str((Path(run_dir) / "baseline" / "model.pt").resolve())
    if m.checkpoint is None and m.weights is None and m.baseline is not None and m.baseline.train:
        return {"start": "baseline", "checkpoint": cached, "weights": None}
    if m.adapt is not None:
        return {"start": "adapted", "checkpoint": cached, "weights": None}
    if m.checkpoint is not None:
        path = space.resolve_path(m.checkpoint)
        return {"start": "checkpoint", "checkpoint": str(Path(path).resolve()), "weights": None}
    return {"start": "weights", "checkpoint": None, "weights": m.weights}


def _proxy(rec: TrialRecord, policy: Policy) -> dict[str, Any]:
    """The proxy fine-tune the recorded metrics come from: the applied policy's (``level`` None: the
    one budget). Multi-fidelity records name their level here."""
    return {"finetune": to_dict(policy.finetune), "level": None}


def evaluation_provenance(run: Run, rec: TrialRecord, policy: Policy) -> dict[str, Any] | None:
    """``provenance.evaluation`` of a recipe (see the module docstring); None without ``config.yaml``."""
    if not (run.dir / "config.yaml").is_file():
        return None
    space = run_space(run.dir)
    budget = space.budget
    data = to_dict(space.data)
    if space.data.data_dir:
        data["data_dir"] = str(Path(space.resolve_path(space.data.data_dir)).resolve())
    return {**start_checkpoint(space, run.dir), "seed": rec.seed, **_proxy(rec, policy),
            "bn_recal_batches": budget.bn_recal_batches, "val_limit": budget.val_limit,
            "eval_batch_size": budget.eval_batch_size, "data": data,
            "latency": to_dict(budget.latency) if space.needs_latency else None}


def trial_policy(run: Run, trial: int) -> Policy:
    """The Policy of ``trial``'s record (applied, with kept indices, for a complete trial)."""
    rec = run.record(trial)
    return Policy.from_dict(rec.policy, source=f"{record_path(run.dir, trial)}: policy")


def recipe_policy(run: Run, trial: int) -> Policy:
    """The replayable Policy of ``trial`` with provenance (run, study, trial, metrics, versions, git sha)."""
    rec = run.record(trial)
    policy = trial_policy(run, trial)
    info = run.info
    provenance = dict(policy.provenance)
    provenance.update({
        "source": "autocompress search",
        "run": str(run.dir.resolve()),
        "study": info.search.get("study"),
        "trial": rec.trial,
        "baseline": rec.baseline,
        "space": info.space,
        "model": info.model,
        "checkpoint": info.checkpoint,
        "dataset": info.dataset,
        "objectives": [list(o) for o in info.objectives],
        "metrics": {k: _plain(v) for k, v in rec.metrics.items()},
        "reference": {k: _plain(v) for k, v in info.reference.items()},
        "policy_hash": rec.policy_hash,
        "seed": rec.seed,
        "versions": dict(rec.versions or info.versions),
        "git_sha": rec.git_sha or info.git_sha,
        "finished": rec.finished,
    })
    evaluation = evaluation_provenance(run, rec, policy)
    if evaluation is not None:
        provenance["evaluation"] = evaluation
    return policy.replace(provenance=provenance)


def recorded_checkpoint(policy: Policy, source: str) -> Path:
    """The checkpoint a search recipe's candidates started from (``provenance.evaluation.checkpoint``),
    when it still exists; otherwise a one-line :class:`RecipeError` naming ``--checkpoint``."""
    evaluation = policy.provenance.get("evaluation")
    path = evaluation.get("checkpoint") if isinstance(evaluation, Mapping) else None
    if not path:
        weights = evaluation.get("weights") if isinstance(evaluation, Mapping) else None
        why = f"the search started from torchvision weights {weights}" if weights else \
            "the recipe records no checkpoint (provenance.evaluation.checkpoint)"
        raise RecipeError(f"{source}: {why}; pass --checkpoint FILE with the weights of the uncompressed model")
    if not Path(path).is_file():
        run = policy.provenance.get("run")
        where = f"the run directory {run} is gone or moved" if run and not Path(run).is_dir() else "it is gone"
        raise RecipeError(f"{source}: the recorded checkpoint {path} does not exist ({where}); pass --checkpoint "
                          "FILE (the run's baseline/model.pt, or the weights the search started from)")
    return Path(path)


def stale_kept(prune: PruneSpec, groups: Mapping[str, int]) -> list[str]:
    """Groups (network order) whose recorded ``prune.kept`` does not hold the channel count their
    ``prune.ratios`` ask for, e.g. after a ratio was edited by hand. ``groups``: ``{name: channels}``."""
    if not prune.kept:
        return []
    stale = []
    for name, channels in groups.items():
        ratio = prune.ratios.get(name, 0.0)
        wanted = keep_count(channels, ratio, prune.round_to) if ratio > 0 else channels
        kept = len(prune.kept[name]) if name in prune.kept else channels
        if kept != wanted:
            stale.append(name)
    return stale


def replay_policy(policy: Policy, groups: Mapping[str, int]) -> tuple[Policy, list[str]]:
    """``policy`` as a replay applies it, and notes. When a ratio no longer matches the recorded kept
    indices (:func:`stale_kept`), the kept indices are dropped, so every group is pruned again by
    its criterion (``l1``/``bn_scale`` choose the same channels again for the unchanged groups) and
    the ratios hold; a warning names the groups."""
    stale = stale_kept(policy.prune, groups)
    if not stale:
        return policy, []
    note = (f"prune.ratios of {', '.join(stale)} do not match the recorded prune.kept (edited?): the kept indices "
            f"are dropped and the model is pruned again by {policy.prune.criterion}")
    log.warning("%s", note)
    return policy.replace(prune=dataclasses.replace(policy.prune, kept={})), [note]


__all__ = ["RecipeError", "evaluation_provenance", "recipe_policy", "recorded_checkpoint", "replay_policy",
           "run_space", "stale_kept", "start_checkpoint", "trial_policy"]
