"""Simulated (fake) quantization for accuracy scoring and quantization-aware training.

Quantized layers become :class:`FakeQuantConv2d` / :class:`FakeQuantLinear`: subclasses of
``nn.Conv2d`` / ``nn.Linear`` at the *same module path* with the *same parameters*, so
``state_dict`` keys are those of the float model (the calibrated activation ranges are
non-persistent buffers; re-run :func:`calibrate` after loading). Each forward fake-quantizes

* the weights per output channel, symmetric ``[-(2^(w-1)-1), 2^(w-1)-1]`` (2 bits: ternary),
  scale from the max magnitude (``minmax``) or the MSE-optimal clip (``mse``), recomputed every
  forward so QAT sees the current weights;
* the input activation per tensor, asymmetric unsigned ``[0, 2^a-1]`` over the calibrated range
  (unsigned after a ReLU, since the range always includes 0); for the ``tensorrt`` backend
  symmetric signed ``[-2^(a-1), 2^(a-1)-1]`` with zero point 0, as TensorRT runs it.

In ONNX export (``torch.onnx.is_in_onnx_export()``) the same values are written as
QuantizeLinear/DequantizeLinear over 8-bit ranges (:func:`~compress.quantize._quantizer.onnx_fake_quant`),
so every fake-quantized model exports; the ``tensorrt`` form is what TensorRT builds INT8 from.

Gradients are straight-through (``torch.fake_quantize_per_*_affine``). 16/32-bit means float;
for the ``cuda`` and ``tensorrt`` backends, 16-bit layers additionally round weights and inputs
to fp16 (what they run at there); for ``x86``/``none`` 16 stays fp32, as it runs on the CPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compress.quantize._bits import is_int, resolve_bits
from compress.quantize._quantizer import (
    ACT_METHODS,
    WEIGHT_METHODS,
    ActMethod,
    WeightMethod,
    act_qparams,
    act_qrange,
    act_range,
    fake_quant_act,
    fake_quant_weight,
    onnx_fake_quant,
    round_half,
    weight_qmax,
    weight_scale,
)
from spaces.policy import LayerBits, QuantSpec

log = logging.getLogger(__name__)

_SAMPLE_PER_BATCH = 8192
_EMA = 0.1
_FQ_BUFFERS = ("act_lo", "act_hi", "act_scale", "act_zero", "w_scale")
_FQ_ATTRS = ("w_bits", "a_bits", "half_dtype", "weight_method", "act_method", "act_symmetric", "observing",
             "calibrated", "_samples", "_float_cls", "_scale_cache")
#: backends whose 16-bit layers run in fp16 (their fake quantization rounds to it)
HALF_BACKENDS = ("cuda", "tensorrt")


class _FakeQuantMixin:
    """Shared state and quantizers of the fake-quant layer classes."""

    weight: nn.Parameter
    act_lo: torch.Tensor
    act_hi: torch.Tensor

    @classmethod
    def from_float(cls, mod: nn.Module, bits: LayerBits, *, weight_method: WeightMethod = "mse",
                   act_method: ActMethod = "mse", half_dtype: torch.dtype | None = None,
                   act_symmetric: bool = False):
        """A fake-quant layer sharing ``mod``'s parameters, attributes and hooks."""
        new = cls.__new__(cls)
        new.__dict__ = {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()}
        new._float_cls = type(mod)
        new.w_bits = bits.w
        new.a_bits = bits.a
        new.half_dtype = half_dtype
        new.weight_method = weight_method
        new.act_method = act_method
        new.act_symmetric = act_symmetric
        new.observing = False
        new.calibrated = False
        new._samples = []
        device = mod.weight.device
        new.register_buffer("act_lo", torch.full((), float("inf"), device=device), persistent=False)
        new.register_buffer("act_hi", torch.full((), float("-inf"), device=device), persistent=False)
        # calibrated qparams as tensors: no host sync per forward on accelerators
        new.register_buffer("act_scale", torch.ones((), device=device), persistent=False)
        new.register_buffer("act_zero", torch.zeros((), dtype=torch.int32, device=device), persistent=False)
        return new

    def to_float(self) -> nn.Module:
        """The plain float layer (same parameters, no fake quantization)."""
        mod = self._float_cls.__new__(self._float_cls)
        d = {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in self.__dict__.items()
             if k not in _FQ_ATTRS}
        d["_buffers"] = {k: v for k, v in d["_buffers"].items() if k not in _FQ_BUFFERS}
        d["_non_persistent_buffers_set"] = d["_non_persistent_buffers_set"] - set(_FQ_BUFFERS)
        mod.__dict__ = d
        return mod

    # ----- quantizers --------------------------------------------------------------
    def _half(self) -> bool:
        return self.half_dtype is not None and 16 in (self.w_bits, self.a_bits) and not (
            is_int(self.w_bits) or is_int(self.a_bits))

    def quant_weight(self) -> torch.Tensor:
        frozen = self._buffers.get("w_scale")
        if frozen is not None:
            if torch.onnx.is_in_onnx_export():  # on the grid already: Q/DQ over INT8 is exact
                zero = torch.zeros(frozen.shape[0], dtype=torch.int32, device=frozen.device)
                return torch.fake_quantize_per_channel_affine(self.weight, frozen, zero, 0, -128, 127)
            return fake_quant_weight(self.weight, self.w_bits, scale=frozen)
        if is_int(self.w_bits):
            key = (self.weight.data_ptr(), self.weight._version, self.w_bits, self.weight_method)
            cached = getattr(self, "_scale_cache", None)
            if cached is None or cached[0] != key:  # recomputed whenever the weights change (QAT)
                cached = (key, weight_scale(self.weight, self.w_bits, self.weight_method))
                self._scale_cache = cached
            if torch.onnx.is_in_onnx_export():
                q = weight_qmax(self.w_bits)
                zero = torch.zeros(cached[1].shape[0], dtype=torch.int32, device=cached[1].device)
                return onnx_fake_quant(self.weight, cached[1].to(self.weight.dtype), zero, -q, q, axis=0)
            return fake_quant_weight(self.weight, self.w_bits, scale=cached[1])
        if self._half():
            return round_half(self.weight, self.half_dtype)
        return self.weight

    @torch.no_grad()
    def freeze_weights(self) -> None:
        """Round the weights onto their grid in place and keep that scale (``w_scale`` buffer).

        For deployed models: no scale search per forward, and the export is a plain Q/DQ pair on
        the weight initializer (what TensorRT folds into INT8 weights).
        """
        if not is_int(self.w_bits):
            return
        scale = weight_scale(self.weight, self.w_bits, self.weight_method)
        self.weight.copy_(fake_quant_weight(self.weight, self.w_bits, scale=scale))
        self.register_buffer("w_scale", scale.to(self.weight.dtype), persistent=False)

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return x
        if not is_int(self.a_bits):
            return round_half(x, self.half_dtype) if self._half() else x
        symmetric = self.act_symmetric
        if self.calibrated:
            qmin, qmax = act_qrange(self.a_bits, symmetric)
            if torch.onnx.is_in_onnx_export():
                return onnx_fake_quant(x, self.act_scale, self.act_zero, qmin, qmax)
            return torch.fake_quantize_per_tensor_affine(x, self.act_scale, self.act_zero, qmin, qmax)
        lo, hi = self._act_range(x)
        return fake_quant_act(x, lo, hi, self.a_bits, symmetric)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        self.act_lo.fill_(min(float(self.act_lo), float(x.min())))
        self.act_hi.fill_(max(float(self.act_hi), float(x.max())))
        flat = x.detach().reshape(-1)
        if flat.numel() > _SAMPLE_PER_BATCH:
            g = torch.Generator(device="cpu").manual_seed(len(self._samples))
            idx = torch.randint(flat.numel(), (_SAMPLE_PER_BATCH,), generator=g).to(flat.device)
            flat = flat[idx]
        self._samples.append(flat.float().cpu())

    @torch.no_grad()
    def _act_range(self, x: torch.Tensor) -> tuple[float, float]:
        """Calibrated range; uncalibrated: EMA of batch extremes in training, else the batch's range."""
        if self.calibrated:
            return float(self.act_lo), float(self.act_hi)
        lo, hi = float(x.min()), float(x.max())
        tracked = bool(torch.isfinite(self.act_lo))
        if self.training:
            if tracked:
                self.act_lo.mul_(1 - _EMA).add_(_EMA * lo)
                self.act_hi.mul_(1 - _EMA).add_(_EMA * hi)
            else:
                self.act_lo.fill_(lo)
                self.act_hi.fill_(hi)
            return float(self.act_lo), float(self.act_hi)
        return (float(self.act_lo), float(self.act_hi)) if tracked else (lo, hi)

    def finish_calibration(self) -> None:
        """Turn the observed extremes and sample into the clipping range."""
        if not self._samples:
            raise RuntimeError("finish_calibration without observed batches")
        sample = torch.cat(self._samples)
        symmetric = self.act_symmetric
        lo, hi = act_range(float(self.act_lo), float(self.act_hi), sample, self.a_bits, self.act_method,
                           symmetric) if is_int(self.a_bits) else (float(self.act_lo), float(self.act_hi))
        self.act_lo.fill_(lo)
        self.act_hi.fill_(hi)
        if is_int(self.a_bits):
            scale, zero = act_qparams(lo, hi, self.a_bits, symmetric)
            self.act_scale.fill_(scale)
            self.act_zero.fill_(zero)
        self._samples = []
        self.observing = False
        self.calibrated = True

    def extra_repr(self) -> str:  # type: ignore[override]
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, w_bits={self.w_bits}, a_bits={self.a_bits}"


