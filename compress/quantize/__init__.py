"""Mixed-precision quantization: simulated (fake-quant, QAT) and real (INT8 FX / fp16).

>>> bits = resolve_bits(model, policy.quant)              # {layer: LayerBits}
>>> qat = fake_quantize(model, policy.quant, calib_loader)  # STE, trainable with compress.train.fit
>>> deployed = convert(qat, policy.quant, calib_loader, example)  # DeployResult(model, precision, notes)

Backend rules are documented in :mod:`compress.quantize._bits` (:func:`check_bits`).
"""

from compress.quantize._bits import check_bits, describe, is_int, resolve_bits
from compress.quantize._convert import DeployResult, convert, snap_weights_to_grid
from compress.quantize._engine import ENGINES, cpu_has_vnni, resolve_engine, use_engine
from compress.quantize._fake import (
    FAKE_QUANT_TYPES,
    FakeQuantConv2d,
    FakeQuantLinear,
    calibrate,
    fake_quantize,
    strip_fake_quant,
)
from compress.quantize._quantizer import act_qparams, fake_quant_act, fake_quant_weight, weight_scale

__all__ = [
    "ENGINES", "FAKE_QUANT_TYPES", "DeployResult", "FakeQuantConv2d", "FakeQuantLinear", "act_qparams", "calibrate",
    "check_bits", "convert", "cpu_has_vnni", "describe", "fake_quant_act", "fake_quant_weight", "fake_quantize",
    "is_int", "resolve_bits", "resolve_engine", "snap_weights_to_grid", "strip_fake_quant", "use_engine",
    "weight_scale",
]
