"""Search-space format: one YAML file describes the model, data, what to search and the budget.

::

    name: resnet20-cifar10
    model: {name: resnet20, checkpoint: ../shared/weights/cifar10-resnet/resnet20-12fca82f.th}
    data: {dataset: imagefolder, data_dir: ~/.cache/autocompress/cifar10-jpeg75}
    prune: {granularity: block, ratio: {low: 0.0, high: 0.7, step: 0.1}, pin: {layer1: 0.0}}
    quant: {backend: x86, weight_bits: [4, 8, 32], act_bits: [8, 32], share: stage}
    distill: {alpha: 0.5, temperature: 4.0}     # fixed: every candidate scored under one recipe
    objectives: [accuracy, flops, latency]
    constraints: ["accuracy_drop <= 1.0"]
    budget: {finetune: {steps: 100, lr: 0.01}, val_limit: 2000}
    search:
      sampler: tpe
      trials: 40
      fidelity: {levels: [100, 400], promote: 0.3}   # multi-fidelity proxy (null: one level)
      seeds: {targets: [0.3, 0.5, 0.7], metric: flops, precisions: [float]}   # sensitivity seeds (null: none)

Files are loaded into the frozen dataclasses of :mod:`spaces._space_config` with
:func:`spaces._schema.load`, so unknown keys, wrong types and bad values are errors naming the
file, field, value and what is allowed.

Dimensions are never listed by hand: :func:`expand` generates them from the model's real
prune groups and quantizable layers (see :mod:`spaces._space_dims`); ``pin`` fixes any
named group/layer (or every one under a module prefix such as ``layer1``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from spaces._schema import FieldError, SchemaError, load
from spaces._space_config import (
    BUILTIN_DIR,
    BaselineSpec,
    Budget,
    FidelitySettings,
    LatencyBudget,
    Range,
    SearchSettings,
    SearchSpace,
    SeedSettings,
    SpaceData,
    SpaceDistill,
    SpaceError,
    SpaceModel,
    SpacePrune,
    SpaceQuant,
    resolve_path,
)
from spaces._space_constraints import METRIC_NAME, Constraint, parse_constraint
from spaces._space_dims import Dim, baseline_params, expand, policy_from_params, suggest_policy, uniform_params
from spaces._space_seeds import (
    RatioFit,
    depth_orders,
    depth_params,
    int8_params,
    params_for_ratios,
    prune_groups,
    quant_units,
    ratio_grid,
    seed_params,
    seed_variants,
)


def list_spaces() -> dict[str, str]:
    """Built-in space names -> one-line description (from each file's ``description``)."""
    out: dict[str, str] = {}
    for p in sorted(BUILTIN_DIR.glob("*.yaml")):
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError:
            doc = {}
        desc = str(doc.get("description", "")).strip().splitlines()
        out[p.stem] = desc[0] if desc else ""
    return out


def space_path(name_or_path: str | Path) -> Path:
    """Path of a built-in space name or an existing file; unknown names list the built-ins."""
    p = Path(os.path.expanduser(str(name_or_path)))
    if p.is_file():
        return p
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise SpaceError([FieldError("space", str(name_or_path),
                                 f"no such file or built-in space; built-in: {', '.join(list_spaces())}")])


def load_space(name_or_path: str | Path, overrides: Sequence[str] = ()) -> SearchSpace:
    """Load a built-in space by name, or a YAML/JSON file, applying ``--set key=value`` overrides."""
    path = space_path(name_or_path)
    try:
        space = load(SearchSpace, path, overrides=list(overrides))
    except SpaceError:
        raise
    except SchemaError as exc:
        raise SpaceError(exc.errors, exc.source) from None
    object.__setattr__(space, "source", str(path))
    return space


def space_from_dict(data: dict[str, Any], *, source: str | None = None) -> SearchSpace:
    """Build a space from a plain dict (e.g. a run's saved ``config.yaml`` contents)."""
    try:
        space = load(SearchSpace, data=data)
    except SchemaError as exc:
        raise SpaceError(exc.errors, source or exc.source) from None
    object.__setattr__(space, "source", source)
    return space


__all__ = [
    "BUILTIN_DIR", "METRIC_NAME", "BaselineSpec", "Budget", "Constraint", "Dim", "FidelitySettings", "LatencyBudget",
    "Range", "SearchSettings", "SeedSettings",
    "SearchSpace", "SpaceData", "SpaceDistill", "SpaceError", "SpaceModel", "SpacePrune", "SpaceQuant",
    "RatioFit", "baseline_params", "depth_orders", "depth_params", "expand", "int8_params", "list_spaces", "load_space",
    "params_for_ratios", "parse_constraint", "policy_from_params", "prune_groups", "quant_units", "ratio_grid",
    "resolve_path", "seed_params", "seed_variants",
    "space_from_dict", "space_path", "suggest_policy", "uniform_params",
]
