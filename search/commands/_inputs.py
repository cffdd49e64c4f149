"""Inputs shared by the model-handling subcommands (apply, finetune): checkpoint paths, split accuracy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("autocompress")


def checkpoint_file(arg: str) -> Path:
    """``--checkpoint``: a state_dict file, or a directory holding ``model.pt`` (a run's ``baseline/``)."""
    p = Path(arg).expanduser()
    if p.is_dir():
        if not (p / "model.pt").is_file():
            raise FileNotFoundError(f"--checkpoint {p}: a directory without model.pt")
        return p / "model.pt"
    if not p.is_file():
        raise FileNotFoundError(f"--checkpoint {p}: no such file")
    return p


def split_accuracy(model: Any, data: Any, limit: int | None, what: str, device: str = "cpu") -> dict[str, dict]:
    """Top-1/top-5 of ``model`` on the val and test splits (at most ``limit`` images each), logged."""
    from compress.measure import evaluate

    res = {}
    for split in ("val", "test"):
        loader = data.loader(split, 256, shuffle=False, limit=limit)
        res[split] = evaluate(model, loader, device=device, progress=False)
        log.info("%s: %s top-1 %.2f%% (n=%d)", what, split, res[split]["top1"], res[split]["n"])
    return res
