"""Sensitivity map: val accuracy after compressing one prune group, one quantization unit or one
stage's tail of residual blocks alone.

>>> smap = compute_map(model, groups, units, data, SensitivitySettings(), input_size=32)
>>> smap.prune["layer2.0.conv1"][0.5]      # top-1 with only that group pruned by half
>>> smap.prune_loss("layer2", 0.3)         # accuracy points lost, interpolated between ratios
>>> smap.matrix()                          # groups x ratios, the heatmap's data
>>> smap.depth_loss("layer2", 2)           # points lost by dropping layer2's last 2 droppable blocks

Per prune group, each ratio is applied alone through :func:`compress.apply.apply` (prune ->
BN recalibration, no fine-tune), so the map sees exactly the pruned models trials start from.
Per quantization unit (a layer, a stage or the model, as the space's ``quant.share`` says),
each integer bit-width is simulated alone (:func:`compress.quantize.fake_quantize`, calibrated).
Per stage with droppable blocks (``depth``: the blocks in the order a depth dim drops them, last
first), the first k are dropped together for each k (``prune.drop`` through the same apply path).
Every model is scored on the same fixed val subset. Pure: no file I/O (the search layer caches
the map as ``RUN/sensitivity.json``, validated by :attr:`SensitivityMap.key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spaces.policy import LayerBits, ModelSpec, Policy, PruneSpec, QuantSpec

log = logging.getLogger(__name__)

MAP_VERSION = 1
_BITS = re.compile(r"^w(\d+)a(\d+)$")


@dataclass(frozen=True)
class SensitivitySettings:
    """How the map is measured. Small on purpose: it must cost a fraction of one search.

    ``ratios``: prune ratios measured per group (0 is the unpruned reference, always included);
    ``bits``: ``(w, a)`` integer bit-widths measured per quantization unit; ``val_limit``: images
    of the fixed val subset; ``bn_recal_batches`` / ``calib_batches``: batches of 64 for BN
    recalibration / activation calibration.
    """

    ratios: tuple[float, ...] = (0.2, 0.4, 0.5, 0.7)
    bits: tuple[tuple[int, int], ...] = ()
    backend: str = "x86"
    criterion: str = "l1"
    round_to: int = 1
    val_limit: int = 1000
    bn_recal_batches: int = 10
    calib_batches: int = 4
    eval_batch_size: int = 250

    def __post_init__(self) -> None:
        if not self.ratios or any(not 0.0 < r < 1.0 for r in self.ratios):
            raise ValueError(f"ratios = {self.ratios}: give at least one ratio, each 0 < r < 1")
        if self.val_limit < 1 or self.bn_recal_batches < 0 or self.calib_batches < 1:
            raise ValueError("val_limit and calib_batches must be >= 1, bn_recal_batches >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(map(list, v)) if k == "bits" else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivitySettings:
        d = dict(data)
        d["ratios"] = tuple(float(r) for r in d.get("ratios", cls.ratios))
        d["bits"] = tuple((int(w), int(a)) for w, a in d.get("bits", ()))
        return cls(**d)


def bits_label(bits: LayerBits | tuple[int, int]) -> str:
    """``w4a8`` for a (weights, activations) bit pair: the map's quant column key."""
    w, a = (bits.w, bits.a) if isinstance(bits, LayerBits) else bits
    return f"w{w}a{a}"


def parse_bits_label(label: str) -> LayerBits:
    """Inverse of :func:`bits_label`."""
    m = _BITS.match(label)
    if m is None:
        raise ValueError(f"bits label {label!r}: expected wNaM, e.g. w4a8")
    return LayerBits(w=int(m.group(1)), a=int(m.group(2)))


def _loss_curve(reference: float, points: Mapping[float, float]) -> tuple[list[float], list[float]]:
    """Ratios and accuracy losses (>= 0, made non-decreasing: compressing more never helps
    in expectation, so a noisy bump down is read as the loss already reached)."""
    xs = sorted(set(points) | {0.0})
    losses, worst = [], 0.0
    for x in xs:
        worst = max(worst, reference - points.get(x, reference), 0.0)
        losses.append(worst)
    return xs, losses


