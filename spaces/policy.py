"""The Policy: one typed, versioned compression recipe shared by search, compress and reports.

A Policy *is* the recipe file. It round-trips through YAML and JSON without loss::

    policy = Policy.load("recipe.yaml")
    policy.save("copy.json")
    assert Policy.load("copy.json") == policy

Layers and prune groups are keyed by module name (``layer2.3.conv1``), never by position.
:meth:`Policy.check_against` validates names and values against a concrete model's prune
groups and quantizable layers (supplied by ``compress``), so a recipe for ``resnet56``
applied to ``resnet20`` fails with a list of unknown names instead of a crash in torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spaces._schema import FieldError, SchemaError, from_dict, join_path, read_document, to_dict, write_document

POLICY_VERSION = 1

FLOAT_BITS = (16, 32)
WEIGHT_BITS = tuple(range(2, 9)) + FLOAT_BITS
ACT_BITS = tuple(range(4, 9)) + FLOAT_BITS
BITS_ALLOWED_TEXT = "allowed 2-8, 16, 32"
ACT_BITS_ALLOWED_TEXT = "allowed 4-8, 16, 32"
CRITERIA = ("l1", "bn_scale", "taylor")
BACKENDS = ("x86", "cuda", "tensorrt", "none")
#: backends whose integer kernels quantize weights and activations together: a layer is int (w and a
#: both 2-8) or float (both 16/32); see ``compress.quantize.check_bits``
COUPLED_BACKENDS = ("x86", "tensorrt")


class PolicyError(SchemaError):
    """A recipe is malformed or does not fit the model it is applied to."""


@dataclass(frozen=True)
class ModelFamily:
    """Models a policy may name (``resnet<depth>``), their default classes and input size."""

    depths: tuple[int, ...]
    num_classes: int
    input_size: int


#: CIFAR ResNets (He et al. 2016) and torchvision's ImageNet ResNets (``compress.models`` builds them)
MODEL_FAMILIES: dict[str, ModelFamily] = {
    "cifar": ModelFamily(depths=(20, 32, 44, 56, 110), num_classes=10, input_size=32),
    "imagenet": ModelFamily(depths=(18, 34, 50, 101, 152), num_classes=1000, input_size=224),
}


def model_family(name: str) -> ModelFamily:
    """The family of model ``name`` (``resnet20`` -> CIFAR); :class:`PolicyError` listing the known models."""
    for family in MODEL_FAMILIES.values():
        if name in (f"resnet{d}" for d in family.depths):
            return family
    known = [f"resnet{d}" for f in MODEL_FAMILIES.values() for d in f.depths]
    raise PolicyError([FieldError("model.name", name, f"unknown model; known: {', '.join(known)}")])


def _check(errors: list[FieldError], ok: bool, path: str, value: Any, allowed: str) -> None:
    if not ok:
        errors.append(FieldError(path, value, allowed))


@dataclass(frozen=True)
class ModelSpec:
    """Which network the policy applies to."""

    name: str
    num_classes: int = 10
    input_size: int = 32
    shortcut: Literal["A", "B"] | None = None  # CIFAR ResNets only
    small_input: bool = False  # ImageNet ResNets only: 3x3 stride-1 stem, no max-pool

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.num_classes >= 2, "num_classes", self.num_classes, "must be >= 2")
        _check(errors, self.input_size >= 8, "input_size", self.input_size, "must be >= 8")
        if errors:
            raise PolicyError(errors)


@dataclass(frozen=True)
class PruneSpec:
    """Structured pruning: whole residual blocks dropped, and a fraction of channels removed per group.

    ``drop`` names residual blocks (``layer2.5``) removed entirely (depth pruning: fewer operators,
    which is what batch-1 latency needs); only blocks whose shortcut is the identity qualify.
    ``ratios`` (0 <= r < 1) then prune channels of the shallower network, so they may not name a
    group inside a dropped block. ``kept`` records the exact kept channel indices per group once
    pruning has run, so a saved model can be rebuilt without pickling modules.
    """

    criterion: Literal["l1", "bn_scale", "taylor"] = "l1"
    round_to: int = 1
    ratios: dict[str, float] = field(default_factory=dict)
    kept: dict[str, tuple[int, ...]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.round_to >= 1, "round_to", self.round_to, "must be an integer >= 1")
        _check(errors, len(set(self.drop)) == len(self.drop), "drop", list(self.drop), "block names must be distinct")
        for key in ("ratios", "kept"):
            errors.extend(dropped_block_errors(key, getattr(self, key), self.drop))
        for name, r in self.ratios.items():
            _check(errors, 0.0 <= r < 1.0, join_path("ratios", name), r, "allowed 0 <= ratio < 1")
        for name, idx in self.kept.items():
            _check(errors, len(idx) > 0, join_path("kept", name), list(idx), "must keep at least one channel")
            _check(errors, len(set(idx)) == len(idx) and all(i >= 0 for i in idx),
                   join_path("kept", name), list(idx), "indices must be distinct and >= 0")
        if errors:
            raise PolicyError(errors)

    @property
    def active(self) -> bool:
        return any(r > 0 for r in self.ratios.values()) or bool(self.kept) or bool(self.drop)


def in_dropped_block(name: str, drop: Sequence[str]) -> str | None:
    """The block of ``drop`` that module or group ``name`` lies inside (``layer2.5.conv1`` -> ``layer2.5``)."""
    return next((b for b in drop if name == b or name.startswith(b + ".")), None)


def dropped_block_errors(path: str, names: Iterable[str], drop: Sequence[str]) -> list[FieldError]:
    """One error per name under ``path`` that lies inside a block of ``drop``."""
    hits = ((name, in_dropped_block(name, drop)) for name in names)
    return [FieldError(join_path(path, name), name,
                       f"belongs to dropped block {block!r} (prune.drop); remove it or keep the block")
            for name, block in hits if block is not None]


@dataclass(frozen=True)
class LayerBits:
    """Bit-widths of one layer: weights ``w`` and input activations ``a``; 16/32 mean float."""

    w: int = 32
    a: int = 32

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.w in WEIGHT_BITS, "w", self.w, BITS_ALLOWED_TEXT)
        _check(errors, self.a in ACT_BITS, "a", self.a, ACT_BITS_ALLOWED_TEXT)
        if errors:
            raise PolicyError(errors)

    @property
    def is_float(self) -> bool:
        return self.w in FLOAT_BITS and self.a in FLOAT_BITS


@dataclass(frozen=True)
class QuantSpec:
    """Mixed precision: target backend, a default for unnamed layers, and per-layer bits."""

    backend: Literal["x86", "cuda", "tensorrt", "none"] = "none"
    default: LayerBits = LayerBits()
    layers: dict[str, LayerBits] = field(default_factory=dict)

    def bits_for(self, layer: str) -> LayerBits:
        return self.layers.get(layer, self.default)

    @property
    def active(self) -> bool:
        return not self.default.is_float or any(not b.is_float for b in self.layers.values())


@dataclass(frozen=True)
class DistillSpec:
    """Knowledge distillation. ``teacher="self"`` means the uncompressed input model."""

    teacher: str = "self"
    teacher_checkpoint: str | None = None
    alpha: float = 0.0
    temperature: float = 4.0
    feature_weight: float = 0.0
    feature_layers: tuple[str, ...] = ()
    #: re-estimate the teacher's BatchNorm statistics on this many train batches before distilling
    teacher_bn_recal: int = 0

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.teacher_bn_recal >= 0, "teacher_bn_recal", self.teacher_bn_recal, "must be >= 0")
        _check(errors, 0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "allowed 0 <= alpha <= 1")
        _check(errors, self.temperature > 0, "temperature", self.temperature, "must be > 0")
        _check(errors, self.feature_weight >= 0, "feature_weight", self.feature_weight, "must be >= 0")
        if errors:
            raise PolicyError(errors)

    @property
    def active(self) -> bool:
        return self.alpha > 0 or (self.feature_weight > 0 and bool(self.feature_layers))


@dataclass(frozen=True)
class FinetuneSpec:
    """Training schedule, used for baselines, proxy fine-tunes, QAT and final fine-tunes.

    Give the budget in ``epochs`` or ``steps`` (steps win when both are set).
    """

    epochs: float | None = 1.0
    steps: int | None = None
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = 0
    batch_size: int = 128
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    amp: bool = True  # only takes effect on CUDA
    channels_last: bool = True  # only takes effect on CUDA
    seed: int = 0

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        _check(errors, self.epochs is None or self.epochs > 0, "epochs", self.epochs, "must be > 0")
        _check(errors, self.steps is None or self.steps > 0, "steps", self.steps, "must be > 0")
        _check(errors, self.epochs is not None or self.steps is not None, "epochs", None,
               "give epochs or steps")
        _check(errors, self.lr > 0, "lr", self.lr, "must be > 0")
        _check(errors, self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(errors, self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(errors, 0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing,
               "allowed 0 <= x < 1")
        _check(errors, self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(errors, self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip,
               "must be > 0 or null")
        if errors:
            raise PolicyError(errors)


@dataclass(frozen=True)
class Policy:
    """A complete compression recipe. See the module docstring."""

    model: ModelSpec
    prune: PruneSpec = PruneSpec()
    quant: QuantSpec = QuantSpec()
    distill: DistillSpec = DistillSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = POLICY_VERSION

    def __post_init__(self) -> None:
        if self.version != POLICY_VERSION:
            raise PolicyError([FieldError("version", self.version,
                                          f"this autocompress reads policy version {POLICY_VERSION}")])
        drop = getattr(self.prune, "drop", ())  # None while from_dict collects the errors of every section
        errors = dropped_block_errors("quant.layers", getattr(self.quant, "layers", {}), drop) + \
            dropped_block_errors("distill.feature_layers", getattr(self.distill, "feature_layers", ()), drop)
        if errors:
            raise PolicyError(errors)

    # ----- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d = {"version": d.pop("version"), **d}
        if not d["prune"].get("drop"):  # written only when used: recipes (and hashes) without it are unchanged
            d["prune"].pop("drop", None)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Policy:
        try:
            return from_dict(cls, data, source=source)
        except SchemaError as exc:
            raise PolicyError(exc.errors, source) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def save(self, path: str | Path) -> Path:
        """Write the recipe as YAML, or JSON when the suffix is ``.json``."""
        return write_document(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a recipe file (YAML or JSON); errors name the file and field."""
        return cls.from_dict(read_document(path), source=str(path))

    def replace(self, **changes: Any) -> Policy:
        return dataclasses.replace(self, **changes)

    def hash(self) -> str:
        """Stable content hash of everything that changes the compressed model's metrics.

        Provenance is excluded (it records where a policy came from, not what it does).
        """
        d = self.to_dict()
        d.pop("provenance", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for tables and hover text."""
        parts = [self.model.name]
        if self.prune.drop:
            parts.append(f"drop {len(self.prune.drop)} blocks")
        if self.prune.ratios:
            rs = [r for r in self.prune.ratios.values()]
            parts.append(f"prune {self.prune.criterion} mean {sum(rs) / len(rs):.2f} max {max(rs):.2f}")
        if self.quant.active:
            ws = [self.quant.default.w] + [b.w for b in self.quant.layers.values()]
            parts.append(f"quant {self.quant.backend} w{min(ws)}-{max(ws)}")
        if self.distill.active:
            parts.append(f"kd a={self.distill.alpha:.2f} T={self.distill.temperature:g} "
                         f"f={self.distill.feature_weight:g}")
        return "; ".join(parts)

    # ----- validation against a concrete model ---------------------------------------
    def check_against(self, groups: Mapping[str, int], layers: Sequence[str], *,
                      model_name: str | None = None, source: str | None = None) -> None:
        """Raise :class:`PolicyError` listing every name or value that does not fit the model.

        ``groups`` maps prune-group name to channel count; ``layers`` lists quantizable layers.
        """
        errors: list[FieldError] = []
        if model_name is not None and model_name != self.model.name:
            errors.append(FieldError("model.name", self.model.name,
                                     f"this recipe is for {self.model.name!r}; the model is {model_name!r}"))
        known_groups = ", ".join(list(groups)[:12]) + (" ..." if len(groups) > 12 else "")
        for name, r in self.prune.ratios.items():
            path = join_path("prune.ratios", name)
            if name not in groups:
                errors.append(FieldError(path, r, f"unknown prune group; known: {known_groups}"))
                continue
            n = groups[name]
            keep = keep_count(n, r, self.prune.round_to)
            if keep < 1:
                errors.append(FieldError(path, r, f"would leave 0 of {n} channels"))
        for name, idx in self.prune.kept.items():
            path = join_path("prune.kept", name)
            if name not in groups:
                errors.append(FieldError(path, list(idx)[:4], f"unknown prune group; known: {known_groups}"))
            elif max(idx) >= groups[name]:
                errors.append(FieldError(path, max(idx), f"index out of range for {groups[name]} channels"))
        layer_set = set(layers)
        known_layers = ", ".join(list(layers)[:12]) + (" ..." if len(layers) > 12 else "")
        for name, bits in self.quant.layers.items():
            if name not in layer_set:
                errors.append(FieldError(join_path("quant.layers", name), to_dict(bits),
                                         f"unknown layer; known: {known_layers}"))
        if self.quant.backend == "none" and self.quant.active:
            errors.append(FieldError("quant.backend", "none",
                                     "sub-float bits need a backend; allowed x86, cuda, tensorrt"))
        for i, name in enumerate(self.distill.feature_layers):
            if name not in layer_set and not any(g == name for g in groups) and not _is_module_prefix(name, layers):
                errors.append(FieldError(join_path("distill.feature_layers", i), name,
                                         f"unknown layer; known: {known_layers}"))
        if errors:
            raise PolicyError(errors, source)


def _is_module_prefix(name: str, layers: Sequence[str]) -> bool:
    return any(layer.startswith(name + ".") for layer in layers)


def keep_count(channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when removing ``ratio`` of ``channels``, rounded to a multiple of ``round_to``.

    The count is rounded to the nearest multiple (at least ``round_to`` when the layer has that
    many channels, never more than ``channels``). Returns 0 only if the ratio would remove all.
    """
    keep = channels * (1.0 - ratio)
    if round_to > 1:
        keep = round(keep / round_to) * round_to
        keep = max(keep, min(round_to, channels))
    else:
        keep = round(keep)
    return int(min(channels, max(0, keep)))
