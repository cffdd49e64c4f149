"""Which kernel library runs x86 INT8 models: PyTorch's quantized engine.

PyTorch packs quantized weights for one engine when a model is converted (and again whenever a
packed module is deserialized: ``torch.jit.load``, ``copy.deepcopy``), under the process-wide
``torch.backends.quantized.engine``; the packed form then decides which kernels run.

* ``x86`` (PyTorch's default, and ours): oneDNN convolutions where the CPU has AVX512-VNNI, FBGEMM
  elsewhere.
* ``fbgemm``: FBGEMM everywhere.
* ``onednn``: oneDNN everywhere. On x86 CPUs without VNNI it trades batch 1 for large batches:
  the same INT8 ResNet-56 structures, TorchScript, 2 threads, interleaved in one process on a
  2-core AMD EPYC (AVX2), torch 2.14: 1.5-1.7x faster than ``x86`` at batch 128 and 1.15-1.3x slower
  at batch 1 (``benchmarks/results/headline-r56-onednn/engine-ab.json``), at the same accuracy
  (87.79% vs 87.68% test for the depth-pruned point there). Both use 7-bit activations on such
  CPUs (``reduce_range``, see ``_convert``).

So the engine is a deployment choice per serving batch, not part of the policy: the same
``model.torchscript.pt`` runs either way, repacked for the engine the loading process has set.
:func:`compress.quantize.convert` leaves the engine it packed for set process-wide, so later
repacks in this process (TorchScript export and reload, copies) keep it; artifacts record it
(``int8_engine``).
"""

from __future__ import annotations

import platform

import torch

#: allowed values of ``engine``; the first is the default
ENGINES = ("x86", "fbgemm", "onednn")


def cpu_has_vnni() -> bool:
    """True unless this is an x86 CPU without VNNI (AVX512-VNNI or AVX-VNNI; torch's own check).
    Non-x86 CPUs count as True: nothing here changes for them."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool(torch.cpu._is_vnni_supported())


def built_engines() -> list[str]:
    """The quantized engines this PyTorch build has (``torch.backends.quantized.supported_engines``)."""
    return list(torch.backends.quantized.supported_engines)


def resolve_engine(engine: str = ENGINES[0]) -> str:
    """``engine`` checked: ``ValueError`` for a name outside :data:`ENGINES` or one this PyTorch build
    lacks (the message lists those it has)."""
    if engine not in ENGINES:
        raise ValueError(f"int8 engine = {engine!r}: allowed {', '.join(ENGINES)}")
    supported = built_engines()
    if engine not in supported:
        raise ValueError(f"int8 engine = {engine!r}: this PyTorch build has {', '.join(sorted(supported))}")
    return engine


def use_engine(engine: str = ENGINES[0]) -> str:
    """Check ``engine`` and set it process-wide (``torch.backends.quantized.engine``); returns it."""
    torch.backends.quantized.engine = resolve_engine(engine)
    return engine
