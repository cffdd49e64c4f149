"""Which kernel library runs x86 INT8 models: PyTorch's quantized engine, chosen per CPU.

PyTorch packs quantized weights for one engine when a model is converted (and again whenever a
packed module is deserialized: ``torch.jit.load``, ``copy.deepcopy``), under the process-wide
``torch.backends.quantized.engine``; the packed form then decides which kernels run.

* ``x86`` (PyTorch's default): oneDNN convolutions where the CPU has AVX512-VNNI, FBGEMM elsewhere.
* ``fbgemm``: FBGEMM everywhere.
* ``onednn``: oneDNN everywhere.
* ``auto``: ``x86`` where the CPU has VNNI (or is not x86), ``onednn`` where an x86 CPU lacks it.
  Measured on a 2-core AMD EPYC (AVX2, no VNNI), torch 2.14, INT8 ResNet-56, TorchScript,
  2 threads: oneDNN runs batch 128 1.6-1.7x faster than FBGEMM (132 vs 224 ms) and batch 1 about
  12% slower (3.4 vs 3.0 ms), at the same accuracy (88.40% vs 88.44% test after calibration
  alone). Both use 7-bit activations there (``reduce_range``, see ``_convert``).

:func:`compress.quantize.convert` leaves the chosen engine set process-wide, so later repacks in
this process (TorchScript export and reload, copies) keep it. A process that loads a saved
``model.torchscript.pt`` must set the same engine before ``torch.jit.load``; the artifacts record
it (``int8_engine``).
"""

from __future__ import annotations

import platform

import torch

#: allowed values of ``engine`` (``auto`` resolves to one of the others)
ENGINES = ("auto", "x86", "fbgemm", "onednn")


def cpu_has_vnni() -> bool:
    """True unless this is an x86 CPU without VNNI (AVX512-VNNI or AVX-VNNI; torch's own check).
    Non-x86 CPUs count as True: nothing here changes for them."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool(torch.cpu._is_vnni_supported())


def resolve_engine(engine: str = "auto") -> str:
    """The quantized engine ``engine`` names on this CPU (``auto``: see the module docstring).

    Raises ``ValueError`` for a name outside :data:`ENGINES`, or an engine this PyTorch build lacks
    (the message lists those it has).
    """
    if engine not in ENGINES:
        raise ValueError(f"int8 engine = {engine!r}: allowed {', '.join(ENGINES)}")
    name = ("x86" if cpu_has_vnni() else "onednn") if engine == "auto" else engine
    supported = torch.backends.quantized.supported_engines
    if name not in supported:
        if engine == "auto":
            return "x86"
        raise ValueError(f"int8 engine = {engine!r}: this PyTorch build has {', '.join(sorted(supported))}")
    return name


def use_engine(engine: str = "auto") -> str:
    """Resolve ``engine`` and set it process-wide (``torch.backends.quantized.engine``); returns it."""
    name = resolve_engine(engine)
    torch.backends.quantized.engine = name
    return name
