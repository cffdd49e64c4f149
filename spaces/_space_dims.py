"""Search dimensions generated from a model's real prune groups and quantizable layers.

Pure Python (no torch): :func:`expand` takes group names -> channel counts and the ordered
list of quantizable layer names, as returned by ``compress.prune.list_groups`` and
``compress.models.quantizable_layers``.

Parameter names are stable strings::

    prune/layer2.3.conv1   ratio of one block group       (granularity block|both)
    prune/layer2           ratio of one stage group       (granularity stage|both)
    prune/global           global ratio                   (parametrization: global)
    prune/offset/layer2    offset of one group's ratio    (parametrization: global)
    prune/criterion        categorical, when several criteria are given
    depth/layer2           blocks dropped from a stage's end (prune.depth > 0; never its first block)
    wbits/layer2.0.conv1   weight bits of one layer       (share: layer)
    wbits/layer3           weight bits of a stage         (share: stage; conv1 / linear are their own stage)
    wbits/model            weight bits of every layer     (share: model)
    abits/...              activation bits, same keys as wbits
    kd/alpha, kd/temperature, kd/feature_weight

Pinned groups/layers (``pin``) and single-choice settings become single-choice categorical
dims: samplers never vary them, and the trial's params record every value that was used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from spaces._schema import FieldError
from spaces._space_config import Range, SearchSpace, SpaceError
from spaces.policy import COUPLED_BACKENDS, DistillSpec, LayerBits, Policy, PruneSpec, QuantSpec, in_dropped_block

FLOAT_BITS = 32
GLOBAL = "prune/global"
OFFSET = "prune/offset/"
DEPTH = "depth/"
_BLOCK_GROUP = re.compile(r"^(layer\d+)\.(\d+)\.")


@dataclass(frozen=True)
class Dim:
    """One search dimension. ``targets`` are the groups/layers the value applies to."""

    name: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False
    targets: tuple[str, ...] = ()

    @property
    def fixed(self) -> bool:
        """True when the dim has a single possible value (pins, single-choice settings)."""
        if self.kind == "categorical":
            return len(self.choices or ()) == 1
        return self.low == self.high

    def describe(self) -> str:
        """Range or choices as text, for tables."""
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices or ()) + "}"
        text = f"[{self.low:g}, {self.high:g}]"
        if self.step:
            text += f" step {self.step:g}"
        if self.log:
            text += " log"
        return text

    def snap(self, value: Any) -> Any:
        """The allowed value nearest to ``value``."""
        if self.kind == "categorical":
            choices = list(self.choices or ())
            if value in choices:
                return value
            numeric = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if numeric and isinstance(value, (int, float)):
                return min(numeric, key=lambda c: (abs(c - value), -c))
            return choices[0]
        lo, hi = float(self.low), float(self.high)
        v = min(max(float(value), lo), hi)
        if self.step:
            v = lo + math.floor((v - lo) / self.step + 0.5 + 1e-9) * self.step
            v = round(min(v, hi), 10)
        return int(round(v)) if self.kind == "int" else v

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in (self.choices or ())
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        if math.isnan(v) or not (float(self.low) - 1e-9 <= v <= float(self.high) + 1e-9):
            return False
        if self.step:
            k = (v - float(self.low)) / self.step
            return abs(k - round(k)) < 1e-6
        return True


class TrialLike(Protocol):
    """What :func:`suggest_policy` needs: optuna.Trial's suggest API."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


def _error(space: SearchSpace, path: str, value: Any, allowed: str) -> Exception:
    return SpaceError([FieldError(path, value, allowed)], space.source)


def _known(names: Sequence[str], n: int = 16) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _matches(pattern: str, name: str) -> bool:
    return name == pattern or name.startswith(pattern + ".")


def _range_dim(name: str, value: float | Range, targets: tuple[str, ...] = ()) -> Dim:
    if isinstance(value, Range):
        return Dim(name, "float", low=value.low, high=value.high, step=value.step, log=value.log, targets=targets)
    return Dim(name, "categorical", choices=(float(value),), targets=targets)


