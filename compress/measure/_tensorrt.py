"""TensorRT latency runners (``backend="tensorrt"``, CUDA only).

An engine is built from ONNX: an ``.onnx`` path, or a module exported to a temporary file (a
``compress.quantize.convert(..., target="tensorrt")`` model exports as explicit, symmetric Q/DQ, so
its integer layers run in TensorRT's INT8 kernels; fp16 layers are fp16 in the graph). The
network is **strongly typed**: the ONNX types decide every layer's precision, exactly as the
precision table of the conversion says (TensorRT 11 only builds strongly typed networks; 10.x
supports them). The optimization profile covers batch 1 up to the example's batch, tuned for it.

Two providers, whichever imports (in this order):

* ``tensorrt`` (PyPI ``tensorrt-cu13``): builder + runtime; each run is ``execute_async_v3`` on a
  private CUDA stream, timed with CUDA events;
* ONNX Runtime's ``TensorrtExecutionProvider`` (PyPI ``onnxruntime-gpu``): input and output bound
  on the GPU (I/O binding), timed around ``run_with_iobinding`` with device synchronisation.

Without either, :class:`TensorRTUnavailableError` says ``pip install -e '.[gpu]'`` in one line.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import UserError
from compress.measure._runners import Runner, export_temp_onnx

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[gpu]'"
WORKSPACE_BYTES = 1 << 30


class TensorRTUnavailableError(UserError, RuntimeError):
    """Neither the ``tensorrt`` package nor ONNX Runtime's TensorRT provider can be used."""


def tensorrt_provider() -> tuple[str | None, str]:
    """``("tensorrt" | "onnxruntime" | None, reason)``: which TensorRT provider imports here, and
    why none does when it is None."""
    reasons = []
    try:
        import tensorrt  # noqa: F401

        return "tensorrt", ""
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for missing CUDA libraries
        reasons.append(f"import tensorrt: {type(exc).__name__}: {exc}")
    try:
        import onnxruntime as ort

        if "TensorrtExecutionProvider" in ort.get_available_providers():
            return "onnxruntime", ""
        reasons.append("onnxruntime has no TensorrtExecutionProvider (the CPU build is installed)")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"import onnxruntime: {type(exc).__name__}: {exc}")
    return None, "; ".join(reasons)


def require_tensorrt() -> str:
    """The usable provider, or :class:`TensorRTUnavailableError` (one line, with the install command)."""
    provider, reason = tensorrt_provider()
    if provider is None:
        raise TensorRTUnavailableError(
            f"latency backend tensorrt needs TensorRT ({reason}): {INSTALL_HINT} on a machine with an NVIDIA GPU")
    return provider


def _cuda_device(device: str) -> torch.device:
    dev = torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


class _OnnxSource:
    """The ONNX file to build from: the given path, or a module exported to a temporary folder."""

    def __init__(self, obj: Any, example: torch.Tensor):
        self._tmp: tempfile.TemporaryDirectory | None = None
        if isinstance(obj, nn.Module):
            self._tmp = tempfile.TemporaryDirectory(prefix="autocompress-trt-")
            self.path = export_temp_onnx(obj, example, Path(self._tmp.name) / "model.onnx")
        elif isinstance(obj, (str, Path)):
            self.path = Path(obj)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: ONNX model not found")
        else:
            raise TypeError(f"cannot build a TensorRT engine from a {type(obj).__name__}: allowed nn.Module "
                            "or a path to an .onnx file")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


_TRT: dict[str, Any] = {}


def _logger_and_runtime() -> tuple[Any, Any]:
    """One TensorRT logger and runtime per process, kept alive for as long as its engines."""
    import tensorrt as trt

    if not _TRT:
        _TRT["logger"] = trt.Logger(trt.Logger.ERROR)
        _TRT["runtime"] = trt.Runtime(_TRT["logger"])
    return _TRT["logger"], _TRT["runtime"]


def build_engine(path: str | Path, example: torch.Tensor) -> Any:
    """A strongly typed TensorRT engine (``tensorrt.ICudaEngine``) for the ONNX file at ``path``,
    with one optimization profile: batch 1 to ``example``'s batch, tuned for it. Build on the CUDA
    device that will run it (``with torch.cuda.device(...)``)."""
    import tensorrt as trt

    logger, runtime = _logger_and_runtime()
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{path}: TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    rest = tuple(int(d) for d in example.shape[1:])
    profile.set_shape(inp.name, (1, *rest), tuple(example.shape), tuple(example.shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{path}: TensorRT could not build an engine (see its log above)")
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise RuntimeError(f"{path}: TensorRT could not load the engine it built")
    return engine


def _torch_dtype(trt_dtype: Any) -> torch.dtype:
    import numpy as np
    import tensorrt as trt

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(trt_dtype))).dtype


def _bind(runner: Runner, device: str, example: torch.Tensor, threads: int | None) -> torch.device:
    """Set a GPU runner's device, batch and (reported) thread count; return its CUDA device."""
    dev = _cuda_device(device)
    runner.device, runner.batch = str(dev), int(example.shape[0])
    runner.num_threads = int(threads) if threads else torch.get_num_threads()
    return dev


