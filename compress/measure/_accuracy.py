"""Top-k accuracy of a classifier over a data loader."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def evaluate(model: nn.Module, loader: Iterable, *, device: str | torch.device = "cpu",
             topk: Sequence[int] = (1, 5), progress: bool = True, limit: int | None = None) -> dict:
    """Top-k accuracy in percent over ``loader`` (batches of ``(inputs, int labels)``).

    Runs in eval mode under ``torch.inference_mode`` and restores the model's training flag.
    The model is moved to ``device`` (a no-op on CPU). ``limit`` caps the number of images.
    Returns ``{"top1": .., "top5": .., "n": ..}``; ``top{k}`` is only reported when the model
    has more than ``k`` classes (so top-5 needs at least 6 classes).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit = {limit}: must be >= 1 or None")
    ks = sorted({int(k) for k in topk})
    if not ks or ks[0] < 1:
        raise ValueError(f"topk = {tuple(topk)}: all k must be >= 1")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if any(p.device != device for p in model.parameters()):
        model.to(device)
    correct = {k: 0 for k in ks}
    n = 0
    num_classes: int | None = None
    total = None
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        pass
    bar = tqdm(loader, total=total, desc="evaluate", unit="batch", disable=not progress, leave=False)
    try:
        with torch.inference_mode():
            for inputs, targets in bar:
                if limit is not None and n + len(targets) > limit:
                    keep = limit - n
                    inputs, targets = inputs[:keep], targets[:keep]
                inputs = inputs.to(device, non_blocking=True)
                targets = torch.as_tensor(targets).to(device, non_blocking=True)
                logits = model(inputs)
                if logits.ndim != 2:
                    raise ValueError(f"evaluate: model output has shape {tuple(logits.shape)}; "
                                     "expected (batch, num_classes) logits")
                num_classes = logits.shape[1]
                kmax = min(ks[-1], num_classes)
                pred = logits.float().topk(kmax, dim=1).indices
                hits = pred.eq(targets.view(-1, 1))
                for k in ks:
                    correct[k] += int(hits[:, :k].any(dim=1).sum())
                n += len(targets)
                if progress and n:
                    bar.set_postfix(top1=f"{100.0 * correct[ks[0]] / n:.2f}")
                if limit is not None and n >= limit:
                    break
    finally:
        bar.close()
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    out: dict = {}
    for k in ks:
        if k == 1 or (num_classes is not None and num_classes > k):
            out[f"top{k}"] = 100.0 * correct[k] / n
    out["n"] = n
    log.debug("evaluate: %s", out)
    return out
