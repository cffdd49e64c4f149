"""ONNX Runtime-native INT8 export: the float (pruned) model quantized by ORT's own tooling.

The TorchScript export of an FX INT8 model (:func:`compress.export.export_onnx`) carries the
FX graph's casts, constant subgraphs and per-use dequantisations into ONNX; ORT runs it, but
slower than a graph its own quantizer writes (``docs/onnx-int8.md`` has the measurements). This
module writes that graph instead, from *our* calibration:

1. the model's float structure (fake-quant layers stripped), integer layers' weights rounded onto
   their per-channel ``w``-bit grid exactly as :func:`compress.quantize.convert` does;
2. TorchScript ONNX export (opset 17, dynamic batch, constant folding folds BatchNorm into the convs);
3. channel padding: a conv whose outputs go only through a ReLU into other convs and that has
   fewer than 16 or a non-multiple-of-4 output channels gets zero filters up to that size (its
   consumers get zero input channels). Exact: the padded channels are 0 after the ReLU. ORT's
   fast symmetric INT8 convolution (MLAS ConvSym) needs >= 16 output channels and multiples of 4;
   narrower convs fall back to im2col + GEMM, which made 50%-pruned ResNet stages *slower* than
   unpruned ones;
4. ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel symmetric 8-bit weights,
   asymmetric uint8 activations, ReLUs folded into the
   quantization ranges. The input range of every integer layer is the one our fake-quant
   calibration chose (``TensorQuantOverrides``); the remaining tensors (residual-add inputs,
   logits) get ORT's MinMax calibration on the same calibration batches. Float layers (16/32
   bits) are excluded (``nodes_to_exclude``) and stay float between DequantizeLinear/QuantizeLinear.
   Weights are int8 (u8s8, what the VNNI kernels of x86 run) on CPUs with VNNI, and uint8
   (u8u8, zero point 128, the same grid values) on x86 CPUs without: there ORT's u8s8 kernels
   multiply-add pairs into int16 with saturation (``vpmaddubsw``), which on a ResNet-20 (50% pruned,
   digits) cost 8 pt of top-1 against the PyTorch model on an AVX2 EPYC; u8u8 matched it within 0.1 pt
   (``weight_type``: ``auto``, ``s8``, ``u8``; ``auto`` decides for the CPU that exports, which is
   also the one that verifies the export);
5. weights below 8 bits: ORT maps each channel's largest magnitude to 127; their int8 values are
   rescaled back onto the ``w``-bit grid (exact, since that magnitude is ``qmax`` of the grid).

>>> info = export_onnx_int8(compressed.model, policy.quant, calib_batches, "model.onnx")
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.models import quantizable_layers
from compress.quantize import (
    FAKE_QUANT_TYPES,
    check_bits,
    fake_quantize,
    is_int,
    resolve_bits,
    snap_weights_to_grid,
    strip_fake_quant,
)
from compress.quantize._engine import cpu_has_vnni  # ORT's u8s8 kernels saturate where it is False
from compress.quantize._quantizer import weight_qmax
from spaces.policy import QuantSpec

log = logging.getLogger(__name__)

#: MLAS ConvSym (x86 AVX512/VNNI): output channels >= 16, channel counts multiples of 4
MIN_CHANNELS = 16
CHANNEL_ALIGN = 4
INT8_QMAX = 127
WEIGHT_TYPES = ("auto", "s8", "u8")


class Int8ExportError(RuntimeError):
    """The ORT-native INT8 export failed (mapping layers to ONNX nodes, quantization)."""


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_onnx_int8` wrote."""

    path: str
    int8_layers: tuple[str, ...]
    float_layers: tuple[str, ...]
    padded_convs: int
    calibrated_ranges: int
    size_bytes: int
    weight_type: str = "s8"  # "s8" (u8s8) or "u8" (u8u8), see the module docstring


def needs_int8_onnx(quant: QuantSpec, layers: Iterable[str]) -> bool:
    """True when ``quant`` deploys some of ``layers`` as x86 INT8 (the case this module exports)."""
    return quant.active and quant.backend == "x86" and any(is_int(quant.bits_for(n).w) for n in layers)


