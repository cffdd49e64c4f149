"""Channel importance per prune group: ``l1``, ``bn_scale`` and first-order ``taylor``.

Scores are computed on the unpruned (converted) model, one value per channel of the group,
summed over the group's coupled layers. Fixed option-A shortcut convs never contribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from compress.prune._groups import _GroupInfo
from spaces._schema import FieldError
from spaces.policy import PolicyError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _trainable_convs(model: nn.Module, names: Iterable[str]) -> list[nn.Conv2d]:
    mods = dict(model.named_modules())
    return [mods[n] for n in names if not getattr(mods[n], "autocompress_fixed", False)]


def l1_scores(model: nn.Module, info: _GroupInfo) -> torch.Tensor:
    """L1 norm of each output channel's weights, summed over the group's convs."""
    total = torch.zeros(info.group.channels)
    for conv in _trainable_convs(model, info.group.layers):
        total += conv.weight.detach().abs().flatten(1).sum(1).float().cpu()
    return total


def bn_scale_scores(model: nn.Module, info: _GroupInfo) -> torch.Tensor:
    """|gamma| of the group's BatchNorms, summed (network slimming, Liu et al. 2017)."""
    mods = dict(model.named_modules())
    total = torch.zeros(info.group.channels)
    for name in info.bns:
        bn = mods[name]
        if bn.weight is None:
            raise ValueError(f"{name}: BatchNorm without affine weight; bn_scale needs gamma")
        total += bn.weight.detach().abs().float().cpu()
    return total


def accumulate_gradients(model: nn.Module, data: Iterable | None, loss_fn: LossFn | None,
                         max_batches: int) -> None:
    """Backpropagate ``loss_fn`` over up to ``max_batches`` ``(x, y)`` batches of ``data``.

    Runs in eval mode so BatchNorm running statistics are not changed; gradients accumulate
    in ``.grad`` (the caller clears them).
    """
    if data is None:
        raise PolicyError([FieldError("prune.criterion", "taylor",
                                      "needs data: pass data= an iterable of (inputs, targets) batches, "
                                      "or use criterion l1 or bn_scale")])
    loss_fn = loss_fn or F.cross_entropy
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    n = 0
    try:
        with torch.enable_grad():
            for batch in islice(data, max_batches):
                x, y = batch[0].to(device), batch[1].to(device)
                loss_fn(model(x), y).backward()
                n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise PolicyError([FieldError("prune.criterion", "taylor", "needs data, but the data iterable was empty")])


def taylor_scores(model: nn.Module, info: _GroupInfo) -> torch.Tensor:
    """First-order Taylor importance ``|w * dL/dw|`` per channel (Molchanov et al. 2019).

    Summed over the group's parameters: output-channel slices of its convs, its BatchNorm
    gamma and beta, and input-channel slices of the convs/linears consuming the channels.
    Needs gradients from :func:`accumulate_gradients`.
    """
    mods = dict(model.named_modules())
    total = torch.zeros(info.group.channels)

    def add(p: torch.Tensor | None, dim: int) -> None:
        if p is None or p.grad is None:
            return
        s = (p.detach() * p.grad.detach()).abs()
        s = s.transpose(0, dim).flatten(1).sum(1) if s.dim() > 1 else s
        total.add_(s.float().cpu())

    for conv in _trainable_convs(model, info.group.layers):
        add(conv.weight, 0)
    for name in info.bns:
        add(mods[name].weight, 0)
        add(mods[name].bias, 0)
    for name in info.consumers:
        m = mods[name]
        if not getattr(m, "autocompress_fixed", False):
            add(m.weight, 1)
    return total


SCORERS: dict[str, Callable[[nn.Module, _GroupInfo], torch.Tensor]] = {
    "l1": l1_scores,
    "bn_scale": bn_scale_scores,
    "taylor": taylor_scores,
}
