"""Runners: one timed forward pass of a torch module or an ONNX Runtime session.

A runner hides the backend from the timing loops in :mod:`._latency`: ``run_ms()`` executes
one forward pass on the fixed example input and returns its wall time in milliseconds
(CUDA events on a GPU). ``threads()`` is a context that applies the thread count (torch's
is process-wide, so it is set for the timed block and restored afterwards).

On CUDA the torch runner times what the GPU does, not Python's kernel launches: the model and
input are in channels_last (tensor-core layout, as ``compress.train.fit`` trains), and one
forward pass is captured as a CUDA graph that every run replays (``mode`` says ``cuda-graph``;
a model that cannot be captured is timed eagerly, ``mode`` ``eager``, with a logged warning).
Eager PyTorch on a GPU is launch-bound for small CIFAR ResNets: a pruned or fp16 model would time
the same as the original. TensorRT runners live in :mod:`._tensorrt` (backend ``tensorrt``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)



class Runner:
    """Base class; subclasses implement :meth:`run_ms`."""

    backend: str = ""
    mode: str = "eager"
    device: str = "cpu"
    batch: int = 1
    num_threads: int = 1

    def run_ms(self) -> float:
        raise NotImplementedError

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        """Release temporary resources."""


def capture_cuda_graph(model: nn.Module, example: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, Any] | None:
    """One forward pass of ``model`` on ``example`` (both on the same CUDA device) captured as a
    CUDA graph after a warm-up on a side stream: ``(graph, output)``, where every replay rewrites
    ``output``; None (and a warning) when it cannot be captured."""
    dev = example.device
    try:
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # cuDNN/cuBLAS pick algorithms and workspaces outside the capture
                model(example)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            output = model(example)
        torch.cuda.synchronize(dev)
        return graph, output
    except Exception as exc:  # noqa: BLE001 - capture fails in many ways (host syncs, unsupported ops)
        log.warning("CUDA graph capture of %s failed (%s: %s); timing eager forward passes",
                    type(model).__name__, type(exc).__name__, exc)
        torch.cuda.synchronize(dev)
        return None


class TorchRunner(Runner):
    """Eager/FX torch module on CPU (``perf_counter``) or CUDA (events + synchronize; channels_last
    and a CUDA graph unless ``cuda_graph=False``, see the module docstring)."""

    backend = "torch"

    def __init__(self, model: nn.Module, example: torch.Tensor, *, device: str = "cpu", threads: int | None = None,
                 cuda_graph: bool = True):
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device = {device!r}: allowed 'cpu', 'cuda' or 'cuda:N'")
        tensors = list(model.parameters()) + list(model.buffers())
        on_device = all(t.device == dev for t in tensors) if tensors else dev.type == "cpu"
        self._cuda = dev.type == "cuda"
        # never move (or re-layout) the caller's model: copy when it lives elsewhere or on CUDA
        self.model = model if on_device and not self._cuda else copy.deepcopy(model).to(dev)
        self.model.eval()
        self.example = example.to(dev)
        self.device = str(dev)
        self.batch = int(example.shape[0])
        self.num_threads = int(threads) if threads else torch.get_num_threads()
        self._graph = self._output = None
        if self._cuda:
            if self.example.dim() == 4:
                self.model.to(memory_format=torch.channels_last)
                self.example = self.example.contiguous(memory_format=torch.channels_last)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            if cuda_graph:
                with torch.cuda.device(dev):
                    captured = capture_cuda_graph(self.model, self.example)
                if captured is not None:
                    self._graph, self._output = captured
                    self.mode = "cuda-graph"

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        prev = torch.get_num_threads()
        if prev != self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != prev:
                torch.set_num_threads(prev)

    def run_ms(self) -> float:
        if self._cuda:
            with torch.cuda.device(self.example.device), torch.inference_mode():
                self._start.record()
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self.model(self.example)
                self._end.record()
                torch.cuda.synchronize()
                return float(self._start.elapsed_time(self._end))
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(self.example)
            return (time.perf_counter() - t0) * 1e3

    def output(self) -> torch.Tensor:
        """The model's output on the example: what the last replay wrote, or a fresh eager pass (CPU copy)."""
        if self._graph is not None:
            torch.cuda.synchronize(self.example.device)
            return self._output.float().cpu()
        with torch.inference_mode():
            return self.model(self.example).float().cpu()

    def close(self) -> None:
        self._graph = self._output = None  # frees the graph's memory pool


