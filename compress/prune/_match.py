"""Recover kept channel indices from a model pruned by another tool (``match_kept``).

External pruners (NVIDIA ModelOpt FastNAS, ...) return a smaller copy of the network whose
channels are a subset of the original's, often reordered by importance. To express such a
result as a :class:`spaces.policy.Policy` (``prune.kept``), each kept output channel is found
in the original by its weights: the rows of a producing convolution (with the input columns
already mapped) and the affine parameters of the group's BatchNorms. Groups are resolved in
dependency order (a conv's rows can be compared once its input group is mapped), then every
conv, linear and BatchNorm weight of the pruned model is checked against the original sliced
by the recovered indices, so a model that is not a channel subset fails loudly.
BatchNorm running statistics are not compared: pruners usually recalibrate them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from compress.prune._groups import _GroupInfo, build_graph, discover
from compress.prune._option_a import convert_option_a, has_option_a

InputSize = int | tuple[int, ...]


class MatchError(ValueError):
    """The pruned model is not a channel subset of the original."""


def match_kept(original: nn.Module, pruned: nn.Module, *, input_size: InputSize = 32,
               atol: float = 1e-6) -> dict[str, tuple[int, ...]]:
    """Kept channel indices per prune group of ``original`` that turn it into ``pruned``.

    ``pruned`` must have the same module names as ``original`` with some output channels of
    prune groups removed and the rest possibly permuted (option-A shortcuts may be kept as
    they are or converted). Returns ``{group: sorted original indices}`` for every group that
    lost channels, the form of ``PruneSpec.kept`` that ``compress.prune.rebuild`` replays.
    Raises :class:`MatchError` when a channel has no exact counterpart (within ``atol``) or
    the recovered indices do not reproduce every weight of ``pruned``.
    """
    orig = convert_option_a(original) if has_option_a(original) else original
    sub = convert_option_a(pruned) if has_option_a(pruned) else pruned
    infos = discover(orig, build_graph(orig, input_size))
    perms = channel_order(orig, sub, infos, atol=atol)
    check_subset(orig, sub, infos, perms, atol=atol)
    channels = {i.group.name: i.group.channels for i in infos}
    return {g: tuple(sorted(p)) for g, p in perms.items() if len(p) < channels[g]}


def channel_order(orig: nn.Module, sub: nn.Module, infos: Sequence[_GroupInfo], *,
                  atol: float = 1e-6) -> dict[str, list[int]]:
    """For each group, the original index of each of ``sub``'s channels, in ``sub``'s order.

    Both models are option-A converted. A group is matched through one of its trainable
    producing convs once that conv's input group is mapped (or its input is not a group).
    """
    omods, smods = dict(orig.named_modules()), dict(sub.named_modules())
    input_group = {c: i.group.name for i in infos for c in i.consumers}
    perms: dict[str, list[int]] = {}
    pending = list(infos)
    while pending:
        for info in pending:
            producer = _ready_producer(info, omods, input_group, perms)
            if producer is None:
                continue
            perms[info.group.name] = _match_rows(info, producer, omods, smods, perms.get(input_group.get(producer, "")),
                                                 atol)
            pending.remove(info)
            break
        else:
            names = ", ".join(i.group.name for i in pending)
            raise MatchError(f"cannot order the matching of groups {names}: no producing conv with a known input")
    return perms


def _ready_producer(info: _GroupInfo, omods: Mapping[str, nn.Module], input_group: Mapping[str, str],
                    perms: Mapping[str, object]) -> str | None:
    """A trainable conv producing ``info``'s channels whose input channels are already mapped."""
    for conv in info.group.layers:
        if getattr(omods[conv], "autocompress_fixed", False):
            continue
        source = input_group.get(conv)
        if source is None or source in perms:
            return conv
    return None


def _signature(conv: nn.Module, bns: Sequence[nn.Module], rows: torch.Tensor | None,
               cols: Sequence[int] | None) -> torch.Tensor:
    w = conv.weight.detach()
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, list(cols)]
    parts = [w.flatten(1)]
    for bn in bns:
        parts += [bn.weight.detach()[:, None], bn.bias.detach()[:, None]] if bn.affine else []
    return torch.cat(parts, dim=1).double()


def _match_rows(info: _GroupInfo, producer: str, omods: Mapping[str, nn.Module], smods: Mapping[str, nn.Module],
                in_perm: Sequence[int] | None, atol: float) -> list[int]:
    name = info.group.name
    if producer not in smods:
        raise MatchError(f"{name}: the pruned model has no module {producer!r}")
    ref = _signature(omods[producer], [omods[b] for b in info.bns], None, in_perm)
    got = _signature(smods[producer], [smods[b] for b in info.bns], None, None)
    if ref.shape[1] != got.shape[1]:
        raise MatchError(f"{name}: {producer} has {got.shape[1]} weights per channel in the pruned model, "
                         f"{ref.shape[1]} expected from the original and its matched inputs")
    dist = torch.cdist(got, ref, p=float("inf"))  # [kept, original]
    used: set[int] = set()
    order: list[int] = []
    for j in range(got.shape[0]):
        candidates = [int(i) for i in torch.nonzero(dist[j] <= atol).flatten() if int(i) not in used]
        if not candidates:
            closest = float(dist[j].min())
            raise MatchError(f"{name}: channel {j} of {producer} in the pruned model matches no original channel "
                             f"(closest max-abs difference {closest:.3g} > {atol:g})")
        order.append(candidates[0])
        used.add(candidates[0])
    return order


def check_subset(orig: nn.Module, sub: nn.Module, infos: Sequence[_GroupInfo], perms: Mapping[str, Sequence[int]],
                 *, atol: float = 1e-6) -> None:
    """Raise :class:`MatchError` unless every conv, linear and BatchNorm parameter of ``sub``
    equals the original's rows/columns picked by ``perms`` (BN running statistics excluded)."""
    out_group = {layer: i.group.name for i in infos for layer in i.group.layers}
    out_group.update({bn: i.group.name for i in infos for bn in i.bns})
    in_group = {c: i.group.name for i in infos for c in i.consumers}
    smods = dict(sub.named_modules())
    for name, m in orig.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            continue
        s = smods.get(name)
        if s is None or type(s) is not type(m):
            raise MatchError(f"{name}: missing or of another type in the pruned model")
        rows = perms.get(out_group.get(name, ""))
        cols = perms.get(in_group.get(name, ""))
        for pname, p in m.named_parameters(recurse=False):
            want = p.detach()
            if rows is not None:
                want = want[list(rows)]
            if cols is not None and want.dim() > 1:
                want = want[:, list(cols)]
            got = getattr(s, pname).detach()
            if got.shape != want.shape or not torch.allclose(got, want, rtol=0.0, atol=atol):
                raise MatchError(f"{name}.{pname}: the pruned model's tensor {tuple(got.shape)} is not the original "
                                 f"{tuple(p.shape)} restricted to the matched channels")