@dataclass(frozen=True)
class SensitivityMap:
    """Measured sensitivities (top-1 in percent on ``images`` val images) and how they were made.

    ``prune[group][ratio]`` includes ratio 0 (the reference); ``quant[unit][bits_label]`` holds
    the integer bit-widths measured; ``units`` maps each quantization unit to its layers.
    """

    reference: float
    images: int
    prune: dict[str, dict[float, float]]
    quant: dict[str, dict[str, float]] = field(default_factory=dict)
    units: dict[str, tuple[str, ...]] = field(default_factory=dict)
    settings: SensitivitySettings = SensitivitySettings()
    key: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    #: ``{stage: {k: top-1}}``: the stage's first k blocks of its drop order dropped (k >= 1)
    depth: dict[str, dict[int, float]] = field(default_factory=dict)

    # ----- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (float ratio keys become strings); :meth:`from_dict` reads it back."""
        return {"version": MAP_VERSION, "key": self.key, "reference": self.reference, "images": self.images,
                "prune": {g: {repr(float(r)): a for r, a in row.items()} for g, row in self.prune.items()},
                "quant": {u: dict(row) for u, row in self.quant.items()},
                "units": {u: list(layers) for u, layers in self.units.items()},
                "settings": self.settings.to_dict(), "seconds": dict(self.seconds),
                **({"depth": {s: {str(k): a for k, a in row.items()} for s, row in self.depth.items()}}
                   if self.depth else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityMap:
        if data.get("version") != MAP_VERSION:
            raise ValueError(f"sensitivity map version {data.get('version')!r}: this autocompress reads {MAP_VERSION}")
        return cls(reference=float(data["reference"]), images=int(data["images"]),
                   prune={g: {float(r): float(a) for r, a in row.items()} for g, row in data["prune"].items()},
                   quant={u: {str(b): float(a) for b, a in row.items()} for u, row in data.get("quant", {}).items()},
                   units={u: tuple(v) for u, v in data.get("units", {}).items()},
                   settings=SensitivitySettings.from_dict(data.get("settings", {})), key=str(data.get("key", "")),
                   seconds={k: float(v) for k, v in data.get("seconds", {}).items()},
                   depth={s: {int(k): float(a) for k, a in row.items()} for s, row in data.get("depth", {}).items()})

    # ----- views --------------------------------------------------------------------------
    def matrix(self, kind: str = "prune") -> dict[str, Any]:
        """The heatmap's data: ``{"rows", "columns", "top1", "loss", "reference"}`` with
        ``top1[i][j]`` the accuracy of row i (group / unit / stage) at column j (ratio / bits
        label / blocks dropped) and ``loss`` = reference - top1; None where not measured."""
        table = {"prune": self.prune, "quant": self.quant, "depth": self.depth}.get(kind)
        if table is None:
            raise ValueError(f"kind = {kind!r}: allowed prune, quant, depth")
        columns = sorted({c for row in table.values() for c in row}, key=_column_order)
        top1 = [[row.get(c) for c in columns] for row in table.values()]
        loss = [[None if a is None else round(self.reference - a, 4) for a in r] for r in top1]
        return {"rows": list(table), "columns": columns, "top1": top1, "loss": loss, "reference": self.reference}

    def prune_loss(self, group: str, ratio: float) -> float:
        """Accuracy points lost by pruning ``group`` alone by ``ratio``: linear between measured
        ratios (loss made non-decreasing), extrapolated with the last segment's slope."""
        xs, ys = _loss_curve(self.reference, self.prune[group])
        if ratio <= 0.0:
            return 0.0
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if ratio <= x1:
                return y0 + (y1 - y0) * (ratio - x0) / (x1 - x0)
        if len(xs) < 2:
            return ys[-1]
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return ys[-1] + slope * (ratio - xs[-1])

    def depth_loss(self, stage: str, k: int) -> float:
        """Accuracy points lost by dropping the first ``k`` blocks of ``stage``'s drop order alone
        (0 for k = 0; dropping more never loses less, the rule of :meth:`prune_loss`). ``KeyError``
        when k was not measured."""
        if k <= 0:
            return 0.0
        row = self.depth[stage]
        if k not in row:
            raise KeyError(f"depth sensitivity of {stage}: k = {k} not measured (measured: {sorted(row)})")
        return max(0.0, *(self.reference - row[j] for j in row if j <= k))

    def quant_loss(self, unit: str, bits: LayerBits) -> float | None:
        """Accuracy points lost by running ``unit`` alone at ``bits`` (0 for float; None when not
        measured). Fewer bits never lose less than more bits (same rule as :meth:`prune_loss`)."""
        if bits.is_float:
            return 0.0
        row = {parse_bits_label(k): v for k, v in self.quant.get(unit, {}).items()}
        if bits not in row:
            return None
        at_least = [acc for b, acc in row.items() if b.w >= bits.w and b.a >= bits.a]  # this many bits or more
        return max(0.0, self.reference - min(at_least))


def _column_order(c: float | str) -> tuple:
    if isinstance(c, str):
        b = parse_bits_label(c)
        return (0, -b.w, -b.a)
    return (0, c)


# ----- measuring ----------------------------------------------------------------------------
def model_digest(model: nn.Module) -> str:
    """Content hash of ``model``'s state_dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sensitivity_key(model: nn.Module, data: Mapping[str, Any], settings: SensitivitySettings,
                    groups: Sequence[str], units: Mapping[str, Sequence[str]],
                    depth: Mapping[str, Sequence[str]] | None = None) -> str:
    """Key that validates a cached map: model weights, data description, settings, groups, units
    and, when measured, the depth drop orders (maps without depth keep their keys)."""
    parts = {"v": MAP_VERSION, "weights": model_digest(model), "data": dict(data), "settings": settings.to_dict(),
             "groups": list(groups), "units": {u: list(v) for u, v in units.items()}}
    if depth:
        parts["depth"] = {s: list(v) for s, v in depth.items()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _val_top1(model: nn.Module, data: Any, settings: SensitivitySettings, device: str) -> tuple[float, int]:
    from compress.measure import evaluate

    loader = data.loader("val", settings.eval_batch_size, shuffle=False, limit=settings.val_limit)
    res = evaluate(model, loader, device=device, topk=(1,), progress=False)
    return float(res["top1"]), int(res["n"])


def _applied_top1(policy: Policy, model: nn.Module, data: Any, settings: SensitivitySettings, device: str) -> float:
    """Top-1 of ``policy`` applied to ``model`` as a trial starts (compress -> BN recal, no fine-tune)."""
    from compress.apply import apply

    out = apply(policy, model, data=data, finetune=False, device=device, progress=False, calib_batches=1,
                bn_recal_batches=settings.bn_recal_batches)
    return _val_top1(out.model, data, settings, device)[0]


def _spec(model: nn.Module, input_size: int) -> ModelSpec:
    from compress.apply import model_name_of, num_classes_of

    return ModelSpec(name=model_name_of(model) or type(model).__name__, num_classes=num_classes_of(model) or 10,
                     input_size=input_size)


def prune_sensitivity(model: nn.Module, groups: Sequence[str], data: Any, settings: SensitivitySettings, *,
                      input_size: int, device: str = "cpu",
                      reference: float | None = None) -> dict[str, dict[float, float]]:
    """``{group: {ratio: top-1}}``: each group pruned alone at each of ``settings.ratios``, BN
    recalibrated, not fine-tuned, scored on the fixed val subset. Ratio 0 (the unpruned model)
    is included in every row (``reference``: its top-1, when already measured). Ratios that would
    remove every channel of a group are skipped."""
    from spaces.policy import keep_count

    if reference is None:
        reference = _val_top1(model, data, settings, device)[0]
    channels = _channels(model, input_size)
    spec = _spec(model, input_size)
    out: dict[str, dict[float, float]] = {}
    for g in groups:
        row = {0.0: reference}
        for r in settings.ratios:
            if keep_count(channels[g], r, settings.round_to) < 1:
                continue
            policy = Policy(model=spec, prune=PruneSpec(criterion=settings.criterion, round_to=settings.round_to,
                                                        ratios={g: float(r)}))
            row[float(r)] = _applied_top1(policy, model, data, settings, device)
        log.info("sensitivity %s: %s", g, ", ".join(f"{r:g}: {a:.2f}" for r, a in row.items()))
        out[g] = row
    return out


def _channels(model: nn.Module, input_size: int) -> dict[str, int]:
    from compress.prune import list_groups

    return {g.name: g.channels for g in list_groups(model, input_size)}


def depth_sensitivity(model: nn.Module, depth: Mapping[str, Sequence[str]], data: Any,
                      settings: SensitivitySettings, *, input_size: int,
                      device: str = "cpu") -> dict[str, dict[int, float]]:
    """``{stage: {k: top-1}}``: for each stage, its first k blocks of ``depth[stage]`` (the order
    a depth dim drops them) dropped together, k = 1..len, BN recalibrated, not fine-tuned, scored
    on the fixed val subset."""
    spec = _spec(model, input_size)
    out: dict[str, dict[int, float]] = {}
    for stage, order in depth.items():
        row: dict[int, float] = {}
        for k in range(1, len(order) + 1):
            policy = Policy(model=spec, prune=PruneSpec(criterion=settings.criterion, drop=tuple(order[:k])))
            row[k] = _applied_top1(policy, model, data, settings, device)
        log.info("depth sensitivity %s: %s", stage, ", ".join(f"-{k}: {a:.2f}" for k, a in row.items()))
        out[stage] = row
    return out


def quant_sensitivity(model: nn.Module, units: Mapping[str, Sequence[str]], data: Any,
                      settings: SensitivitySettings, *, device: str = "cpu") -> dict[str, dict[str, float]]:
    """``{unit: {bits_label: top-1}}``: each unit's layers fake-quantized alone (others float) at
    each integer ``settings.bits`` pair, activations calibrated on the calib split."""
    from compress.quantize import fake_quantize

    calib = [b for _, b in zip(range(settings.calib_batches), data.loader("calib", 64, shuffle=False))]
    out: dict[str, dict[str, float]] = {}
    for unit, layers in units.items():
        row: dict[str, float] = {}
        for w, a in settings.bits:
            bits = LayerBits(w=w, a=a)
            quant = QuantSpec(backend=settings.backend, layers={layer: bits for layer in layers})
            fq = fake_quantize(model, quant, calib, calib_batches=settings.calib_batches).to(device)
            row[bits_label(bits)] = _val_top1(fq, data, settings, device)[0]
        log.info("sensitivity %s: %s", unit, ", ".join(f"{b}: {a:.2f}" for b, a in row.items()))
        out[unit] = row
    return out


def compute_map(model: nn.Module, groups: Sequence[str], units: Mapping[str, Sequence[str]], data: Any,
                settings: SensitivitySettings, *, input_size: int, device: str = "cpu",
                key: str = "", depth: Mapping[str, Sequence[str]] | None = None) -> SensitivityMap:
    """Measure the whole map (prune rows, then quant rows when ``settings.bits`` is set, then depth
    rows for the stages of ``depth``: ``{stage: droppable blocks, in drop order}``), timed."""
    model = model.eval()
    t0 = time.perf_counter()
    reference, images = _val_top1(model, data, settings, device)
    prune = prune_sensitivity(model, groups, data, settings, input_size=input_size, device=device,
                              reference=reference)
    t1 = time.perf_counter()
    quant = quant_sensitivity(model, units, data, settings, device=device) if settings.bits and units else {}
    t2 = time.perf_counter()
    drops = depth_sensitivity(model, depth, data, settings, input_size=input_size, device=device) if depth else {}
    t3 = time.perf_counter()
    seconds = {"prune": round(t1 - t0, 2), "quant": round(t2 - t1, 2), "total": round(t3 - t0, 2),
               **({"depth": round(t3 - t2, 2)} if depth else {})}
    log.info("sensitivity map: %d groups x %d ratios, %d units in %.1f s", len(prune), len(settings.ratios),
             len(quant), seconds["total"])
    return SensitivityMap(reference=reference, images=images, prune=prune, quant=quant,
                          units={u: tuple(v) for u, v in units.items()} if quant else {}, settings=settings,
                          key=key, seconds=seconds, depth=drops)


__all__ = [
    "SensitivityMap", "SensitivitySettings", "bits_label", "compute_map", "depth_sensitivity", "model_digest",
    "parse_bits_label", "prune_sensitivity", "quant_sensitivity", "sensitivity_key",
]
