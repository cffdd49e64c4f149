"""Peer: NVIDIA ModelOpt FastNAS pruning, expressed in our currency (a Policy with kept channels).

FastNAS (``modelopt.torch.prune.prune(mode="fastnas")``) measures, for every prunable channel
count, how much a score drops (here: top-1 on the same fixed val subset the search's proxy
uses, after re-estimating BatchNorm statistics on train batches), then binary-searches one
sensitivity threshold that meets a FLOPs budget. Its result is a smaller copy of the network
whose channels are sorted by importance; :func:`compress.prune.match_kept` finds each kept
channel in the original by its weights, so the choice becomes a ``Policy`` (``prune.ratios`` +
exact ``prune.kept``) that ``compress.apply.apply`` replays, fine-tunes, quantizes and times
exactly like every other candidate.

What FastNAS can prune on a CIFAR ResNet with option-A (zero-padding) shortcuts:

* as is: only the block-inner channels (``layerX.Y.conv1`` groups), the same groups as the
  search spaces' ``granularity: block``; the padding hides the residual coupling, so stage
  channels stay whole (the default, as in ModelOpt's own CIFAR ResNet example);
* with ``stage_channels=True`` the shortcuts are first converted to fixed 1x1 convs
  (``compress.prune.convert_option_a``) and FastNAS also prunes the ``layer1`` (stem) and
  ``layer2`` stage channels; never ``layer3``, whose channels feed the classifier, which
  FastNAS does not make searchable.

Install the peer with ``pip install -e '.[bench]'``. Library use (``benchmarks/`` on sys.path)::

    from peer_fastnas import fastnas_policy
    result = fastnas_policy(adapted_model, data, 0.5, spec=ModelSpec("resnet20"))
    result.policy.save("fastnas-50.yaml")

Command line (writes one recipe per point, its INT8 variant, and ``fastnas.json``)::

    python benchmarks/peer_fastnas.py --model resnet20 --checkpoint RUN/baseline --flops 0.5 0.65 --out DIR
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocompress.errors import UserError
from compress.apply import apply
from compress.measure import count_flops, count_params, evaluate
from compress.prune import MatchError, convert_option_a, list_groups, match_kept
from spaces.policy import LayerBits, ModelSpec, Policy, PruneSpec, QuantSpec

log = logging.getLogger("peer_fastnas")

INSTALL_HINT = "pip install -e '.[bench]' (or: pip install nvidia-modelopt huggingface_hub 'torchprofile==0.0.4')"


class PeerUnavailable(UserError, RuntimeError):
    """NVIDIA ModelOpt (or a dependency it imports) is missing or incompatible."""


def require_modelopt() -> Any:
    """Import ``modelopt.torch.prune``; raise :class:`PeerUnavailable` with the install line if absent."""
    try:
        import modelopt.torch.prune as mtp
        from torchprofile import profile  # ModelOpt counts FLOPs with torchprofile
    except ImportError as exc:
        raise PeerUnavailable(f"the FastNAS peer needs NVIDIA ModelOpt ({exc}); install it: {INSTALL_HINT}") from None
    if not hasattr(profile, "handlers"):  # torchprofile 0.1 dropped the table ModelOpt 0.47 patches
        raise PeerUnavailable(f"ModelOpt needs torchprofile 0.0.x for FLOPs counting; install it: {INSTALL_HINT}")
    return mtp


@dataclass(frozen=True)
class FastNASSettings:
    """How FastNAS is run.

    ``channel_divisor``: channel counts FastNAS may choose are multiples of it (ModelOpt's default
    32 leaves 16- and 32-channel CIFAR layers unprunable). ``val_limit`` / ``eval_batch_size``:
    the fixed val subset the score (top-1) is measured on, as the search's proxy does.
    ``bn_batch_size``: FastNAS re-estimates BatchNorm statistics on 50 train batches of this size
    before each score. ``stage_channels``: convert option-A shortcuts so stage channels are
    prunable too. ``seed``: order of the train batches.
    """

    channel_divisor: int = 4
    val_limit: int | None = 2000
    eval_batch_size: int = 256
    bn_batch_size: int = 32
    stage_channels: bool = False
    seed: int = 0

    def key(self, model: nn.Module) -> str:
        """A hash of these settings and the model's weights (names FastNAS's sensitivity cache)."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]


