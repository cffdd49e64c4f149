"""Real (deployable) quantization: INT8 FX models for x86, fp16/bf16 layers for CUDA.

``x86``: FX graph mode post-training quantization (``prepare_fx``/``convert_fx``; the weights are
packed for the PyTorch quantized engine ``engine`` names, by default PyTorch's ``x86``; ``onednn``
runs large batches faster on x86 CPUs without VNNI, ``compress.quantize._engine``)
with a per-layer ``QConfigMapping``: integer layers get INT8 kernels, float layers (16/32) get
``None`` and stay fp32, with quantize/dequantize inserted at the boundaries. Conv-BN-ReLU is
fused. Weights below 8 bits are first rounded to their ``w``-bit per-channel grid (the same
quantizer as :func:`fake_quantize`) and the INT8 weight observer uses the narrow range
``[-(2^(w-1)-1), 2^(w-1)-1]``, so the INT8 kernel holds exactly the ``w``-bit values (BN folding
rescales each channel and keeps the grid). Activations run at 8 bits on CPUs with VNNI, as the
simulation and the ONNX Runtime export (``compress.onnx_int8``) assume; PyTorch's default x86
qconfig would reduce them to 7 bits (``reduce_range``), which only CPUs without VNNI need (their
16-bit pairwise sums saturate) and which cost 0.5-0.8 pt top-1 against the simulation on a 50%
pruned ResNet-56 without fine-tuning. The fixed 1x1 option-A shortcut convs
(``autocompress_fixed``, 0/1 weights) quantize exactly with scale 1.

``cuda``: 16-bit layers are cast to fp16 (``half_dtype``) with their input cast in and the
output cast back by hooks, 32-bit layers stay fp32, integer layers stay fake-quantized in fp32
(PyTorch offers no general INT8 convolution kernel on CUDA; their precision says so). When every
layer is 16-bit the *whole* model (BatchNorm, shortcuts included) runs in ``half_dtype``, its
input cast once and its logits cast back to fp32: no casts between layers.

``tensorrt``: the model TensorRT builds its engine from, after ONNX export. BatchNorm is folded
into the convolutions (per-channel, so the weight grids stay exact), integer layers become
symmetric Q/DQ fake-quant layers (weights per channel, activations per tensor with zero point 0,
calibrated), exported as QuantizeLinear/DequantizeLinear that TensorRT runs in real INT8 kernels;
16-bit layers are fp16 in the graph (as for ``cuda``), so a strongly typed engine runs exactly
these precisions. In PyTorch this model is the simulation of the engine (accuracy is scored on it).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.quantize._bits import check_bits, describe, is_int, resolve_bits
from compress.quantize._engine import cpu_has_vnni, resolve_engine, use_engine
from compress.quantize._fake import _batches, _strip_inplace, fake_quantize, freeze_fake_quant
from compress.quantize._quantizer import WeightMethod, weight_qmax, weight_scale
from spaces.policy import BACKENDS, QuantSpec

log = logging.getLogger(__name__)

TARGETS = BACKENDS


@dataclass
class DeployResult:
    """A deployable model, the precision each layer actually runs at, and caveats."""

    model: nn.Module
    precision: dict[str, str]
    notes: list[str] = field(default_factory=list)
    target: str = "none"
    #: x86 INT8 only: the quantized engine the weights are packed for (``compress.quantize._engine``)
    int8_engine: str | None = None

    @property
    def note(self) -> str:
        """All notes in one line (empty when there are none)."""
        return "; ".join(self.notes)

    @property
    def quantized_layers(self) -> list[str]:
        return [n for n, p in self.precision.items() if p.startswith("int8")]


def _is_quantized_module(mod: nn.Module) -> bool:
    path = type(mod).__module__
    return path.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def _fixed_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and getattr(m, "autocompress_fixed", False)]


def _x86_qconfigs(bits_of: dict, fixed: list[str]):
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

    mapping = get_default_qconfig_mapping("x86")
    act = HistogramObserver.with_args(reduce_range=not cpu_has_vnni())  # module docstring
    mapping.set_global(QConfig(activation=act, weight=mapping.global_qconfig.weight))
    for name, bits in bits_of.items():
        if not is_int(bits.w):
            mapping.set_module_name(name, None)
            continue
        q = weight_qmax(bits.w)
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                    quant_min=-q, quant_max=q)
        mapping.set_module_name(name, QConfig(activation=act, weight=weight))
    exact = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-1, quant_max=1)
    for name in fixed:
        mapping.set_module_name(name, QConfig(activation=act, weight=exact))
    return mapping


@torch.no_grad()
def snap_weights_to_grid(model: nn.Module, weight_bits: dict[str, int], method: WeightMethod = "mse") -> nn.Module:
    """Round the weights of the named layers of ``model`` in place onto their per-channel
    ``w``-bit symmetric grid (``{layer: w}``; the scale of :func:`weight_scale` with ``method``).

    Every channel's largest magnitude then lies on ``+-qmax`` of its grid, so a later per-channel
    INT8 quantizer (which maps the largest magnitude to its own maximum) keeps the grid exactly
    for ``w = 8``, and a BN fold (a per-channel factor) keeps it too. Returns ``model``.
    """
    for name, bits in weight_bits.items():
        w = model.get_submodule(name).weight
        scale = weight_scale(w, bits, method)
        q = weight_qmax(bits)
        shape = (-1,) + (1,) * (w.dim() - 1)
        w.copy_(torch.clamp(torch.round(w / scale.view(shape)), -q, q) * scale.view(shape))
    return model


def _convert_x86(model: nn.Module, quant: QuantSpec, calib_loader: Iterable, example: torch.Tensor,
                 calib_batches: int, weight_method: WeightMethod, engine: str) -> DeployResult:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    bits_of = resolve_bits(model, quant)
    notes: list[str] = []
    int_layers = [n for n, b in bits_of.items() if is_int(b.w)]
    if not int_layers:
        notes.append("no layer below 16 bits: the float model is returned")
        return DeployResult(model, {n: "fp32" for n in bits_of}, notes, "x86")
    fixed = [n for n in _fixed_layers(model)]
    snap_weights_to_grid(model, {n: bits_of[n].w for n in int_layers}, weight_method)
    engine = use_engine(engine)  # convert_fx packs the weights for it
    mapping = _x86_qconfigs(bits_of, fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, mapping, example_inputs=(example,))
        seen = 0
        with torch.no_grad():
            for x in _batches(calib_loader, calib_batches):
                prepared(x)
                seen += 1
        if seen == 0:
            raise ValueError("calibration loader yielded no batches")
        converted = convert_fx(prepared)
    precision: dict[str, str] = {}
    sub8_w = sub8_a = False
    for name, bits in bits_of.items():
        mod = converted.get_submodule(name)
        if not _is_quantized_module(mod):
            precision[name] = "fp32"
            if is_int(bits.w):
                notes.append(f"{name}: asked for {describe(bits)} but FX left it float")
            continue
        text = "int8"
        extra = []
        if bits.w < 8:
            extra.append(f"w{bits.w} on its grid inside int8 weights: counted in size/BOPs only")
            sub8_w = True
        if bits.a < 8:
            extra.append(f"a{bits.a} simulated, runs a8")
            sub8_a = True
        precision[name] = f"{text} ({'; '.join(extra)})" if extra else text
    for name in fixed:
        mod = converted.get_submodule(name)
        precision[name] = "int8 (fixed 0/1 shortcut, exact)" if _is_quantized_module(mod) else "fp32"
    if sub8_w:
        notes.append("weights below 8 bits run in INT8 kernels (no sub-8-bit CPU kernels); their values lie "
                     "on the w-bit grid, so accuracy matches the simulation; speed is INT8 speed")
    if sub8_a:
        notes.append("activations below 8 bits are simulation only: they run at 8 bits on x86")
    if any(b.w == 16 or b.a == 16 for b in bits_of.values() if not is_int(b.w)):
        notes.append("16-bit layers run in fp32 on x86 (no fp16 CPU kernels)")
    notes.append(f"calibrated on {seen} batches (HistogramObserver activations, per-channel weights)")
    notes.append(f"INT8 kernels: PyTorch quantized engine {engine!r} (set torch.backends.quantized.engine = "
                 f"{engine!r} before torch.jit.load of its TorchScript)")
    return DeployResult(converted, precision, notes, "x86", engine)


def _cast_in(module: nn.Module, args: tuple) -> tuple:
    dtype = module.weight.dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _cast_out(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _cast_model_in(dtype: torch.dtype):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return hook


def _half_layers(model: nn.Module, bits_of: dict, half_dtype: torch.dtype) -> dict[str, str]:
    """Cast the 16-bit layers to ``half_dtype`` (the whole model when every layer is 16-bit);
    returns the precision of every float layer."""
    short = {torch.float16: "fp16", torch.bfloat16: "bf16"}[half_dtype]
    halves = [n for n, b in bits_of.items() if not is_int(b.w) and 16 in (b.w, b.a)]
    if bits_of and len(halves) == len(bits_of):
        model.to(half_dtype)
        model.register_forward_pre_hook(_cast_model_in(half_dtype))
        model.register_forward_hook(_cast_out)
        return {n: short for n in [*bits_of, *_fixed_layers(model)]}
    for name in halves:
        mod = model.get_submodule(name)
        mod.to(half_dtype)
        mod.register_forward_pre_hook(_cast_in)
        mod.register_forward_hook(_cast_out)
    precision = {n: short if n in halves else "fp32" for n, b in bits_of.items() if not is_int(b.w)}
    precision.update({n: "fp32" for n in _fixed_layers(model)})
    return precision


def _int_only(bits_of: dict, backend: str) -> QuantSpec:
    """A QuantSpec fake-quantizing only the integer layers (float layers are cast, not rounded)."""
    return QuantSpec(backend=backend, layers={n: b for n, b in bits_of.items() if is_int(b.w)})


def _convert_cuda(model: nn.Module, quant: QuantSpec, calib_loader: Iterable | None, calib_batches: int,
                  half_dtype: torch.dtype, weight_method: WeightMethod) -> DeployResult:
    bits_of = resolve_bits(model, quant)
    int_layers = {n: b for n, b in bits_of.items() if is_int(b.w)}
    notes: list[str] = []
    if int_layers:
        # backend x86: asymmetric activations, and no fp16 rounding of the float layers here
        model = freeze_fake_quant(fake_quantize(model, _int_only(bits_of, "x86"), calib_loader,
                                                calib_batches=calib_batches, weight_method=weight_method))
        notes.append("layers below 16 bits run fake-quantized in fp32: PyTorch has no general INT8 "
                     "convolution kernel on CUDA (INT8 runs for real with quant.backend: tensorrt)")
    precision = _half_layers(model, bits_of, half_dtype)
    precision.update({n: f"fp32 ({describe(b)} simulated by fake-quant)" for n, b in int_layers.items()})
    return DeployResult(model, {n: precision[n] for n in [*bits_of, *_fixed_layers(model)]}, notes, "cuda")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every Conv-BatchNorm pair folded into one convolution (FX; eval mode).

    Module names of the convolutions are kept. Raises ``ValueError`` when the model does not trace.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval(), inplace=False)
    except Exception as exc:  # FX tracing errors are of many types
        raise ValueError(f"cannot fold BatchNorm into the convolutions of {type(model).__name__}: "
                         f"{type(exc).__name__}: {exc}") from exc


def _convert_tensorrt(model: nn.Module, quant: QuantSpec, calib_loader: Iterable | None, calib_batches: int,
                      weight_method: WeightMethod) -> DeployResult:
    bits_of = resolve_bits(model, quant)
    int_layers = {n: b for n, b in bits_of.items() if is_int(b.w)}
    notes = ["BatchNorm folded into the convolutions (per channel: weight grids stay exact)"]
    model = fold_batchnorm(model)
    if int_layers:
        if calib_loader is None:
            raise ValueError("convert(target='tensorrt') needs calib_loader for the layers below 16 bits")
        model = freeze_fake_quant(fake_quantize(model, _int_only(bits_of, "tensorrt"), calib_loader,
                                                calib_batches=calib_batches, weight_method=weight_method))
        notes.append("layers below 16 bits run in TensorRT INT8 kernels from symmetric Q/DQ (weights per "
                     "channel, activations per tensor with zero point 0)")
    if any(b.w < 8 or b.a < 8 for b in int_layers.values()):
        notes.append("bits below 8 are simulated: their values lie on the w/a-bit grid inside INT8 tensors "
                     "(no sub-8-bit convolution kernels), so accuracy is the simulation's and speed is INT8's")
    precision = _half_layers(model, bits_of, torch.float16)
    for name, b in int_layers.items():
        extra = [f"{k}{v} simulated on its grid" for k, v in (("w", b.w), ("a", b.a)) if v < 8]
        precision[name] = f"int8 (TensorRT Q/DQ; {'; '.join(extra)})" if extra else "int8 (TensorRT Q/DQ)"
    return DeployResult(model, {n: precision[n] for n in [*bits_of, *_fixed_layers(model)]}, notes, "tensorrt")


def convert(model: nn.Module, quant: QuantSpec, calib_loader: Iterable | None, example: torch.Tensor, *,
            target: str | None = None, calib_batches: int = 8, half_dtype: torch.dtype = torch.float16,
            weight_method: WeightMethod = "mse", engine: str = "x86") -> DeployResult:
    """Deployable model for ``target`` (default ``quant.backend``); ``model`` is not modified.

    Fake-quant layers in ``model`` (after QAT) are first turned back into float layers.
    ``x86`` needs ``calib_loader`` (``(inputs, targets)`` batches) and ``example`` (an input
    batch used to trace); ``cuda`` and ``tensorrt`` need ``calib_loader`` only when some layer is
    below 16 bits; ``none`` returns the float model. Raises :class:`PolicyError` for bits the target
    cannot run (:func:`check_bits`). ``precision`` says what each layer really runs at.
    ``engine`` (``x86`` only): the PyTorch quantized engine the INT8 weights are packed for, one of
    ``compress.quantize._engine.ENGINES`` (default ``x86``, PyTorch's own); it is left set
    process-wide and recorded in ``int8_engine``. An unknown engine is a ``ValueError``.
    """
    target = quant.backend if target is None else target
    check_bits(quant, target)
    resolve_engine(engine)  # a bad name fails before any work
    new = _strip_inplace(copy.deepcopy(model)).eval()
    if target == "none":
        return DeployResult(new, {n: "fp32" for n in resolve_bits(new, quant)}, ["float model"], "none")
    if target == "x86":
        if calib_loader is None and quant.active:
            raise ValueError("convert(target='x86') needs calib_loader to calibrate activation ranges")
        new = new.cpu()
        return _convert_x86(new, quant, calib_loader or [], example.cpu(), calib_batches, weight_method, engine)
    if target == "tensorrt":
        return _convert_tensorrt(new, quant, calib_loader, calib_batches, weight_method)
    if half_dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"half_dtype={half_dtype}: allowed torch.float16, torch.bfloat16")
    if calib_loader is None and any(is_int(b.a) for b in resolve_bits(new, quant).values()):
        raise ValueError("convert(target='cuda') needs calib_loader for the layers below 16 bits")
    return _convert_cuda(new, quant, calib_loader, calib_batches, half_dtype, weight_method)
