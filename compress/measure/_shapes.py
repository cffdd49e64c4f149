"""Input-size helpers shared by the cost counters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def input_shape(input_size: int | Sequence[int], batch: int = 1) -> tuple[int, ...]:
    """``32`` -> ``(batch, 3, 32, 32)``; ``(H, W)`` -> ``(batch, 3, H, W)``; ``(C, H, W)`` kept."""
    if isinstance(input_size, int):
        dims: tuple[int, ...] = (3, input_size, input_size)
    else:
        dims = tuple(int(d) for d in input_size)
        if len(dims) == 2:
            dims = (3, *dims)
        elif len(dims) != 3:
            raise ValueError(f"input_size = {input_size!r}: allowed an int, (H, W) or (C, H, W)")
    if batch < 1 or any(d < 1 for d in dims):
        raise ValueError(f"input_size = {input_size!r}, batch = {batch}: all sizes must be >= 1")
    return (batch, *dims)


def example_input(model: nn.Module, input_size: int | Sequence[int], batch: int = 1) -> torch.Tensor:
    """A zero tensor of the model's dtype and device for tracing."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    return torch.zeros(input_shape(input_size, batch), dtype=dtype, device=device)


def is_fixed(module: nn.Module) -> bool:
    """Modules marked ``autocompress_fixed`` (converted option-A shortcuts) are not real layers."""
    return bool(getattr(module, "autocompress_fixed", False))


def fixed_prefixes(model: nn.Module) -> list[str]:
    """Names of fixed modules; their parameters and MACs are left out of cost counts."""
    return [name for name, m in model.named_modules() if name and is_fixed(m)]
