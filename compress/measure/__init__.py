"""Measurement: accuracy, FLOPs/params, mixed-precision costs (BOPs, size) and latency.

>>> from compress.measure import count_flops, count_params, evaluate
>>> count_flops(get_model("resnet20"), 32)  # 41.2 M (fvcore: one MAC = one FLOP)
"""

from compress.measure._accuracy import evaluate
from compress.measure._bits import count_bops, layer_costs, model_size_bytes
from compress.measure._flops import count_flops, count_params, layer_macs
from compress.measure._latency import LatencyRatio, LatencyStats, compare_latency, measure_latency
from compress.measure._lock import latency_lock, lock_path, overlapping_holds, read_lock_log
from compress.measure._tensorrt import TensorRTUnavailableError, tensorrt_provider

__all__ = [
    "LatencyRatio", "LatencyStats", "compare_latency", "latency_lock", "lock_path", "measure_latency",
    "TensorRTUnavailableError", "overlapping_holds", "read_lock_log", "tensorrt_provider",
    "count_bops", "count_flops", "count_params", "evaluate", "layer_costs", "layer_macs", "model_size_bytes",
]
