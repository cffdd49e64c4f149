"""The search-space document: frozen dataclasses of every section of a space file.

See :mod:`spaces.space` for the YAML layout and the public API (loading, dimensions). Every
section validates itself in ``__post_init__`` and reports each problem as a
:class:`~spaces._schema.FieldError` naming the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autocompress.metrics import METRICS, direction, lookup, metric_names
from spaces._schema import FieldError, SchemaError, join_path, to_dict
from spaces._space_constraints import Constraint, parse_constraint
from spaces.policy import ACT_BITS, CRITERIA, WEIGHT_BITS, FinetuneSpec, LayerBits, ModelSpec, model_family

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``search.seeds.precisions``: a seed as allocated, or with every searched bit-width at 8
SEED_PRECISIONS = ("float", "int8")

Criterion = Literal["l1", "bn_scale", "taylor"]


class SpaceError(SchemaError):
    """A search-space file is malformed or does not fit the model it names."""


def _check(errors: list[FieldError], ok: bool, path: str, value: Any, allowed: str) -> None:
    if not ok:
        errors.append(FieldError(path, value, allowed))


def _raise(errors: list[FieldError]) -> None:
    if errors:
        raise SpaceError(errors)


@dataclass(frozen=True)
class Range:
    """A continuous range ``low..high``; ``step`` makes it a grid, ``log`` samples log-uniformly."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def errors(self, path: str) -> list[FieldError]:
        """Problems with this range, reported under ``path`` by the section that holds it."""
        errors: list[FieldError] = []
        _check(errors, self.low <= self.high, join_path(path, "high"), self.high, f"must be >= low ({self.low})")
        _check(errors, self.step is None or self.step > 0, join_path(path, "step"), self.step, "must be > 0 or null")
        _check(errors, not (self.log and self.step is not None), join_path(path, "log"), self.log,
               "log and step cannot be combined")
        _check(errors, not self.log or self.low > 0, join_path(path, "low"), self.low, "must be > 0 with log: true")
        return errors

    def snap(self, value: float) -> float:
        """Nearest value inside the range (and on the grid when ``step`` is set)."""
        value = min(max(value, self.low), self.high)
        if self.step:
            k = math.floor((value - self.low) / self.step + 0.5 + 1e-9)
            value = min(self.low + k * self.step, self.high)
            value = round(value, 10)
        return float(value)


FloatOrRange = float | Range


def _range_errors(errors: list[FieldError], path: str, v: FloatOrRange) -> None:
    if isinstance(v, Range):
        errors.extend(v.errors(path))


def _range_bounds(v: FloatOrRange) -> tuple[float, float]:
    return (v.low, v.high) if isinstance(v, Range) else (v, v)


@dataclass(frozen=True)
class BaselineSpec(FinetuneSpec):
    """Train the original model on the fly (quickstart); cached in ``RUN/baseline/``.

    All :class:`~spaces.policy.FinetuneSpec` fields apply (``epochs``, ``lr``, ...).
    """

    train: bool = True

    def finetune_spec(self) -> FinetuneSpec:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(FinetuneSpec)}
        return FinetuneSpec(**d)


