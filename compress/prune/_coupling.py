"""Which prune group sets each layer's input and output channel counts.

A cost model of a pruned network needs, for every Conv2d / Linear / BatchNorm2d, the group
whose kept channels are its input channels and the group whose kept channels are its output
channels. In a ResNet these interact: a block's ``conv1`` reads the stage's residual channels
(stage group) and writes the block's inner channels (block group), so its FLOPs depend on
both ratios. The mapping comes from the same dependency-graph discovery :func:`list_groups`
uses, so it always agrees with what :func:`prune` removes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.prune._groups import build_graph, discover
from compress.prune._option_a import convert_option_a, has_option_a


@dataclass(frozen=True)
class Coupling:
    """The prune groups (``None``: not prunable) that set one module's channel counts.

    For a BatchNorm, ``in_group`` is ``None`` and ``out_group`` is the group of its channels
    (its cost scales with its channel count once, not twice).
    """

    in_group: str | None
    out_group: str | None


def channel_coupling(model: nn.Module, input_size: int | tuple[int, ...] = 32) -> dict[str, Coupling]:
    """``{module name: Coupling}`` for every Conv2d, Linear and BatchNorm2d of ``model``.

    Names are those of the option-A converted model (what :func:`prune` returns), so the
    converted shortcut convs (``layer2.0.shortcut``, marked ``autocompress_fixed``) appear too.
    """
    work = convert_option_a(model) if has_option_a(model) else model
    infos = discover(work, build_graph(work, input_size))
    out_of: dict[str, str] = {}
    in_of: dict[str, str] = {}
    for info in infos:
        name = info.group.name
        for layer in info.group.layers + info.bns:
            out_of[layer] = name
        for layer in info.consumers:
            in_of[layer] = name
    result: dict[str, Coupling] = {}
    for name, module in work.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            result[name] = Coupling(None, out_of.get(name))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            result[name] = Coupling(in_of.get(name), out_of.get(name))
    return result
