"""The original model of a search, and everything measured against it.

:class:`Baseline` prepares, lazily and once per process:

- the dataset (``compress.data.get_dataset`` with the space's ``data`` section);
- the original model: a checkpoint, torchvision weights, or (quickstart) a baseline trained
  on the fly with ``compress.train.fit`` and cached as ``RUN/baseline/model.pt`` under a file
  lock, so resumed runs and parallel workers reuse it instead of training again; loaded
  weights with ``model.adapt`` are fine-tuned on the space's train split once, cached the same way
  (``RUN/baseline/baseline.json`` says which, ``kind`` ``baseline`` or ``adapted``);
- its reference metrics on the *val* split (the same fixed subset every trial uses), measured
  by ``compress.measure.measure`` and cached in ``RUN/baseline/reference.json``;
- the model's prune groups and quantizable layers, and the space's dimensions (``dims``).

:meth:`Baseline.measure` scores a compressed model the way every trial and ``finalize`` do.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import UserError
from autocompress.metrics import at_batch
from autocompress.rundir import atomic_path, atomic_write_json, file_lock
from compress.apply import Compressed, apply, calibration_batches
from compress.data import DataBundle, get_dataset
from compress.measure import LatencySetup, Measurement, measure
from compress.models import build_model, load_checkpoint, load_pretrained, quantizable_layers
from compress.prune import PruneGroup, list_groups
from compress.train import fit
from spaces.policy import FinetuneSpec, ModelSpec, Policy, QuantSpec
from spaces.space import Dim, SearchSpace, expand

log = logging.getLogger("search.baseline")

#: version of the cached reference metrics (``RUN/baseline/reference.json``)
REFERENCE_VERSION = 1


class ObjectiveSetupError(UserError, RuntimeError):
    """The original model or data cannot be prepared (model/data mismatch, missing weights source)."""


class Baseline:
    """The original model of ``space`` in run directory ``run_dir``. See the module docstring.

    Attributes (prepared on first access): ``data``, ``model`` (original, eval mode, CPU),
    ``reference`` (its metrics), ``groups`` ({group: channels}), ``layers``, ``dims``.
    """

    def __init__(self, space: SearchSpace, run_dir: str | Path, *, device: str = "cpu", progress: bool = False):
        self.space = space
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self._data: DataBundle | None = None
        self._model: nn.Module | None = None
        self._reference: dict[str, Any] | None = None
        self._structure: tuple[dict[str, int], list[str], list[PruneGroup]] | None = None
        self._dims: list[Dim] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # workers rebuild data/model from the run's caches instead of receiving tensors
        state = dict(self.__dict__)
        state.update(_data=None, _model=None, _reference=None, _structure=None, _dims=None)
        return state

    # ----- lazily prepared pieces ------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self.space.model.spec()

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def data(self) -> DataBundle:
        if self._data is None:
            d = self.space.data
            data_dir = self.space.resolve_path(d.data_dir) if d.data_dir else None
            self._data = get_dataset(d.dataset, data_dir, download=d.download, normalization=d.normalization,
                                     val_fraction=d.val_fraction, calib_size=d.calib_size, seed=d.seed,
                                     input_size=self.space.model.input_size)
            if self._data.num_classes != self.spec.num_classes:
                raise ObjectiveSetupError(
                    f"{self.space.source or self.space.name}: model.num_classes = {self.spec.num_classes} but "
                    f"dataset {d.dataset!r} has {self._data.num_classes} classes; set model.num_classes: "
                    f"{self._data.num_classes}")
        return self._data

    @property
    def model(self) -> nn.Module:
        """The original (uncompressed) model in eval mode, on CPU."""
        if self._model is None:
            self._model = self._load_original().cpu().eval()
        return self._model

    @property
    def groups(self) -> dict[str, int]:
        return self._prepare_structure()[0]

    @property
    def layers(self) -> list[str]:
        return self._prepare_structure()[1]

    @property
    def dims(self) -> list[Dim]:
        if self._dims is None:
            self._dims = expand(self.space, self._prepare_structure()[2], self.layers)
        return self._dims

    @property
    def reference(self) -> dict[str, Any]:
        """Metrics of the original model (val accuracy, flops, params, size, bops)."""
        if self._reference is None:
            self._reference = self._load_or_measure_reference()
        return self._reference

    def _prepare_structure(self) -> tuple[dict[str, int], list[str], list[PruneGroup]]:
        if self._structure is None:
            model = self._model if self._model is not None else build_model(self.spec)
            found = list_groups(model, input_size=self.input_size)
            self._structure = ({g.name: g.channels for g in found}, quantizable_layers(model), found)
        return self._structure

    # ----- measuring ---------------------------------------------------------------------
    def val_loader(self) -> Iterable:
        """The val batches every trial is scored on (``budget.val_limit`` images, fixed order)."""
        b = self.space.budget
        return self.data.loader("val", b.eval_batch_size, shuffle=False, limit=b.val_limit)

    def apply_policy(self, policy: Policy, *, finetune: bool = True) -> Compressed:
        """``policy`` applied to the original model (fine-tuned when ``finetune``), the global RNG
        seeded with the policy's fine-tune seed first: BN recalibration draws augmented crops from
        it (and QAT folds those statistics into INT8 weights), so the search objective, finalize
        and audit get the same model for the same policy whatever the process drew before."""
        torch.manual_seed(policy.finetune.seed if policy.finetune.seed is not None else 0)
        return apply(policy, self.model, data=self.data, finetune=finetune, device=self.device,
                     progress=self.progress, bn_recal_batches=self.space.budget.bn_recal_batches)

    def measure(self, compressed: Compressed | nn.Module, *, loader: Iterable | None = None,
                quant: QuantSpec | None = None, latency: bool | None = None, costs: bool = True) -> Measurement:
        """Measure against the original: accuracy on ``loader`` (default: :meth:`val_loader`),
        costs, ``accuracy_drop``/``flops_ratio`` vs :attr:`reference` and, when ``latency`` (default:
        the space needs it), the latency ratio with the space's ``budget.latency`` settings (backend
        ``onnxruntime``: an x86 INT8 policy is timed as its ORT-native INT8 ONNX, calibrated on the
        ``calib`` batches ``compress.apply`` uses)."""
        timed = self.space.needs_latency if latency is None else latency
        setup = LatencySetup.of(self.space.budget.latency) if timed else None
        calib = calibration_batches(self.data) if setup is not None and setup.backend == "onnxruntime" else None
        return measure(compressed, input_size=self.input_size, loader=self.val_loader() if loader is None else loader,
                       costs=costs, quant=quant, layers=self.layers, reference=self.reference if costs else None,
                       latency=setup, original=self.model, calib=calib, device=self.device, progress=self.progress)

    # ----- original model --------------------------------------------------------------
    def _load_original(self) -> nn.Module:
        m = self.space.model
        # seeded initialisation: a baseline trained from scratch starts from the same weights in every
        # run, whatever the process's random state (loaded weights replace them anyway)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(m.baseline.seed if m.baseline is not None else 0)
            model = build_model(self.spec)
        if m.checkpoint:
            model = load_checkpoint(model, self.space.resolve_path(m.checkpoint))
        elif m.weights:
            model = load_pretrained(model, m.name, m.weights)
        elif m.baseline is not None and m.baseline.train:
            return self._train_once(model, m.baseline.finetune_spec(), "baseline")
        else:
            raise ObjectiveSetupError(
                f"{self.space.source or self.space.name}: model {m.name!r} has no trained weights; give "
                "model.checkpoint (a path), model.weights (e.g. IMAGENET1K_V1) or model.baseline: {train: true}")
        if m.adapt is not None:
            return self._train_once(model, m.adapt, "adapted")
        return model

    def _weights_source(self) -> dict[str, Any]:
        """Where the original weights come from: the checkpoint's content hash, so a changed file
        invalidates the cached baseline and reference, and the same bytes copied, moved or remounted
        (a new mtime) keep them."""
        m = self.space.model
        if not m.checkpoint:
            return {"weights": m.weights}
        p = self.space.resolve_path(m.checkpoint)
        return {"checkpoint_sha256": _file_sha256(p) if p.is_file() else None}

    def _key(self, parts: Mapping[str, Any]) -> str:
        parts = {**parts, **self._weights_source()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _train_once(self, model: nn.Module, spec: FinetuneSpec, what: str) -> nn.Module:
        """Train ``model`` with ``spec`` once per run (file-locked; other workers wait and reuse it).

        ``what`` is ``baseline`` (trained from scratch) or ``adapted`` (a loaded checkpoint
        fine-tuned on this data); either way the result is ``RUN/baseline/model.pt``.
        """
        folder = self.run_dir / "baseline"
        weights, meta = folder / "model.pt", folder / "baseline.json"
        d = self.space.to_dict()
        key = self._key({"model": dataclasses.asdict(self.spec), "data": d["data"],
                         "baseline": d["model"]["baseline"], "adapt": d["model"]["adapt"]})
        with file_lock(folder / ".lock"):
            if weights.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
                log.info("reusing the %s model %s", what, weights)
                return load_checkpoint(model, weights)
            budget = f"{spec.epochs} epochs" if spec.steps is None else f"{spec.steps} steps"
            action = "training the %s baseline on" if what == "baseline" else "adapting the %s weights to"
            log.info(action + " %s (%s); cached in %s", self.spec.name, self.space.data.dataset, budget, folder)
            torch.manual_seed(spec.seed)
            loader = self.data.loader("train", spec.batch_size, shuffle=True, seed=spec.seed)
            t0 = time.perf_counter()
            result = fit(model, loader, spec, device=self.device, progress=self.progress, desc=what)
            model = model.cpu().eval()
            with atomic_path(weights) as tmp:
                torch.save(model.state_dict(), tmp)
            atomic_write_json(meta, {"key": key, "kind": what, "model": dataclasses.asdict(self.spec),
                                     "checkpoint": self.space.model.checkpoint, "weights": self.space.model.weights,
                                     "finetune": dataclasses.asdict(spec),
                                     "seconds": round(time.perf_counter() - t0, 2), "train": _plain(result)})
            return model

    # ----- reference ---------------------------------------------------------------------
    def _latency_key(self) -> bool | list[int]:
        """The reference cache key's latency part: whether latency is measured (and, with several
        batches, which; a single batch keeps the key of earlier runs)."""
        batches = self.space.budget.latency.batches
        return list(batches) if self.space.needs_latency and len(batches) > 1 else self.space.needs_latency

    def _load_or_measure_reference(self) -> dict[str, Any]:
        path = self.run_dir / "baseline" / "reference.json"
        d = self.space.to_dict()
        key = self._key({"model": d["model"], "data": d["data"], "val_limit": d["budget"]["val_limit"],
                         "latency": self._latency_key(), "spec": dataclasses.asdict(self.spec),
                         "v": REFERENCE_VERSION})
        with file_lock(self.run_dir / "baseline" / ".reference.lock"):
            if path.is_file():
                cached = json.loads(path.read_text())
                if cached.get("key") == key:
                    _ = self.model  # make sure the model exists in this process too
                    return cached["metrics"]
            t0 = time.perf_counter()
            m = measure(self.model, input_size=self.input_size, loader=self.val_loader(), quant=QuantSpec(),
                        device=self.device, progress=self.progress)
            metrics = {**m.to_dict(), "accuracy_drop": 0.0, "flops_ratio": 1.0}
            if self.space.needs_latency:  # the original against itself, at every batch
                metrics.update({"latency": 1.0, "latency_ratio": 1.0,
                                **{at_batch("latency", b): 1.0 for b in self.space.budget.latency.other_batches}})
            metrics["val_images"] = m.images
            log.info("reference metrics measured in %.1f s", time.perf_counter() - t0)
            atomic_write_json(path, {"key": key, "metrics": metrics})
            return metrics


def _file_sha256(path: Path) -> str:
    """SHA-256 of the file at ``path`` (cached per path, size and mtime within a process)."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """A JSON-safe view of a dataclass tree (unknown types as text)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj)


__all__ = ["Baseline", "ObjectiveSetupError", "REFERENCE_VERSION"]