class TorchScriptRunner(TorchRunner):
    """A module traced on the example and frozen (:func:`compress.torchscript.freeze_torchscript`),
    timed on the CPU like :class:`TorchRunner`: the PyTorch deploy form without Python per operator.
    Both sides of a comparison are frozen, so the ratio is what compression buys in that form.

    ``channels_last`` (backend ``torchscript-cl``, mode ``frozen-channels_last``): the frozen form
    runs in channels_last and converts the NCHW example inside the timed call. On x86 CPUs a float
    model runs faster that way, so a ratio against the original in NCHW overstates what compression
    buys where the original is deployed at its best."""

    backend = "torchscript"
    mode = "frozen"

    def __init__(self, model: nn.Module, example: torch.Tensor, *, device: str = "cpu", threads: int | None = None,
                 channels_last: bool = False):
        from compress.torchscript import freeze_torchscript

        if torch.device(device).type != "cpu":
            raise ValueError(f"device = {device!r}: the torchscript backend is timed on the CPU only")
        with torch.inference_mode(False):
            frozen = freeze_torchscript(model, example.cpu(), channels_last=channels_last)
        super().__init__(frozen, example.cpu(), device="cpu", threads=threads, cuda_graph=False)
        if channels_last:
            self.backend, self.mode = "torchscript-cl", "frozen-channels_last"


def session_options(threads: int | None) -> Any:
    """ONNX Runtime options for timing: fixed thread pools, no busy-waiting between runs.

    ``threads`` sets the intra-op thread count (None: ONNX Runtime's default); inter-op is 1.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads = {threads}: must be >= 1 or None")
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def export_temp_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export ``model`` with a dynamic batch axis (TorchScript exporter; dynamo as fallback)."""
    model = copy.deepcopy(model).cpu().eval()
    x = example.detach().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:  # noqa: BLE001 - fall back to the dynamo exporter
            log.debug("TorchScript ONNX export failed (%s); trying dynamo", exc)
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


class OrtRunner(Runner):
    """An ONNX Runtime session: given, loaded from a path, or exported from a module."""

    backend = "onnxruntime"

    def __init__(self, obj: Any, example: torch.Tensor, *, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        if torch.device(device).type != "cpu":
            raise ValueError(f"device = {device!r}: the onnxruntime backend here times CPU only; "
                             "use backend='torch' for CUDA")
        self.device = "cpu"
        self.batch = int(example.shape[0])
        self._tmp: tempfile.TemporaryDirectory | None = None
        if isinstance(obj, ort.InferenceSession):
            self.session = obj
            n = obj.get_session_options().intra_op_num_threads
            self.num_threads = int(n) if n else 0
        else:
            self.num_threads = int(threads) if threads else torch.get_num_threads()
            if isinstance(obj, nn.Module):
                self._tmp = tempfile.TemporaryDirectory(prefix="autocompress-latency-")
                path = export_temp_onnx(obj, example, Path(self._tmp.name) / "model.onnx")
            elif isinstance(obj, (str, Path)):
                path = Path(obj)
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: ONNX model not found")
            else:
                raise TypeError(f"cannot time a {type(obj).__name__}: allowed nn.Module, "
                                "onnxruntime.InferenceSession or a path to an .onnx file")
            self.session = ort.InferenceSession(str(path), session_options(self.num_threads),
                                                providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"ONNX model has {len(inputs)} inputs; the latency runner feeds exactly one")
        self._feed = {inputs[0].name: example.detach().cpu().float().numpy()}

    def run_ms(self) -> float:
        t0 = time.perf_counter()
        self.session.run(None, self._feed)
        return (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
