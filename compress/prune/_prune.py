"""Physically remove channels: ``prune`` (score and select) and ``rebuild`` (replay kept indices)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from compress.prune._criteria import SCORERS, LossFn, accumulate_gradients
from compress.prune._depth import drop_blocks
from compress.prune._groups import PruneGroup, _GroupInfo, build_graph, discover
from compress.prune._option_a import convert_option_a, has_option_a
from spaces._schema import FieldError, join_path
from spaces.policy import PolicyError, PruneSpec, keep_count

log = logging.getLogger(__name__)

#: attribute set on pruned models: the kept channel indices per group (read by save_compressed)
KEPT_ATTR = "autocompress_kept"

InputSize = int | tuple[int, ...]


def list_groups(model: nn.Module, input_size: InputSize = 32) -> list[PruneGroup]:
    """The prune groups of ``model`` in network order (block and stage groups).

    Works on models with option-A shortcuts too (they are converted on a copy first).
    ``input_size`` only sets the tracing example; group structure does not depend on it.
    """
    work = convert_option_a(model) if has_option_a(model) else model
    return [i.group for i in discover(work, build_graph(work, input_size))]


def _known(infos: Mapping[str, _GroupInfo]) -> str:
    return "known: " + ", ".join(infos)


def _check_ratios(spec: PruneSpec, infos: Mapping[str, _GroupInfo]) -> None:
    errors: list[FieldError] = []
    for name, r in spec.ratios.items():
        path = join_path("prune.ratios", name)
        if name not in infos:
            errors.append(FieldError(path, r, f"unknown prune group; {_known(infos)}"))
            continue
        n = infos[name].group.channels
        if r > 0 and keep_count(n, r, spec.round_to) < 1:
            minimum = spec.round_to if spec.round_to > 1 else 1
            errors.append(FieldError(path, r, f"would leave 0 of {n} channels; at least {minimum} must stay "
                                              f"(use a ratio < {1 - 0.5 / n:.4f})"))
    if errors:
        raise PolicyError(errors)


def _check_kept(kept: Mapping[str, Iterable[int]], infos: Mapping[str, _GroupInfo]) -> None:
    errors: list[FieldError] = []
    for name, idx in kept.items():
        path = join_path("prune.kept", name)
        idx = list(idx)
        if name not in infos:
            errors.append(FieldError(path, idx[:4], f"unknown prune group; {_known(infos)}"))
            continue
        n = infos[name].group.channels
        if not idx:
            errors.append(FieldError(path, idx, "must keep at least one channel"))
        elif len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= n:
            errors.append(FieldError(path, idx[:8], f"indices must be distinct and in 0..{n - 1}"))
    if errors:
        raise PolicyError(errors)


def _apply_kept(model: nn.Module, dg: tp.DependencyGraph, infos: Mapping[str, _GroupInfo],
                kept: Mapping[str, tuple[int, ...]]) -> None:
    mods = dict(model.named_modules())
    for name, idx in kept.items():
        info = infos[name]
        drop = sorted(set(range(info.group.channels)) - set(idx))
        if drop:
            dg.get_pruning_group(mods[info.root], tp.prune_conv_out_channels, drop).prune()
    for m in model.modules():  # torch-pruning re-creates parameters with requires_grad=True
        if getattr(m, "autocompress_fixed", False):
            for p in m.parameters():
                p.requires_grad_(False)


def rebuild(model: nn.Module, kept: Mapping[str, Iterable[int]], *, input_size: InputSize = 32,
            drop: Sequence[str] = ()) -> nn.Module:
    """A new, option-A converted copy of ``model`` pruned to exactly the ``kept`` channel indices.

    ``kept`` maps group name to the indices (into the unpruned group) that stay, as recorded
    by :func:`prune`; the residual blocks ``drop`` are removed first, as :func:`prune` does.
    This is how a saved compressed model is re-created without pickling.
    """
    work = convert_option_a(drop_blocks(model, drop) if drop else model)
    dg = build_graph(work, input_size)
    infos = {i.group.name: i for i in discover(work, dg)}
    _check_kept(kept, infos)
    ordered = {n: tuple(sorted(int(i) for i in kept[n])) for n in infos if n in kept}
    _apply_kept(work, dg, infos, ordered)
    setattr(work, KEPT_ATTR, ordered)
    return work


def prune(model: nn.Module, spec: PruneSpec, *, input_size: InputSize, data: Iterable | None = None,
          loss_fn: LossFn | None = None, taylor_batches: int = 8) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    """Remove ``spec.ratios[group]`` of each named group's channels; return ``(new_model, kept)``.

    The input model is not modified. Channels are scored with ``spec.criterion`` (``l1``,
    ``bn_scale``, or ``taylor`` from up to ``taylor_batches`` ``(x, y)`` batches of ``data``
    with ``loss_fn``, default cross-entropy), the top ``keep_count(n, ratio, round_to)`` stay.
    ``kept`` records the kept indices of every group with a ratio > 0. When ``spec.kept`` is
    already filled (a finalized recipe), those exact indices are replayed instead. The residual
    blocks ``spec.drop`` are removed before anything else (channel groups are those of the
    shallower network). The result is always option-A converted (see :func:`convert_option_a`).
    """
    if spec.kept:
        new = rebuild(model, spec.kept, input_size=input_size, drop=spec.drop)
        return new, dict(getattr(new, KEPT_ATTR))
    work = convert_option_a(drop_blocks(model, spec.drop) if spec.drop else model)
    dg = build_graph(work, input_size)
    infos = {i.group.name: i for i in discover(work, dg)}
    _check_ratios(spec, infos)
    active = [n for n in infos if spec.ratios.get(n, 0.0) > 0]
    kept: dict[str, tuple[int, ...]] = {}
    if active:
        if spec.criterion == "taylor":
            accumulate_gradients(work, data, loss_fn, taylor_batches)
        scorer = SCORERS[spec.criterion]
        for name in active:
            info = infos[name]
            scores = scorer(work, info)
            k = keep_count(info.group.channels, spec.ratios[name], spec.round_to)
            top = torch.argsort(scores, descending=True, stable=True)[:k]
            kept[name] = tuple(sorted(int(i) for i in top))
        work.zero_grad(set_to_none=True)
        _apply_kept(work, dg, infos, kept)
        log.info("pruned %d groups (%s): %s", len(kept), spec.criterion,
                 ", ".join(f"{n} {len(kept[n])}/{infos[n].group.channels}" for n in kept))
    setattr(work, KEPT_ATTR, kept)
    return work, kept