class TensorRTRunner(Runner):
    """A TensorRT engine (``tensorrt`` package) timed with CUDA events on a private stream.

    ``obj``: a module, an ``.onnx`` path, or an engine from :func:`build_engine` (several runners,
    e.g. one per batch size within its profile, may share one engine: each has its own context).
    """

    backend = "tensorrt"
    mode = "engine"

    def __init__(self, obj: Any, example: torch.Tensor, *, device: str = "cuda", threads: int | None = None):
        import tensorrt as trt

        dev = _bind(self, device, example, threads)
        prebuilt = hasattr(obj, "create_execution_context")
        self._source = None if prebuilt else _OnnxSource(obj, example)
        with torch.cuda.device(dev):
            self.engine = obj if prebuilt else build_engine(self._source.path, example)
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            if len(inputs) != 1:
                raise ValueError(f"the engine has {len(inputs)} inputs; the runner feeds one")
            self._input = example.to(dev, _torch_dtype(self.engine.get_tensor_dtype(inputs[0]))).contiguous()
            self.context.set_input_shape(inputs[0], tuple(self._input.shape))
            self.context.set_tensor_address(inputs[0], self._input.data_ptr())
            self._outputs = {}
            for name in (n for n in names if n not in inputs):
                shape = tuple(self.context.get_tensor_shape(name))
                buf = torch.empty(shape, dtype=_torch_dtype(self.engine.get_tensor_dtype(name)), device=dev)
                self.context.set_tensor_address(name, buf.data_ptr())
                self._outputs[name] = buf
            self._stream = torch.cuda.Stream(device=dev)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(dev)

    def run_ms(self) -> float:
        with torch.cuda.device(self._input.device):
            self._start.record(self._stream)
            ok = self.context.execute_async_v3(self._stream.cuda_stream)
            self._end.record(self._stream)
            self._stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return float(self._start.elapsed_time(self._end))

    def output(self) -> torch.Tensor:
        """The logits of the last run (a CPU copy of the first output)."""
        return next(iter(self._outputs.values())).float().cpu()

    def close(self) -> None:
        self.context = self.engine = None
        if self._source is not None:
            self._source.close()


class OrtTensorRTRunner(Runner):
    """ONNX Runtime's TensorrtExecutionProvider with input and output bound on the GPU."""

    backend = "tensorrt"
    mode = "engine"

    def __init__(self, obj: Any, example: torch.Tensor, *, device: str = "cuda", threads: int | None = None):
        import numpy as np
        import onnxruntime as ort

        dev = _bind(self, device, example, threads)
        self._source = _OnnxSource(obj, example)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        shape = "x".join(str(int(d)) for d in example.shape[1:])
        probe = ort.InferenceSession(str(self._source.path), so, providers=["CPUExecutionProvider"])
        name, out_name = probe.get_inputs()[0].name, probe.get_outputs()[0].name
        trt_options = {"device_id": dev.index, "trt_max_workspace_size": WORKSPACE_BYTES,
                       "trt_profile_min_shapes": f"{name}:1x{shape}",
                       "trt_profile_opt_shapes": f"{name}:{self.batch}x{shape}",
                       "trt_profile_max_shapes": f"{name}:{self.batch}x{shape}"}
        self.session = ort.InferenceSession(str(self._source.path), so, providers=[
            ("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", {"device_id": dev.index})])
        if "TensorrtExecutionProvider" not in self.session.get_providers():
            raise RuntimeError(f"{self._source.path}: ONNX Runtime did not enable the TensorRT provider")
        self._input = example.to(dev, torch.float32).contiguous()
        self._binding = self.session.io_binding()
        self._binding.bind_input(name=name, device_type="cuda", device_id=dev.index, element_type=np.float32,
                                 shape=tuple(self._input.shape), buffer_ptr=self._input.data_ptr())
        self._binding.bind_output(out_name, "cuda", dev.index)
        torch.cuda.synchronize(dev)

    def run_ms(self) -> float:
        t0 = time.perf_counter()
        self.session.run_with_iobinding(self._binding)
        torch.cuda.synchronize(self._input.device)
        return (time.perf_counter() - t0) * 1e3

    def output(self) -> torch.Tensor:
        """The logits of the last run (a CPU copy)."""
        return torch.from_numpy(self._binding.copy_outputs_to_cpu()[0]).float()

    def close(self) -> None:
        self.session = self._binding = None
        self._source.close()


def tensorrt_runner(obj: Any, example: torch.Tensor, *, device: str = "cuda", threads: int | None = None) -> Runner:
    """A TensorRT runner for a module or ``.onnx`` path, with whichever provider imports
    (:func:`tensorrt_provider`); :class:`TensorRTUnavailableError` when none does."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"device = {device!r}: the tensorrt backend runs on CUDA only; allowed 'cuda', 'cuda:N'")
    provider = require_tensorrt()
    cls = TensorRTRunner if provider == "tensorrt" else OrtTensorRTRunner
    return cls(obj, example, device=device, threads=threads)


__all__ = ["INSTALL_HINT", "OrtTensorRTRunner", "TensorRTRunner", "TensorRTUnavailableError", "build_engine",
           "require_tensorrt", "tensorrt_provider", "tensorrt_runner"]
