"""Mixed-precision costs: bit-operations (BOPs) and model size at per-layer bit-widths.

Conventions (documented choices):

* BOPs = sum over Conv2d/Linear layers of ``MACs x w_bits x a_bits``. Float layers count
  32 x 32 (or 16 x 16 for 16-bit). Other ops (BN, ReLU, pooling, adds) are not counted:
  BN folds into the preceding conv on deployment and the rest are memory-bound and tiny.
* Size = bytes of all parameters: a quantizable layer's weight at its ``w`` bits, every other
  parameter (conv/linear biases, BN affine weight and bias) at 32 bits. Buffers (BN running
  statistics) are not counted. On deployment BN folds into the conv, leaving a per-channel
  scale and bias, i.e. the same two 32-bit values per channel we charge for the BN affine
  parameters, so the count matches a folded int8 model up to quantization zero-points.
  Each tensor is rounded up to whole bytes.
* Fixed modules (converted option-A shortcuts) are excluded, as in :mod:`._flops`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from compress.measure._flops import layer_macs
from compress.measure._shapes import fixed_prefixes
from compress.models import quantizable_layers
from spaces._schema import FieldError, join_path, to_dict
from spaces.policy import PolicyError, QuantSpec


def _quant_layers(model: nn.Module) -> list[str]:
    return quantizable_layers(model)


def _check_names(model: nn.Module, quant: QuantSpec, layers: Sequence[str]) -> None:
    known_set = set(layers)
    unknown = [n for n in quant.layers if n not in known_set]
    if unknown:
        known = ", ".join(layers[:12]) + (" ..." if len(layers) > 12 else "")
        raise PolicyError([FieldError(join_path("quant.layers", n), to_dict(quant.layers[n]),
                                      f"unknown layer of {type(model).__name__}; known: {known}")
                           for n in unknown])


def _nbytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def layer_costs(model: nn.Module, input_size: int | Sequence[int], quant: QuantSpec) -> list[dict]:
    """Per quantizable layer, in network order: ``name, macs, params, w, a, bops, bytes``.

    ``bytes`` covers the layer's weight at ``w`` bits plus its bias at 32 bits.
    """
    layers = _quant_layers(model)
    _check_names(model, quant, layers)
    macs = layer_macs(model, input_size)
    modules = dict(model.named_modules())
    out = []
    for name in layers:
        m = modules[name]
        bits = quant.bits_for(name)
        w_numel = m.weight.numel()
        b_numel = m.bias.numel() if getattr(m, "bias", None) is not None else 0
        mac = macs.get(name, 0)
        out.append({
            "name": name, "macs": mac, "params": w_numel + b_numel, "w": bits.w, "a": bits.a,
            "bops": mac * bits.w * bits.a, "bytes": _nbytes(w_numel, bits.w) + _nbytes(b_numel, 32),
        })
    return out


def count_bops(model: nn.Module, input_size: int | Sequence[int], quant: QuantSpec) -> int:
    """Bit-operations: sum of ``MACs x w_bits x a_bits`` over conv/linear layers."""
    return int(sum(c["bops"] for c in layer_costs(model, input_size, quant)))


def model_size_bytes(model: nn.Module, quant: QuantSpec) -> int:
    """Bytes of all parameters at their bit-widths (see the module docstring for conventions)."""
    layers = _quant_layers(model)
    _check_names(model, quant, layers)
    weight_bits = {f"{name}.weight": quant.bits_for(name).w for name in layers}
    fixed = fixed_prefixes(model)
    seen: set[int] = set()
    total = 0
    for pname, p in model.named_parameters():
        if id(p) in seen or any(pname.startswith(f + ".") for f in fixed):
            continue
        seen.add(id(p))
        total += _nbytes(p.numel(), weight_bits.get(pname, 32))
    return int(total)
