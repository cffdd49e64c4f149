"""FLOPs (fvcore; multiply-accumulates count as one FLOP), per-layer MACs and parameter counts.

Modules marked ``autocompress_fixed`` (the option-A shortcut converted to a fixed 1x1 conv
before pruning) stand for a parameter-free zero-padding and are left out of every count, so a
converted or pruned model is measured on the same footing as the original.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from compress.measure._shapes import example_input, fixed_prefixes

log = logging.getLogger(__name__)


def _analysis(model: nn.Module, input_size: int | Sequence[int], batch: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's imports trigger torch.jit deprecation warnings
        from fvcore.nn import FlopCountAnalysis

    for name in ("fvcore", "fvcore.nn.jit_analysis", "iopath"):
        logging.getLogger(name).setLevel(logging.ERROR)
    x = example_input(model, input_size, batch)
    fca = FlopCountAnalysis(model, x)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    fca.tracer_warnings("none")
    return fca


def _by_module(model: nn.Module, input_size: int | Sequence[int], batch: int = 1) -> dict[str, int]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings; fvcore's own are switched off above
            return dict(_analysis(model, input_size, batch).by_module())
    except Exception as exc:  # noqa: BLE001 - fvcore's tracer errors are opaque
        raise RuntimeError(
            f"fvcore could not count FLOPs of {type(model).__name__} ({type(exc).__name__}: {exc}). "
            "Count FLOPs on the float/pruned model, before int8 conversion."
        ) from exc
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, input_size: int | Sequence[int], *, batch: int = 1) -> int:
    """fvcore FLOPs of one forward pass at ``input_size`` (int, (H, W) or (C, H, W)).

    fvcore counts one multiply-accumulate as one FLOP. Fixed modules are excluded.
    """
    per = _by_module(model, input_size, batch)
    total = per.get("", 0)
    for prefix in fixed_prefixes(model):
        total -= per.get(prefix, 0)
    return int(total)


def layer_macs(model: nn.Module, input_size: int | Sequence[int], *, batch: int = 1) -> dict[str, int]:
    """MACs per Conv2d/Linear module, in network order (fixed modules excluded)."""
    per = _by_module(model, input_size, batch)
    fixed = fixed_prefixes(model)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(name == f or name.startswith(f + ".") for f in fixed):
            out[name] = int(per.get(name, 0))
    return out


def module_flops(model: nn.Module, input_size: int | Sequence[int], *, batch: int = 1) -> dict[str, int]:
    """fvcore FLOPs per leaf module (conv, BN, linear, pooling...), in network order; fixed modules
    excluded, so the values sum to :func:`count_flops` (every counted op of a ResNet is a module)."""
    per = _by_module(model, input_size, batch)
    fixed = fixed_prefixes(model)
    return {name: int(per.get(name, 0)) for name, m in model.named_modules()
            if name and not list(m.children()) and not any(name == f or name.startswith(f + ".") for f in fixed)}


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once; fixed modules excluded)."""
    fixed = fixed_prefixes(model)
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters():
        if any(name.startswith(f + ".") for f in fixed) or id(p) in seen:
            continue
        if trainable_only and not p.requires_grad:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