def _group_kind(name: str, kinds: Mapping[str, str]) -> str:
    if name in kinds:
        return kinds[name]
    return "block" if "." in name else "stage"


def _normalise_groups(groups: Any) -> tuple[dict[str, int], dict[str, str]]:
    """Accept ``{name: channels}`` or a list of objects with ``name``, ``channels``, ``kind``."""
    if isinstance(groups, Mapping):
        return {str(k): int(v) for k, v in groups.items()}, {}
    counts: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for g in groups:
        counts[g.name] = int(g.channels)
        kinds[g.name] = str(getattr(g, "kind", "block" if "." in g.name else "stage"))
    return counts, kinds


def stage_of(layer: str) -> str:
    """Stage key of a layer for ``share: stage``: ``layer2.0.conv1`` -> ``layer2``; ``conv1`` -> ``conv1``."""
    return layer.split(".", 1)[0]


def _prune_dims(space: SearchSpace, groups: Any) -> list[Dim]:
    cfg = space.prune
    counts, kinds = _normalise_groups(groups)
    if cfg.granularity == "none" and not cfg.pin:
        return _depth_dims(space, counts)
    active_kinds = {"block": {"block"}, "stage": {"stage"}, "both": {"block", "stage"}, "none": set()}[cfg.granularity]
    active = [g for g in counts if _group_kind(g, kinds) in active_kinds]
    pinned: dict[str, float] = {}
    for pattern, ratio in cfg.pin.items():
        hit = [g for g in counts if g == pattern] + [g for g in active if g != pattern and _matches(pattern, g)]
        if not hit:
            raise _error(space, f"prune.pin.{pattern}", ratio,
                         f"matches no prune group of {space.model.name}; known groups: {_known(list(counts))}")
        for g in hit:
            pinned[g] = ratio
    dims: list[Dim] = []
    free = [g for g in counts if g in active and g not in pinned]
    if cfg.parametrization == "global" and free:
        dims.append(_range_dim(GLOBAL, cfg.ratio, tuple(free)))
    for g in counts:
        if g in pinned:
            dims.append(Dim(f"prune/{g}", "categorical", choices=(float(pinned[g]),), targets=(g,)))
        elif g in active:
            if cfg.parametrization == "global":
                dims.append(_range_dim(f"{OFFSET}{g}", cfg.offset, (g,)))
            else:
                dims.append(_range_dim(f"prune/{g}", cfg.ratio, (g,)))
    if len(cfg.criteria) > 1 and dims:
        dims.append(Dim("prune/criterion", "categorical", choices=tuple(cfg.criteria)))
    return dims + _depth_dims(space, counts)


def _depth_dims(space: SearchSpace, counts: Mapping[str, int]) -> list[Dim]:
    """``depth/<stage>``: 0..``prune.depth`` blocks dropped from the stage's end; ``targets`` are the
    stage's droppable blocks in order (all but the first; the blocks are read off the block groups'
    names, ``layer2.3.conv1`` -> ``layer2.3``)."""
    if space.prune.depth <= 0:
        return []
    stages: dict[str, dict[str, None]] = {}
    for g in counts:
        m = _BLOCK_GROUP.match(g)
        if m:
            stages.setdefault(m.group(1), {})[f"{m.group(1)}.{m.group(2)}"] = None
    dims = []
    for stage, blocks in stages.items():
        droppable = tuple(sorted(blocks, key=lambda b: int(b.rsplit(".", 1)[1])))[1:]
        k = min(space.prune.depth, len(droppable))
        if k:
            dims.append(Dim(f"{DEPTH}{stage}", "int", low=0, high=k, step=1, targets=droppable))
    return dims


def dropped_blocks(dims: Sequence[Dim], params: Mapping[str, Any]) -> tuple[str, ...]:
    """The blocks the ``depth/*`` values of ``params`` drop: the last k targets of each stage's dim."""
    out: list[str] = []
    for d in dims:
        if d.name.startswith(DEPTH):
            k = int(params[d.name])
            out.extend(d.targets[len(d.targets) - k:] if k > 0 else ())
    return tuple(out)


