"""Quantizer arithmetic: per-channel symmetric weights, per-tensor affine activations.

All fake-quant ops are ``torch.fake_quantize_per_*_affine``, whose backward is the straight-
through estimator (gradient passed inside the clipping range, zero outside).
"""

from __future__ import annotations

from typing import Literal

import torch

WeightMethod = Literal["minmax", "mse"]
ActMethod = Literal["minmax", "percentile", "mse"]
WEIGHT_METHODS = ("minmax", "mse")
ACT_METHODS = ("minmax", "percentile", "mse")

_EPS = 1e-8
_MSE_GRID = torch.linspace(0.4, 1.0, 16)


def weight_qmax(bits: int) -> int:
    """Largest integer of the symmetric narrow range ``[-qmax, qmax]`` (2 bits: ternary)."""
    return 2 ** (bits - 1) - 1


def weight_scale(weight: torch.Tensor, bits: int, method: WeightMethod = "mse") -> torch.Tensor:
    """Per-output-channel scale (shape ``[out]``) for symmetric ``bits``-bit weights.

    ``minmax`` maps the largest magnitude to ``qmax``; ``mse`` picks, per channel, the clipping
    fraction of the largest magnitude (16 steps 0.4..1.0) with the lowest squared error.
    """
    w = weight.detach().reshape(weight.shape[0], -1).float()
    qmax = weight_qmax(bits)
    amax = w.abs().amax(dim=1).clamp_min(_EPS)
    if method == "minmax":
        return amax / qmax
    if method != "mse":
        raise ValueError(f"weight method {method!r}: allowed {', '.join(WEIGHT_METHODS)}")
    grid = _MSE_GRID.to(w.device)
    scales = amax[None, :] * grid[:, None] / qmax  # [G, out]
    q = torch.clamp(torch.round(w[None] / scales[..., None]), -qmax, qmax) * scales[..., None]
    err = (q - w[None]).pow(2).sum(dim=2)  # [G, out]
    best = err.argmin(dim=0)
    return scales.gather(0, best[None]).squeeze(0)


def fake_quant_weight(weight: torch.Tensor, bits: int, method: WeightMethod = "mse", *,
                      scale: torch.Tensor | None = None) -> torch.Tensor:
    """Weights rounded to the per-channel ``bits``-bit grid, with straight-through gradients.

    ``scale`` (per output channel) defaults to :func:`weight_scale` with ``method``.
    """
    scale = (weight_scale(weight, bits, method) if scale is None else scale).to(weight.dtype)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    qmax = weight_qmax(bits)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -qmax, qmax)


def act_qrange(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """Integer range of ``bits``-bit activations: unsigned ``[0, 2^b-1]``, or signed
    ``[-2^(b-1), 2^(b-1)-1]`` when ``symmetric`` (zero point 0, what TensorRT runs)."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)


def act_qparams(lo: float, hi: float, bits: int, symmetric: bool = False) -> tuple[float, int]:
    """``(scale, zero_point)`` covering ``[min(lo, 0), max(hi, 0)]``: asymmetric unsigned, or
    symmetric signed (zero point 0, scale from the largest magnitude) when ``symmetric``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = act_qrange(bits, symmetric)[1]
    if symmetric:
        return max(max(-lo, hi) / qmax, _EPS), 0
    scale = max((hi - lo) / qmax, _EPS)
    zero = int(min(qmax, max(0, round(-lo / scale))))
    return scale, zero


def fake_quant_act(x: torch.Tensor, lo: float, hi: float, bits: int, symmetric: bool = False) -> torch.Tensor:
    """Per-tensor fake quantization of ``x`` to ``bits`` bits over ``[lo, hi]`` (STE)."""
    scale, zero = act_qparams(lo, hi, bits, symmetric)
    qmin, qmax = act_qrange(bits, symmetric)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)


def onnx_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int,
                    axis: int | None = None) -> torch.Tensor:
    """``fake_quantize_per_{tensor,channel}_affine(x, scale, zero, qmin, qmax)`` in a form the ONNX
    exporter writes as QuantizeLinear/DequantizeLinear, with the same values.

    ONNX allows only the 8-bit ranges ``[-128, 127]`` and ``[0, 255]``; a narrower range (weights
    ``[-127, 127]``, sub-8-bit grids) is first clipped to its bounds, then quantized over the 8-bit
    range: the result is on the same grid, and the exported graph holds INT8 tensors.
    """
    lo_q, hi_q = (-128, 127) if qmin < 0 else (0, 255)
    if axis is None:
        if (qmin, qmax) != (lo_q, hi_q):
            x = torch.clamp(x, (qmin - zero) * scale, (qmax - zero) * scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, lo_q, hi_q)
    shape = [1] * x.dim()
    shape[axis] = -1
    if (qmin, qmax) != (lo_q, hi_q):
        s = scale.view(shape)
        z = zero.view(shape).to(scale.dtype)
        x = torch.minimum(torch.maximum(x, (qmin - z) * s), (qmax - z) * s)
    return torch.fake_quantize_per_channel_affine(x, scale, zero, axis, lo_q, hi_q)


def act_range(lo: float, hi: float, sample: torch.Tensor, bits: int, method: ActMethod,
              symmetric: bool = False) -> tuple[float, float]:
    """Calibrated clipping range from the observed extremes and a sample of activations.

    ``minmax``: the observed extremes; ``percentile``: 0.01/99.99 percentiles of the sample;
    ``mse``: the extremes shrunk by the factor (16 steps 0.4..1.0) with the lowest quantization
    error on the sample (with the ``symmetric`` quantizer when asked).
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if method == "minmax" or sample.numel() == 0:
        return lo, hi
    if method == "percentile":
        s = sample.float()
        q_lo = float(torch.quantile(s, 1e-4)) if lo < 0 else 0.0
        return min(q_lo, 0.0), max(float(torch.quantile(s, 1 - 1e-4)), 0.0)
    if method != "mse":
        raise ValueError(f"activation method {method!r}: allowed {', '.join(ACT_METHODS)}")
    best, best_err = (lo, hi), float("inf")
    s = sample.float()
    qmin, qmax = act_qrange(bits, symmetric)
    for alpha in _MSE_GRID.tolist():
        a, b = lo * alpha, hi * alpha
        scale, zero = act_qparams(a, b, bits, symmetric)
        q = torch.fake_quantize_per_tensor_affine(s, scale, zero, qmin, qmax)
        err = float((q - s).pow(2).mean())
        if err < best_err:
            best, best_err = (a, b), err
    return best


def round_half(x: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """``x`` rounded to ``dtype`` precision and back, straight-through gradient."""
    return x + (x.to(dtype).to(x.dtype) - x).detach()