@dataclass(frozen=True)
class SpaceModel:
    """The network to compress and where its trained weights come from.

    Exactly one of ``checkpoint`` (path), ``weights`` (torchvision name, e.g. IMAGENET1K_V1)
    or ``baseline`` (train on the fly) should be given.

    ``adapt`` fine-tunes the loaded ``checkpoint``/``weights`` on the space's ``train`` split once
    before the search (cached in ``RUN/baseline/model.pt``, like a trained baseline). Use it when
    the weights were trained on a different version of the data (the shared CIFAR ResNets: PNG
    images, the search data: JPEG): the adapted model is then the original that every candidate
    starts from, the reference of ``accuracy_drop`` and the distillation teacher, so a candidate's
    proxy fine-tune measures what its compression costs, not how much domain shift it undoes.
    Replay recipes of such a run with ``autocompress apply --checkpoint RUN/baseline``.
    """

    name: str
    num_classes: int | None = None
    input_size: int | None = None
    shortcut: Literal["A", "B"] | None = None
    small_input: bool = False
    checkpoint: str | None = None
    weights: str | None = None
    baseline: BaselineSpec | None = None
    adapt: FinetuneSpec | None = None

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        sources = [k for k in ("checkpoint", "weights", "baseline") if getattr(self, k) is not None]
        _check(errors, len(sources) <= 1, sources[-1] if sources else "checkpoint", "...",
               f"give only one of checkpoint, weights, baseline (got {', '.join(sources)})")
        _check(errors, self.adapt is None or self.checkpoint is not None or self.weights is not None,
               "adapt", "{...}", "adapt fine-tunes loaded weights: it needs checkpoint or weights "
               "(a trained-on-the-fly baseline already trains on this data: lengthen its schedule instead)")
        _check(errors, self.num_classes is None or self.num_classes >= 2, "num_classes", self.num_classes,
               "must be >= 2")
        _check(errors, self.input_size is None or self.input_size >= 8, "input_size", self.input_size,
               "must be >= 8")
        _raise(errors)

    def spec(self) -> ModelSpec:
        """The policies' :class:`~spaces.policy.ModelSpec`: classes and input size default to the
        model family's (``spaces.policy.MODEL_FAMILIES``)."""
        family = model_family(self.name) if self.num_classes is None or self.input_size is None else None
        return ModelSpec(name=self.name, num_classes=self.num_classes or family.num_classes,
                         input_size=self.input_size or family.input_size, shortcut=self.shortcut,
                         small_input=self.small_input)


@dataclass(frozen=True)
class SpaceData:
    """Dataset and splits (arguments of ``compress.data.get_dataset``)."""

    dataset: str
    data_dir: str | None = None
    download: bool = False
    normalization: str | None = None
    val_fraction: float = 0.1
    calib_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, 0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "allowed 0 < x < 1")
        _check(errors, self.calib_size >= 1, "calib_size", self.calib_size, "must be >= 1")
        _raise(errors)


@dataclass(frozen=True)
class SpacePrune:
    """Structured pruning dimensions: one ratio per block group, stage group, or both.

    ``parametrization`` says how the per-group ratios are searched:

    ``independent``
        one dim per group over ``ratio`` (``prune/<group>``);
    ``global``
        one global ratio over ``ratio`` (``prune/global``) plus one offset per group over
        ``offset`` (``prune/offset/<group>``); a group's ratio is ``global + offset``, the
        offsets scaled down near the ends of ``ratio`` so that every ratio stays inside it
        (:func:`spaces._space_dims.global_ratio`), snapped to its grid. The global dim spans
        the whole FLOPs range on its own (independent ratios average out: a random draw of 9
        of them rarely prunes very little or very much), and the offsets move channels
        between groups at a given FLOPs level, so even a short search covers the front from
        end to end. Offsets of 0 everywhere is uniform pruning.

    ``depth`` (default 0: off) adds one dim per stage, ``depth/<stage>`` in 0..depth: how many
    residual blocks the stage drops, its last ones first and never its first block (which may
    change the width or resolution). Dropped blocks remove whole operators, which channel
    pruning cannot: that is what batch-1 latency on a CPU needs.
    """

    granularity: Literal["block", "stage", "both", "none"] = "block"
    ratio: FloatOrRange = Range(0.0, 0.7, 0.1)
    criterion: Criterion | tuple[Criterion, ...] = "l1"
    #: kept channels rounded to a multiple of this; null = auto: 8 when ``budget.latency.device`` is
    #: cuda (tensor-core friendly widths), else 1 (resolved when the space is built)
    round_to: int | None = None
    pin: dict[str, float] = field(default_factory=dict)
    parametrization: Literal["independent", "global"] = "independent"
    offset: Range = Range(-0.2, 0.2, 0.1)
    depth: int = 0

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.depth >= 0, "depth", self.depth, "must be an integer >= 0 (blocks dropped per stage)")
        _range_errors(errors, "ratio", self.ratio)
        lo, hi = _range_bounds(self.ratio)
        _check(errors, 0.0 <= lo and hi < 1.0, "ratio", to_dict(self.ratio), "allowed 0 <= ratio < 1")
        _check(errors, self.round_to is None or self.round_to >= 1, "round_to", self.round_to,
               "must be an integer >= 1 or null (auto: 8 on cuda, else 1)")
        if isinstance(self.criterion, tuple):
            _check(errors, len(self.criterion) >= 1, "criterion", [], f"allowed {', '.join(CRITERIA)}")
        for name, r in self.pin.items():
            _check(errors, 0.0 <= r < 1.0, join_path("pin", name), r, "allowed 0 <= ratio < 1")
        errors.extend(self.offset.errors("offset"))
        on_grid = not self.offset.step or abs(-self.offset.low / self.offset.step
                                              - round(-self.offset.low / self.offset.step)) < 1e-6
        _check(errors, self.offset.low <= 0.0 <= self.offset.high and on_grid and not self.offset.log, "offset",
               to_dict(self.offset), "must have 0 among its values (offsets of 0 are uniform pruning) and not be log")
        _check(errors, self.parametrization == "independent" or isinstance(self.ratio, Range), "parametrization",
               self.parametrization, "global needs a ratio range (low/high) to search")
        _raise(errors)

    @property
    def criteria(self) -> tuple[str, ...]:
        return self.criterion if isinstance(self.criterion, tuple) else (self.criterion,)