def _quant_dims(space: SearchSpace, layers: Sequence[str]) -> list[Dim]:
    cfg = space.quant
    if not cfg.enabled:
        return []
    layers = list(layers)
    pinned: dict[str, LayerBits] = {}
    for pattern, bits in cfg.pin.items():
        hit = [name for name in layers if _matches(pattern, name)]
        if not hit:
            raise _error(space, f"quant.pin.{pattern}", {"w": bits.w, "a": bits.a},
                         f"matches no quantizable layer of {space.model.name}; known layers: {_known(layers)}")
        for name in hit:
            pinned[name] = bits
    free = [name for name in layers if name not in pinned]
    if cfg.share == "layer":
        keys = [(name, (name,)) for name in free]
    elif cfg.share == "stage":
        order: dict[str, list[str]] = {}
        for name in free:
            order.setdefault(stage_of(name), []).append(name)
        keys = [(k, tuple(v)) for k, v in order.items()]
    else:
        keys = [("model", tuple(free))] if free else []
    dims: list[Dim] = []
    for name in layers:
        if name in pinned:
            dims.append(Dim(f"wbits/{name}", "categorical", choices=(pinned[name].w,), targets=(name,)))
            dims.append(Dim(f"abits/{name}", "categorical", choices=(pinned[name].a,), targets=(name,)))
    for key, targets in keys:
        dims.append(Dim(f"wbits/{key}", "categorical", choices=tuple(cfg.weight_bits), targets=targets))
        if cfg.act_bits != "follow":
            dims.append(Dim(f"abits/{key}", "categorical", choices=tuple(cfg.act_bits), targets=targets))
    return dims


def _distill_dims(space: SearchSpace) -> list[Dim]:
    cfg = space.distill
    out = []
    for key in ("alpha", "temperature", "feature_weight"):
        value = getattr(cfg, key)
        if isinstance(value, Range):
            out.append(_range_dim(f"kd/{key}", value))
    return out


def expand(space: SearchSpace, groups: Mapping[str, int] | Sequence[Any], layers: Sequence[str]) -> list[Dim]:
    """All search dimensions of ``space`` for a model with these prune groups and layers.

    ``groups``: ``{group name: channels}`` (block groups have dotted names such as
    ``layer2.3.conv1``, stage groups are ``layer2``) or ``compress.prune.list_groups`` output.
    ``layers``: ``compress.models.quantizable_layers(model)``. Unknown pinned names raise
    :class:`~spaces.space.SpaceError` listing the known ones.
    """
    dims = _prune_dims(space, groups) + _quant_dims(space, layers) + _distill_dims(space)
    names = [d.name for d in dims]
    assert len(set(names)) == len(names), f"duplicate dimension names: {names}"
    return dims


def _float_value(params: Mapping[str, Any], key: str, fixed: float | Range) -> float:
    if isinstance(fixed, Range):
        return float(params[key])
    return float(fixed)


