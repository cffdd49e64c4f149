"""Measurement: accuracy, FLOPs/params, mixed-precision costs (BOPs, size) and latency.

>>> from compress.measure import count_flops, count_params, evaluate
>>> count_flops(get_model("resnet20"), 32)  # 41.2 M (fvcore: one MAC = one FLOP)

:func:`measure` is the one service every scoring path uses: it returns a :class:`Measurement`
named by the metrics of :mod:`autocompress.metrics`.
"""

from compress.measure._accuracy import evaluate
from compress.measure._bits import count_bops, layer_costs, model_size_bytes
from compress.measure._flops import count_flops, count_params, layer_macs, module_flops
from compress.measure._latency import LatencyRatio, LatencyStats, compare_latency, measure_latency
from compress.measure._lock import latency_lock, lock_path, overlapping_holds, read_lock_log
from compress.measure._service import METRIC_KEYS, BatchLatency, LatencySetup, Measurement, float_structure, measure
from compress.measure._tensorrt import TensorRTUnavailableError, tensorrt_provider

__all__ = [
    "METRIC_KEYS", "BatchLatency", "LatencyRatio", "LatencySetup", "LatencyStats", "Measurement",
    "TensorRTUnavailableError",
    "compare_latency", "count_bops", "count_flops", "count_params", "evaluate", "float_structure", "latency_lock",
    "layer_costs", "layer_macs", "lock_path", "measure", "measure_latency", "model_size_bytes", "module_flops",
    "overlapping_holds", "read_lock_log", "tensorrt_provider",
]