# ----- torch side ---------------------------------------------------------------------------------
def _input_ranges(model: nn.Module, quant: QuantSpec, calib: list, int_layers: list[str]) -> dict[str, tuple]:
    """``{layer: (lo, hi)}``: the calibrated input range of every integer layer (fake-quant)."""
    mods = dict(model.named_modules())
    ready = all(isinstance(mods.get(n), FAKE_QUANT_TYPES) and mods[n].calibrated for n in int_layers)
    fq = model if ready else fake_quantize(model, quant, calib, calib_batches=len(calib))
    fq_mods = dict(fq.named_modules())
    return {n: (float(fq_mods[n].act_lo), float(fq_mods[n].act_hi)) for n in int_layers}


def _export_float(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


# ----- ONNX graph helpers -------------------------------------------------------------------------
def scope_module(node_name: str) -> str:
    """Module path of a TorchScript-exported node name: ``/layer1/layer1.0/conv1/Conv`` ->
    ``layer1.0.conv1`` (a scope repeats its parent's last attribute, ``layer1.0`` under ``layer1``)."""
    name = ""
    for part in node_name.strip("/").split("/")[:-1]:
        last = name.rsplit(".", 1)[-1]
        name = name + part[len(last):] if name and part.startswith(last + ".") else (
            f"{name}.{part}" if name else part)
    return name


def layer_nodes(proto: Any, model: nn.Module, layers: Iterable[str]) -> dict[str, Any]:
    """``{layer: Conv/Gemm node}`` for each named Conv2d/Linear ``layers`` entry of ``model``.

    Matched by the exporter's scope names and checked against the weight shapes; raises
    :class:`Int8ExportError` naming the layers it cannot find.
    """
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    found: dict[str, Any] = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            found.setdefault(scope_module(node.name), node)
    out, missing = {}, []
    for name in layers:
        node = found.get(name)
        weight = tuple(model.get_submodule(name).weight.shape)
        if node is None or shapes.get(node.input[1]) != weight:
            missing.append(name)
        else:
            out[name] = node
    if missing:
        raise Int8ExportError(f"cannot find the ONNX nodes of layers {', '.join(missing[:8])}"
                              f"{' ...' if len(missing) > 8 else ''} (matched by scope name and weight shape)")
    return out


def _padded(channels: int) -> int:
    return max(MIN_CHANNELS, -(-channels // CHANNEL_ALIGN) * CHANNEL_ALIGN)


def _pad_tensor(init: Any, axis: int, extra: int) -> None:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(init)
    shape = list(arr.shape)
    shape[axis] = extra
    init.CopyFrom(numpy_helper.from_array(np.concatenate([arr, np.zeros(shape, arr.dtype)], axis), init.name))


def _conv_ok(node: Any, inits: dict, users: dict) -> bool:
    """A plain conv (group 1) whose weight and bias are initializers used by it alone."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    params = node.input[1:3]
    return node.op_type == "Conv" and group == 1 and all(p in inits and len(users[p]) == 1 for p in params)


def pad_narrow_convs(proto: Any) -> int:
    """Pad Conv -> Relu -> Conv(s) chains whose middle width is below 16 or not a multiple of 4
    (see the module docstring) in place; returns how many convs were widened."""
    inits = {i.name: i for i in proto.graph.initializer}
    users: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    count = 0
    for node in list(proto.graph.node):
        if not _conv_ok(node, inits, users):
            continue
        relu = users.get(node.output[0], [])
        if len(relu) != 1 or relu[0].op_type != "Relu" or relu[0].output[0] in {o.name for o in proto.graph.output}:
            continue
        nxt = users.get(relu[0].output[0], [])
        if not nxt or any(not _conv_ok(c, inits, users) or c.input[0] != relu[0].output[0] for c in nxt):
            continue
        channels = inits[node.input[1]].dims[0]
        extra = _padded(channels) - channels
        if extra <= 0:
            continue
        _pad_tensor(inits[node.input[1]], 0, extra)
        if len(node.input) > 2:
            _pad_tensor(inits[node.input[2]], 0, extra)
        for consumer in nxt:
            _pad_tensor(inits[consumer.input[1]], 1, extra)
        count += 1
    if count:
        del proto.graph.value_info[:]  # channel counts changed; the quantizer re-infers shapes
    return count


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over ``(inputs, targets)`` batches."""

    def __init__(self, batches: list, input_name: str):
        self._feeds = iter([{input_name: (b[0] if isinstance(b, (tuple, list)) else b).detach().cpu().float().numpy()}
                            for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def _overrides(nodes: dict[str, Any], ranges: dict[str, tuple]) -> dict[str, list]:
    """TensorQuantOverrides: each integer layer's input tensor gets our calibrated range (the
    union when two layers read the same tensor, e.g. a block input and its 1x1 downsample)."""
    merged: dict[str, tuple[float, float]] = {}
    for name, (lo, hi) in ranges.items():
        tensor = nodes[name].input[0]
        old_lo, old_hi = merged.get(tensor, (0.0, 0.0))
        merged[tensor] = (min(old_lo, lo), max(old_hi, hi))
    return {t: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}] for t, (lo, hi) in merged.items()}


class _DropOrtAdvice(logging.Filter):
    """ORT's quantizer logs 'consider pre-processing' on the root logger; we fold BN ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    root, flt = logging.getLogger(), _DropOrtAdvice()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def resolve_weight_type(weight_type: str) -> str:
    """``s8`` or ``u8`` for ``weight_type`` ``auto`` (by :func:`cpu_has_vnni`), ``s8`` or ``u8``."""
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type = {weight_type!r}: allowed {', '.join(WEIGHT_TYPES)}")
    return ("s8" if cpu_has_vnni() else "u8") if weight_type == "auto" else weight_type


def _quantize(src: Path, dst: Path, calib: list, exclude: list[str], overrides: dict, weight_type: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    wtype = QuantType.QInt8 if weight_type == "s8" else QuantType.QUInt8
    with _quiet_root(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), _Reader(calib, "input"), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=wtype, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "TensorQuantOverrides": overrides})


def snap_sub8_weights(proto: Any, weight_bits: dict[str, int], nodes: dict[str, Any]) -> int:
    """Rescale the int8 weights of layers with ``w < 8`` bits back onto their ``w``-bit grid, in place.

    ``weight_bits`` maps layer -> bits, ``nodes`` layer -> Conv/Gemm node name; weights
    reach each Conv/Gemm through a DequantizeLinear of 8-bit values ``v`` (int8, or uint8 with a zero
    point) and per-channel scales. ORT mapped each channel's largest magnitude (``qmax`` of the grid,
    see :func:`compress.quantize.snap_weights_to_grid`) to 127, so ``round(v * qmax / 127)`` is the
    grid integer again and the scale grows by ``127 / qmax``. Returns the layers rescaled.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    by_name = {n.name: n for n in proto.graph.node}
    done = 0
    for layer, bits in weight_bits.items():
        if bits >= 8:
            continue
        dq = producer.get(by_name[nodes[layer]].input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            raise Int8ExportError(f"{layer}: its weight does not come from a DequantizeLinear of int8 values")
        q = weight_qmax(bits)
        stored = numpy_helper.to_array(inits[dq.input[0]])
        zero = _zero_point(dq, inits, stored.ndim)
        values = stored.astype(np.float32) - zero
        scale = numpy_helper.to_array(inits[dq.input[1]])
        grid = np.clip(np.round(values * q / INT8_QMAX), -q, q) + zero
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(grid.astype(stored.dtype), dq.input[0]))
        inits[dq.input[1]].CopyFrom(numpy_helper.from_array(
            (scale * (INT8_QMAX / q)).astype(scale.dtype), dq.input[1]))
        done += 1
    return done


def _zero_point(dq: Any, inits: dict[str, Any], ndim: int) -> np.ndarray:
    """The DequantizeLinear's zero point, shaped to broadcast over its per-channel (axis 0) values."""
    from onnx import numpy_helper

    if len(dq.input) < 3 or dq.input[2] not in inits:
        return np.zeros(1, dtype=np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32)
    return zero.reshape((-1,) + (1,) * (ndim - 1)) if zero.ndim == 1 and ndim > 1 else zero


def export_onnx_int8(model: nn.Module, quant: QuantSpec, calib: Iterable, path: str | Path, *, opset: int = 17,
                     calib_batches: int = 8, weight_method: str = "mse", pad_channels: bool = True,
                     weight_type: str = "auto") -> Int8Export:
    """Write the ORT-native INT8 ONNX of ``model`` under ``quant`` (x86 bits) to ``path``.

    ``model`` is the trainable model (float, or fake-quantized after QAT, as
    ``compress.apply.Compressed.model``); it is not modified. ``calib`` yields ``(inputs,
    targets)`` batches (the ``calib`` split; ``calib_batches`` of them are used): the input
    ranges of integer layers come from the model's calibrated fake-quant layers, or from
    calibrating a copy on these batches; the other tensors are calibrated by ORT on them.
    ``weight_method`` rounds weights as :func:`compress.quantize.convert` does. ``weight_type``:
    ``s8`` (u8s8), ``u8`` (u8u8) or ``auto`` (``s8`` where the CPU has VNNI, see
    :func:`cpu_has_vnni`). Steps and the reasons for them: module docstring. Raises
    :class:`Int8ExportError`.
    """
    import onnx

    wtype = resolve_weight_type(weight_type)
    check_bits(quant, "x86")
    path = Path(path)
    batches = [b for _, b in zip(range(calib_batches), calib)]
    if not batches:
        raise Int8ExportError("export_onnx_int8: the calibration batches are empty")
    bits_of = resolve_bits(model, quant)
    int_layers = [n for n, b in bits_of.items() if is_int(b.w)]
    ranges = _input_ranges(model, quant, batches, int_layers)
    flt = strip_fake_quant(model).cpu().eval()
    snap_weights_to_grid(flt, {n: bits_of[n].w for n in int_layers}, weight_method)  # type: ignore[arg-type]
    example = (batches[0][0] if isinstance(batches[0], (tuple, list)) else batches[0])[:1].detach().cpu().float()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        _export_float(flt, example, float_path, opset)
        proto = onnx.load(str(float_path))
        nodes = layer_nodes(proto, flt, bits_of)
        padded = pad_narrow_convs(proto) if pad_channels else 0
        onnx.save(proto, str(float_path))
        exclude = [nodes[n].name for n in bits_of if n not in int_layers]
        try:
            _quantize(float_path, path, batches, exclude, _overrides(nodes, ranges), wtype)
        except Exception as exc:  # ORT's quantizer raises many types; one clear error for the caller
            raise Int8ExportError(f"{path}: ONNX Runtime quantization failed: {type(exc).__name__}: {exc}") from exc
    names = {n: nodes[n].name for n in int_layers}
    quantized = onnx.load(str(path))
    if snap_sub8_weights(quantized, {n: bits_of[n].w for n in int_layers}, names):
        onnx.save(quantized, str(path))
    log.info("ORT INT8 export %s: %d int8 layers (%s weights), %d float, %d convs padded", path, len(int_layers),
             wtype, len(exclude), padded)
    return Int8Export(path=str(path), int8_layers=tuple(int_layers), float_layers=tuple(n for n in bits_of
                                                                                        if n not in int_layers),
                      padded_convs=padded, calibrated_ranges=len(ranges), size_bytes=path.stat().st_size,
                      weight_type=wtype)


@contextlib.contextmanager
def latency_subject(compressed: Any, backend: str, calib: Iterable | None, *,
                    written: str | Path | None = None) -> Iterator[nn.Module | Path]:
    """What a latency measurement on ``backend`` should time for a ``compress.apply.Compressed``.

    ``onnxruntime`` and a policy with x86 INT8 layers: the ORT-native INT8 ONNX (what users
    deploy): ``written`` when that file exists (an export of this very result, e.g. ``apply``'s
    ``model.onnx``), else written to a temporary file from ``calib`` batches and removed on exit
    (``calib`` None is then a ``ValueError``). Otherwise ``compressed.deploy`` (the FX INT8 or float module;
    ``compare_latency`` exports a float module for ONNX Runtime itself).
    """
    if backend != "onnxruntime" or not needs_int8_onnx(compressed.policy.quant, quantizable_layers(compressed.model)):
        yield compressed.deploy
        return
    if written is not None and Path(written).is_file():
        yield Path(written)
        return
    if calib is None:
        raise ValueError("onnxruntime latency of an x86 INT8 policy times its ORT-native INT8 export, "
                         "which needs calibration batches (calib)")
    with tempfile.TemporaryDirectory(prefix="autocompress-latency-") as tmp:
        info = export_onnx_int8(compressed.model, compressed.policy.quant, calib, Path(tmp) / "model.onnx")
        yield Path(info.path)
