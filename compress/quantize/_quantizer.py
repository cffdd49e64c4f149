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


def act_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Asymmetric unsigned ``(scale, zero_point)`` covering ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = 2 ** bits - 1
    scale = max((hi - lo) / qmax, _EPS)
    zero = int(min(qmax, max(0, round(-lo / scale))))
    return scale, zero


def fake_quant_act(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Per-tensor affine fake quantization of ``x`` to ``bits`` bits over ``[lo, hi]`` (STE)."""
    scale, zero = act_qparams(lo, hi, bits)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 2 ** bits - 1)


def act_range(lo: float, hi: float, sample: torch.Tensor, bits: int, method: ActMethod) -> tuple[float, float]:
    """Calibrated clipping range from the observed extremes and a sample of activations.

    ``minmax``: the observed extremes; ``percentile``: 0.01/99.99 percentiles of the sample;
    ``mse``: the extremes shrunk by the factor (16 steps 0.4..1.0) with the lowest quantization
    error on the sample.
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
    for alpha in _MSE_GRID.tolist():
        a, b = lo * alpha, hi * alpha
        scale, zero = act_qparams(a, b, bits)
        q = torch.fake_quantize_per_tensor_affine(s, scale, zero, 0, 2 ** bits - 1)
        err = float((q - s).pow(2).mean())
        if err < best_err:
            best, best_err = (a, b), err
    return best


def round_half(x: torch.Tensor, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """``x`` rounded to ``dtype`` precision and back, straight-through gradient."""
    return x + (x.to(dtype).to(x.dtype) - x).detach()