@dataclass
class FastNASResult:
    """One FastNAS point: the Policy, the subnet FastNAS exported, and its measurements."""

    policy: Policy
    subnet: nn.Module
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def int8_variant(policy: Policy) -> Policy:
    """The same pruning with every layer INT8 (w8/a8) on x86, as ``spaces/recipes/resnet56-prune50-int8.yaml``."""
    return policy.replace(quant=QuantSpec(backend="x86", default=LayerBits(w=8, a=8)),
                          provenance={**policy.provenance, "quant": "int8 x86 (w8/a8)"})


def _mode(divisor: int) -> list[tuple[str, dict[str, Any]]]:
    rules = {"nn.Conv2d": {"*": {"channel_divisor": divisor}}, "nn.BatchNorm2d": {"*": {"feature_divisor": divisor}}}
    return [("fastnas", rules)]


def run_fastnas(model: nn.Module, data: Any, flops_fraction: float, *, input_size: int,
                settings: FastNASSettings = FastNASSettings(),
                search_checkpoint: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Run ModelOpt FastNAS on a copy of ``model`` for at most ``flops_fraction`` of its FLOPs.

    ``data`` is a ``compress.data.DataBundle``: the score is top-1 on its val split (the first
    ``settings.val_limit`` images of the seeded subset), BatchNorm re-estimation uses its train
    split. ``search_checkpoint`` caches FastNAS's sensitivity map (it does not depend on the FLOPs
    target), so a second point on the same model and settings skips the costly part.
    Returns ``(subnet, FastNAS's search state)``; the subnet is option-A converted when
    ``settings.stage_channels``.
    """
    mtp = require_modelopt()
    if not 0.0 < flops_fraction < 1.0:
        raise ValueError(f"flops_fraction = {flops_fraction}: allowed 0 < fraction < 1")
    work = copy.deepcopy(model).cpu().eval()  # FastNAS sorts channels in place
    if settings.stage_channels:
        work = convert_option_a(work)
    val = list(data.loader("val", settings.eval_batch_size, shuffle=False, limit=settings.val_limit))

    def score(m: nn.Module) -> float:
        return float(evaluate(m, val, progress=False)["top1"])

    config = {"data_loader": data.loader("train", settings.bn_batch_size, shuffle=True, seed=settings.seed),
              "score_func": score, "verbose": False,
              "checkpoint": str(search_checkpoint) if search_checkpoint else None}
    with warnings.catch_warnings():  # "checkpoint ... does not exist! Initializing from scratch." and the like
        warnings.filterwarnings("ignore", category=UserWarning, module=r"modelopt\.torch\.opt\.searcher")
        subnet, state = mtp.prune(work, mode=_mode(settings.channel_divisor),
                                  constraints={"flops": f"{100 * flops_fraction:g}%"},
                                  dummy_input=torch.zeros(1, 3, input_size, input_size), config=config)
    return subnet.eval(), state


def policy_from_subnet(model: nn.Module, subnet: nn.Module, spec: ModelSpec, *,
                       provenance: dict[str, Any] | None = None) -> Policy:
    """A prune-only Policy for ``model`` that reproduces ``subnet`` (a pruned, reordered copy):
    ``kept`` from :func:`compress.prune.match_kept`, ``ratios = 1 - kept / channels``."""
    kept = match_kept(model, subnet, input_size=spec.input_size)
    channels = {g.name: g.channels for g in list_groups(model, spec.input_size)}
    ratios = {g: round(1.0 - len(idx) / channels[g], 6) for g, idx in kept.items()}
    return Policy(model=spec, prune=PruneSpec(ratios=ratios, kept=kept), provenance=dict(provenance or {}))


def check_replay(policy: Policy, model: nn.Module, subnet: nn.Module, x: torch.Tensor, *,
                 atol: float = 1e-4) -> dict[str, Any]:
    """Check that ``apply(policy, model)`` (no fine-tune) is ``subnet``: the same fvcore FLOPs and
    the same logits on ``x``. BatchNorm runs in training mode (batch statistics) on both, so
    FastNAS's recalibrated running statistics do not enter. Returns the measured differences."""
    ours = apply(policy, model, finetune=False, progress=False).model
    s = policy.model.input_size
    flops = (count_flops(ours, s), count_flops(subnet, s))
    with torch.no_grad():
        a, b = copy.deepcopy(ours).train()(x), copy.deepcopy(subnet).train()(x)
    diff = float((a - b).abs().max())
    if flops[0] != flops[1] or diff > atol:
        raise MatchError(f"the policy does not replay the FastNAS subnet: FLOPs {flops[0]} vs {flops[1]}, "
                         f"max logit difference {diff:.3g} (allowed {atol:g})")
    return {"replay_max_logit_diff": diff, "replay_flops": flops[0]}


def fastnas_policy(model: nn.Module, data: Any, flops_fraction: float, *, spec: ModelSpec,
                   settings: FastNASSettings = FastNASSettings(),
                   search_checkpoint: str | Path | None = None) -> FastNASResult:
    """FastNAS at ``flops_fraction`` of ``model``'s FLOPs, as a verified prune-only Policy.

    ``model`` is the (adapted) starting model, ``data`` a ``compress.data.DataBundle``, ``spec``
    the policy's model section. The returned policy has ``prune.ratios`` and exact
    ``prune.kept``; fine-tune, distillation and quantization are the caller's to set
    (``policy.replace(...)``, :func:`int8_variant`). ``metrics``: FLOPs and params (fvcore, as
    the search measures), the FLOPs ratio, FastNAS's own constraint numbers, per-group keep
    counts and the replay check. Raises :class:`PeerUnavailable` without ModelOpt.
    """
    t0 = time.perf_counter()
    subnet, state = run_fastnas(model, data, flops_fraction, input_size=spec.input_size, settings=settings,
                                search_checkpoint=search_checkpoint)
    seconds = time.perf_counter() - t0
    provenance = {"source": "nvidia-modelopt fastnas", "modelopt": importlib.metadata.version("nvidia-modelopt"),
                  "flops_fraction": flops_fraction, **dataclasses.asdict(settings)}
    policy = policy_from_subnet(model, subnet, spec, provenance=provenance)
    x = next(iter(data.loader("calib", 64, shuffle=False)))[0]
    metrics: dict[str, Any] = check_replay(policy, model, subnet, x)
    s = spec.input_size
    base_flops = count_flops(model, s)
    metrics.update(flops=count_flops(subnet, s), params=count_params(subnet), base_flops=base_flops,
                   base_params=count_params(model),
                   fastnas_constraints=dict(state.get("best", {}).get("constraints", {})))
    metrics["flops_ratio"] = metrics["flops"] / base_flops
    channels = {g.name: g.channels for g in list_groups(model, s)}
    metrics["kept_channels"] = {g: f"{len(policy.prune.kept.get(g, range(n)))}/{n}" for g, n in channels.items()}
    log.info("FastNAS %.0f%% FLOPs: %.1f s, FLOPs ratio %.3f, %d params, %d groups pruned", 100 * flops_fraction,
             seconds, metrics["flops_ratio"], metrics["params"], len(policy.prune.kept))
    return FastNASResult(policy=policy, subnet=subnet, seconds=seconds, metrics=metrics)


# ----- command line ---------------------------------------------------------------------------
def _val_top1(model: nn.Module, data: Any, settings: FastNASSettings) -> float:
    loader = data.loader("val", settings.eval_batch_size, shuffle=False, limit=settings.val_limit)
    return round(float(evaluate(model, loader, progress=False)["top1"]), 2)


def run_points(model: nn.Module, data: Any, spec: ModelSpec, fractions: list[float], out: Path,
               settings: FastNASSettings) -> list[dict[str, Any]]:
    """FastNAS at each FLOPs fraction: recipes (float and INT8) and one summary row per point in
    ``out/fastnas.json``. The val top-1 is measured on the score's val subset for the subnet as
    FastNAS leaves it and for the replayed policy after our BatchNorm recalibration (no fine-tune)."""
    out.mkdir(parents=True, exist_ok=True)
    cache = out / f"fastnas-sensitivity-{settings.key(model)}.pth"
    rows: list[dict[str, Any]] = []
    original = _val_top1(model, data, settings)
    for fraction in fractions:
        reused = cache.is_file()
        result = fastnas_policy(model, data, fraction, spec=spec, settings=settings, search_checkpoint=cache)
        stem = f"fastnas-{spec.name}-f{round(100 * fraction)}"
        float_path = result.policy.save(out / f"{stem}.yaml")
        int8_path = int8_variant(result.policy).save(out / f"{stem}-int8.yaml")
        recal = apply(result.policy, model, data=data, finetune=False, progress=False).model
        rows.append({"flops_fraction": fraction, "seconds": round(result.seconds, 1), "sensitivity_reused": reused,
                     **result.metrics, "ratios": result.policy.prune.ratios,
                     "val_top1_fastnas": _val_top1(result.subnet, data, settings),
                     "val_top1_recalibrated": _val_top1(recal, data, settings),
                     "val_top1_original": original,
                     "recipe": str(float_path), "recipe_int8": str(int8_path)})
        (out / "fastnas.json").write_text(json.dumps({"settings": dataclasses.asdict(settings), "points": rows},
                                                     indent=1, default=str))
    return rows


def _inputs(args: argparse.Namespace, space: Any) -> tuple[nn.Module, Any, ModelSpec]:
    from compress.models import build_model, load_checkpoint
    from search.commands._inputs import checkpoint_file
    from search.objective import Objective

    if space.model.name != args.model:
        raise UserError(f"--space {args.space}: its model is {space.model.name!r}, not --model {args.model!r}")
    objective = Objective(space, args.out / "run")  # the search's data split; its adapted model if no checkpoint
    if args.checkpoint:
        return load_checkpoint(build_model(objective.spec), checkpoint_file(args.checkpoint)).eval(), \
            objective.data, objective.spec
    return objective.model, objective.data, objective.spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", help="registry model name (default resnet20)")
    ap.add_argument("--space", help="search space giving the data split and val subset (default MODEL-cifar10)")
    ap.add_argument("--checkpoint", help="adapted weights (state_dict file or a run's baseline/ dir); default: the "
                                         "space's checkpoint adapted as its model.adapt says, cached in OUT/run")
    ap.add_argument("--flops", type=float, nargs="+", default=[0.5, 0.65], help="FLOPs fractions (default 0.5 0.65)")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--channel-divisor", type=int, default=4, help="channel counts are multiples of this (default 4)")
    ap.add_argument("--val-limit", type=int, help="val images the score uses (default: the space's budget.val_limit)")
    ap.add_argument("--bn-batch-size", type=int, default=32,
                    help="FastNAS re-estimates BN on 50 train batches of this size (default 32)")
    ap.add_argument("--stage-channels", action="store_true", help="convert option-A shortcuts so FastNAS also "
                                                                  "prunes stage channels (layer1, layer2)")
    args = ap.parse_args(argv)
    from search._logging import setup_logging
    from spaces.space import load_space

    setup_logging()
    try:
        require_modelopt()
        space = load_space(args.space or f"{args.model}-cifar10")
        settings = FastNASSettings(channel_divisor=args.channel_divisor, bn_batch_size=args.bn_batch_size,
                                   val_limit=args.val_limit or space.budget.val_limit,
                                   eval_batch_size=space.budget.eval_batch_size, stage_channels=args.stage_channels)
        model, data, spec = _inputs(args, space)
        rows = run_points(model, data, spec, args.flops, args.out, settings)
    except (UserError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    for r in rows:
        log.info("%.0f%%: %s s, FLOPs ratio %.3f, params %d, val %.2f (FastNAS BN) / %.2f (recal) / %.2f (original), "
                 "kept %s", 100 * r["flops_fraction"], r["seconds"], r["flops_ratio"], r["params"],
                 r["val_top1_fastnas"], r["val_top1_recalibrated"], r["val_top1_original"], r["kept_channels"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
