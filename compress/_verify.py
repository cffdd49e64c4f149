"""What an exported artefact is checked on, shared by the ONNX (:mod:`compress.export`) and
TorchScript (:mod:`compress.torchscript`) exports: the float logit rule and the verification inputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

FLOAT_REL_TOL = 1e-3  # float exports: max |logit difference| <= FLOAT_REL_TOL x the largest |logit| ...
FLOAT_ABS_FLOOR = 1e-4  # ... and never less than this
VERIFY_BATCH_SIZES = (1, 3)


def loader_inputs(loader: Iterable, n: int) -> Iterator[torch.Tensor]:
    """The input tensors of the first ``n`` batches of ``loader`` (``(x, y)`` pairs or tensors)."""
    for i, batch in enumerate(loader):
        if i >= n:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def dynamic_batches(example: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of VERIFY_BATCH_SIZES (1 and 3) built from ``example``: an export with a broken
    dynamic batch axis fails on them."""
    one = example[:1]
    return [one, torch.cat([one, example[-1:], one * 0.5])]


__all__ = ["FLOAT_ABS_FLOOR", "FLOAT_REL_TOL", "VERIFY_BATCH_SIZES", "dynamic_batches", "loader_inputs"]
