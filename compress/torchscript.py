"""Frozen TorchScript: the PyTorch deploy form without the Python interpreter in the loop.

An eager (or FX ``GraphModule``) model runs every operator through Python: module ``__call__``,
hooks, argument checks. At batch 1 on a CPU a CIFAR ResNet spends most of its time there, not in
the kernels, and an x86 INT8 model more so (its quantized modules check and re-pack arguments on
every call): measured on ResNet-56, 2 threads, batch 1, the FX INT8 model runs 4.8 ms eagerly and
1.8 ms traced and frozen, the float original 7.4 ms and 4.4 ms. :func:`freeze_torchscript` traces
a model on an example input and freezes it (``torch.jit.freeze``: weights become constants,
conv+BN fold, attribute lookups disappear); latency backend ``torchscript``
(:mod:`compress.measure`) times that form of both the candidate and the reference, and
:func:`export_torchscript` writes it (``model.torchscript.pt``, loaded with ``torch.jit.load``
without this package) and checks it against the module it came from.

torch 2.14 marks ``torch.jit`` deprecated in favour of ``torch.export``/``torch.compile``; it still
traces, freezes and runs the FX INT8 (``quantized::`` ops) models this package deploys. Its
deprecation and tracer warnings are silenced here (:func:`_quiet`); :func:`export_torchscript` checks
every artefact against its module instead.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress._verify import FLOAT_ABS_FLOOR, FLOAT_REL_TOL, dynamic_batches, loader_inputs

log = logging.getLogger(__name__)


class TorchScriptError(RuntimeError):
    """A model could not be traced/frozen, or its TorchScript form disagrees with it."""


@dataclass(frozen=True)
class TorchScriptReport:
    """What :func:`export_torchscript` wrote and how it compared with the module it came from."""

    path: str
    size_bytes: int
    verified_samples: int
    top1_agreement: float
    max_abs_diff: float
    allowed_abs_diff: float


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.jit's deprecation warnings and its tracer warnings: quantization scales read as
    Python floats become constants, which is what freezing wants, and a trace that does not
    generalize is caught by :func:`verify_torchscript`, not by these warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


class _ChannelsLast(nn.Module):
    """``model`` (its weights in channels_last) on its input converted to channels_last first: the
    conversion is traced too, so the frozen form takes the same NCHW tensors as ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def freeze_torchscript(model: nn.Module, example: torch.Tensor, *,
                       channels_last: bool = False) -> torch.jit.ScriptModule:
    """``model`` (eval mode; float, pruned or FX INT8) traced on ``example`` and frozen. The model
    itself is left as it was (its ``training`` flag is restored). Raises :class:`TorchScriptError`.

    ``channels_last``: the frozen form runs in channels_last (NHWC) layout, weights and activations,
    and converts its (NCHW) input first, inside the graph. On x86 CPUs oneDNN's convolutions run
    faster in that layout (measured on ResNet-56 float, 2 threads, AMD EPYC: 1.2-1.3x at batch 128,
    1.0-2.4x at batch 1, where the NCHW form lands at one of two speeds; the FX INT8 models change
    less); :class:`compress.measure` backend ``torchscript-cl`` times it.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet():
            subject = _ChannelsLast(model).eval() if channels_last and example.dim() == 4 else model
            traced = torch.jit.trace(subject, example, check_trace=False)
            return torch.jit.freeze(traced)
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways (data-dependent control flow, ...)
        raise TorchScriptError(f"cannot trace and freeze {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)


def verify_torchscript(scripted: torch.jit.ScriptModule, model: nn.Module, inputs: list[torch.Tensor],
                       *, what: str) -> tuple[int, float, float, float]:
    """Compare ``scripted`` with ``model`` on ``inputs``: top-1 must agree everywhere and the logits
    within the float export rule of :mod:`compress._verify` (FLOAT_REL_TOL of their largest magnitude,
    at least FLOAT_ABS_FLOOR). Returns ``(samples, agreement, max_abs_diff,
    allowed)``; raises :class:`TorchScriptError`."""
    n = agree = 0
    diff = scale = 0.0
    model.eval()
    with torch.no_grad():
        for x in inputs:
            ref, got = model(x).float(), scripted(x).float()
            if got.shape != ref.shape:
                raise TorchScriptError(f"{what}: output shape {tuple(got.shape)} for input {tuple(x.shape)}; "
                                       f"the module gives {tuple(ref.shape)}")
            n += x.shape[0]
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            diff = max(diff, float((ref - got).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    allowed = max(FLOAT_REL_TOL * scale, FLOAT_ABS_FLOOR)
    if agree < n or diff > allowed:
        raise TorchScriptError(f"{what}: TorchScript vs PyTorch top-1 agreement {agree}/{n}, max |logit difference| "
                               f"{diff:.3g}; allowed {n}/{n} and <= {allowed:.3g}")
    return n, agree / n, diff, allowed


def export_torchscript(model: nn.Module, path: str | Path, example: torch.Tensor, *,
                       verify_loader: Iterable = (), verify_batches: int = 4) -> TorchScriptReport:
    """Write ``model`` traced on ``example`` and frozen to ``path`` (``torch.jit.save``), reload it and
    verify it against ``model`` (:func:`verify_torchscript`) on dynamic batch sizes 1 and 3 and on
    the first ``verify_batches`` batches of ``verify_loader``, as :func:`compress.export.export_onnx`
    does. Raises :class:`TorchScriptError` (the file is removed then)."""
    path = Path(path)
    frozen = freeze_torchscript(model, example)
    with _quiet():
        torch.jit.save(frozen, str(path))
    try:
        with _quiet():
            loaded = torch.jit.load(str(path), map_location="cpu")
        inputs = [*dynamic_batches(example), *loader_inputs(verify_loader, verify_batches)]
        n, agreement, diff, allowed = verify_torchscript(loaded, model, inputs, what=str(path))
    except Exception:
        path.unlink(missing_ok=True)
        raise
    log.info("verified %s on %d images: top-1 agreement %.4f, max |logit difference| %.3g", path, n, agreement, diff)
    return TorchScriptReport(path=str(path), size_bytes=path.stat().st_size, verified_samples=n,
                             top1_agreement=agreement, max_abs_diff=diff, allowed_abs_diff=allowed)


__all__ = ["TorchScriptError", "TorchScriptReport", "export_torchscript", "freeze_torchscript", "verify_torchscript"]
