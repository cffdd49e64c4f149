"""ONNX export with a dynamic batch axis, verified against PyTorch in ONNX Runtime.

Float (pruned) models and INT8 FX models (``compress.quantize.convert(..., target="x86")``)
both go through the TorchScript exporter (``dynamo=False``); quantized FX modules become
QuantizeLinear/QLinearConv-style QDQ graphs that ONNX Runtime runs in INT8.

Verification (always on two dynamic batch sizes, 1 and 3; on ``verify_loader`` batches when
given): for float models ONNX Runtime and PyTorch must agree on top-1 for at least 99.5% of
the samples and the logits must match (max abs difference <= 1e-3 x the largest logit
magnitude, at least 1e-4 absolute). INT8 graphs run on a *different* INT8 implementation
(ONNX Runtime's QDQ kernels vs fbgemm/oneDNN), whose requantisation rounds differently at every
layer; the off-by-one-step differences add up over a deep net and flip near-tied samples about
as often as INT8 vs float does (resnet20 on CIFAR-10 JPEG, 500 val images: ORT-int8 vs
torch-int8 98.4-98.8% top-1 agreement, torch-int8 vs float 98.4%). INT8 graphs are therefore
held to >= 97% top-1 agreement (``min_top1_agreement`` overrides either default); their logit
difference is reported, not bounded. The same INT8 rule holds for the other reduced-precision
models: fake-quantized ones (the ``cuda``/``tensorrt`` targets: exported as Q/DQ, which ONNX Runtime
may run in its own INT8 kernels) and fp16 ones (ONNX Runtime's CPU computes their fp16 nodes in
fp32). Failures raise :class:`ExportError`.

The deploy artefact of an x86 INT8 policy is not that export but the ORT-native one
(:mod:`compress.onnx_int8`; :func:`export_compressed` picks). It is verified by its *own
accuracy* (:func:`verify_onnx_accuracy`): ORT top-1 on the verify loader (the val split) against
the PyTorch top-1 of the model it was built from, the fake-quant simulation with the same ranges
and weight grids, within ``tolerance`` points (0.5). Agreement is the wrong test for INT8: two
INT8 implementations that round differently flip near-tied samples (ResNet-56 50% pruned, no
fine-tune: 91.7% top-1 agreement with the FX INT8 model, 96.4% with the simulation) while their
accuracies match; on 5000 val images a 0.5 pt tolerance is ~2.5 standard errors of the paired
accuracy difference at 4% disagreement.

>>> report = export_onnx(model, "model.onnx", example, verify_loader=val_loader)
>>> report = export_compressed(compressed, "model.onnx", calib=calib_batches, verify_loader=val_loader)
>>> session = ort_session("model.onnx", threads=1)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress._verify import FLOAT_ABS_FLOOR, FLOAT_REL_TOL, VERIFY_BATCH_SIZES, dynamic_batches, loader_inputs
from compress.measure._runners import session_options
from compress.models import quantizable_layers
from compress.onnx_int8 import Int8ExportError, export_onnx_int8, needs_int8_onnx

log = logging.getLogger(__name__)

MIN_TOP1_AGREEMENT = 0.995
MIN_TOP1_AGREEMENT_INT8 = 0.97
#: INT8 exports: |ORT top-1 - PyTorch top-1| allowed, in percentage points
ACCURACY_TOLERANCE = 0.5


class ExportError(RuntimeError):
    """ONNX export or its verification against PyTorch failed."""


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how well ONNX Runtime reproduces PyTorch."""

    path: str
    opset: int
    quantized: bool
    size_bytes: int
    batch_sizes: tuple[int, ...]
    verified_samples: int
    top1_agreement: float | None
    max_abs_diff: float | None
    rel_diff: float | None
    ops: tuple[str, ...]
    ort_accuracy: float | None = None
    torch_accuracy: float | None = None
    accuracy_tolerance: float | None = None


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` with spinning disabled (fair on shared cores).

    ``threads`` sets the intra-op thread count (None: ONNX Runtime's default); inter-op is 1.
    """
    import onnxruntime as ort

    so = session_options(threads)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def is_quantized_model(model: nn.Module) -> bool:
    """True when ``model`` holds real quantized modules (INT8 FX conversion)."""
    return any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
               for m in model.modules())


def is_reduced_precision(model: nn.Module) -> bool:
    """True for INT8 FX, fake-quantized (exported as Q/DQ) or fp16/bf16 models: the INT8 verification rule."""
    from compress.quantize import FAKE_QUANT_TYPES

    return is_quantized_model(model) or any(isinstance(m, FAKE_QUANT_TYPES) for m in model.modules()) or any(
        p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters())


def _run_ort(session, x: torch.Tensor) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.detach().cpu().float().numpy()})[0]


def _compare(model: nn.Module, session, batches: Iterable[torch.Tensor], quantized: bool,
             path: Path) -> tuple[int, float, float, float]:
    """(samples, top1 agreement, max abs diff, relative diff); raises ExportError on mismatch."""
    n = agree = 0
    max_abs = max_ref = 0.0
    with torch.no_grad():
        for x in batches:
            ref = model(x.cpu()).float().numpy()
            out = _run_ort(session, x)
            if out.shape != ref.shape:
                raise ExportError(f"{path}: ONNX Runtime output shape {out.shape} != PyTorch {ref.shape} "
                                  f"for input batch {tuple(x.shape)} (dynamic batch axis broken?)")
            if not np.isfinite(out).all():
                raise ExportError(f"{path}: ONNX Runtime produced non-finite outputs")
            n += len(ref)
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            max_abs = max(max_abs, float(np.abs(out - ref).max()))
            max_ref = max(max_ref, float(np.abs(ref).max()))
    rel = max_abs / max(max_ref, 1e-12)
    top1 = agree / max(n, 1)
    if not quantized and max_abs > max(FLOAT_REL_TOL * max_ref, FLOAT_ABS_FLOOR):
        raise ExportError(f"{path}: float model logits differ between ONNX Runtime and PyTorch: max abs diff "
                          f"{max_abs:.3g} (relative {rel:.3g}); allowed <= {FLOAT_REL_TOL:g} relative")
    return n, top1, max_abs, rel


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, *, verify_loader: Iterable | None = None,
                verify_batches: int = 2, opset: int = 17, threads: int | None = 1,
                min_top1_agreement: float | None = None) -> ExportReport:
    """Export ``model`` (float or INT8 FX) to ``path`` with a dynamic batch axis and verify it.

    ``example`` is one input batch (any batch size). The model is put in eval mode. Checks the
    graph with ``onnx.checker``, runs batch sizes 1 and 3 derived from ``example``, and, with
    ``verify_loader`` (``(inputs, targets)`` batches), the first ``verify_batches`` batches. The
    top-1 rule (>= 99.5% agreement for float, >= 97% for INT8, or ``min_top1_agreement``)
    applies to the loader samples; the logit rule (float models) to every batch. Raises
    :class:`ExportError` when export or verification fails (see :func:`verify_onnx`).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = example.detach().cpu().float()
    quantized = is_quantized_model(model)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        onnx.checker.check_model(onnx.load(str(path)))
    except Exception as exc:  # the exporters raise many types; one clear error for the caller
        raise ExportError(f"{path}: ONNX export of {type(model).__name__} "
                          f"({'INT8' if quantized else 'float'}) failed: {type(exc).__name__}: {exc}") from exc
    return verify_onnx(model, path, example, verify_loader=verify_loader, verify_batches=verify_batches,
                       opset=opset, threads=threads, min_top1_agreement=min_top1_agreement)


def verify_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, *, verify_loader: Iterable | None = None,
                verify_batches: int = 2, opset: int | None = None, threads: int | None = 1,
                min_top1_agreement: float | None = None) -> ExportReport:
    """Check the ONNX file at ``path`` against ``model`` (rules in the module docstring).

    Raises :class:`ExportError` on any mismatch; returns the :class:`ExportReport`.
    """
    path = Path(path)
    model = model.eval().cpu()
    example = example.detach().cpu().float()
    quantized = is_quantized_model(model)
    reduced = is_reduced_precision(model)
    _, file_opset, ops = _load_checked(path)
    opset = opset if opset is not None else file_opset
    try:
        session = ort_session(path, threads)
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load the exported model: {exc}") from exc

    _compare(model, session, dynamic_batches(example), reduced, path)
    samples, top1, max_abs, rel = 0, None, 0.0, 0.0
    if verify_loader is not None:
        samples, top1, max_abs, rel = _compare(model, session, loader_inputs(verify_loader, verify_batches), reduced,
                                               path)
        if samples == 0:
            raise ExportError(f"{path}: verify_loader yielded no batches")
        need = min_top1_agreement if min_top1_agreement is not None else (
            MIN_TOP1_AGREEMENT_INT8 if reduced else MIN_TOP1_AGREEMENT)
        if top1 < need:
            raise ExportError(f"{path}: ONNX Runtime and PyTorch agree on top-1 for {top1:.2%} of {samples} "
                              f"samples; required >= {need:.1%} (max abs logit diff {max_abs:.3g})")
    report = ExportReport(path=str(path), opset=opset, quantized=quantized, size_bytes=path.stat().st_size,
                          batch_sizes=VERIFY_BATCH_SIZES, verified_samples=samples, top1_agreement=top1,
                          max_abs_diff=max_abs, rel_diff=rel, ops=ops)
    log.info("exported %s (%s, %d bytes); verified %d samples, top-1 agreement %s", path,
             "INT8" if quantized else "float", report.size_bytes, samples,
             "n/a" if top1 is None else f"{top1:.2%}")
    return report


def _load_checked(path: Path) -> tuple[Any, int, tuple[str, ...]]:
    """(proto, opset, ops) of a valid one-input ONNX file; raises ExportError otherwise."""
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        if len(proto.graph.input) != 1 or not proto.graph.node:
            raise ValueError(f"expected a graph with one input and some nodes, got {len(proto.graph.input)} "
                             f"inputs and {len(proto.graph.node)} nodes")
    except Exception as exc:
        raise ExportError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return proto, opset, tuple(sorted({node.op_type for node in proto.graph.node}))


def ort_accuracy(path: str | Path, loader: Iterable, *, threads: int | None = 1) -> tuple[float, int]:
    """(top-1 in percent, images) of the ONNX model at ``path`` in ONNX Runtime over ``loader``
    (``(inputs, targets)`` batches)."""
    session = ort_session(path, threads)
    n = correct = 0
    for x, y in loader:
        out = _run_ort(session, x)
        correct += int((out.argmax(1) == torch.as_tensor(y).numpy()).sum())
        n += len(y)
    if n == 0:
        raise ExportError(f"{path}: the accuracy loader yielded no samples")
    return 100.0 * correct / n, n


def _paired_counts(session, model: nn.Module, loader: Iterable, path: Path) -> tuple[int, int, int, int, Any]:
    """(images, ORT correct, PyTorch correct, top-1 agreements, first input batch) over ``loader``."""
    n = ort_ok = torch_ok = agree = 0
    first = None
    with torch.no_grad():
        for x, y in loader:
            first = x if first is None else first
            out = _run_ort(session, x)
            if not np.isfinite(out).all():
                raise ExportError(f"{path}: ONNX Runtime produced non-finite outputs")
            ref = model(x.cpu()).float().numpy().argmax(1)
            labels = torch.as_tensor(y).numpy()
            n += len(labels)
            ort_ok += int((out.argmax(1) == labels).sum())
            torch_ok += int((ref == labels).sum())
            agree += int((out.argmax(1) == ref).sum())
    return n, ort_ok, torch_ok, agree, first


def verify_onnx_accuracy(path: str | Path, model: nn.Module, loader: Iterable, *,
                         tolerance: float = ACCURACY_TOLERANCE, threads: int | None = 1) -> ExportReport:
    """Verify an (INT8) ONNX file by its own accuracy: ORT top-1 over ``loader`` within
    ``tolerance`` percentage points of ``model``'s PyTorch top-1 on the same images.

    Also checks the graph, the dynamic batch axis (batch 1 and 3 outputs) and finite outputs.
    Raises :class:`ExportError` on failure; the report carries both accuracies and the top-1
    agreement (informative only: see the module docstring).
    """
    path = Path(path)
    if tolerance < 0:
        raise ValueError(f"tolerance = {tolerance}: must be >= 0 percentage points")
    _, opset, ops = _load_checked(path)
    try:
        session = ort_session(path, threads)
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load the model: {exc}") from exc
    model = model.eval().cpu()
    n, ort_ok, torch_ok, agree, first = _paired_counts(session, model, loader, path)
    if n == 0:
        raise ExportError(f"{path}: the verification loader yielded no samples")
    one = first[:1].float()
    for batch in (one, torch.cat([one, one * 0.5, one])):
        shape = _run_ort(session, batch).shape
        if shape[0] != len(batch):
            raise ExportError(f"{path}: ONNX Runtime output shape {shape} for input batch {len(batch)} "
                              "(dynamic batch axis broken?)")
    ort_acc, torch_acc = 100.0 * ort_ok / n, 100.0 * torch_ok / n
    if abs(ort_acc - torch_acc) > tolerance:
        raise ExportError(f"{path}: ONNX Runtime top-1 {ort_acc:.2f}% vs PyTorch {torch_acc:.2f}% on {n} images: "
                          f"differs by {abs(ort_acc - torch_acc):.2f} pt; allowed <= {tolerance:g} pt")
    report = ExportReport(path=str(path), opset=opset, quantized=True, size_bytes=path.stat().st_size,
                          batch_sizes=VERIFY_BATCH_SIZES, verified_samples=n, top1_agreement=agree / n,
                          max_abs_diff=None, rel_diff=None, ops=ops, ort_accuracy=ort_acc,
                          torch_accuracy=torch_acc, accuracy_tolerance=tolerance)
    log.info("verified %s by accuracy on %d images: ORT %.2f%%, PyTorch %.2f%% (tolerance %g pt)", path, n,
             ort_acc, torch_acc, tolerance)
    return report


def export_compressed(compressed: Any, path: str | Path, *, calib: Iterable, verify_loader: Iterable,
                      example: torch.Tensor, tolerance: float = ACCURACY_TOLERANCE, verify_batches: int = 4,
                      threads: int | None = 1) -> ExportReport:
    """Export the deploy artefact of a ``compress.apply.Compressed`` result to ``path`` and verify it.

    x86 INT8 policies: the ORT-native INT8 ONNX (:func:`compress.onnx_int8.export_onnx_int8`,
    calibrated on ``calib`` batches), verified by accuracy over all of ``verify_loader`` against
    the fake-quant simulation (``compressed.model``; :func:`verify_onnx_accuracy`). Anything
    else: :func:`export_onnx` of ``compressed.deploy`` with the agreement rules on the first
    ``verify_batches`` batches. Raises :class:`ExportError`.
    """
    quant = compressed.policy.quant
    if not needs_int8_onnx(quant, quantizable_layers(compressed.model)):
        return export_onnx(compressed.deploy, path, example, verify_loader=verify_loader,
                           verify_batches=verify_batches, threads=threads)
    try:
        export_onnx_int8(compressed.model, quant, calib, path)
    except Int8ExportError as exc:
        raise ExportError(str(exc)) from exc
    return verify_onnx_accuracy(path, compressed.model, verify_loader, tolerance=tolerance, threads=threads)