class FakeQuantConv2d(_FakeQuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights and input (see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant_input(x)
        return self._conv_forward(x, self.quant_weight(), self.bias)


class FakeQuantLinear(_FakeQuantMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weights and input (see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quant_input(x), self.quant_weight(), self.bias)


FAKE_QUANT_TYPES = (FakeQuantConv2d, FakeQuantLinear)


def _set_module(model: nn.Module, name: str, mod: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, mod)


def _strip_inplace(model: nn.Module) -> nn.Module:
    for name, mod in list(model.named_modules()):
        if isinstance(mod, FAKE_QUANT_TYPES):
            _set_module(model, name, mod.to_float())
    return model


def freeze_fake_quant(model: nn.Module) -> nn.Module:
    """Freeze the weight grids of every fake-quant layer of ``model`` in place (deployment; see
    :meth:`_FakeQuantMixin.freeze_weights`). Returns ``model``."""
    for m in model.modules():
        if isinstance(m, FAKE_QUANT_TYPES):
            m.freeze_weights()
    return model


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every fake-quant layer back to its plain float layer."""
    return _strip_inplace(copy.deepcopy(model))


def _batches(loader: Iterable, n: int) -> Iterable[torch.Tensor]:
    for i, batch in enumerate(loader):
        if i >= n:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(model: nn.Module, calib_loader: Iterable, *, calib_batches: int = 8, progress: bool = False) -> nn.Module:
    """Calibrate the activation ranges of every fake-quant layer of ``model`` in place.

    All layers observe their float inputs (fake quantization off) over ``calib_batches``
    batches of ``calib_loader`` (``(inputs, targets)`` or plain input batches); each range is
    then chosen by the layer's ``act_method``. Returns ``model``.
    """
    layers = [m for m in model.modules() if isinstance(m, FAKE_QUANT_TYPES)]
    if not layers:
        return model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for m in layers:
        m.act_lo.fill_(float("inf"))
        m.act_hi.fill_(float("-inf"))
        m._samples = []
        m.observing = True
    seen = 0
    try:
        for x in tqdm(_batches(calib_loader, calib_batches), total=calib_batches, desc="calibrate",
                      disable=not progress, leave=False):
            model(x.to(device))
            seen += 1
    finally:
        for m in layers:
            m.observing = False
    if seen == 0:
        raise ValueError("calibration loader yielded no batches")
    for m in layers:
        m.finish_calibration()
    model.train(was_training)
    log.debug("calibrated %d fake-quant layers on %d batches", len(layers), seen)
    return model


def fake_quantize(model: nn.Module, quant: QuantSpec, calib_loader: Iterable | None = None, *,
                  calib_batches: int = 8, weight_method: WeightMethod = "mse", act_method: ActMethod = "mse",
                  progress: bool = False) -> nn.Module:
    """A new model whose quantizable layers simulate ``quant``'s bit-widths (STE, QAT-ready).

    Layers at 2-8 bits are replaced by fake-quant layers at the same names; float layers stay
    (16-bit layers round to fp16 when ``quant.backend`` is ``cuda`` or ``tensorrt``; ``tensorrt``
    quantizes activations symmetrically, as TensorRT runs them). With ``calib_loader`` the
    activation ranges are calibrated on ``calib_batches`` batches (see :func:`calibrate`);
    without it they follow an EMA of batch extremes during training and use each batch's own
    range in eval until calibrated. Fake-quant layers already in ``model`` are replaced, so
    re-quantizing a QAT model at other bits works. Backend limits are not checked here (use
    :func:`check_bits`): any allowed bit-width can be simulated.
    """
    if weight_method not in WEIGHT_METHODS:
        raise ValueError(f"weight_method={weight_method!r}: allowed {', '.join(WEIGHT_METHODS)}")
    if act_method not in ACT_METHODS:
        raise ValueError(f"act_method={act_method!r}: allowed {', '.join(ACT_METHODS)}")
    new = strip_fake_quant(model)
    half = torch.float16 if quant.backend in HALF_BACKENDS else None
    symmetric = quant.backend == "tensorrt"
    for name, bits in resolve_bits(new, quant).items():
        if bits.is_float and (half is None or 16 not in (bits.w, bits.a)):
            continue
        mod = new.get_submodule(name)
        cls = FakeQuantConv2d if isinstance(mod, nn.Conv2d) else FakeQuantLinear
        _set_module(new, name, cls.from_float(mod, bits, weight_method=weight_method, act_method=act_method,
                                              half_dtype=half, act_symmetric=symmetric))
    if calib_loader is not None:
        calibrate(new, calib_loader, calib_batches=calib_batches, progress=progress)
    return new