@dataclass(frozen=True)
class SpaceQuant:
    """Mixed-precision dimensions: bit choices per layer, per stage or for the whole model.

    ``act_bits: follow`` ties activations to weights (8-bit activations when the weights are
    quantized, float otherwise), so ``weight_bits: [8, 32]`` is a plain int8-or-float choice.
    ``backend: x86`` and ``backend: tensorrt`` always couple them (their INT8 kernels quantize
    weights and activations together): a float-weight layer stays float, an integer-weight layer
    with a float activation choice runs 8-bit activations.

    Targets (``compress.quantize.check_bits``): ``x86`` runs INT8 in FX CPU kernels; ``tensorrt``
    runs INT8 for real in TensorRT (explicit Q/DQ, symmetric), 16 bits as fp16; ``cuda`` is
    PyTorch on a GPU: 16 bits run fp16, integer layers are simulated (fake-quant in fp32). On
    every target, bits below 8 are simulated inside 8-bit kernels, and the precision notes say so.
    """

    backend: Literal["x86", "cuda", "tensorrt", "none"] = "none"  # none: no quantization dims (bits ignored)
    weight_bits: tuple[int, ...] = (8, 32)
    act_bits: tuple[int, ...] | Literal["follow"] = (8, 32)
    share: Literal["layer", "stage", "model"] = "layer"
    pin: dict[str, LayerBits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, len(self.weight_bits) >= 1, "weight_bits", [], "give at least one bit-width")
        for i, b in enumerate(self.weight_bits):
            _check(errors, b in WEIGHT_BITS, join_path("weight_bits", i), b, "allowed 2-8, 16, 32")
        if self.act_bits != "follow":
            _check(errors, len(self.act_bits) >= 1, "act_bits", [], "give at least one bit-width or 'follow'")
            for i, b in enumerate(self.act_bits):
                _check(errors, b in ACT_BITS, join_path("act_bits", i), b, "allowed 4-8, 16, 32")
        _raise(errors)

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def act_choices(self, w: int | None = None) -> tuple[int, ...]:
        if self.act_bits == "follow":
            return (32,) if w is None or w >= 16 else (8,)
        return self.act_bits


