"""Trial records kept in the Optuna storage, so every run directory of a shared study can rebuild them.

A finished trial's :class:`autocompress.rundir.TrialRecord` (the applied policy with its kept channel
indices, metrics, constraints, times, versions, worker, ...) is stored as trial *system* attributes
(kept out of the user attributes that optuna-dashboard lists): its JSON, zlib-compressed and base64
encoded, in pieces of at most :data:`CHUNK_CHARS` characters. ``autocompress:record`` holds
``{"encoding", "chunks", "data"}`` with the first piece; further pieces are
``autocompress:record:1``, ``:2``, ... Measured: a ResNet-56 policy pruned 50% is 3.4 kB of JSON
(one piece); ResNet-50 29 kB and ResNet-152 69 kB before compression, whose kept indices compress
about 3x. Pieces keep every attribute far below the 64 KiB of MySQL's ``TEXT`` column (PostgreSQL,
SQLite and journal files have no such limit), and one piece is one storage write.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

SYSTEM_ATTR_RECORD = "autocompress:record"
ENCODING = "json+zlib+base64"
#: characters of one stored piece (a JSON string in one attribute row)
CHUNK_CHARS = 30_000


def encode_record(data: Mapping[str, Any]) -> list[str]:
    """The record dict as base64 text pieces of at most :data:`CHUNK_CHARS` characters."""
    raw = json.dumps(dict(data), default=str, separators=(",", ":")).encode()
    text = base64.b64encode(zlib.compress(raw, 6)).decode("ascii")
    return [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


def decode_record(pieces: list[str]) -> dict[str, Any]:
    """Inverse of :func:`encode_record`."""
    return json.loads(zlib.decompress(base64.b64decode("".join(pieces))).decode())


def store_record(storage: optuna.storages.BaseStorage, trial_id: int, data: Mapping[str, Any]) -> None:
    """Store ``data`` (a ``TrialRecord.to_dict()``) on the running trial ``trial_id``.

    The head (with the first piece) is written last, so a reader never finds a head whose pieces
    are missing. Raises ``optuna.exceptions.UpdateFinishedTrialError`` when the trial has finished.
    """
    pieces = encode_record(data)
    for i, piece in enumerate(pieces[1:], start=1):
        storage.set_trial_system_attr(trial_id, f"{SYSTEM_ATTR_RECORD}:{i}", piece)
    storage.set_trial_system_attr(trial_id, SYSTEM_ATTR_RECORD,
                                  {"encoding": ENCODING, "chunks": len(pieces), "data": pieces[0]})


def stored_record(trial: FrozenTrial) -> dict[str, Any] | None:
    """The record dict stored on ``trial`` (None when there is none or it cannot be decoded)."""
    head = trial.system_attrs.get(SYSTEM_ATTR_RECORD)
    if not isinstance(head, dict) or head.get("encoding") != ENCODING:
        return None
    pieces = [head.get("data", "")] + [trial.system_attrs.get(f"{SYSTEM_ATTR_RECORD}:{i}")
                                       for i in range(1, int(head.get("chunks", 1)))]
    if not all(isinstance(p, str) for p in pieces):
        return None
    try:
        data = decode_record(pieces)
    except (ValueError, zlib.error):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["CHUNK_CHARS", "SYSTEM_ATTR_RECORD", "decode_record", "encode_record", "store_record", "stored_record"]
