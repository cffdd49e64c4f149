"""`autocompress evaluate` (being written; see the issue tracker)."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("evaluate", help="(not yet available)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("autocompress evaluate")))
    return p
