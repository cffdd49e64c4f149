"""Checkpoint loading: always ``weights_only=True``; clear errors on any mismatch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import UserError

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a plain state_dict, ``{"state_dict": ...}`` or ``{"model": ...}``; strip ``module.``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unpickling failure with the file name
        raise CheckpointError(
            f"{p}: cannot read as a weights-only checkpoint ({type(exc).__name__}: {exc}). "
            "autocompress loads tensors only (torch.load(weights_only=True)); "
            "re-save the file with torch.save(model.state_dict(), path)."
        ) from None
    return extract_state_dict(obj, source=str(p))


def extract_state_dict(obj: object, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{source}: expected a state_dict (name -> tensor), {{'state_dict': ...}} or {{'model': ...}}; "
            f"found {keys}"
        )
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, torch.Tensor],
                            source: str = "<checkpoint>") -> nn.Module:
    """Load ``sd`` strictly; on mismatch list missing/unexpected keys and differing shapes."""
    own = model.state_dict()
    # old checkpoints lack BN num_batches_tracked; BatchNorm fills it in itself
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"{source}: checkpoint does not match the model ({type(model).__name__})"]

        def block(title: str, items: list[str]) -> None:
            if items:
                more = f" ... and {len(items) - 20} more" if len(items) > 20 else ""
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:20]) + more)

        block("missing keys", missing)
        block("unexpected keys", unexpected)
        block("shape mismatches", shapes)
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(sd, strict=True)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (in place) and return it."""
    return load_state_dict_checked(model, read_state_dict(path), source=str(path))


def load_pretrained(model: nn.Module, name: str, weights: str) -> nn.Module:
    """Load torchvision's published weights (e.g. ``IMAGENET1K_V1``) into an ImageNet ResNet.

    Downloads where the network allows. Offline, raises a :class:`CheckpointError` that
    says how to pass a local checkpoint instead.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        raise CheckpointError(f"--weights {weights!r}: torchvision has no such weights for {name}") from None
    try:
        sd = w.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise CheckpointError(
            f"could not download torchvision weights {name}.{weights} from {w.url} "
            f"({type(exc).__name__}: {exc}). Offline? Download the file elsewhere and pass it with "
            f"--checkpoint PATH/{Path(w.url).name} (any state_dict file loads, with or without 'module.')."
        ) from None
    return load_state_dict_checked(model, sd, source=w.url)
