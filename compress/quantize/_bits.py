"""Per-layer bit-widths: resolving a QuantSpec against a model, and backend bit rules.

Backend rules (what :func:`check_bits` enforces), one per deployment target:

* ``none``: float only; any bit-width below 16 is rejected.
* ``x86``: a layer is either *integer* (``w`` and ``a`` both 2-8) or *float* (both 16/32).
  Integer layers run in real INT8 FX kernels. Weights below 8 bits run inside the INT8 kernel
  with their values restricted to the ``w``-bit grid (so accuracy equals the simulation; size
  and BOPs count ``w`` bits). Activations below 8 bits are *simulation only*: they are scored
  by fake-quant accuracy and run at 8 bits. 16-bit layers run in fp32 (no fp16 CPU kernels).
  Mixed layers (int weights with float activations or the reverse) are rejected: the x86
  kernels quantize weights and activations together.
* ``cuda`` (PyTorch on a GPU): 16 -> fp16 (or bf16) execution, 32 -> fp32, <= 8 -> fake-quant
  simulation in fp32 (PyTorch has no general INT8 convolution kernel on CUDA). Every bit-width is
  allowed.
* ``tensorrt``: the x86 rule (a layer is integer or float, never mixed), because TensorRT's INT8
  kernels also take Q/DQ on both weights and activations. Integer layers run in real INT8 (explicit,
  symmetric Q/DQ in the exported ONNX); below 8 bits they are *simulated*: the values lie on the
  ``w``/``a``-bit grid inside INT8 tensors, so accuracy is the simulation's and speed is INT8's.
  16 -> fp16, 32 -> fp32 (strongly typed engine: the ONNX types decide).
"""

from __future__ import annotations

from torch import nn

from compress.models import quantizable_layers
from spaces._schema import FieldError, join_path, to_dict
from spaces.policy import BACKENDS, FLOAT_BITS, LayerBits, PolicyError, QuantSpec

X86_RULE = ("x86 int8 kernels quantize weights and activations together: allowed w and a both 2-8 "
            "(int8; w < 8 on its grid, a < 8 simulated) or both 16/32 (float)")
TENSORRT_RULE = ("tensorrt int8 kernels quantize weights and activations together (Q/DQ on both): allowed w and a "
                 "both 2-8 (int8; below 8 simulated on its grid) or both 16/32 (fp16/fp32)")
_COUPLED_RULES = {"x86": X86_RULE, "tensorrt": TENSORRT_RULE}


def is_int(bits: int) -> bool:
    """True for integer bit-widths (2-8), False for float (16/32)."""
    return bits not in FLOAT_BITS


def resolve_bits(model: nn.Module, quant: QuantSpec) -> dict[str, LayerBits]:
    """Bits of every quantizable layer of ``model`` (``quant.default`` for unnamed layers).

    Raises :class:`PolicyError` naming ``quant.layers[...]`` entries that are not layers of
    the model, with the known layer names.
    """
    layers = quantizable_layers(model)
    known = set(layers)
    unknown = [name for name in quant.layers if name not in known]
    if unknown:
        shown = ", ".join(layers[:12]) + (" ..." if len(layers) > 12 else "")
        raise PolicyError([FieldError(join_path("quant.layers", n), to_dict(quant.layers[n]),
                                      f"unknown layer; known: {shown}") for n in unknown])
    return {name: quant.bits_for(name) for name in layers}


def _entries(quant: QuantSpec) -> list[tuple[str, LayerBits]]:
    out = [("quant.default", quant.default)]
    out += [(join_path("quant.layers", n), b) for n, b in quant.layers.items()]
    return out


def check_bits(quant: QuantSpec, backend: str | None = None) -> None:
    """Raise :class:`PolicyError` for bit-widths the ``backend`` (default ``quant.backend``) cannot run.

    See the module docstring for the rules per backend.
    """
    backend = quant.backend if backend is None else backend
    if backend not in BACKENDS:
        raise PolicyError([FieldError("quant.backend", backend, "allowed " + ", ".join(BACKENDS))])
    errors: list[FieldError] = []
    for path, bits in _entries(quant):
        if backend == "none" and not bits.is_float:
            errors.append(FieldError(path, to_dict(bits), "backend 'none' runs float only: allowed w, a in 16, 32"))
        elif backend in _COUPLED_RULES and is_int(bits.w) != is_int(bits.a):
            errors.append(FieldError(path, to_dict(bits), _COUPLED_RULES[backend]))
    if errors:
        raise PolicyError(errors)


def describe(bits: LayerBits) -> str:
    """Short text such as ``w4a8`` or ``fp32``."""
    if bits.is_float:
        return f"fp{min(bits.w, bits.a)}"
    return f"w{bits.w}a{bits.a}"
