"""The benchmark's shared state: the adapted model every candidate starts from, the search space
that uses it, the run directory, and the per-point result files (``OUT/points/<label>.json``)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autocompress.rundir import atomic_path, atomic_write_json
from search.baseline import Baseline
from spaces._schema import write_document
from spaces.space import SearchSpace, load_space

log = logging.getLogger("bench_headline")

SPACES = {"resnet20": "resnet20-cifar10", "resnet56": "resnet56-cifar10"}
#: one proxy and final recipe for every candidate: KD fixed (not searched), the same for all families;
#: ``--set`` overrides come after these and win
# every candidate under one KD recipe; the search optimises latency at both timed batches
DEFAULT_OVERRIDES = ["distill.alpha=0.5", "distill.temperature=4.0", "budget.latency.batch=[1,128]",
                     "objectives=[accuracy,flops,latency,latency@128]"]


@dataclass
class Context:
    """Where everything lives. ``space`` starts from the adapted checkpoint (no ``model.adapt``)."""

    out: Path
    space: SearchSpace
    space_file: Path
    adapted: Path
    device: str = "cpu"
    _baseline: Baseline | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.out / "search"

    @property
    def points_dir(self) -> Path:
        return self.out / "points"

    @property
    def baseline(self) -> Baseline:
        """The original (adapted) model, data and reference of the search's run directory."""
        if self._baseline is None:
            self._baseline = Baseline(self.space, self.run_dir, device=self.device, progress=True)
        return self._baseline

    def point(self, label: str) -> dict[str, Any] | None:
        path = self.points_dir / f"{label}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_point(self, label: str, data: dict[str, Any]) -> None:
        atomic_write_json(self.points_dir / f"{label}.json", {"label": label, **data})

    def points(self, epochs: float | None = None) -> list[dict[str, Any]]:
        """Every stored point, or those fine-tuned for ``epochs`` (points of another budget in the same
        ``OUT`` are never mixed into one table)."""
        points = [json.loads(p.read_text()) for p in sorted(self.points_dir.glob("*.json"))]
        return [p for p in points if epochs is None or float(p.get("epochs", -1)) == float(epochs)]


def adapt_once(name: str, overrides: list[str], out: Path, device: str) -> Path:
    """The weights every candidate starts from: the space's checkpoint adapted to the data as its
    ``model.adapt`` says, once (``OUT/adapt/baseline/model.pt``); without ``model.adapt``, the checkpoint
    itself, or the space's other weights stored at that path (torchvision weights, a trained baseline)."""
    space = load_space(name, overrides=overrides)
    baseline = Baseline(space, out / "adapt", device=device, progress=True)
    model = baseline.model  # trains (or reuses) RUN/baseline/model.pt
    if space.model.adapt is None and space.model.checkpoint:
        weights = space.resolve_path(space.model.checkpoint).resolve()
        log.info("the space does not adapt its weights: every candidate starts from %s", weights)
        return weights
    weights = out / "adapt" / "baseline" / "model.pt"
    if not weights.is_file():  # torchvision weights, not adapted: store them, so candidates start from a file
        with atomic_path(weights) as tmp:
            torch.save(model.state_dict(), tmp)
        log.info("the space does not adapt its weights: every candidate starts from them, stored in %s", weights)
    return weights


def peer_seed_targets(space: SearchSpace, peer_flops: list[float]) -> list[float] | None:
    """The space's sensitivity-seed FLOPs targets plus the peer's FLOPs fractions (headline (b) compares
    at matched FLOPs, and FastNAS is given those fractions as its targets: the search gets seeds
    allocated at them too). None when the space seeds by another metric, or has no seeds."""
    seeds = space.search.seeds
    if seeds is None or seeds.metric != "flops":
        return None
    return sorted({float(t) for t in (*seeds.targets, *peer_flops) if 0 < t < 1})


def prepare(args: argparse.Namespace) -> Context:
    """Adapt the checkpoint once, then write the search space that starts from it (``OUT/space.yaml``)."""
    out = args.out.resolve()
    name = SPACES[args.model]
    adapted = adapt_once(name, [*DEFAULT_OVERRIDES, *args.overrides], out, args.device)
    overrides = [*DEFAULT_OVERRIDES, *args.overrides, f"model.checkpoint={adapted}", "model.adapt=null",
                 f"search.trials={args.trials}"]
    space = load_space(name, overrides=overrides)
    targets = peer_seed_targets(space, args.peer_flops)
    if targets is not None and tuple(targets) != space.search.seeds.targets:
        space = load_space(name, overrides=[*overrides, f"search.seeds.targets=[{','.join(map(repr, targets))}]"])
    space_file = out / "space.yaml"
    doc = space.to_dict()
    doc["name"] = f"{name}-headline"
    write_document(doc, space_file)
    space = load_space(space_file)
    return Context(out=out, space=space, space_file=space_file, adapted=adapted, device=args.device)


__all__ = ["Context", "SPACES", "adapt_once", "peer_seed_targets", "prepare"]