def policy_from_params(space: SearchSpace, dims: Sequence[Dim], params: Mapping[str, Any]) -> Policy:
    """Build the :class:`Policy` for one point of the space.

    ``params`` must give a value for every dim (extra keys are an error too); the proxy
    fine-tune schedule comes from ``space.budget.finetune``.
    """
    names = {d.name for d in dims}
    missing = [d.name for d in dims if d.name not in params]
    extra = [k for k in params if k not in names]
    errors = []
    if missing:
        errors.append(FieldError("params", _known(missing, 8), "missing values for these dimensions"))
    if extra:
        errors.append(FieldError("params", _known(extra, 8), f"unknown dimensions; known: {_known(sorted(names))}"))
    for d in dims:
        if d.name in params and not d.contains(params[d.name]):
            errors.append(FieldError(f"params[{d.name}]", params[d.name], f"allowed {d.describe()}"))
    if errors:
        raise SpaceError(errors, "policy_from_params")

    drop = dropped_blocks(dims, params)
    ratios: dict[str, float] = {}
    bits_w: dict[str, int] = {}
    bits_a: dict[str, int] = {}
    for d in dims:
        value = params[d.name]
        kind, _, _key = d.name.partition("/")
        targets = [t for t in d.targets if in_dropped_block(t, drop) is None]  # nothing of a dropped block
        if d.name.startswith(OFFSET):
            for g in targets:
                r = global_ratio(space, float(params[GLOBAL]), float(value))
                if r > 0:
                    ratios[g] = r
        elif kind == "prune" and d.name not in ("prune/criterion", GLOBAL):
            for g in targets:
                if float(value) > 0:
                    ratios[g] = round(float(value), 10)
        elif kind == "wbits":
            for layer in targets:
                bits_w[layer] = int(value)
        elif kind == "abits":
            for layer in targets:
                bits_a[layer] = int(value)
    criterion = params.get("prune/criterion", space.prune.criteria[0])
    layers: dict[str, LayerBits] = {}
    for layer, w in bits_w.items():
        a = bits_a.get(layer)
        if a is None:
            a = space.quant.act_choices(w)[0]
        if space.quant.backend in COUPLED_BACKENDS:
            a = _coupled_act(w, a)
        lb = LayerBits(w=w, a=a)
        if (lb.w, lb.a) != (FLOAT_BITS, FLOAT_BITS):
            layers[layer] = lb
    quant = QuantSpec(backend=space.quant.backend if layers else "none", layers=layers)
    cfg = space.distill
    distill = DistillSpec(
        teacher=cfg.teacher,
        teacher_checkpoint=cfg.teacher_checkpoint,
        alpha=_float_value(params, "kd/alpha", cfg.alpha),
        temperature=_float_value(params, "kd/temperature", cfg.temperature),
        feature_weight=_float_value(params, "kd/feature_weight", cfg.feature_weight),
        feature_layers=tuple(cfg.feature_layers),
        teacher_bn_recal=cfg.teacher_bn_recal,
    )
    return Policy(
        model=space.model.spec(),
        prune=PruneSpec(criterion=criterion, round_to=space.prune.round_to, ratios=ratios, drop=drop),
        quant=quant,
        distill=distill,
        finetune=space.budget.finetune,
        provenance={"space": space.name, "params": {k: params[k] for k in sorted(params)}},
    )


def global_ratio(space: SearchSpace, global_: float, offset: float) -> float:
    """A group's ratio under ``parametrization: global``.

    ``global + offset * scale``, snapped to the ``prune.ratio`` grid, where ``scale`` shrinks
    the offsets near the ends of the ratio range so that the ratios stay inside it without
    clipping: ``scale = min(1, (global - low) / w, (high - global) / w)`` with ``w`` the largest
    offset magnitude. So the ratios average to ``global`` at every level (clipping would bias
    high globals towards less pruning), and the ends are exact: ``global = low`` is the least
    pruned and ``global = high`` the most pruned policy of the space.
    """
    rng, off = space.prune.ratio, space.prune.offset
    w = max(abs(off.low), abs(off.high))
    scale = 0.0 if w <= 0 else max(0.0, min(1.0, (global_ - rng.low) / w, (rng.high - global_) / w))
    return round(rng.snap(global_ + offset * scale), 10)


def _coupled_act(w: int, a: int) -> int:
    """x86 and TensorRT INT8 kernels quantize weights and activations together
    (``compress.quantize.check_bits``):
    a float-weight layer stays float (``a = w``); an integer-weight layer with a float
    activation choice gets 8-bit activations."""
    w_int, a_int = w < 16, a < 16
    if w_int == a_int:
        return a
    return 8 if w_int else w


