"""BatchNorm re-calibration: re-estimate running statistics after the weights changed."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def bn_recalibrate(model: nn.Module, loader: Iterable, batches: int = 20, *,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Reset every BatchNorm's running mean/var and re-estimate them on ``batches`` batches.

    Works **in place** on ``model`` (callers that need purity pass a copy, as
    ``compress.apply`` does) and returns it in eval mode. Statistics are a cumulative
    average (``momentum=None``) over the batches, computed in train mode under ``no_grad``,
    so no weight changes. Models without BatchNorm are returned unchanged (in eval mode).
    """
    if batches < 1:
        raise ValueError(f"batches = {batches}: must be >= 1")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return model.eval()
    device = torch.device(device)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs.to(device))
            seen += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    if seen == 0:
        raise ValueError("bn_recalibrate: the loader yielded no batches")
    return model
