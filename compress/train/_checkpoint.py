"""Saving trained weights: a weights-only state_dict plus a JSON config beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.rundir import atomic_path, atomic_write_text


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], *,
                    config_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``model.state_dict()`` to ``path`` and ``config`` as JSON beside it.

    The config goes to ``config_path`` (default: ``config.json`` in the same folder). Both files
    are written atomically. Returns ``(weights_path, config_path)``. Load the weights back with
    ``compress.models.load_checkpoint`` (``torch.load(weights_only=True)``).
    """
    path = Path(path)
    cfg = Path(config_path) if config_path is not None else path.with_name("config.json")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    atomic_write_text(cfg, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return path, cfg