def suggest_policy(space: SearchSpace, dims: Sequence[Dim], trial: TrialLike) -> Policy:
    """Ask ``trial`` (optuna.Trial or anything with its suggest API) for every dim; build the Policy."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.kind == "categorical":
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices or ()))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        elif d.log:
            params[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), log=True)
        else:
            params[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), step=d.step)
    return policy_from_params(space, dims, params)


def _baseline(dims: Sequence[Dim], *, ratio: float, bits: int, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dims:
        if d.fixed:
            out[d.name] = d.choices[0] if d.kind == "categorical" else d.low
        elif d.name.startswith(DEPTH):
            out[d.name] = d.snap(depth)
        elif d.name == "prune/criterion":
            out[d.name] = d.choices[0]
        elif d.name.startswith(OFFSET):
            out[d.name] = d.snap(0.0)  # uniform: the global ratio everywhere
        elif d.name.startswith("prune/"):
            out[d.name] = d.snap(ratio)
        elif d.name.startswith(("wbits/", "abits/")):
            out[d.name] = d.snap(bits)
        else:  # a searched kd/* dim: its range's midpoint (see baseline_params)
            out[d.name] = d.snap((float(d.low) + float(d.high)) / 2)
    return out


def uniform_params(dims: Sequence[Dim], ratio: float, bits: int = 32, depth: int = 0) -> dict[str, Any]:
    """Params for a uniform policy: every free prune dim at ``ratio``, every free bit dim at
    ``bits`` and every ``depth/*`` dim at ``depth`` blocks (snapped to the grid), distillation as
    the baselines have it (:func:`baseline_params`). Used for baselines and uniform sweeps."""
    return _baseline(dims, ratio=ratio, bits=bits, depth=depth)


def baseline_params(space: SearchSpace, dims: Sequence[Dim]) -> list[tuple[str, dict[str, Any]]]:
    """Labelled params for the baselines enqueued before the search.

    ``original`` (no compression), ``uniform-prune-0.25`` and ``uniform-prune-0.5`` (every free
    prune dim at that ratio, snapped to the grid and labelled with the snapped ratio, e.g.
    ``uniform-prune-0.3`` on a 0.1 grid; only when the space prunes) and
    ``uniform-drop-K`` (K = half the largest ``depth/*`` range, at least 1, blocks dropped from every
    stage's end; only when the space searches depth) and ``uniform-int8`` (every free bit dim at 8,
    snapped; only when the space quantizes).
    Pinned dims keep their pinned value. Duplicates (after snapping) are dropped.

    **Like for like.** The baselines are scored under the same proxy recipe as every searched
    candidate: with fixed distillation settings (the built-in spaces: ``distill: {alpha: 0.5,
    temperature: 4.0}``) they use exactly those; a ``kd/*`` dim a space still searches takes its
    range's midpoint (snapped), since a baseline scored without the KD that searched points get
    would lose by the recipe, not by its policy. Such a space ranks points trained under different
    recipes: the audit must confirm that KD's effect survives the final fine-tune.
    """
    free = [d for d in dims if not d.fixed]
    prunes = [d for d in free if d.name.startswith("prune/") and d.name != "prune/criterion"]
    bitdims = [d for d in free if d.name.startswith(("wbits/", "abits/"))]
    out: list[tuple[str, dict[str, Any]]] = [("original", _baseline(dims, ratio=0.0, bits=FLOAT_BITS))]
    if prunes:
        ratio_dims = [d for d in prunes if not d.name.startswith(OFFSET)]
        for r in (0.25, 0.5):
            # labelled with the ratio actually applied (0.25 on a 0.1 grid is 0.3)
            applied = ratio_dims[0].snap(r) if ratio_dims else r
            out.append((f"uniform-prune-{applied:g}", _baseline(dims, ratio=r, bits=FLOAT_BITS)))
    depth_dims = [d for d in free if d.name.startswith(DEPTH)]
    if depth_dims:  # fewer blocks, nothing else: half the space's depth range in every stage
        k = max(1, int(max(float(d.high) for d in depth_dims)) // 2)
        out.append((f"uniform-drop-{k}", _baseline(dims, ratio=0.0, bits=FLOAT_BITS, depth=k)))
    if bitdims and any(8 in (d.choices or ()) for d in bitdims):
        out.append(("uniform-int8", _baseline(dims, ratio=0.0, bits=8)))
    seen: list[dict[str, Any]] = []
    unique = []
    for label, params in out:
        if params not in seen:
            seen.append(params)
            unique.append((label, params))
    return unique
