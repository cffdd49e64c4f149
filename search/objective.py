"""The search objective: Policy -> metrics, shared by every backend.

:class:`Objective` prepares, lazily and once per process:

- the dataset (``compress.data.get_dataset`` with the space's ``data`` section);
- the original model: a checkpoint, torchvision weights, or (quickstart) a baseline trained
  on the fly with ``compress.train.fit`` and cached as ``RUN/baseline/model.pt`` under a file
  lock, so resumed runs and parallel workers reuse it instead of training again; loaded
  weights with ``model.adapt`` are fine-tuned on the space's train split once, cached the same way;
- its reference metrics on the *val* split (the same fixed subset every trial uses), cached in
  ``RUN/baseline/reference.json``;
- the model's prune groups and quantizable layers, and the space's dimensions (``dims``).

:meth:`Objective.evaluate` applies a policy with ``compress.apply.apply`` (prune -> BN recal
-> QAT -> proxy fine-tune with KD -> convert), measures accuracy on val (never test), costs on
the float (pruned) structure and, when the space needs it, the latency ratio to the original
(``compress.measure.compare_latency``, serialised across processes by the latency lock).
Results are cached by policy hash in ``RUN/cache/<hash>.json``, shared by all workers, so a
duplicate proposal is answered from the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.records import atomic_write_json
from spaces._schema import UserError
from spaces.policy import FinetuneSpec, ModelSpec, Policy, QuantSpec
from spaces.space import Dim, SearchSpace, expand

log = logging.getLogger("search.objective")

CACHE_VERSION = 1


class ObjectiveSetupError(UserError, RuntimeError):
    """The objective cannot be prepared (model/data mismatch, missing weights source)."""


class Metrics(dict):
    """Metrics of one evaluation (a plain ``dict[str, float]``) plus ``times`` per phase,
    ``cached_from`` (trial whose cached result was reused, or -1 for an unnumbered one) and notes."""

    def __init__(self, metrics: Mapping[str, Any], times: Mapping[str, float] | None = None, *,
                 cached: bool = False, cached_from: int | None = None, notes: list[str] | None = None):
        super().__init__(metrics)
        self.times = dict(times or {})
        self.cached = cached
        self.cached_from = cached_from
        self.notes = list(notes or [])


@contextlib.contextmanager
def _phase(times: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 3)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def model_spec(space: SearchSpace) -> ModelSpec:
    """The :class:`ModelSpec` of the space's model (registry defaults filled in)."""
    from compress.models import default_input_size, default_num_classes

    m = space.model
    return ModelSpec(name=m.name, num_classes=m.num_classes or default_num_classes(m.name),
                     input_size=m.input_size or default_input_size(m.name), shortcut=m.shortcut,
                     small_input=m.small_input)