@dataclass(frozen=True)
class SpaceDistill:
    """Knowledge-distillation dimensions: the searchable numbers of :class:`~spaces.policy.DistillSpec`
    (each fixed or a :class:`Range`), then its fixed settings."""

    alpha: FloatOrRange = 0.0
    temperature: FloatOrRange = 4.0
    feature_weight: FloatOrRange = 0.0
    teacher: str = "self"
    teacher_checkpoint: str | None = None
    feature_layers: tuple[str, ...] = ()
    teacher_bn_recal: int = 0  # see spaces.policy.DistillSpec

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.teacher_bn_recal >= 0, "teacher_bn_recal", self.teacher_bn_recal, "must be >= 0")
        for key in ("alpha", "temperature", "feature_weight"):
            _range_errors(errors, key, getattr(self, key))
        lo, hi = _range_bounds(self.alpha)
        _check(errors, 0.0 <= lo and hi <= 1.0, "alpha", to_dict(self.alpha), "allowed 0 <= alpha <= 1")
        lo, hi = _range_bounds(self.temperature)
        _check(errors, lo > 0, "temperature", to_dict(self.temperature), "must be > 0")
        lo, hi = _range_bounds(self.feature_weight)
        _check(errors, lo >= 0, "feature_weight", to_dict(self.feature_weight), "must be >= 0")
        _raise(errors)


