"""The compressed-model artifact: a directory with ``policy.yaml`` and ``model.pt``.

``policy.yaml`` is the Policy with ``prune.kept`` filled (the exact kept channel indices per
group); ``model.pt`` is ``model.state_dict()`` saved with ``torch.save`` (tensors only).
Loading rebuilds the architecture from the policy (``build_model`` -> ``compress.prune.rebuild``
-> fake-quant wrapping when the policy quantizes) and loads the weights with
``torch.load(weights_only=True)``. No pickled modules anywhere::

    save_compressed("out/", result.policy, result.model)
    policy, model = load_compressed("out/")
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from autocompress.rundir import atomic_path
from compress.models import build_model
from compress.models.checkpoint import CheckpointError, load_state_dict_checked, read_state_dict
from compress.prune import KEPT_ATTR, convert_option_a, has_option_a, rebuild
from compress.quantize import fake_quantize
from spaces._schema import FieldError
from spaces.policy import Policy, PolicyError

log = logging.getLogger(__name__)

POLICY_FILE = "policy.yaml"
WEIGHTS_FILE = "model.pt"

RebuildFn = Callable[[Policy, Mapping[str, torch.Tensor]], nn.Module]


def _as_kept(kept: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
    return {str(k): tuple(int(i) for i in v) for k, v in kept.items()}


def _resolve_kept(policy: Policy, model: nn.Module,
                  kept: Mapping[str, Iterable[int]] | None) -> dict[str, tuple[int, ...]]:
    sources = {
        "kept argument": _as_kept(kept) if kept is not None else None,
        "policy.prune.kept": _as_kept(policy.prune.kept) if policy.prune.kept else None,
        f"model.{KEPT_ATTR}": _as_kept(getattr(model, KEPT_ATTR)) if getattr(model, KEPT_ATTR, None) else None,
    }
    given = {k: v for k, v in sources.items() if v is not None}
    values = list(given.values())
    if any(v != values[0] for v in values[1:]):
        names = " vs ".join(given)
        raise PolicyError([FieldError("prune.kept", {k: len(v) for k, v in values[0].items()},
                                      f"the kept channel indices disagree ({names}); "
                                      "save the policy returned together with the model")])
    resolved = values[0] if values else {}
    if not resolved and any(r > 0 for r in policy.prune.ratios.values()):
        raise PolicyError([FieldError("prune.kept", {}, "a pruned model needs its kept channel indices: pass the "
                                      "policy returned by compress.apply.apply, or kept= from compress.prune.prune")])
    return resolved


def save_compressed(out_dir: str | Path, policy: Policy, model: nn.Module, *,
                    kept: Mapping[str, Iterable[int]] | None = None) -> Path:
    """Write ``policy.yaml`` (with ``prune.kept``) and ``model.pt`` (state_dict) into ``out_dir``.

    ``kept`` defaults to ``policy.prune.kept`` or the indices :func:`compress.prune.prune`
    recorded on the model; they must agree when several are present. The state_dict is saved
    as is (fake-quant layers keep the float layers' keys); a model that still has option-A
    padding shortcuts is saved in its equivalent converted form, which is what loading builds.
    Returns the directory.
    """
    out = Path(out_dir)
    resolved = _resolve_kept(policy, model, kept)
    policy = policy.replace(prune=dataclasses.replace(policy.prune, kept=resolved))
    if has_option_a(model):
        model = convert_option_a(model)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        torch.save(state, tmp)
    policy.save(out / POLICY_FILE)
    log.info("saved compressed %s (%d tensors, %d pruned groups) to %s",
             policy.model.name, len(state), len(resolved), out)
    return out


def rebuild_float(policy: Policy, state_dict: Mapping[str, torch.Tensor], *, source: str = "<state_dict>",
                  calib_loader: Iterable | None = None) -> nn.Module:
    """Default rebuild: ``build_model`` -> ``rebuild(kept, drop)`` -> checked load -> fake-quant if quantized.

    Fake-quant layers keep the float layers' state_dict keys, so weights load into the float
    structure first; activation ranges are not stored (pass ``calib_loader`` to calibrate).
    """
    model = rebuild(build_model(policy.model), policy.prune.kept, input_size=policy.model.input_size,
                    drop=policy.prune.drop)
    load_state_dict_checked(model, state_dict, source=source)
    if policy.quant.active:
        model = fake_quantize(model, policy.quant, calib_loader)
    return model


def load_compressed(path: str | Path, *, rebuild_fn: RebuildFn | None = None,
                    calib_loader: Iterable | None = None) -> tuple[Policy, nn.Module]:
    """Read an artifact written by :func:`save_compressed`; return ``(policy, model)`` in eval mode.

    ``rebuild_fn(policy, state_dict) -> model`` replaces the default :func:`rebuild_float`
    (e.g. ``compress.apply.rebuild_compressed``). Errors name the directory and what is wrong.
    """
    d = Path(path)
    missing = [f for f in (POLICY_FILE, WEIGHTS_FILE) if not (d / f).is_file()]
    if missing:
        raise CheckpointError(f"{d}: not a compressed-model directory (missing {', '.join(missing)}; "
                              f"expected {POLICY_FILE} and {WEIGHTS_FILE} written by save_compressed)")
    policy = Policy.load(d / POLICY_FILE)
    if any(r > 0 for r in policy.prune.ratios.values()) and not policy.prune.kept:
        raise PolicyError([FieldError("prune.kept", {}, "a pruned model's policy must record the kept channel "
                                      "indices (save_compressed writes them)")], str(d / POLICY_FILE))
    state = read_state_dict(d / WEIGHTS_FILE)
    source = str(d / WEIGHTS_FILE)
    if rebuild_fn is None:
        model = rebuild_float(policy, state, source=source, calib_loader=calib_loader)
    else:
        model = rebuild_fn(policy, state)
    return policy, model.eval()


__all__ = ["POLICY_FILE", "WEIGHTS_FILE", "load_compressed", "rebuild_float", "save_compressed"]