class Objective:
    """Evaluate policies of ``space`` in run directory ``run_dir``. See the module docstring.

    Attributes (prepared on first access): ``data``, ``model`` (original, eval mode),
    ``reference`` (its metrics), ``groups`` ({group: channels}), ``layers``, ``dims``.
    ``evaluations`` counts evaluations actually run in this process (cache hits excluded).
    """

    def __init__(self, space: SearchSpace, run_dir: str | Path, *, device: str = "cpu", progress: bool = False):
        self.space = space
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.evaluations = 0
        self.cache_hits = 0
        self._data = None
        self._model: nn.Module | None = None
        self._reference: dict[str, Any] | None = None
        self._structure: tuple[dict[str, int], list[str], list[Any]] | None = None
        self._dims: list[Dim] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # workers rebuild data/model from the run's caches instead of receiving tensors
        state = dict(self.__dict__)
        state.update(_data=None, _model=None, _reference=None, _structure=None, _dims=None)
        return state

    # ----- lazily prepared pieces ------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.space)

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def data(self):
        if self._data is None:
            from compress.data import get_dataset

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

    def _prepare_structure(self) -> tuple[dict[str, int], list[str], list[Any]]:
        if self._structure is None:
            from compress.models import build_model, quantizable_layers
            from compress.prune import list_groups

            model = self._model if self._model is not None else build_model(self.spec)
            found = list_groups(model, input_size=self.input_size)
            self._structure = ({g.name: g.channels for g in found}, quantizable_layers(model), found)
        return self._structure

    # ----- original model --------------------------------------------------------------
    def _load_original(self) -> nn.Module:
        from compress.models import build_model, load_checkpoint, load_pretrained

        m = self.space.model
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
        """Where the original weights come from, with the checkpoint's mtime so a changed file
        invalidates the cached baseline and reference."""
        m = self.space.model
        if not m.checkpoint:
            return {"weights": m.weights}
        p = self.space.resolve_path(m.checkpoint)
        return {"checkpoint": [str(p), p.stat().st_mtime if p.exists() else None]}

    def _baseline_key(self) -> str:
        d = self.space.to_dict()
        parts = {"model": dataclasses.asdict(self.spec), "data": d["data"], "baseline": d["model"]["baseline"],
                 "adapt": d["model"]["adapt"], **self._weights_source()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _train_once(self, model: nn.Module, spec: FinetuneSpec, what: str) -> nn.Module:
        """Train ``model`` with ``spec`` once per run (file-locked; other workers wait and reuse it).

        ``what`` is ``baseline`` (trained from scratch) or ``adapted`` (a loaded checkpoint
        fine-tuned on this data); either way the result is ``RUN/baseline/model.pt``.
        """
        from compress.models import load_checkpoint

        folder = self.run_dir / "baseline"
        weights, meta = folder / "model.pt", folder / "baseline.json"
        key = self._baseline_key()
        with file_lock(folder / ".lock"):
            if weights.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
                log.info("reusing the %s model %s", what, weights)
                return load_checkpoint(model, weights)
            from compress.train import fit

            budget = f"{spec.epochs} epochs" if spec.steps is None else f"{spec.steps} steps"
            action = "training the %s baseline on" if what == "baseline" else "adapting the %s weights to"
            log.info(action + " %s (%s); cached in %s", self.spec.name, self.space.data.dataset, budget, folder)
            torch.manual_seed(spec.seed)
            loader = self.data.loader("train", spec.batch_size, shuffle=True, seed=spec.seed)
            t0 = time.perf_counter()
            result = fit(model, loader, spec, device=self.device, progress=self.progress, desc=what)
            model = model.cpu().eval()
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / ".model.pt.tmp"
            torch.save(model.state_dict(), tmp)
            tmp.replace(weights)
            atomic_write_json(meta, {"key": key, "kind": what, "model": dataclasses.asdict(self.spec),
                                     "checkpoint": self.space.model.checkpoint, "weights": self.space.model.weights,
                                     "finetune": dataclasses.asdict(spec), "seconds": round(time.perf_counter() - t0, 2),
                                     "train": _plain(result)})
            return model

    # ----- reference ---------------------------------------------------------------------
    def _reference_key(self) -> str:
        d = self.space.to_dict()
        parts = {"model": d["model"], "data": d["data"], "val_limit": d["budget"]["val_limit"],
                 "latency": self.space.needs_latency,
                 "spec": dataclasses.asdict(self.spec), "v": CACHE_VERSION, **self._weights_source()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _load_or_measure_reference(self) -> dict[str, Any]:
        path = self.run_dir / "baseline" / "reference.json"
        key = self._reference_key()
        with file_lock(self.run_dir / "baseline" / ".reference.lock"):
            if path.is_file():
                cached = json.loads(path.read_text())
                if cached.get("key") == key:
                    _ = self.model  # make sure the model exists in this process too
                    return cached["metrics"]
            t0 = time.perf_counter()
            model = self.model
            metrics = self._accuracy(model)
            metrics.update(self._costs(model, QuantSpec()))
            metrics.update(accuracy_drop=0.0, flops_ratio=1.0)
            if self.space.needs_latency:
                metrics.update(latency=1.0, latency_ratio=1.0)
            metrics["val_images"] = metrics.pop("n")
            log.info("reference metrics measured in %.1f s", time.perf_counter() - t0)
            atomic_write_json(path, {"key": key, "metrics": metrics})
            return metrics

    # ----- measurements -------------------------------------------------------------------
    def _val_loader(self):
        b = self.space.budget
        return self.data.loader("val", b.eval_batch_size, shuffle=False, limit=b.val_limit)

    def _accuracy(self, model: nn.Module) -> dict[str, Any]:
        from compress.measure import evaluate

        device = self.device if _runs_on(model, self.device) else "cpu"
        res = evaluate(model, self._val_loader(), device=device, topk=(1, 5), progress=self.progress)
        out: dict[str, Any] = {"accuracy": float(res["top1"]), "n": int(res["n"])}
        if "top5" in res:
            out["top5"] = float(res["top5"])
        return out

    def _costs(self, structure: nn.Module, quant: QuantSpec) -> dict[str, Any]:
        from compress.measure import count_bops, count_flops, count_params, model_size_bytes

        s = self.input_size
        return {"flops": int(count_flops(structure, s)), "params": int(count_params(structure)),
                "size": int(model_size_bytes(structure, quant)), "bops": int(count_bops(structure, s, quant))}

    def _latency(self, out: Any) -> dict[str, Any]:
        """Latency ratio of a ``Compressed`` result to the original; with ``backend: onnxruntime``
        an x86 INT8 policy is timed as its ORT-native INT8 ONNX (``compress.onnx_int8``)."""
        from compress.apply import calibration_batches
        from compress.measure import compare_latency
        from compress.onnx_int8 import latency_subject

        lat = self.space.budget.latency
        example = torch.randn(lat.batch, 3, self.input_size, self.input_size)
        with latency_subject(out, lat.backend, calibration_batches(self.data)) as subject:
            r = compare_latency(subject, self.model, example, backend=lat.backend, device=lat.device,
                                threads=lat.threads, rounds=lat.rounds, warmup_s=lat.warmup_s)
        return {"latency": float(r.ratio), "latency_ratio": float(r.ratio), "latency_ci_low": float(r.ci_low),
                "latency_ci_high": float(r.ci_high), "latency_busy": bool(r.busy)}

    # ----- the objective --------------------------------------------------------------------
    def cache_path(self, policy: Policy) -> Path:
        return self.run_dir / "cache" / f"{policy.hash()}.json"

    def effective_policy(self, policy: Policy, seed: int) -> Policy:
        """The policy actually run: its fine-tune seed is the trial seed."""
        return policy.replace(finetune=dataclasses.replace(policy.finetune, seed=int(seed)))

    def cached(self, policy: Policy) -> dict[str, Any] | None:
        """The cache entry of an effective policy (``metrics``, ``times``, ``trial``), or None."""
        path = self.cache_path(policy)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return entry if entry.get("v") == CACHE_VERSION else None

    def evaluate(self, policy: Policy, *, seed: int = 0, trial: int | None = None) -> Metrics:
        """Metrics of ``policy`` (see :data:`search.records.METRICS`) with per-phase ``times``.

        A policy without pruning or quantization is not fine-tuned (nothing to recover; it is
        the original model). Exceptions from applying the policy (PolicyError, DivergenceError,
        out of memory, ...) propagate; :func:`search.trial.run_trial` turns them into failed
        records. Successful results are cached by policy hash (``trial`` is stored so later
        duplicates can name it in ``cached_from``).
        """
        policy = self.effective_policy(policy, seed)
        hit = self.cached(policy)
        if hit is not None:
            self.cache_hits += 1
            log.info("policy %s already evaluated (trial %s): reusing its metrics", policy.hash(), hit.get("trial"))
            return Metrics(hit["metrics"], hit.get("times"), cached=True,
                           cached_from=hit.get("trial") if hit.get("trial") is not None else -1,
                           notes=hit.get("notes"))
        metrics, times, notes = self._run(policy, seed)
        self.evaluations += 1
        atomic_write_json(self.cache_path(policy), {"v": CACHE_VERSION, "trial": trial, "hash": policy.hash(),
                                                    "metrics": metrics, "times": times, "notes": notes})
        return Metrics(metrics, times, notes=notes)

    def _run(self, policy: Policy, seed: int) -> tuple[dict[str, Any], dict[str, float], list[str]]:
        from compress.apply import apply

        reference = self.reference
        times: dict[str, float] = {}
        t_total = time.perf_counter()
        torch.manual_seed(seed)
        compress_it = policy.prune.active or policy.quant.active
        out = apply(policy, self.model, data=self.data, finetune=compress_it, device=self.device,
                    progress=self.progress, bn_recal_batches=self.space.budget.bn_recal_batches)
        for k, v in out.timings.items():
            times[k] = float(v)
        with _phase(times, "evaluate"):
            metrics: dict[str, Any] = self._accuracy(out.scored(self.layers)[0])
            metrics.pop("n", None)
        with _phase(times, "cost"):
            structure = _float_structure(out.model)
            metrics.update(self._costs(structure, policy.quant))
        metrics["accuracy_drop"] = float(reference["accuracy"]) - metrics["accuracy"]
        metrics["flops_ratio"] = metrics["flops"] / max(float(reference["flops"]), 1.0)
        if self.space.needs_latency:
            with _phase(times, "latency"):
                metrics.update(self._latency(out))
        times["total"] = round(time.perf_counter() - t_total, 3)
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"metric {k} = {v} is not finite")
        return metrics, times, list(out.notes)


def _runs_on(model: nn.Module, device: str) -> bool:
    """Quantized (int8 FX) models only run on CPU."""
    if device == "cpu":
        return True
    return not any("quantized" in type(m).__module__ for m in model.modules())


def _float_structure(model: nn.Module) -> nn.Module:
    """The float (pruned) structure of a trainable model: fake-quant layers back to float."""
    from compress.quantize import FAKE_QUANT_TYPES, strip_fake_quant

    if any(isinstance(m, FAKE_QUANT_TYPES) for m in model.modules()):
        return strip_fake_quant(model).cpu().eval()
    return model.cpu().eval()


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj)


__all__ = ["Metrics", "Objective", "ObjectiveSetupError", "file_lock", "model_spec"]