@dataclass(frozen=True)
class LatencyBudget:
    """How latency is measured (``compress.measure.compare_latency``).

    ``measure: auto`` measures only when an objective or constraint needs latency.
    ``device``: ``cpu``, ``cuda`` or ``cuda:N``. ``backend``: ``torch`` (CPU or CUDA, CUDA events),
    ``torchscript`` (CPU: candidate and original traced and frozen, ``compress.torchscript``, the
    form ``finalize`` exports as ``model.torchscript.pt``), ``torchscript-cl`` (CPU: the same, run in
    channels_last layout, the input converted inside the timed call; on x86 the float original runs
    faster that way, so its ratios do not flatter the candidate), ``onnxruntime`` (CPU) or ``tensorrt``
    (CUDA only: an engine built from the exported ONNX; ``pip install -e '.[gpu]'``).
    ``batch``: one batch size or a list of distinct ones (``[1, 128]``): the first is the primary
    batch (metric ``latency``), each other ``B`` is measured too (metric ``latency@B``), each with
    ``rounds`` interleaved rounds, back to back under one hold of the latency lock.
    """

    measure: Literal["auto", "always", "never"] = "auto"
    device: str = "cpu"
    backend: Literal["torch", "torchscript", "torchscript-cl", "onnxruntime", "tensorrt"] = "torch"
    batch: int | tuple[int, ...] = 1
    threads: int | None = 2
    rounds: int = 20
    warmup_s: float = 0.5

    @property
    def on_cuda(self) -> bool:
        """Whether latency is measured on a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def batches(self) -> tuple[int, ...]:
        """Every latency batch, the primary one first."""
        return (self.batch,) if isinstance(self.batch, int) else tuple(self.batch)

    @property
    def other_batches(self) -> tuple[int, ...]:
        """The batches measured besides the primary one (metrics ``latency@B``)."""
        return self.batches[1:]

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None, "device", self.device,
               "allowed cpu, cuda, cuda:N")
        _check(errors, self.backend != "tensorrt" or self.on_cuda, "backend", self.backend,
               "tensorrt runs on a GPU only: allowed torch, torchscript, torchscript-cl, onnxruntime with device cpu; "
               "torch, tensorrt with device cuda")
        cpu_only = ("onnxruntime", "torchscript", "torchscript-cl")
        _check(errors, self.backend not in cpu_only or not self.on_cuda, "backend", self.backend,
               f"{self.backend} is timed on the CPU only: allowed torch, tensorrt with device cuda")
        if isinstance(self.batch, list):
            object.__setattr__(self, "batch", tuple(self.batch))
        errors.extend(_batch_errors(self.batch))
        _check(errors, self.rounds >= 3, "rounds", self.rounds, "must be >= 3")
        _check(errors, self.threads is None or self.threads >= 1, "threads", self.threads, "must be >= 1 or null")
        _raise(errors)


def _batch_errors(batch: Any) -> list[FieldError]:
    """``budget.latency.batch``: an integer >= 1 or a non-empty list of distinct ones."""
    if isinstance(batch, int) and not isinstance(batch, bool):
        return [] if batch >= 1 else [FieldError("batch", batch, "must be >= 1")]
    if not isinstance(batch, tuple):  # the loader reported the wrong type already
        raise TypeError(f"budget.latency.batch = {batch!r}: expected an integer or a list of integers")
    allowed = "allowed an integer >= 1 or a list of distinct integers >= 1 (the first is the primary batch)"
    if not batch:
        return [FieldError("batch", [], allowed)]
    ok = all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch)
    if not ok or len(set(batch)) != len(batch):
        return [FieldError("batch", list(batch), allowed)]
    return []


def _default_proxy_finetune() -> FinetuneSpec:
    return FinetuneSpec(epochs=None, steps=100, lr=0.01, batch_size=128)


def _default_final_finetune() -> FinetuneSpec:
    return FinetuneSpec(epochs=10.0, lr=0.01, batch_size=128, schedule="cosine")


@dataclass(frozen=True)
class Budget:
    """Per-trial cost: proxy fine-tune, BN recalibration, val subset, latency settings.

    ``final`` is the full fine-tune schedule ``autocompress finalize`` uses for the chosen point.
    """

    bn_recal_batches: int = 10
    finetune: FinetuneSpec = field(default_factory=_default_proxy_finetune)
    final: FinetuneSpec = field(default_factory=_default_final_finetune)
    val_limit: int | None = 2000
    eval_batch_size: int = 256
    latency: LatencyBudget = LatencyBudget()

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.bn_recal_batches >= 0, "bn_recal_batches", self.bn_recal_batches, "must be >= 0")
        _check(errors, self.val_limit is None or self.val_limit >= 1, "val_limit", self.val_limit,
               "must be >= 1 or null (whole val split)")
        _check(errors, self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        _raise(errors)


@dataclass(frozen=True)
class FidelitySettings:
    """Multi-fidelity proxy (successive halving inside each trial, ASHA-style).

    ``levels``: proxy fine-tune steps per level, ascending (they replace ``budget.finetune``'s
    length; its other settings apply). Every candidate is scored at ``levels[0]``; when it is among
    the best ``promote`` fraction of the distinct candidates that have reached that level so far
    (non-dominated rank over the objectives, feasible first, crowding distance breaking ties; at
    least ``min_results`` of them), the same trial scores it at the next level from the pruned
    start (a fresh, longer fine-tune), and so on. Baselines are scored at every level. The trial
    reports its highest level's metrics (``search.promotion``).
    """

    levels: tuple[int, ...]
    promote: float = 0.3
    min_results: int = 4

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, len(self.levels) >= 1, "levels", [], "give at least one level (proxy fine-tune steps)")
        for i, steps in enumerate(self.levels):
            _check(errors, steps >= 1, join_path("levels", i), steps, "must be >= 1 step")
        _check(errors, all(a < b for a, b in zip(self.levels, self.levels[1:])), "levels", list(self.levels),
               "must be strictly ascending")
        _check(errors, 0 < self.promote <= 1, "promote", self.promote, "allowed 0 < promote <= 1")
        _check(errors, self.min_results >= 1, "min_results", self.min_results, "must be >= 1")
        _raise(errors)


@dataclass(frozen=True)
class SeedSettings:
    """Sensitivity-seeded starts (``search.sensitivity``): the run's sensitivity map
    (``RUN/sensitivity.json``) is measured once before the trials, and a budgeted allocation at
    each ``targets`` fraction of the original's ``metric`` becomes a seed policy, enqueued after
    the baselines and labelled ``seed-<metric>-<target>``.

    ``precisions``: each seed is enqueued once per entry: ``float`` as allocated, ``int8`` with every
    searched bit-width at 8 (labelled ``seed-<metric>-<target>-int8``; needs 8 in
    ``quant.weight_bits``). Pruned INT8 points are where large-batch CPU speed comes from, and a short
    search may not reach them from float seeds.
    """

    targets: tuple[float, ...] = (0.3, 0.5, 0.7)
    metric: Literal["flops", "params", "bops"] = "flops"
    precisions: tuple[str, ...] = ("float",)

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, len(self.targets) >= 1, "targets", [], "give at least one target fraction")
        for i, t in enumerate(self.targets):
            _check(errors, 0 < t < 1, join_path("targets", i), t, "allowed 0 < target < 1 (fraction of the original)")
        allowed = ", ".join(SEED_PRECISIONS)
        _check(errors, len(self.precisions) >= 1, "precisions", [], f"give at least one of {allowed}")
        for i, p in enumerate(self.precisions):
            _check(errors, p in SEED_PRECISIONS, join_path("precisions", i), p, f"allowed {allowed}")
        _check(errors, len(set(self.precisions)) == len(self.precisions), "precisions", list(self.precisions),
               "each precision at most once")
        _raise(errors)


@dataclass(frozen=True)
class SearchSettings:
    """Which sampler/backend runs how many trials, and where the study is stored.

    ``fidelity`` (null: one level, ``budget.finetune``) and ``seeds`` (null: none) are described
    by :class:`FidelitySettings` and :class:`SeedSettings`.
    """

    sampler: Literal["nsga2", "tpe", "gp", "random"] = "nsga2"
    trials: int = 40
    seed: int = 0
    parallelism: int = 1
    storage: str | None = None  # None -> sqlite:///RUN/study.db
    study: str | None = None  # None -> the space name
    backend: Literal["optuna", "ray"] = "optuna"
    baselines: bool = True
    timeout_s: float | None = None
    fidelity: FidelitySettings | None = None
    seeds: SeedSettings | None = None

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.trials >= 1, "trials", self.trials, "must be >= 1")
        _check(errors, self.parallelism >= 1, "parallelism", self.parallelism, "must be >= 1")
        _check(errors, self.timeout_s is None or self.timeout_s > 0, "timeout_s", self.timeout_s, "must be > 0")
        _raise(errors)


@dataclass(frozen=True)
class SearchSpace:
    """A complete search configuration. See the module docstring for the YAML layout."""

    name: str
    model: SpaceModel
    data: SpaceData
    description: str = ""
    prune: SpacePrune = SpacePrune()
    quant: SpaceQuant = SpaceQuant()
    distill: SpaceDistill = SpaceDistill()
    objectives: tuple[str, ...] = ("accuracy", "flops")
    constraints: tuple[str, ...] = ()
    budget: Budget = Budget()
    search: SearchSettings = SearchSettings()
    #: file the space was read from (not part of the document; set by :func:`load_space`)
    source: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        known = metric_names(self._other_batches())
        _check(errors, len(self.objectives) >= 1, "objectives", [], f"give at least one of {', '.join(known)}")
        for i, name in enumerate(self.objectives):
            _check(errors, name in known, join_path("objectives", i), name, f"allowed {', '.join(known)}")
        _check(errors, len(set(self.objectives)) == len(self.objectives), "objectives", list(self.objectives),
               "each objective at most once")
        for i, text in enumerate(self.constraints):
            try:
                metric = parse_constraint(text).metric
            except ValueError as exc:
                errors.append(FieldError(join_path("constraints", i), text, str(exc)))
                continue
            _check(errors, metric in known, join_path("constraints", i), text,
                   f"{metric} is not measured (budget.latency.batch); allowed metrics {', '.join(known)}")
        errors.extend(self._target_errors())
        errors.extend(self._seed_errors())
        _raise(errors)
        if isinstance(self.prune, SpacePrune) and self.prune.round_to is None:
            # auto: tensor-core friendly widths when latency is timed on a GPU
            lat = getattr(self.budget, "latency", None)
            on_cuda = isinstance(lat, LatencyBudget) and lat.on_cuda
            object.__setattr__(self, "prune", dataclasses.replace(self.prune, round_to=8 if on_cuda else 1))

    def _other_batches(self) -> tuple[int, ...]:
        """The latency batches besides the primary one (none when the budget failed to load)."""
        lat = getattr(self.budget, "latency", None)
        return lat.other_batches if isinstance(lat, LatencyBudget) else ()

    def _seed_errors(self) -> list[FieldError]:
        """INT8 seeds need 8-bit weights in the quantization space."""
        seeds = getattr(getattr(self, "search", None), "seeds", None)
        if not isinstance(seeds, SeedSettings) or not isinstance(self.quant, SpaceQuant) \
                or "int8" not in seeds.precisions:
            return []
        i = seeds.precisions.index("int8")
        ok = self.quant.enabled and 8 in self.quant.weight_bits
        return [] if ok else [FieldError(join_path("search.seeds.precisions", i), "int8",
                                         f"needs 8 in quant.weight_bits with quantization on (quant.backend "
                                         f"{self.quant.backend}, weight_bits {list(self.quant.weight_bits)})")]

    def _target_errors(self) -> list[FieldError]:
        """The quantization target must run where latency is timed."""
        errors: list[FieldError] = []
        lat = getattr(self.budget, "latency", None)
        if not (isinstance(lat, LatencyBudget) and isinstance(self.quant, SpaceQuant)):
            return errors  # a section that failed to load has its own errors
        backend = self.quant.backend
        _check(errors, not (lat.on_cuda and backend == "x86"), "quant.backend", backend,
               f"x86 INT8 models run on the CPU only; with budget.latency.device {lat.device} allowed cuda, "
               "tensorrt, none")
        _check(errors, lat.backend != "tensorrt" or backend in ("tensorrt", "none"), "quant.backend", backend,
               "budget.latency.backend tensorrt builds engines from Q/DQ ONNX: allowed tensorrt, none")
        return errors

    # ----- derived views ---------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        """Optuna directions of the objectives, in order."""
        return [direction(o) for o in self.objectives]

    @property
    def objective_pairs(self) -> list[tuple[str, str]]:
        """``[(metric, "maximize"|"minimize"), ...]`` as in ``RunInfo.objectives``."""
        return [(o, direction(o)) for o in self.objectives]

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(c) for c in self.constraints]

    @property
    def needs_latency(self) -> bool:
        """Whether trials measure latency (objective/constraint uses it, or ``measure: always``)."""
        mode = self.budget.latency.measure
        if mode != "auto":
            return mode == "always"
        used = set(self.objectives) | {c.metric for c in self.parsed_constraints}
        return any(lookup(m) in (METRICS["latency"], METRICS["latency_ratio"]) for m in used)

    @property
    def study_name(self) -> str:
        return self.search.study or self.name

    def resolve_path(self, path: str | None) -> Path | None:
        """Resolve a path from the space: ``~`` expanded; relative paths are tried against the
        current directory, the space file's directory, then the autocompress repository root
        (where ``../shared`` of the built-in spaces lives)."""
        return resolve_path(path, self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict that :func:`load_space` reads back to an equal space."""
        d = to_dict(self)
        d.pop("source", None)
        return d


def resolve_path(path: str | None, source: str | None = None) -> Path | None:
    """See :meth:`SearchSpace.resolve_path`."""
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return p
    candidates = [Path.cwd() / p]
    if source:
        candidates.append(Path(source).resolve().parent / p)
    candidates.append(REPO_ROOT / p)
    for c in candidates:
        if c.exists():
            return c.resolve()
    return candidates[-1] if source and Path(source).resolve().parent == BUILTIN_DIR else candidates[0]
