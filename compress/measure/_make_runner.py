"""Which runner times a model: :func:`make_runner` dispatches to the torch, ONNX Runtime and
TensorRT runners (:mod:`._runners`, :mod:`._tensorrt`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.measure._runners import OrtRunner, Runner, TorchRunner, TorchScriptRunner
from compress.measure._tensorrt import tensorrt_runner

BACKENDS = ("torch", "torchscript", "torchscript-cl", "onnxruntime", "tensorrt")


def make_runner(obj: Any, example: torch.Tensor, *, backend: str = "torch", device: str = "cpu",
                threads: int | None = None, cuda_graph: bool = True) -> Runner:
    """A runner for ``obj``. ``tensorrt`` builds an engine from a module (exported to a temporary
    ONNX file) or an ``.onnx`` path (:mod:`._tensorrt`); otherwise sessions and ``.onnx`` paths use
    ONNX Runtime, and modules use ``backend`` (``"torchscript"`` traces and freezes them, CPU only;
    ``"torchscript-cl"`` the same in channels_last layout; ``"onnxruntime"`` exports them to a
    temporary ONNX file)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r}: allowed {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads = {threads}: must be >= 1 or None (torch's current setting)")
    if isinstance(obj, Runner):
        return obj
    if backend == "tensorrt":
        return tensorrt_runner(obj, example, device=device, threads=threads)
    if isinstance(obj, nn.Module) and backend in ("torchscript", "torchscript-cl"):
        return TorchScriptRunner(obj, example, device=device, threads=threads,
                                 channels_last=backend == "torchscript-cl")
    if isinstance(obj, nn.Module) and backend == "torch":
        return TorchRunner(obj, example, device=device, threads=threads, cuda_graph=cuda_graph)
    return OrtRunner(obj, example, device=device, threads=threads)
