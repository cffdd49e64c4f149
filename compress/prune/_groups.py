"""Prune groups of a ResNet, discovered with torch-pruning's DependencyGraph and named by module.

One code path for every registered ResNet: the dependency graph is traced on the option-A
converted model, each coupled channel set becomes one group, and the group is named from
the convolutions whose output channels it contains:

* **block** groups hold the inner channels of one residual block, produced by one conv
  (``layer2.3.conv1``; a Bottleneck has two: ``layer2.3.conv1`` and ``layer2.3.conv2``);
* **stage** groups hold a stage's residual-coupled channels: every block output, the
  shortcut/downsample convs (and, for CIFAR ResNets and BasicBlock ImageNet ResNets, the stem),
  plus the next stage's inputs or the classifier's in-features; named ``layer2``.

A group that belongs to no stage (the stem of a Bottleneck ResNet, whose output feeds only
``layer1.0``'s conv1 and downsample) is not offered for pruning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

_STAGE = re.compile(r"^(layer\d+)(?:\.|$)")
_INNER = re.compile(r"^(layer\d+\.\d+)\.conv\d+$")


@dataclass(frozen=True)
class PruneGroup:
    """One set of coupled channels that is pruned together.

    ``layers`` are the names of the convolutions whose output channels belong to the group
    (including fixed option-A shortcut convs and downsample convs), in network order.
    """

    name: str
    channels: int
    kind: str  # "block" | "stage"
    layers: tuple[str, ...]


@dataclass(frozen=True)
class _GroupInfo:
    """A group plus what pruning and scoring need (names of coupled modules)."""

    group: PruneGroup
    root: str  # a trainable conv whose out-channel pruning triggers the whole group
    bns: tuple[str, ...]  # BatchNorms whose channels belong to the group
    consumers: tuple[str, ...]  # convs / linears whose *input* channels belong to the group


def example_input(input_size: int | tuple[int, ...], like: nn.Module) -> torch.Tensor:
    """A zero example for tracing: ``input_size`` is S, (H, W), (C, H, W) or (N, C, H, W)."""
    if isinstance(input_size, int):
        shape: tuple[int, ...] = (1, 3, input_size, input_size)
    else:
        t = tuple(int(s) for s in input_size)
        shape = {2: (1, 3) + t, 3: (1,) + t, 4: (1,) + t[1:]}.get(len(t), ())
        if not shape:
            raise ValueError(f"input_size = {input_size!r}: allowed S, (H, W), (C, H, W) or (N, C, H, W)")
    p = next(like.parameters(), None)
    return torch.zeros(shape) if p is None else torch.zeros(shape, device=p.device, dtype=p.dtype)


#: tracing resolution cap: channel coupling does not depend on the spatial size, and a
#: small example keeps tracing a ResNet-152 cheap (falls back to the full size on failure)
TRACE_SIDE = 8


def build_graph(model: nn.Module, input_size: int | tuple[int, ...] = 32) -> tp.DependencyGraph:
    """Trace ``model`` (already option-A converted) in eval mode; BN statistics stay untouched."""
    full = example_input(input_size, model)
    small = full[..., :TRACE_SIDE, :TRACE_SIDE]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for example in (small, full) if small.shape != full.shape else (full,):
                try:
                    return tp.DependencyGraph().build_dependency(model, example, verbose=False)
                except RuntimeError:
                    if example is full:
                        raise
    finally:
        model.train(was_training)
    raise AssertionError("unreachable")


def discover(model: nn.Module, dg: tp.DependencyGraph) -> list[_GroupInfo]:
    """All prunable groups of a converted ``model`` in network order."""
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    classifiers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    out_fns = (tp.prune_conv_out_channels,)
    infos: list[tuple[int, _GroupInfo]] = []
    seen: set[nn.Module] = set()
    for module in list(dg.module2node):
        if not isinstance(module, nn.Conv2d) or module in seen or getattr(module, "autocompress_fixed", False):
            continue
        group = dg.get_pruning_group(module, tp.prune_conv_out_channels, list(range(module.out_channels)))
        convs, bns, consumers = [], [], []
        prunes_classifier_out = False
        for dep, _ in group.items:
            target = dep.target.module
            if target not in names:
                continue  # functional ops (add, relu) carry no parameters
            fn = dep.handler
            if isinstance(target, nn.Conv2d) and fn in out_fns:
                convs.append(names[target])
                seen.add(target)
            elif isinstance(target, nn.BatchNorm2d):
                bns.append(names[target])
            elif isinstance(target, (nn.Conv2d, nn.Linear)) and dg.is_in_channel_pruning_fn(fn):
                consumers.append(names[target])
            elif target in classifiers and dg.is_out_channel_pruning_fn(fn):
                prunes_classifier_out = True
        if prunes_classifier_out:
            continue
        info = _name_group(model, module, names, order, sorted(set(convs), key=order.__getitem__),
                           sorted(set(bns), key=order.__getitem__), sorted(set(consumers), key=order.__getitem__))
        if info is not None:
            infos.append(info)
    infos.sort(key=lambda t: t[0])
    result = [i for _, i in infos]
    dupes = {i.group.name for i in result if sum(j.group.name == i.group.name for j in result) > 1}
    if dupes:
        raise RuntimeError(f"{type(model).__name__}: ambiguous prune group names {sorted(dupes)}; "
                           "not a ResNet layout compress.prune understands")
    return result


def _name_group(model, root, names, order, convs, bns, consumers) -> tuple[int, _GroupInfo] | None:
    channels = root.out_channels
    root_name = names[root]
    inner = _INNER.match(root_name)
    if len(convs) == 1 and inner and all(c.startswith(inner.group(1) + ".") for c in consumers):
        g = PruneGroup(root_name, channels, "block", (root_name,))
        return order[root_name], _GroupInfo(g, root_name, tuple(bns), tuple(consumers))
    stages = {m.group(1) for c in convs if (m := _STAGE.match(c))}
    if not stages:
        return None  # e.g. the stem of a Bottleneck ResNet: not a stage's residual channels
    if len(stages) > 1:
        raise RuntimeError(f"{type(model).__name__}: channels of {convs} couple several stages {sorted(stages)}")
    stage = stages.pop()
    g = PruneGroup(stage, channels, "stage", tuple(convs))
    key = min([order[stage]] + [order[c] for c in convs])
    return key, _GroupInfo(g, root_name, tuple(bns), tuple(consumers))
